// PURE: which rules of other tables set the packet mark (skb->mark).
// metald reads a non-zero mark on traffic towards a VM as the sending VM's
// tenant and VLAN (decision 0027): a mark some other table (or iptables-nft's
// MARK / CONNMARK targets) puts on traffic routed to a VM is judged by tenant
// isolation as if a VM had sent it, and is mostly dropped.

export interface TableRef { family: string; name: string }

/** "family table/chain" of every rule outside `own` that can set the mark, once per chain. */
export function foreignMarkSetters(ruleset: unknown, own: readonly TableRef[]): string[] {
  const items = (ruleset as { nftables?: unknown[] } | undefined)?.nftables ?? [];
  const mine = new Set(own.map((t) => `${t.family} ${t.name}`));
  const out = new Set<string>();
  for (const item of items) {
    const rule = (item as { rule?: { family?: string; table?: string; chain?: string; expr?: unknown } }).rule;
    if (!rule || mine.has(`${rule.family} ${rule.table}`)) continue;
    if (setsMark(rule.expr)) out.add(`${rule.family} ${rule.table}/${rule.chain}`);
  }
  return [...out];
}

function setsMark(node: unknown): boolean {
  if (Array.isArray(node)) return node.some(setsMark);
  if (node === null || typeof node !== 'object') return false;
  const o = node as Record<string, unknown>;
  const mangle = o['mangle'] as { key?: { meta?: { key?: string } } } | undefined;
  if (mangle?.key?.meta?.key === 'mark') return true;
  // iptables-nft rules nft cannot translate: `xt target MARK` / `CONNMARK` (--restore-mark sets it).
  const xt = o['xt'] as { type?: string; name?: string } | undefined;
  if (xt?.type === 'target' && (xt.name === 'MARK' || xt.name === 'CONNMARK')) return true;
  return Object.values(o).some(setsMark);
}
