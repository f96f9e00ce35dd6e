import { createHash } from 'node:crypto';
import {
  addressScope, formatIpv6, formatPrefix, interfacePrefix, parseInterface, parseIpv6, prefixContains, type Prefix,
} from '../core/net/ipv6.js';
import type { VmRecord } from '../core/vm/record.js';
import type { KernelGateways } from './gateways.js';

// PURE: what the host side of the VM NICs should look like, from the bridge
// config and the VMs as stored, and the `ip` steps from a kernel view to it.
// No I/O: the bridge plane reads and writes. Same input (in any order) gives
// the same output, so two reconciles of the same state plan the same steps.

/** One bridge as the daemon derives it from `ipv6.bridge(s)` (see docs/decisions/0014). */
export interface BridgeSpec {
  name: string;
  mtu: number;
  stp: boolean;
  /** Seconds (config `forward_delay`); the kernel takes centiseconds. */
  forwardDelaySec: number;
  mldSnooping: boolean;
  /** Bridge sends MLD queries itself (guide step 1.2: multicast_querier 1). */
  querier: boolean;
  /** Seconds a learnt MAC stays in the forwarding table. */
  ageingTimeSec: number;
  /** "addr/len" configured on the bridge (config `ipv6_address`). */
  addresses: string[];
}

/** Bridge attributes exactly as `ip -d -j link show` reports them (times in centiseconds). */
export interface BridgeAttrs {
  stp_state: 0 | 1;
  forward_delay: number;
  mcast_snooping: 0 | 1;
  mcast_querier: 0 | 1;
  ageing_time: number;
  /** MLD version of the bridge's querier (and snooping): always 2 (decision 0030). */
  mcast_mld_version: 1 | 2;
}

/** An address configured on the bridge (config `ipv6_address`). */
export interface DesiredAddress {
  /** Canonical text (RFC 5952) without length. */
  address: string;
  length: number;
}

/**
 * The gateway of VM subnets on the bridge (SPEC-NOTES 7), answered without
 * being an interface address (docs/decisions/0030): a permanent neighbour
 * entry the bridge answers Neighbour Solicitations from, and a local route.
 */
export interface DesiredGateway {
  /** Canonical text. */
  address: string;
  /** VMs naming it (sorted). */
  vms: string[];
}

/** A VM subnet on the bridge: an on-link route to it. */
export interface DesiredSubnet {
  /** Canonical "prefix/len". */
  prefix: string;
  vms: string[];
}

export interface DesiredPort {
  device: string;
  mtu: number;
  vmId: string;
  nicId: string;
}

export interface DesiredBridge {
  name: string;
  mtu: number;
  attrs: BridgeAttrs;
  addresses: DesiredAddress[];
  gateways: DesiredGateway[];
  subnets: DesiredSubnet[];
  ports: DesiredPort[];
}

/** A NIC that gets no host-side plumbing, and why (logged by the plane). */
export interface SkippedNic {
  vmId: string;
  nicId: string;
  reason: string;
}

export interface DesiredHostNetwork {
  bridges: DesiredBridge[];
  skipped: SkippedNic[];
}

/** The kernel counts these in clock_t (USER_HZ = 100). */
const CENTI = 100;

export function bridgeAttrs(b: BridgeSpec): BridgeAttrs {
  return {
    stp_state: b.stp ? 1 : 0,
    forward_delay: Math.round(b.forwardDelaySec * CENTI),
    mcast_snooping: b.mldSnooping ? 1 : 0,
    // A querier without snooping is pointless and only adds traffic.
    mcast_querier: b.mldSnooping && b.querier ? 1 : 0,
    ageing_time: Math.round(b.ageingTimeSec * CENTI),
    // The querier speaks MLDv1 otherwise, which puts every guest into MLDv1
    // compatibility mode (RFC 3810 8.2.1): no source-specific multicast.
    mcast_mld_version: 2,
  };
}

interface Acc {
  spec: BridgeSpec;
  ownPrefixes: Prefix[];
  config: DesiredAddress[];
  /** Canonical gateway address -> VMs. Strings, not bigints: V8 hashes a BigInt by its low 64 bits only, and every gateway is <subnet>::1. */
  gateways: Map<string, Set<string>>;
  /** Canonical subnet prefix -> VMs. */
  subnets: Map<string, Set<string>>;
  ports: Map<string, DesiredPort>;
}

export function desiredHostNetwork(input: { bridges: BridgeSpec[]; vms: readonly VmRecord[] }): DesiredHostNetwork {
  const accs = new Map<string, Acc>();
  for (const spec of input.bridges) {
    if (accs.has(spec.name)) throw new Error(`bridge ${spec.name} is listed twice`);
    const config = spec.addresses.map((a): DesiredAddress => {
      const i = parseInterface(a);
      return { address: formatIpv6(i.address), length: i.length };
    });
    accs.set(spec.name, {
      spec,
      ownPrefixes: spec.addresses.map((a) => interfacePrefix(parseInterface(a))),
      config,
      gateways: new Map(),
      subnets: new Map(),
      ports: new Map(),
    });
  }

  const skipped: SkippedNic[] = [];
  // Sorted by id so that "first VM wins" on a duplicate host device does not depend on input order.
  const vms = [...input.vms].filter((v) => v.state !== 'deleting').sort((a, b) => cmp(a.id, b.id));
  for (const vm of vms) {
    for (const nic of vm.nics) {
      const acc = accs.get(nic.bridge);
      if (!acc) {
        skipped.push({ vmId: vm.id, nicId: nic.id, reason: nic.bridge ? `bridge ${nic.bridge} is not configured` : 'no bridge' });
        continue;
      }
      const taken = acc.ports.get(nic.hostDevice);
      if (taken) {
        skipped.push({ vmId: vm.id, nicId: nic.id, reason: `host device ${nic.hostDevice} already belongs to ${taken.vmId}/${taken.nicId}` });
        continue;
      }
      acc.ports.set(nic.hostDevice, { device: nic.hostDevice, mtu: acc.spec.mtu, vmId: vm.id, nicId: nic.id });
      const why = addGateway(acc, vm.id, nic.ipv6Address, nic.ipv6Gateway);
      if (why) skipped.push({ vmId: vm.id, nicId: nic.id, reason: why });
    }
  }

  const sorted = (m: Map<string, Set<string>>) => [...m.entries()].sort(([a], [b]) => cmp(a, b)).map(([k, v]) => [k, [...v].sort(cmp)] as const);
  const bridges = [...accs.values()].map((acc): DesiredBridge => {
    const configured = new Set(acc.config.map((a) => a.address));
    return {
      name: acc.spec.name,
      mtu: acc.spec.mtu,
      attrs: bridgeAttrs(acc.spec),
      addresses: acc.config,
      gateways: sorted(acc.gateways).filter(([a]) => !configured.has(a)).map(([address, vms]) => ({ address, vms })),
      subnets: sorted(acc.subnets).map(([prefix, vms]) => ({ prefix, vms })),
      ports: [...acc.ports.values()].sort((a, b) => cmp(a.device, b.device)),
    };
  });
  return { bridges, skipped };
}

/**
 * The bridge answers as the gateway of each VM subnet on it (SPEC-NOTES 7,
 * decisions 0008 and 0030) unless that subnet is the bridge's own: there the
 * configured address serves, and any other gateway in it is someone else's
 * router. Returns why nothing was added when that is worth logging.
 */
function addGateway(acc: Acc, vmId: string, address: string, gateway: string): string | undefined {
  if (address === '' || gateway === '') return undefined;
  let subnet: Prefix;
  let gw: bigint;
  try {
    subnet = interfacePrefix(parseInterface(address));
    gw = parseIpv6(gateway);
  } catch {
    return `unparsable address ${JSON.stringify(address)} or gateway ${JSON.stringify(gateway)}`;
  }
  if (acc.ownPrefixes.some((p) => prefixContains(p, gw))) return undefined;
  // The bridge has its own fe80 address; a link-local gateway is never ours to add.
  if (addressScope(gw) === 'link-local') return undefined;
  if (!prefixContains(subnet, gw)) return `gateway ${gateway} is outside ${address}`;
  const add = (m: Map<string, Set<string>>, key: string) => {
    const users = m.get(key);
    if (users) users.add(vmId);
    else m.set(key, new Set([vmId]));
  };
  add(acc.gateways, formatIpv6(gw));
  add(acc.subnets, formatPrefix(subnet));
  return undefined;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// --- diff against the kernel (still pure: the plane does the reading and writing) ---------------

/**
 * metald adds its addresses with an explicit prefix-route metric of 256 — the
 * kernel's default for IPv6 prefix routes, so routing is unchanged — which the
 * kernel keeps and dumps as `"metric": 256`. That marks them as ours across
 * restarts (iproute2 6.1 cannot set IFA_PROTO); addresses without it are never removed.
 */
export const OWN_ADDRESS_METRIC = 256;

/** Global IPv6 addresses of a bridge: canonical address -> length, and whether metald added it. */
export type KernelAddrs = Map<string, { length: number; ours: boolean }>;
export interface KernelBridge { ifindex: number; mtu: number; up: boolean; mac: string; attrs: Record<string, unknown>; addrs: KernelAddrs }
export interface KernelLink { master: string | undefined; mtu: number; up: boolean }
export interface KernelView {
  bridges: Map<string, KernelBridge>;
  links: Map<string, KernelLink>;
  /** The gateway side of each bridge (src/network/gateways.ts); absent = nothing of ours. */
  gateways: Map<string, KernelGateways>;
  /** Bridge port settings (`info_slave_data`) of the links read with details: the ND ports. */
  portDetails: Map<string, Record<string, unknown>>;
  /** Per bridge: the port its own MAC's fdb entry points at (the bridge itself when its name). */
  macOwner: Map<string, string>;
}

export interface HostNetworkPlan {
  /** `ip -batch` lines creating missing bridges (down: their sysctls go in before they come up). */
  create: string[];
  created: string[];
  /** Everything else, in one `ip -batch`. */
  lines: string[];
  /** Per bridge, what stops it being made (the caller fails). */
  problems: string[];
  /** Worth a log line, not a failure. */
  warnings: string[];
}

type Obj = Record<string, unknown>;
const flagsOf = (o: Obj): unknown[] => (Array.isArray(o['flags']) ? o['flags'] : []);

/** The view from `ip -d -j address show type bridge` and `ip -j link show` (gateways and ND ports added by the caller). */
export function parseKernelView(bridges: readonly Obj[], links: readonly Obj[]): KernelView {
  const view: KernelView = { bridges: new Map(), links: new Map(), gateways: new Map(), portDetails: new Map(), macOwner: new Map() };
  for (const l of links) {
    if (typeof l['ifname'] !== 'string') continue;
    const master = typeof l['master'] === 'string' ? l['master'] : undefined;
    view.links.set(l['ifname'], { master, mtu: Number(l['mtu']), up: flagsOf(l).includes('UP') });
  }
  for (const b of bridges) {
    if (typeof b['ifname'] !== 'string') continue;
    const attrs = ((b['linkinfo'] as Obj | undefined)?.['info_data'] ?? {}) as Obj;
    const addrs: KernelAddrs = new Map();
    for (const a of (b['addr_info'] as Obj[] | undefined) ?? []) {
      if (a['family'] !== 'inet6' || a['scope'] !== 'global' || typeof a['local'] !== 'string') continue;
      addrs.set(formatIpv6(parseIpv6(a['local'])), { length: Number(a['prefixlen']), ours: a['metric'] === OWN_ADDRESS_METRIC });
    }
    view.bridges.set(b['ifname'], {
      ifindex: Number(b['ifindex']), mtu: Number(b['mtu']), up: flagsOf(b).includes('UP'), mac: String(b['address'] ?? ''), attrs, addrs,
    });
  }
  return view;
}

const ATTR_KEYS = ['stp_state', 'forward_delay', 'mcast_snooping', 'mcast_querier', 'ageing_time', 'mcast_mld_version'] as const;

/**
 * A fixed, locally administered MAC for a bridge metald creates. Without one a
 * Linux bridge takes the lowest MAC of its ports, so its MAC — and the
 * link-local address VMs use as their router — would change as VMs come and go.
 */
export function bridgeMac(name: string): string {
  const h = createHash('sha256').update(`metald-bridge:${name}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export function addLine(bridge: string, address: string, length: number): string {
  return `address add ${address}/${length} dev ${bridge} nodad metric ${OWN_ADDRESS_METRIC}`;
}

export function portLine(bridge: string, device: string, mtu: number): string {
  return `link set dev ${device} master ${bridge} mtu ${mtu} up`;
}

/**
 * The steps that make `want` true of `view`. With `prune`, addresses metald
 * added that nothing wants any more are removed (full reconcile only; an
 * ensure of one VM knows too little to prune). Ports that are not devices yet
 * are left for a later call; ports on our bridges that no VM claims are left
 * alone (an uplink, or someone else's).
 */
export function planHostNetwork(want: readonly DesiredBridge[], view: KernelView, prune: boolean): HostNetworkPlan {
  const plan: HostNetworkPlan = { create: [], created: [], lines: [], problems: [], warnings: [] };
  for (const b of want) {
    const k = view.bridges.get(b.name);
    const attrArgs = (only?: KernelBridge) => ATTR_KEYS
      .filter((key) => !only || only.attrs[key] !== b.attrs[key])
      .flatMap((key) => [key, String(b.attrs[key])]);
    if (!k) {
      if (view.links.has(b.name)) {
        plan.problems.push(`${b.name}: a link of that name exists and is not a bridge; left alone`);
        continue;
      }
      plan.create.push(`link add name ${b.name} address ${bridgeMac(b.name)} mtu ${b.mtu} type bridge ${attrArgs().join(' ')}`);
      plan.created.push(b.name);
    } else {
      const diff = attrArgs(k);
      if (k.mtu !== b.mtu || diff.length > 0) {
        plan.lines.push([`link set dev ${b.name}`, ...(k.mtu !== b.mtu ? [`mtu ${b.mtu}`] : []), ...(diff.length ? ['type bridge', ...diff] : [])].join(' '));
      }
    }
    if (!k?.up) plan.lines.push(`link set dev ${b.name} up`);
    const have: KernelAddrs = k?.addrs ?? new Map();
    const wanted = new Set<string>();
    for (const a of b.addresses) {
      wanted.add(a.address);
      const cur = have.get(a.address);
      if (cur && cur.length === a.length) continue;
      if (cur && !cur.ours) {
        // Someone else's address: it still answers, so warn rather than fail VM creates.
        plan.warnings.push(`${b.name}: ${a.address}/${cur.length} was not added by metald (wanted /${a.length}); left as it is`);
        continue;
      }
      if (cur) plan.lines.push(`address del ${a.address}/${cur.length} dev ${b.name}`);
      plan.lines.push(addLine(b.name, a.address, a.length));
    }
    if (prune) {
      // Also the gateway addresses metald added before decision 0030: gone before their routes come back as ours.
      for (const [addr, cur] of have) {
        if (cur.ours && !wanted.has(addr)) plan.lines.push(`address del ${addr}/${cur.length} dev ${b.name}`);
      }
    }
    for (const p of b.ports) {
      const l = view.links.get(p.device);
      if (!l || (l.master === b.name && l.mtu === p.mtu && l.up)) continue;
      plan.lines.push(portLine(b.name, p.device, p.mtu));
    }
  }
  return plan;
}

/** A bridge's addresses once its plan has been applied (the plane's picture for the fast path). */
export function addrsAfter(b: DesiredBridge, before: KernelAddrs | undefined, prune: boolean): KernelAddrs {
  const out: KernelAddrs = new Map(before ?? []);
  if (prune) for (const [addr, cur] of out) if (cur.ours) out.delete(addr);
  for (const a of b.addresses) {
    const cur = out.get(a.address);
    if (!cur || cur.ours) out.set(a.address, { length: a.length, ours: true });
  }
  return out;
}
