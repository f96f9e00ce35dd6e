import { randomBytes } from 'node:crypto';
import { CommandError } from '../kernel/exec.js';
import { ipIn, ipJson, linkDelete, netnsAdd, netnsDelete } from '../kernel/netns.js';

// What the running kernel can do for the network planes, found by trying it
// rather than by parsing /proc/config.gz (not every kernel ships it, and a
// feature can be compiled in yet refused in a namespace).

export interface VlanFilteringSupport {
  supported: boolean;
  /** What the probe saw, for logs and for the isolation issue's decision. */
  detail: string;
}

const cache = new Map<string, Promise<VlanFilteringSupport>>();

/**
 * Whether a bridge can have `vlan_filtering 1` (CONFIG_BRIDGE_VLAN_FILTERING).
 * The probe creates a throw-away bridge `mtdvf<hex>` in `netns` — a data-plane
 * namespace metald owns — and deletes it at once. With `netns` undefined
 * (production in the root namespace) it probes in a scratch namespace
 * instead, so nothing ever appears on the host's own links. The answer is
 * cached per process: kernel features do not change while we run.
 */
export function detectVlanFiltering(netns: string | undefined): Promise<VlanFilteringSupport> {
  const key = netns ?? '';
  let p = cache.get(key);
  if (!p) {
    p = probe(netns);
    // A failed probe (e.g. the namespace vanished) must not be remembered.
    p.catch(() => cache.delete(key));
    cache.set(key, p);
  }
  return p;
}

async function probe(netns: string | undefined): Promise<VlanFilteringSupport> {
  const hex = randomBytes(4).toString('hex');
  const scratch = netns === undefined ? `metald-probe-${hex}` : undefined;
  const ns = netns ?? scratch!;
  const name = `mtdvf${hex.slice(0, 6)}`;
  if (scratch) await netnsAdd(scratch);
  try {
    try {
      await ipIn(ns, ['link', 'add', 'name', name, 'type', 'bridge', 'vlan_filtering', '1']);
    } catch (err) {
      if (err instanceof CommandError && /not supported|Unknown|Invalid argument/i.test(err.stderr)) {
        return { supported: false, detail: `ip link add type bridge vlan_filtering 1: ${err.stderr.trim()}` };
      }
      throw err;
    }
    try {
      const [link] = await ipJson(ns, ['-d', 'link', 'show', 'dev', name]);
      const data = ((link?.['linkinfo'] as Record<string, unknown> | undefined)?.['info_data'] ?? {}) as Record<string, unknown>;
      const on = data['vlan_filtering'] === 1;
      return { supported: on, detail: `bridge created with vlan_filtering 1 reads back vlan_filtering ${String(data['vlan_filtering'])}` };
    } finally {
      await linkDelete(ns, name);
    }
  } finally {
    if (scratch) await netnsDelete(scratch);
  }
}
