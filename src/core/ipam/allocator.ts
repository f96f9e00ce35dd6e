// The IPv6 address allocator: pure (no I/O, no clock; `now` comes in), so the
// daemon decides when state becomes durable. Costs depend on the number of
// allocations, never on pool size: see offset-set.ts for the free-offset
// structure and bench/ipam.ts for the measured figures.
//
// Persistence contract: allocate() reserves in memory; the caller persists the
// result in the same store commit as the VM (or calls unreserve). Quarantined
// allocations stay in the store until expire() hands back their keys. allocate()
// expires due quarantines too and may hand a just-expired key out again, so a
// caller should call expire(now) first and delete the keys it returns in the
// same commit as the new allocation (expire() also returns keys that
// allocate() dropped since the last expire() call).

import { notFound } from '../errors.js';
import { formatIpv6, formatPrefix, parsePrefix, prefixContains } from '../net/ipv6.js';
import { ChurnMap } from './churn-map.js';
import { pickAuto, pickStatic, type AllocView, type Pick } from './choose.js';
import { DueQueue } from './due-queue.js';
import { isoOf } from './fast-format.js';
import { alreadyExists } from './messages.js';
import type { Offset } from './offset-set.js';
import { PoolState, type Entry, type Info64, type Space } from './pool-state.js';
import { checkNoOverlap, entryFromStore, net64Key } from './restore.js';
import type { Allocation, AllocationRequest, BridgeSubnet, PoolSpec, PoolStats } from './types.js';

export { PREFIX_HOST_OFFSET } from './choose.js';

/** The gateway a NIC on a whole-/64 allocation uses: <prefix>::1; '' for a /128. */
export function gatewayOf(a: Allocation): string {
  const p = parsePrefix(a.prefix);
  return p.length === 64 ? formatIpv6(p.network + 1n) : '';
}

export interface IpamOptions {
  quarantineMs: number;
  bridges: BridgeSubnet[];
}

export class Ipam {
  private readonly specs: PoolSpec[];
  private readonly quarantineMs: number;
  private readonly bridgeList: BridgeSubnet[];
  private poolList: PoolState[] = [];
  private byId = new Map<string, PoolState>();
  private byKey = new ChurnMap<string, Entry>();
  /** vmId -> the VM's first entry (the rest follow through vmNext). */
  private byVm = new ChurnMap<string, Entry>();
  /** /64s of allocations that lie in no configured pool (the config changed since). */
  /** Keyed by the /64's text: V8 hashes large BigInt keys alike, so a Map<bigint> walks every entry. */
  private orphan64 = new Map<string, Info64>();
  private queue = new DueQueue<Entry>();
  /** Keys allocate() expired since the last expire() call. */
  private pendingExpired: string[] = [];
  private readonly dueScratch: Entry[] = [];
  /** The allocating VM's entries, looked up once per allocate() (see checkNic). */
  private vmHead: Entry | undefined;
  /** The vmId vmHead is valid for (undefined: no valid cache). */
  private vmHeadFor: string | undefined;
  /** What the pick functions may read (rebuilt by reset). */
  private view!: AllocView;

  constructor(pools: PoolSpec[], opts: IpamOptions) {
    if (!(opts.quarantineMs >= 0)) throw new RangeError(`quarantineMs must be >= 0, got ${opts.quarantineMs}`);
    this.specs = pools.map((p) => ({ ...p, reserved: [...p.reserved], tenants: [...p.tenants] }));
    this.quarantineMs = opts.quarantineMs;
    this.bridgeList = opts.bridges.map((b) => ({ ...b, hostAddresses: [...b.hostAddresses] }));
    this.reset();
  }

  /** Rebuild from the store at start-up (allocations incl. quarantined ones). Throws if two overlap. */
  load(allocations: readonly Allocation[]): void {
    this.reset();
    const entries: Entry[] = [];
    for (const a of allocations) {
      const e = entryFromStore(a, this.poolList, this.byId);
      checkNoOverlap(e, this.byKey, this.orphan64);
      this.insert(e);
      entries.push(e);
    }
    // Rate windows and quarantine, rebuilt in time order.
    const t = (e: Entry) => Date.parse(e.a.allocatedAt);
    for (const e of [...entries].sort((x, y) => t(x) - t(y))) e.pool?.countRate(e, t(e));
    for (const e of entries.filter((x) => !Number.isNaN(x.releasedMs)).sort((x, y) => x.releasedMs - y.releasedMs)) {
      e.due = e.releasedMs + this.quarantineMs;
      this.queue.push(e);
    }
  }

  /** Reserve for one NIC (in memory; the caller persists it in the same store commit as the VM, or calls unreserve). */
  allocate(req: AllocationRequest, now: Date): Allocation {
    const ms = msOf(now);
    this.expireInto(ms, this.pendingExpired);
    this.checkNic(req);
    const pick = req.address ? pickStatic(this.view, req, req.address.address) : pickAuto(this.view, req);
    pick.pool.checkRate(req.tenantId, ms);
    return this.commit(req, pick, ms);
  }

  /**
   * Forget an allocation that never became durable (failed create). No
   * quarantine, and its rate-limit slot is given back. No-op for an unknown
   * key, and for an allocation already in quarantine: someone released it, so
   * it may have been in use, and it stays quarantined (cleanup paths call this
   * and must not fail).
   */
  unreserve(key: string): void {
    const e = this.find(key);
    if (!e || !Number.isNaN(e.releasedMs)) return;
    e.pool?.uncountRate(e);
    this.drop(e);
  }

  /** Start quarantine; returns the updated allocation (releasedAt = now) to persist. Idempotent. */
  release(key: string, now: Date): Allocation {
    const ms = msOf(now);
    const e = this.find(key);
    if (!e) throw notFound(`allocation ${key}`);
    if (!Number.isNaN(e.releasedMs)) return e.a;
    e.releasedMs = ms;
    e.a = withReleased(e.a, isoOf(ms));
    e.pool?.quarantined(e);
    e.due = ms + this.quarantineMs;
    this.queue.push(e);
    return e.a;
  }

  /** Quarantined allocations whose time is up are dropped; returns their keys (the caller deletes them from the store). */
  expire(now: Date): string[] {
    const ms = msOf(now);
    const out = this.pendingExpired;
    this.pendingExpired = [];
    this.expireInto(ms, out);
    return out;
  }

  get(key: string): Allocation | undefined {
    return this.find(key)?.a;
  }

  /** Allocations of a VM (by vmId), in use and quarantined, in allocation order. */
  ofVm(vmId: string): Allocation[] {
    return this.vmEntries(vmId).map((e) => e.a);
  }

  list(filter: { poolId?: string; tenantId?: string; vmId?: string; includeQuarantined?: boolean } = {}): Allocation[] {
    const source = filter.vmId !== undefined ? this.vmEntries(filter.vmId) : this.byKey.values();
    const out: Entry[] = [];
    for (const e of source) {
      if (filter.poolId !== undefined && e.a.poolId !== filter.poolId) continue;
      if (filter.tenantId !== undefined && e.a.tenantId !== filter.tenantId) continue;
      if (filter.vmId !== undefined && e.a.vmId !== filter.vmId) continue;
      if (!filter.includeQuarantined && !Number.isNaN(e.releasedMs)) continue;
      out.push(e);
    }
    out.sort((x, y) => (x.net < y.net ? -1 : x.net > y.net ? 1 : Number(x.whole) - Number(y.whole)));
    return out.map((e) => e.a);
  }

  pools(): PoolSpec[] {
    return this.poolList.map((p) => p.spec);
  }

  /** Which pools a tenant may use (that contain addr, when given): for error messages. */
  poolsFor(tenantId: string, addr?: bigint): PoolSpec[] {
    return this.poolList.filter((p) => p.tenantAllowed(tenantId) && (addr === undefined || prefixContains(p.prefix, addr))).map((p) => p.spec);
  }

  /**
   * Units: /128s in address mode (a whole-/64 allocation counts 2^64), /64s in
   * prefix mode. free = size - used - quarantined - blocked, where blocked is
   * what is never auto-assigned: in address mode, per /64 the subnet-router
   * anycast ::0 and the implied gateway ::1 (not counted again when inside a
   * whole-/64 allocation or statically allocated), plus the reserved and bridge
   * addresses; in prefix mode the /64s holding reserved or bridge addresses or
   * lying in a bridge subnet. allocationsLastHour counts the rolling hour
   * (allocations taken back with unreserve do not count).
   */
  stats(poolId: string, now: Date): PoolStats {
    const ms = msOf(now);
    const pool = this.byId.get(poolId);
    if (!pool) throw notFound(`pool ${poolId}`);
    const addressMode = pool.spec.mode === 'address';
    const size = addressMode ? 1n << BigInt(128 - pool.spec.length) : pool.n64;
    const whole = addressMode ? 1n << 64n : 1n;
    const used = BigInt(pool.live128) + BigInt(pool.live64) * whole;
    const quarantined = BigInt(pool.quar128) + BigInt(pool.quar64) * whole;
    const blocked = addressMode ? pool.blocked - 2n * BigInt(pool.live64 + pool.quar64) - BigInt(pool.gateways128) : pool.blocked;
    const rest = size - used - quarantined - blocked;
    return {
      id: pool.spec.id,
      prefix: pool.prefixText,
      mode: pool.spec.mode,
      autoAssign: pool.spec.autoAssign,
      size,
      used,
      quarantined,
      free: rest > 0n ? rest : 0n,
      utilisation: Number(used) / Number(size),
      allocationsLastHour: pool.window.count(ms),
    };
  }

  // ---- allocation paths -------------------------------------------------

  /** Records a checked pick. */
  private commit(req: AllocationRequest, pick: Pick, ms: number): Allocation {
    const { pool, net, whole, text, space, off } = pick;
    const key = whole ? `${formatIpv6(net)}/64` : `${text}/128`;
    const a: Allocation = {
      key, poolId: pool.spec.id, kind: whole ? 'prefix' : 'address', prefix: key, address: text,
      vmId: req.vmId, nicId: req.nicId, tenantId: req.tenantId, owner: req.owner ?? '',
      allocatedAt: isoOf(ms), releasedAt: null,
    };
    const e: Entry = {
      a, pool, net, whole, idx64: space ? space.idx64 : pool.idx64(net),
      releasedMs: NaN, due: NaN, vmPrev: undefined, vmNext: undefined, poolSec: NaN, tenantSec: NaN, gone: false, space: undefined, off: 0,
    };
    pool.countRate(e, ms);
    this.insert(e, space, off);
    return a;
  }

  /** One NIC holds one allocation in use. Remembers the VM's list for insert(). */
  private checkNic(req: AllocationRequest): void {
    this.vmHeadFor = req.vmId;
    this.vmHead = req.vmId ? this.byVm.get(req.vmId) : undefined;
    let held: Entry | undefined;
    for (let e = this.vmHead; e; e = e.vmNext) if (e.a.nicId === req.nicId && Number.isNaN(e.releasedMs)) held = e;
    if (held) throw alreadyExists(req.field, `NIC ${req.nicId} of VM ${req.vmId} already holds ${held.a.key}`);
  }

  // ---- bookkeeping -------------------------------------------------------

  private reset(): void {
    this.poolList = this.specs.map((s) => new PoolState(s, this.bridgeList));
    this.byId = new Map(this.poolList.map((p) => [p.spec.id, p]));
    if (this.byId.size !== this.poolList.length) throw new Error('duplicate pool id');
    this.byKey = new ChurnMap();
    this.byVm = new ChurnMap();
    this.orphan64 = new Map();
    this.queue = new DueQueue();
    this.pendingExpired = [];
    this.vmHead = undefined;
    this.vmHeadFor = undefined;
    const orphans = this.orphan64;
    const byKey = this.byKey;
    const byId = this.byId;
    this.view = {
      poolList: this.poolList,
      poolById: (id) => byId.get(id),
      entry: (key) => byKey.get(key),
      orphanWhole: (net64) => (orphans.size === 0 ? undefined : orphans.get(net64Key(net64))?.whole),
      quarantineMs: this.quarantineMs,
    };
  }

  private vmEntries(vmId: string): Entry[] {
    const out: Entry[] = [];
    for (let e = this.byVm.get(vmId); e; e = e.vmNext) out.push(e);
    return out;
  }

  private find(key: string): Entry | undefined {
    const e = this.byKey.get(key);
    if (e !== undefined) return e;
    try {
      const canonical = formatPrefix(parsePrefix(key));
      return canonical === key ? undefined : this.byKey.get(canonical);
    } catch {
      return undefined;
    }
  }

  private insert(e: Entry, space?: Space, off?: Offset): void {
    this.byKey.add(e.a.key, e);
    if (e.a.vmId) {
      let tail = this.vmHeadFor === e.a.vmId ? this.vmHead : this.byVm.get(e.a.vmId);
      if (tail === undefined) this.byVm.add(e.a.vmId, e);
      else {
        while (tail.vmNext) tail = tail.vmNext;
        tail.vmNext = e;
        e.vmPrev = tail;
      }
    }
    this.vmHeadFor = undefined;
    if (e.pool) e.pool.attach(e, space, off);
    else {
      const k = net64Key(e.net);
      const inf = this.orphan64.get(k) ?? { n128: 0, whole: undefined };
      if (e.whole) inf.whole = e;
      else inf.n128++;
      this.orphan64.set(k, inf);
    }
  }

  private drop(e: Entry): void {
    e.gone = true;
    this.byKey.remove(e.a.key);
    if (e.a.vmId) {
      const { vmPrev: prev, vmNext: next } = e;
      if (prev) prev.vmNext = next;
      else if (next) this.byVm.replace(e.a.vmId, next);
      else this.byVm.remove(e.a.vmId);
      if (next) next.vmPrev = prev;
      e.vmPrev = e.vmNext = undefined;
    }
    if (e.pool) e.pool.detach(e);
    else {
      const k = net64Key(e.net);
      const inf = this.orphan64.get(k);
      if (inf) {
        if (e.whole) inf.whole = undefined;
        else inf.n128--;
        if (inf.n128 === 0 && !inf.whole) this.orphan64.delete(k);
      }
    }
  }

  private expireInto(ms: number, out: string[]): void {
    const due = this.queue.peekDue();
    if (due === undefined || due > ms) return;
    const items = this.dueScratch;
    items.length = 0;
    this.queue.popDue(ms, items);
    for (const e of items) {
      if (e.gone) continue;
      this.drop(e);
      out.push(e.a.key);
    }
    items.length = 0;
  }
}

/** A copy of `a` in quarantine (a literal, not a spread: same shape, faster). */
function withReleased(a: Allocation, releasedAt: string): Allocation {
  return {
    key: a.key, poolId: a.poolId, kind: a.kind, prefix: a.prefix, address: a.address,
    vmId: a.vmId, nicId: a.nicId, tenantId: a.tenantId, owner: a.owner, allocatedAt: a.allocatedAt, releasedAt,
  };
}

function msOf(now: Date): number {
  const ms = now instanceof Date ? now.getTime() : NaN;
  if (!Number.isFinite(ms)) throw new RangeError('now must be a valid Date');
  return ms;
}
