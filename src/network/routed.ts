import { formatIpv6, parseInterface, parsePrefix } from '../core/net/ipv6.js';
import type { VmRecord } from '../core/vm/record.js';

// PURE: the routed attachment (docs/decisions/0021). No bridge: each VM NIC's
// host device is a point-to-point link carrying the host's fe80::1, and the
// NIC's /128 (or its /64 in prefix mode) is routed to that device. Same input,
// same output; the plane reads the kernel and applies the steps.

export const ROUTED_HOST_ADDRESS = 'fe80::1';
/** rtnetlink protocol number marking metald's routes (not in /etc/iproute2/rt_protos). */
export const ROUTED_PROTO = 109;

export interface RoutedAttachment { name: string; mtu: number }

export interface DesiredRoute {
  device: string;
  mtu: number;
  /** Canonical "prefix/len" routed to the device. */
  dst: string;
  vmId: string;
}

/** The routes the routed NICs of these VMs need (NICs without an address get the link only). */
export function desiredRoutes(attachments: readonly RoutedAttachment[], vms: readonly VmRecord[]): DesiredRoute[] {
  const byName = new Map(attachments.map((a) => [a.name, a]));
  const out: DesiredRoute[] = [];
  for (const vm of vms) {
    if (vm.state === 'deleting') continue;
    for (const n of vm.nics) {
      const a = byName.get(n.bridge);
      if (!a) continue;
      out.push({ device: n.hostDevice, mtu: a.mtu, dst: routedDst(n.ipv6Allocation, n.ipv6Address), vmId: vm.id });
    }
  }
  return out.sort((x, y) => (x.device < y.device ? -1 : x.device > y.device ? 1 : 0));
}

/** What is routed to the NIC: its allocation (/128 or /64), else its address as a /128; "" without IPv6. */
export function routedDst(allocation: string, address: string): string {
  if (allocation !== '') {
    const p = parsePrefix(allocation);
    return `${formatIpv6(p.network)}/${p.length}`;
  }
  if (address === '') return '';
  return `${formatIpv6(parseInterface(address).address)}/128`;
}

/** Sysctls a routed host device needs: IPv6 on (the data plane turns it off by default), no RAs or redirects taken. */
export function routedSysctls(device: string): string[] {
  return ['disable_ipv6=0', 'forwarding=1', 'accept_ra=0', 'accept_redirects=0'].map((kv) => `net/ipv6/conf/${device}/${kv}`);
}

const linkLine = (r: DesiredRoute) => `link set dev ${r.device} mtu ${r.mtu} up`;
const addressLine = (r: DesiredRoute) => `address replace ${ROUTED_HOST_ADDRESS}/64 dev ${r.device} nodad`;
const routeLine = (r: DesiredRoute) => `route replace ${r.dst} dev ${r.device} proto ${ROUTED_PROTO}`;

/** Idempotent `ip -batch` lines for one routed NIC (run after its sysctls). */
export function routedLines(r: DesiredRoute): string[] {
  return [linkLine(r), addressLine(r), ...(r.dst ? [routeLine(r)] : [])];
}

export interface RoutedKernelView {
  /** Devices that exist: mtu and up. */
  links: Map<string, { mtu: number; up: boolean }>;
  /** Devices carrying fe80::1. */
  hostAddress: Set<string>;
  /** Our routes as "dst dev". */
  routes: Set<string>;
}

type Obj = Record<string, unknown>;

/** From `ip -j link show`, `ip -j -6 addr show to fe80::1/128` and `ip -j -6 route show proto 109`. */
export function parseRoutedView(links: readonly Obj[], addrs: readonly Obj[], routes: readonly Obj[]): RoutedKernelView {
  const view: RoutedKernelView = { links: new Map(), hostAddress: new Set(), routes: new Set() };
  for (const l of links) {
    if (typeof l['ifname'] !== 'string') continue;
    const flags = Array.isArray(l['flags']) ? l['flags'] : [];
    view.links.set(l['ifname'].split('@')[0]!, { mtu: Number(l['mtu']), up: flags.includes('UP') });
  }
  for (const a of addrs) if (typeof a['ifname'] === 'string') view.hostAddress.add(a['ifname'].split('@')[0]!);
  for (const r of routes) {
    if (typeof r['dst'] !== 'string' || typeof r['dev'] !== 'string') continue;
    view.routes.add(`${canonicalDst(r['dst'])} ${r['dev']}`);
  }
  return view;
}

function canonicalDst(dst: string): string {
  const p = parsePrefix(dst.includes('/') ? dst : `${dst}/128`);
  return `${formatIpv6(p.network)}/${p.length}`;
}

export interface RoutedPlan {
  /** Devices whose sysctls are written first. */
  sysctlDevices: string[];
  lines: string[];
}

/**
 * Steps from the view to `want`. Devices that do not exist yet are left for
 * later. With prune, routes of ours that nothing wants are deleted.
 */
export function planRouted(want: readonly DesiredRoute[], view: RoutedKernelView, prune: boolean): RoutedPlan {
  const plan: RoutedPlan = { sysctlDevices: [], lines: [] };
  const wanted = new Set<string>();
  for (const r of want) {
    const l = view.links.get(r.device);
    if (r.dst) wanted.add(`${r.dst} ${r.device}`);
    if (!l) continue;
    if (!view.hostAddress.has(r.device)) plan.sysctlDevices.push(r.device);
    if (l.mtu !== r.mtu || !l.up) plan.lines.push(linkLine(r));
    if (!view.hostAddress.has(r.device)) plan.lines.push(addressLine(r));
    if (r.dst && !view.routes.has(`${r.dst} ${r.device}`)) plan.lines.push(routeLine(r));
  }
  if (prune) {
    for (const key of [...view.routes].sort()) {
      if (wanted.has(key)) continue;
      const [dst, dev] = key.split(' ');
      plan.lines.push(`route del ${dst} dev ${dev} proto ${ROUTED_PROTO}`);
    }
  }
  return plan;
}
