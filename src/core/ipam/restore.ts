// load(): turning stored rows back into entries, refusing rows that are
// malformed or that overlap (two rows for one address would mean two VMs
// sharing it, so the daemon must not start on such a store).

import { formatPrefix, parsePrefix, prefixContains } from '../net/ipv6.js';
import type { ChurnMap } from './churn-map.js';
import { HIGH64 } from './choose.js';
import type { Entry, Info64, PoolState } from './pool-state.js';
import type { Allocation } from './types.js';

/** An entry for a stored allocation, attached to the pool whose prefix holds it (undefined: none does now). */
export function entryFromStore(a: Allocation, poolList: readonly PoolState[], byId: ReadonlyMap<string, PoolState>): Entry {
  const bad = (why: string) => new Error(`stored allocation ${JSON.stringify(a.key)} is invalid: ${why}`);
  let p;
  try {
    p = parsePrefix(a.prefix);
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (formatPrefix(p) !== a.key || a.prefix !== a.key) throw bad(`key and prefix must both be the canonical ${formatPrefix(p)}`);
  if (p.length !== 64 && p.length !== 128) throw bad('only /128 and /64 allocations exist');
  if (Number.isNaN(Date.parse(a.allocatedAt))) throw bad(`allocatedAt ${JSON.stringify(a.allocatedAt)} is not a time`);
  const releasedMs = a.releasedAt === null ? NaN : Date.parse(a.releasedAt);
  if (a.releasedAt !== null && Number.isNaN(releasedMs)) throw bad(`releasedAt ${JSON.stringify(a.releasedAt)} is not a time`);
  const whole = p.length === 64;
  const network = p.network;
  const fits = (q: PoolState) => prefixContains(q.prefix, network) && (!whole || q.spec.length <= 64);
  const home = byId.get(a.poolId);
  const pool = home && fits(home) ? home : poolList.find(fits);
  return {
    a: { ...a }, pool, net: network, whole, idx64: pool ? pool.idx64(network) : 0,
    releasedMs, due: NaN, vmPrev: undefined, vmNext: undefined, poolSec: NaN, tenantSec: NaN, gone: false, space: undefined, off: 0,
  };
}

/** Key of the /64 holding `net` in maps (a string: V8 gives large BigInt keys one hash). */
export const net64Key = (net: bigint): string => (net >> 64n).toString(16);

/** Throws when `e` overlaps an entry already loaded. */
export function checkNoOverlap(e: Entry, byKey: ChurnMap<string, Entry>, orphan64: ReadonlyMap<string, Info64>): void {
  const clash = (other: string) => new Error(`stored allocations ${e.a.key} and ${other} overlap`);
  const same = byKey.get(e.a.key);
  if (same) throw clash(same.a.key);
  const inf = e.pool ? e.pool.info.get(e.idx64) : orphan64.get(net64Key(e.net));
  const cover = inf?.whole ?? orphan64.get(net64Key(e.net))?.whole;
  if (!e.whole && cover) throw clash(cover.a.key);
  // A /64 must not cover a /128 (in its pool, or, for a /64 outside every pool, anywhere).
  if (e.whole && ((inf && inf.n128 > 0) || !e.pool)) {
    for (const x of byKey.values()) if (!x.whole && (x.net & HIGH64) === e.net) throw clash(x.a.key);
  }
}
