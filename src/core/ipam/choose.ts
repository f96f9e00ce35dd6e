// Which pool and which prefix a request gets (or why it gets none). Reads the
// allocator's state through AllocView and changes nothing: Ipam records the
// pick after the rate limit agrees.

import type { MetaldError } from '../errors.js';
import { invalidArgument } from '../errors.js';
import { formatIpv6, formatPrefix, prefixContains } from '../net/ipv6.js';
import { formatWithOffset } from './fast-format.js';
import { alreadyExists, anycast, poolFull, privacyAdvice, taken, tenantPoolsText, tooSmallForWhole } from './messages.js';
import { offsetToBigInt, type Offset } from './offset-set.js';
import { LOW64, type Entry, type PoolState, type Space } from './pool-state.js';
import type { AllocationRequest } from './types.js';

export const HIGH64 = ~LOW64;
/** A prefix-mode NIC's stable address inside its /64 (the guide's "…:100::10"). */
export const PREFIX_HOST_OFFSET = 0x10n;

export interface AllocView {
  readonly poolList: readonly PoolState[];
  poolById(id: string): PoolState | undefined;
  /** The allocation (in use or quarantined) with this key. */
  entry(key: string): Entry | undefined;
  /** A whole-/64 allocation outside every pool covering this /64 (config changed since). */
  orphanWhole(net64: bigint): Entry | undefined;
  readonly quarantineMs: number;
}

/** A checked choice: the /128 (or the /64's network) `net`, and the NIC's address text. */
export interface Pick {
  pool: PoolState;
  net: bigint;
  whole: boolean;
  text: string;
  /** Where an auto-assigned /128 was found (lets Ipam mark it without recomputing). */
  space?: Space;
  off?: Offset;
}

export function pickStatic(v: AllocView, req: AllocationRequest, addr: bigint): Pick {
  const f = `${req.field}.address`;
  const text = formatIpv6(addr);
  let pool: PoolState | undefined;
  if (req.poolId) {
    pool = namedPool(v, req);
    if (!prefixContains(pool.prefix, addr)) throw invalidArgument(f, `${text} is not in pool ${pool.spec.id} (${pool.prefixText})`);
  } else {
    for (const p of v.poolList) if (prefixContains(p.prefix, addr)) pool ??= p;
    if (!pool) throw invalidArgument(f, `${text} is not in any address pool; ${tenantPoolsText(v.poolList, req.tenantId)}`);
    if (!pool.tenantAllowed(req.tenantId)) {
      throw invalidArgument(f, `pool ${pool.spec.id} (${pool.prefixText}) is not available to tenant ${req.tenantId}; ${tenantPoolsText(v.poolList, req.tenantId)}`);
    }
  }
  if (pool.spec.mode === 'prefix' || req.wholePrefix) {
    const net = addr & HIGH64;
    checkStaticWhole(v, req, pool, addr, net);
    return { pool, net, whole: true, text };
  }
  if (pool.reserved.has(addr)) throw alreadyExists(f, `${text} is reserved in pool ${pool.spec.id} and never handed out`);
  if ((addr & LOW64) === 0n) throw anycast(f, addr);
  const bridge = pool.hostAddrs.get(addr);
  if (bridge !== undefined) throw alreadyExists(f, `${text} is an address of bridge ${bridge} and never handed out`);
  const holder = v.entry(`${text}/128`) ?? pool.info.get(pool.idx64(addr))?.whole ?? v.orphanWhole(addr & HIGH64);
  if (holder) throw taken(f, text, holder, req, v.quarantineMs);
  return { pool, net: addr, whole: false, text };
}

/** A static request for the /64 around `addr`: a prefix-mode pool, or privacy extensions (wholePrefix). */
function checkStaticWhole(v: AllocView, req: AllocationRequest, pool: PoolState, addr: bigint, net: bigint): void {
  const f = `${req.field}.address`;
  const privacy = pool.spec.mode === 'address';
  if (pool.set64 === undefined) throw tooSmallForWhole(req, pool);
  const netText = formatPrefix({ network: net, length: 64 });
  if (addr === net) throw anycast(f, addr);
  const idx = pool.idx64(addr);
  const inf = pool.info.get(idx);
  if (inf?.whole) throw taken(f, netText, inf.whole, req, v.quarantineMs);
  const why = pool.permReason(idx);
  if (why !== undefined) {
    if (privacy) throw notOwn(req, pool, netText, why);
    throw alreadyExists(f, `${netText} is never handed out by prefix-mode pool ${pool.spec.id}: ${why}`);
  }
  if (inf && inf.n128 > 0) {
    if (privacy) throw notOwn(req, pool, netText, `it already holds ${inf.n128} other address allocation(s)`);
    throw alreadyExists(f, `${netText} is already in use`);
  }
}

function notOwn(req: AllocationRequest, pool: PoolState, netText: string, why: string): MetaldError {
  return invalidArgument(`${req.field}.enable_privacy_extensions`, `${netText} cannot be this NIC's own /64: ${why}; ${privacyAdvice(pool)}`);
}

export function pickAuto(v: AllocView, req: AllocationRequest): Pick {
  let pool: PoolState | undefined;
  if (req.poolId) {
    pool = namedPool(v, req);
    if (!pool.spec.autoAssign && !req.owner) {
      throw invalidArgument(
        `${req.field}.address`,
        `pool ${pool.spec.id} hands out addresses only on explicit request (auto_assign: false): give an address inside ${pool.prefixText}`,
      );
    }
  } else {
    for (const p of v.poolList) {
      if (p.spec.autoAssign && p.tenantAllowed(req.tenantId)) {
        pool = p;
        break;
      }
    }
    if (!pool) {
      throw invalidArgument(
        `${req.field}.address`,
        `no pool assigns addresses automatically to tenant ${req.tenantId}: give an address explicitly; ${tenantPoolsText(v.poolList, req.tenantId)}`,
      );
    }
  }
  if (pool.spec.mode === 'prefix' || req.wholePrefix) {
    const set = pool.set64;
    if (set === undefined) throw tooSmallForWhole(req, pool);
    const idx = set.lowestFree();
    if (idx === undefined) throw poolFull(pool, `no free /64 in ${pool.prefixText}`);
    const net = pool.net64(Number(idx));
    return { pool, net, whole: true, text: formatIpv6(net + PREFIX_HOST_OFFSET) };
  }
  const space = (req.bridge !== undefined ? pool.bridgeSpaces.get(req.bridge) : undefined) ?? pool.defaultSpace!;
  if (pool.info.get(space.idx64)?.whole || v.orphanWhole(space.network & HIGH64)) {
    throw poolFull(pool, `${noFreeIn(space)}: its /64 is allocated as a whole`);
  }
  const off = space.set.lowestFree();
  if (off === undefined) throw poolFull(pool, noFreeIn(space));
  const net = space.network + offsetToBigInt(off);
  return { pool, net, whole: false, text: addressText(space, off, net), space, off };
}

function noFreeIn(space: Space): string {
  return `no free address in ${space.label}${space.bridge ? `, the subnet of bridge ${space.bridge}` : ''}`;
}

function addressText(space: Space, off: Offset, net: bigint): string {
  if (typeof off !== 'number') return formatIpv6(net);
  const last = space.base[7]! + off;
  if (off < 65536 && last !== 0 && space.lastPrefix !== '') return space.lastPrefix + last.toString(16);
  return formatWithOffset(space.base, off);
}

function namedPool(v: AllocView, req: AllocationRequest): PoolState {
  const pool = v.poolById(req.poolId!);
  if (!pool) throw invalidArgument(`${req.field}.pool_id`, `no pool ${JSON.stringify(req.poolId)}; ${tenantPoolsText(v.poolList, req.tenantId)}`);
  if (!pool.tenantAllowed(req.tenantId)) {
    throw invalidArgument(
      `${req.field}.pool_id`,
      `pool ${pool.spec.id} (${pool.prefixText}) is not available to tenant ${req.tenantId}; ${tenantPoolsText(v.poolList, req.tenantId)}`,
    );
  }
  return pool;
}
