// One pool's in-memory state: where auto-assignment looks for free /128s
// ("spaces") and /64s (`set64`), what is permanently unavailable, and the
// per-/64 bookkeeping that keeps /128 and whole-/64 allocations from
// overlapping. Everything here is sized by allocations, reserved addresses
// and bridges, never by the pool's size.

import { formatIpv6, formatPrefix, prefixContains, prefixContainsPrefix, prefixesOverlap, prefixMask, type Prefix } from '../net/ipv6.js';
import { ChurnMap } from './churn-map.js';
import { groupsOf, lastGroupPrefix } from './fast-format.js';
import { OffsetSet, toOffset, type Offset } from './offset-set.js';
import { rateRefusal } from './messages.js';
import { RateWindow } from './rate-window.js';
import type { Allocation, BridgeSubnet, PoolSpec } from './types.js';

export const LOW64 = (1n << 64n) - 1n;

/** One allocation as the allocator holds it. */
export interface Entry {
  /** The current durable shape (replaced, never mutated, on release). */
  a: Allocation;
  /** The pool whose prefix contains it; undefined when none does any more (config changed). */
  pool: PoolState | undefined;
  /** Network of the allocated prefix (the address itself for a /128). */
  net: bigint;
  /** A whole /64 (else a /128). */
  whole: boolean;
  /** Index of its /64 inside the pool. */
  idx64: number;
  /** Start of quarantine in ms, NaN while in use. */
  releasedMs: number;
  /** End of quarantine in ms (NaN while in use). */
  due: number;
  /** The VM's other entries: Ipam.byVm holds the first, in allocation order. */
  vmPrev: Entry | undefined;
  vmNext: Entry | undefined;
  /** Rate-window buckets it is counted in (NaN: not counted). */
  poolSec: number;
  tenantSec: number;
  /** Dropped (expired or unreserved): stale references ignore it. */
  gone: boolean;
  /** Where auto-assignment found it, in a pool with a single space (saves bigint work on drop). */
  space: Space | undefined;
  off: Offset;
}

/** A range of addresses where address-mode NICs get their /128s: a pool's first /64 or a bridge subnet. */
export interface Space {
  network: bigint;
  length: number;
  mask: bigint;
  label: string;
  set: OffsetSet;
  /** Groups of `network`, for formatting without bigint arithmetic. */
  base: number[];
  /** See lastGroupPrefix: the text before the last group, for offsets below 2^16. */
  lastPrefix: string;
  /** /64 index (in the pool) of the /64 this space lies in. */
  idx64: number;
  /** Offsets never auto-assigned (anycast, implied gateway, reserved, bridge addresses). */
  perm: Set<Offset>;
  /** Bridge whose on-link subnet this is ('' for the pool's first /64). */
  bridge: string;
}

export interface Info64 {
  /** /128 allocations (in use or quarantined) inside this /64. */
  n128: number;
  /** The whole-/64 allocation of this /64. */
  whole: Entry | undefined;
}

/** A bridge's subnet as it matters here: /64 or longer (a shorter one counts by its first /64 for spaces). */
function spacePrefixOf(b: BridgeSubnet): Prefix {
  const length = Math.max(b.length, 64);
  return { network: b.network & prefixMask(length), length };
}

export class PoolState {
  readonly spec: PoolSpec;
  readonly prefix: Prefix;
  readonly prefixText: string;
  /** High 64 bits of the pool's first /64. */
  readonly hi64: bigint;
  /** /64s in the pool (0n when the pool is longer than /64). */
  readonly n64: bigint;
  readonly spaces: Space[] = [];
  readonly defaultSpace: Space | undefined;
  readonly bridgeSpaces = new Map<string, Space>();
  /** /64 indexes unavailable to whole-/64 allocations (pools of /64 or shorter). */
  readonly set64: OffsetSet | undefined;
  readonly info = new ChurnMap<number, Info64>();
  /** /64s that hold reserved or bridge addresses or are (part of) a bridge subnet, by index. */
  readonly perm64 = new Map<number, string>();
  readonly permRanges: { lo: number; hi: number; why: string }[] = [];
  readonly reserved: Set<bigint>;
  /** Bridge host addresses inside the pool -> bridge name. */
  readonly hostAddrs = new Map<bigint, string>();
  /** Bridges whose subnet overlaps the pool. */
  readonly bridges: { name: string; prefix: Prefix }[] = [];
  /** Units never handed out, for stats (see Ipam.stats). */
  readonly blocked: bigint;
  live128 = 0;
  quar128 = 0;
  /** /128 allocations (in use or quarantined) of an implied gateway <subnet>::1 (static requests only). */
  gateways128 = 0;
  live64 = 0;
  quar64 = 0;
  readonly window = new RateWindow();
  readonly tenantWindows = new ChurnMap<string, RateWindow>();

  constructor(spec: PoolSpec, bridges: readonly BridgeSubnet[]) {
    const prefix = { network: spec.network, length: spec.length };
    if (!Number.isInteger(spec.length) || spec.length < 1 || spec.length > 128 || (spec.network & prefixMask(spec.length)) !== spec.network) {
      throw new Error(`pool ${spec.id}: bad prefix ${String(spec.network)}/${spec.length}`);
    }
    if (spec.mode === 'prefix' && spec.length >= 64) throw new Error(`pool ${spec.id}: a prefix-mode pool must be shorter than /64`);
    if (spec.mode === 'address' && spec.length > 120) throw new Error(`pool ${spec.id}: an address-mode pool may be at most a /120`);
    this.spec = spec;
    this.prefix = prefix;
    this.prefixText = formatPrefix(prefix);
    this.hi64 = spec.network >> 64n;
    this.n64 = spec.length <= 64 ? 1n << BigInt(64 - spec.length) : 0n;
    this.reserved = new Set(spec.reserved);
    for (const r of spec.reserved) {
      if (!prefixContains(prefix, r)) throw new Error(`pool ${spec.id}: reserved ${formatIpv6(r)} is outside ${this.prefixText}`);
    }
    for (const b of bridges) {
      for (const h of b.hostAddresses) if (prefixContains(prefix, h) && !this.hostAddrs.has(h)) this.hostAddrs.set(h, b.name);
      const bp = { network: b.network & prefixMask(b.length), length: b.length };
      if (prefixesOverlap(bp, prefix)) this.bridges.push({ name: b.name, prefix: bp });
    }

    if (spec.length <= 64) this.set64 = new OffsetSet(this.n64);
    this.blockFixed64();

    if (spec.mode === 'address') {
      const first: Prefix = spec.length >= 64 ? prefix : { network: spec.network, length: 64 };
      this.defaultSpace = this.addSpace(first, '');
      for (const b of bridges) {
        const sp = spacePrefixOf(b);
        if (!prefixContainsPrefix(prefix, sp)) continue;
        const same = this.spaces.find((s) => s.network === sp.network && s.length === sp.length);
        this.bridgeSpaces.set(b.name, same ?? this.addSpace(sp, b.name));
      }
      // The /64 single addresses come from is not handed out whole.
      if (this.set64) this.permBlock64(this.defaultSpace.idx64, `it is where pool ${spec.id} hands out single addresses`);
    }
    this.blocked = this.countBlocked();
  }

  /** Records an entry (in use or quarantined) of this pool; space/off: where auto-assignment found it. */
  attach(e: Entry, space?: Space, off?: Offset): void {
    const quarantined = !Number.isNaN(e.releasedMs);
    if (e.whole) {
      this.markWhole(e);
      if (quarantined) this.quar64++;
      else this.live64++;
    } else {
      if (space !== undefined && off !== undefined) this.markAddrAt(e, space, off);
      else this.markAddr(e);
      if (quarantined) this.quar128++;
      else this.live128++;
      if ((e.net & LOW64) === 1n) this.gateways128++;
    }
  }

  detach(e: Entry): void {
    const quarantined = !Number.isNaN(e.releasedMs);
    if (e.whole) {
      this.unmarkWhole(e);
      if (quarantined) this.quar64--;
      else this.live64--;
    } else {
      this.unmarkAddr(e);
      if (quarantined) this.quar128--;
      else this.live128--;
      if ((e.net & LOW64) === 1n) this.gateways128--;
    }
  }

  /** An entry of this pool went from in use to quarantined. */
  quarantined(e: Entry): void {
    if (e.whole) {
      this.live64--;
      this.quar64++;
    } else {
      this.live128--;
      this.quar128++;
    }
  }

  /** Throws resource_exhausted when the pool's or the tenant's hourly limit is used up. */
  checkRate(tenantId: string, ms: number): void {
    const limit = this.spec.rateLimit;
    if (limit !== undefined) {
      const wait = this.window.waitMs(ms, limit);
      if (wait > 0) throw rateRefusal(this, ms, wait, limit, this.window.count(ms));
    }
    const tLimit = this.spec.tenantRateLimit;
    if (tLimit !== undefined) {
      const held = this.tenantWindows.get(tenantId);
      const w = held ?? new RateWindow();
      const wait = w.waitMs(ms, tLimit);
      if (held && held.empty) this.tenantWindows.remove(tenantId);
      if (wait > 0) throw rateRefusal(this, ms, wait, tLimit, w.count(ms), tenantId);
    }
  }

  countRate(e: Entry, ms: number): void {
    e.poolSec = this.window.add(ms);
    if (this.spec.tenantRateLimit === undefined) return;
    let w = this.tenantWindows.get(e.a.tenantId);
    if (!w) this.tenantWindows.add(e.a.tenantId, (w = new RateWindow()));
    e.tenantSec = w.add(ms);
  }

  /** unreserve: the allocation never happened, so it gives its slot back. */
  uncountRate(e: Entry): void {
    if (!Number.isNaN(e.poolSec)) this.window.remove(e.poolSec);
    const w = this.tenantWindows.get(e.a.tenantId);
    if (w && !Number.isNaN(e.tenantSec)) {
      w.remove(e.tenantSec);
      if (w.empty) this.tenantWindows.remove(e.a.tenantId);
    }
  }

  idx64(addr: bigint): number {
    return Number((addr >> 64n) - this.hi64);
  }

  /** The /64 with index idx. */
  net64(idx: number): bigint {
    return (this.hi64 + BigInt(idx)) << 64n;
  }

  tenantAllowed(tenantId: string): boolean {
    return this.spec.tenants.length === 0 || this.spec.tenants.includes(tenantId);
  }

  /** Why the /64 `idx` can never be handed out whole, or undefined. */
  permReason(idx: number): string | undefined {
    for (const r of this.permRanges) if (idx >= r.lo && idx < r.hi) return r.why;
    return this.perm64.get(idx);
  }

  private markAddr(e: Entry): void {
    for (const s of this.spaces) if ((e.net & s.mask) === s.network) s.set.add(toOffset(e.net - s.network));
    const inf = this.info.get(e.idx64);
    if (inf === undefined) {
      this.info.add(e.idx64, { n128: 1, whole: undefined });
      this.refresh64(e.idx64);
    } else if (++inf.n128 === 1) this.refresh64(e.idx64);
  }

  /** markAddr for an address known to be at `off` in space `s` (the auto-assign fast path). */
  private markAddrAt(e: Entry, s: Space, off: Offset): void {
    s.set.add(off);
    if (this.spaces.length === 1) {
      e.space = s;
      e.off = off;
    } else {
      for (const o of this.spaces) if (o !== s && (e.net & o.mask) === o.network) o.set.add(toOffset(e.net - o.network));
    }
    const inf = this.info.get(e.idx64);
    if (inf === undefined) {
      this.info.add(e.idx64, { n128: 1, whole: undefined });
      this.refresh64(e.idx64);
    } else if (++inf.n128 === 1) this.refresh64(e.idx64);
  }

  private unmarkAddr(e: Entry): void {
    const only = e.space;
    if (only !== undefined) {
      if (!only.perm.has(e.off)) only.set.delete(e.off);
    } else for (const s of this.spaces) {
      if ((e.net & s.mask) !== s.network) continue;
      const off = toOffset(e.net - s.network);
      if (!s.perm.has(off)) s.set.delete(off);
    }
    const inf = this.info.get(e.idx64);
    if (inf !== undefined && --inf.n128 === 0) {
      if (inf.whole === undefined) this.info.remove(e.idx64);
      this.refresh64(e.idx64);
    }
  }

  private markWhole(e: Entry): void {
    const inf = this.info.get(e.idx64);
    if (inf === undefined) this.info.add(e.idx64, { n128: 0, whole: e });
    else inf.whole = e;
    this.refresh64(e.idx64);
  }

  private unmarkWhole(e: Entry): void {
    const inf = this.info.get(e.idx64);
    if (inf === undefined || inf.whole !== e) return;
    inf.whole = undefined;
    if (inf.n128 === 0) this.info.remove(e.idx64);
    this.refresh64(e.idx64);
  }

  private refresh64(idx: number): void {
    const set = this.set64;
    if (set === undefined || idx < 0 || BigInt(idx) >= this.n64) return;
    const inf = this.info.get(idx);
    const busy = inf !== undefined && (inf.n128 > 0 || inf.whole !== undefined);
    if (busy) set.add(idx);
    else if (this.permReason(idx) === undefined) set.delete(idx);
  }

  private permBlock64(idx: number, why: string): void {
    if (this.set64 === undefined || idx < 0 || BigInt(idx) >= this.n64) return;
    if (!this.perm64.has(idx)) this.perm64.set(idx, why);
    this.set64.add(idx);
  }

  /** Reserved addresses, bridge addresses and bridge subnets take their /64s out of whole-/64 use. */
  private blockFixed64(): void {
    if (this.set64 === undefined) return;
    for (const b of this.bridges) {
      const why = `it ${b.prefix.length > 64 ? 'holds' : 'is'} the on-link subnet of bridge ${b.name} (${formatPrefix(b.prefix)}), shared by every NIC on that bridge`;
      if (b.prefix.length >= 64) {
        this.permBlock64(this.idx64(b.prefix.network), why);
        continue;
      }
      // A bridge subnet shorter than /64: a range of /64 indexes, clipped to the pool.
      const lo = b.prefix.length <= this.spec.length ? 0n : (b.prefix.network >> 64n) - this.hi64;
      const hi = b.prefix.length <= this.spec.length ? this.n64 : lo + (1n << BigInt(64 - b.prefix.length));
      this.set64.excludeRange(lo, hi);
      this.permRanges.push({ lo: Number(lo), hi: Number(hi), why });
    }
    for (const r of this.spec.reserved) this.permBlock64(this.idx64(r), `it holds reserved address ${formatIpv6(r)}`);
    for (const [h, name] of this.hostAddrs) this.permBlock64(this.idx64(h), `it holds ${formatIpv6(h)}, an address of bridge ${name}`);
  }

  private addSpace(p: Prefix, bridge: string): Space {
    const s: Space = {
      network: p.network,
      length: p.length,
      mask: prefixMask(p.length),
      label: formatPrefix(p),
      set: new OffsetSet(1n << BigInt(128 - p.length)),
      base: groupsOf(p.network),
      lastPrefix: lastGroupPrefix(groupsOf(p.network)),
      idx64: this.idx64(p.network),
      perm: new Set(),
      bridge,
    };
    const perm = (a: bigint) => {
      if ((a & prefixMask(p.length)) !== p.network) return;
      const off = toOffset(a - p.network);
      s.perm.add(off);
      s.set.add(off);
    };
    const net64 = p.network & ~LOW64;
    perm(net64); // the subnet-router anycast, when this space holds it
    // <subnet>::1: the gateway a NIC is given when its bridge's own subnet is
    // not the one its address comes from (SPEC-NOTES 7). Auto-assignment never
    // hands it out; a static request may ask for it (and set its own gateway).
    perm(net64 + 1n);
    for (const r of this.spec.reserved) perm(r);
    for (const h of this.hostAddrs.keys()) perm(h);
    this.spaces.push(s);
    return s;
  }

  /** Units (addresses or /64s) that are never handed out; see Ipam.stats. */
  private countBlocked(): bigint {
    if (this.spec.mode === 'prefix') {
      const ranges = [...this.permRanges].sort((a, b) => a.lo - b.lo);
      let total = 0n;
      let end = -1;
      for (const r of ranges) {
        const lo = Math.max(r.lo, end);
        if (r.hi > lo) total += BigInt(r.hi - lo);
        end = Math.max(end, r.hi);
      }
      for (const idx of this.perm64.keys()) if (!ranges.some((r) => idx >= r.lo && idx < r.hi)) total++;
      return total;
    }
    // Per /64: the anycast ::0 and the implied gateway ::1 (for a pool inside one /64: those it holds).
    const low = this.spec.network & LOW64;
    const size = 1n << BigInt(128 - this.spec.length);
    const holds = (x: bigint) => (this.spec.length <= 64 ? 1n : low <= x && x < low + size ? 1n : 0n);
    let n = this.spec.length <= 64 ? 2n * this.n64 : holds(0n) + holds(1n);
    const singles = new Set<bigint>([...this.reserved, ...this.hostAddrs.keys()]);
    for (const a of singles) if ((a & LOW64) > 1n) n++;
    return n;
  }
}
