import type { NftObject } from '../kernel/nft.js';

// PURE: parsers for the two kernel dumps a collection tick reads.

/** Elements of one `nft -j list set` with their counters: set name and port -> packets. */
export function parseCounterSet(objs: readonly NftObject[]): { name: string; handle: number; packets: Map<string, number> } | undefined {
  for (const o of objs) {
    const set = o['set'] as { name?: string; handle?: number; elem?: unknown[] } | undefined;
    if (!set?.name) continue;
    const packets = new Map<string, number>();
    for (const e of set.elem ?? []) {
      // A counted element is {"elem": {"val": "port", "counter": {...}}}; a bare one is just the value.
      if (typeof e === 'string') {
        packets.set(e, 0);
        continue;
      }
      const inner = (e as { elem?: { val?: unknown; counter?: { packets?: unknown } } }).elem;
      if (typeof inner?.val !== 'string') continue;
      packets.set(inner.val, Number(inner.counter?.packets ?? 0));
    }
    // The handle changes when the table is replaced: every counter of the set then restarted.
    return { name: set.name, handle: Number(set.handle ?? 0), packets };
  }
  return undefined;
}

/** The JSON text nft prints for one command ({"nftables": [...]}) as objects, metainfo dropped. */
export function parseNftJson(text: string): NftObject[] {
  // 64-bit integers would lose precision as JSON numbers: quote long digit runs first (as nftList does).
  const parsed = JSON.parse(text.replace(/([[,:]\s*)(\d{16,})(?=\s*[,\]}])/g, '$1"$2"')) as { nftables?: NftObject[] };
  return (parsed.nftables ?? []).filter((o) => !('metainfo' in o));
}

export interface LinkCounters {
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

/**
 * /proc/net/dev of the data-plane namespace: "  name: rxbytes rxpackets errs drop fifo frame compressed multicast
 * txbytes txpackets ...". A quarter of the bytes of `ip -s -j link` and no process to spawn.
 */
export function parseProcNetDev(text: string): Map<string, LinkCounters> {
  const out = new Map<string, LinkCounters>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (name === '' || name.includes('|')) continue;
    const f = line.slice(colon + 1).trim().split(/\s+/);
    if (f.length < 10) continue;
    out.set(name, { rxBytes: Number(f[0]), rxPackets: Number(f[1]), txBytes: Number(f[8]), txPackets: Number(f[9]) });
  }
  return out;
}
