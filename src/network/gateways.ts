import { formatIpv6, parseIpv6, parsePrefix } from '../core/net/ipv6.js';
import type { DesiredBridge } from './desired.js';

// PURE: the gateways of VM subnets on a bridge (SPEC-NOTES 7), without an
// interface address each (docs/decisions/0030). Every IPv6 address add walks
// every address in the namespace (addrconf_verify_rtnl), so 10k per-VM /64
// gateways made each VM create cost ~0.6 ms more than at 1k. Instead, per gateway:
//   - a permanent neighbour entry `<gw> lladdr <bridge MAC> router` on the
//     bridge: with neigh_suppress on one port of it (the ND port, holding the
//     bridge MAC's fdb entry), the bridge answers the VMs' Neighbour
//     Solicitations for <gw> itself (br_do_suppress_nd), with the router flag;
//   - `local <gw>/128 dev <bridge>` in table local: traffic to it is the host's
//     (ping, or a service listening on it);
// and per VM subnet an on-link route `<subnet> dev <bridge>`. All three are
// hashed or tree inserts: their cost does not grow with the number of VMs.
// All carry rtnetlink protocol GATEWAY_PROTO, which marks them as metald's.

/** rtnetlink protocol of metald's gateway neighbours and routes (109 is the routed attachment's). */
export const GATEWAY_PROTO = 110;
/** The metric the on-link routes get: the kernel's for prefix routes, as the gateway addresses' routes had. */
export const SUBNET_METRIC = 256;

/** What the kernel has of ours on one bridge (only objects carrying GATEWAY_PROTO). */
export interface KernelGateways {
  /** Gateway -> lladdr and router flag of its permanent neighbour entry. */
  neigh: Map<string, { lladdr: string; router: boolean }>;
  /** Gateways with their local route. */
  local: Set<string>;
  /** Subnets ("prefix/len") with their on-link route. */
  subnets: Set<string>;
}

export function emptyGateways(): KernelGateways {
  return { neigh: new Map(), local: new Set(), subnets: new Set() };
}

export const neighLine = (br: string, gw: string, mac: string) =>
  `neigh replace ${gw} lladdr ${mac} dev ${br} nud permanent router protocol ${GATEWAY_PROTO}`;
export const localLine = (br: string, gw: string) => `route replace local ${gw}/128 dev ${br} table local proto ${GATEWAY_PROTO}`;
export const subnetLine = (br: string, prefix: string) => `route replace ${prefix} dev ${br} proto ${GATEWAY_PROTO} metric ${SUBNET_METRIC}`;
export const neighDel = (br: string, gw: string) => `neigh del ${gw} dev ${br}`;
export const localDel = (br: string, gw: string) => `route del local ${gw}/128 dev ${br} table local proto ${GATEWAY_PROTO}`;
export const subnetDel = (br: string, prefix: string) => `route del ${prefix} dev ${br} proto ${GATEWAY_PROTO} metric ${SUBNET_METRIC}`;

/** Lines removing what `have` has of these gateways and subnets on `br` (a VM's last user gone). */
export function removalLines(br: string, gateways: readonly string[], subnets: readonly string[], have: KernelGateways | undefined): string[] {
  return [
    ...subnets.filter((p) => have?.subnets.has(p)).map((p) => subnetDel(br, p)),
    ...gateways.filter((g) => have?.local.has(g)).map((g) => localDel(br, g)),
    ...gateways.filter((g) => have?.neigh.has(g)).map((g) => neighDel(br, g)),
  ];
}

/** The lines making one gateway answer on `br`. */
export function gatewayLines(br: string, gw: string, mac: string): string[] {
  return [neighLine(br, gw, mac), localLine(br, gw)];
}

type Obj = Record<string, unknown>;

/**
 * From `ip -j -6 neigh show nud permanent` and `ip -j -6 route show table all
 * proto 110`: what each of `bridges` has of ours. Other devices, and objects
 * without our protocol, are not ours and never looked at.
 */
export function parseGatewayView(neighs: readonly Obj[], routes: readonly Obj[], bridges: ReadonlySet<string>): Map<string, KernelGateways> {
  const out = new Map<string, KernelGateways>();
  const of = (br: string) => {
    let g = out.get(br);
    if (!g) out.set(br, (g = emptyGateways()));
    return g;
  };
  for (const n of neighs) {
    const dev = n['dev'];
    if (typeof dev !== 'string' || !bridges.has(dev) || String(n['protocol']) !== String(GATEWAY_PROTO) || typeof n['dst'] !== 'string') continue;
    of(dev).neigh.set(canonAddr(n['dst']), { lladdr: String(n['lladdr'] ?? '').toLowerCase(), router: 'router' in n });
  }
  // The dump is filtered by protocol already, so the entries carry no protocol field.
  for (const r of routes) {
    const dev = r['dev'];
    if (typeof dev !== 'string' || !bridges.has(dev) || typeof r['dst'] !== 'string') continue;
    if (r['type'] === 'local' && r['table'] === 'local') of(dev).local.add(canonAddr(r['dst']));
    else if (r['type'] === undefined && r['table'] === undefined && r['metric'] === SUBNET_METRIC) of(dev).subnets.add(canonPrefix(r['dst']));
  }
  return out;
}

function canonAddr(s: string): string {
  return formatIpv6(parseIpv6(s.split('/')[0]!));
}

function canonPrefix(s: string): string {
  const p = parsePrefix(s.includes('/') ? s : `${s}/128`);
  return `${formatIpv6(p.network)}/${p.length}`;
}

/**
 * Lines making the gateways and subnets of configured bridges match `want`.
 * With prune, ours that nothing wants go (routes before the neighbour, so a
 * gateway never answers ND while nothing takes its traffic).
 */
export function planGateways(
  want: readonly DesiredBridge[], view: ReadonlyMap<string, KernelGateways>, macOf: (bridge: string) => string, prune: boolean,
): string[] {
  const lines: string[] = [];
  for (const b of want) {
    const have = view.get(b.name) ?? emptyGateways();
    const mac = macOf(b.name).toLowerCase();
    const gws = new Set<string>();
    for (const g of b.gateways) {
      gws.add(g.address);
      const n = have.neigh.get(g.address);
      if (!n || n.lladdr !== mac || !n.router) lines.push(neighLine(b.name, g.address, mac));
      if (!have.local.has(g.address)) lines.push(localLine(b.name, g.address));
    }
    const nets = new Set<string>();
    for (const s of b.subnets) {
      nets.add(s.prefix);
      if (!have.subnets.has(s.prefix)) lines.push(subnetLine(b.name, s.prefix));
    }
    if (!prune) continue;
    for (const p of [...have.subnets].sort()) if (!nets.has(p)) lines.push(subnetDel(b.name, p));
    for (const g of [...have.local].sort()) if (!gws.has(g)) lines.push(localDel(b.name, g));
    for (const g of [...have.neigh.keys()].sort()) if (!gws.has(g)) lines.push(neighDel(b.name, g));
  }
  return lines;
}

/**
 * What the bridge plane knows is in place once `b`'s gateways were planned and
 * applied: `into` (the kernel's, or the plane's picture) with them added. In
 * place: the fast path calls this per VM with 10k others in the picture.
 */
export function addGatewaysTo(into: KernelGateways, b: DesiredBridge, mac: string): KernelGateways {
  for (const g of b.gateways) {
    into.neigh.set(g.address, { lladdr: mac, router: true });
    into.local.add(g.address);
  }
  for (const s of b.subnets) into.subnets.add(s.prefix);
  return into;
}

// --- the ND port --------------------------------------------------------------------------------

/**
 * Bridge port settings of the ND port: it answers nothing itself and receives
 * nothing (no flooding to it, no learning), it only marks the bridge MAC's fdb
 * entry as one whose neighbours the bridge answers for.
 */
export const ND_PORT_SETTINGS = { neigh_suppress: true, learning: false, flood: false, mcast_flood: false, bcast_flood: false } as const;

export function ndPortOk(details: Record<string, unknown> | undefined): boolean {
  return details !== undefined && Object.entries(ND_PORT_SETTINGS).every(([k, v]) => details[k] === v);
}

/** `ip -batch` lines attaching the ND port to its bridge with its settings. */
export function ndPortLines(br: string, port: string, mtu: number): string[] {
  const settings = Object.entries(ND_PORT_SETTINGS).map(([k, v]) => `${k} ${v ? 'on' : 'off'}`).join(' ');
  return [`link set dev ${port} master ${br} mtu ${mtu} up`, `link set dev ${port} type bridge_slave ${settings}`];
}

/** `bridge -batch` line pointing the bridge MAC's (local, permanent) fdb entry at the ND port. */
export function macOwnerLine(port: string, mac: string): string {
  return `fdb replace ${mac.toLowerCase()} dev ${port} master permanent`;
}
