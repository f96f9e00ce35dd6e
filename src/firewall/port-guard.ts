import { parseInterface, parseIpv6 } from '../core/net/ipv6.js';
import type { NicRecord, VmRecord } from '../core/vm/record.js';

// PURE: what the guards of one VM port must enforce, from the VM as stored
// and the host's security settings (docs/decisions/0017). Everything the
// ruleset needs per port is here as plain values, so the renderer and the
// element updates are functions of this and nothing else.

export const RATE_KINDS = ['nd', 'icmp', 'mcast', 'ra'] as const;
export type RateKind = (typeof RATE_KINDS)[number];

/** Host-wide settings a NIC inherits when its own `ipv6.security` leaves a value unset. */
export interface GuardDefaults {
  raGuard: boolean;
  sourceGuard: boolean;
  extensionHeaderFiltering: boolean;
  /** Packets per second. */
  rates: Record<RateKind, number>;
  /** Per bridge: RA guard switch, allowed RA sources as configured, MLD snooping. */
  bridges: ReadonlyMap<string, BridgeGuardSettings>;
}

export interface BridgeGuardSettings {
  /** `mode: routed` (decision 0021): the NIC's host device is not a bridge port. */
  routed?: boolean;
  raGuard: boolean;
  allowedRaSources: readonly string[];
  mldSnooping: boolean;
}

export interface PortGuard {
  device: string;
  vmId: string;
  tenantId: string;
  nicId: string;
  bridge: string;
  mac: string;
  /** IsolateVm: the port sends and receives nothing. */
  isolated: boolean;
  /** Guarded on the IP hooks (routed attachment), not the bridge hooks. */
  routed: boolean;
  raGuard: boolean;
  sourceGuard: boolean;
  /** Exact sources (and NA targets) the VM may use: its address, its SLAAC address, its link-local. */
  sources128: bigint[];
  /** Upper 64 bits of /64s the VM may use as a whole: its own /64, fe80::/64 when not strict. */
  sources64: bigint[];
  blockHopByHop: boolean;
  /** MLD (which always carries a Router Alert HBH option) stays allowed: SPEC-NOTES 3. */
  allowMldHopByHop: boolean;
  blockRouting: boolean;
  blockFragment: boolean;
  blockDestinationOptions: boolean;
  rates: Record<RateKind, number>;
  /** Link-local sources of other routers whose RAs may be forwarded to this VM (SPEC-NOTES 1). */
  raSources: bigint[];
}

interface NicSecurityJson {
  enable_ra_guard?: boolean;
  allowed_ra_sources?: string[];
  enable_source_guard?: boolean;
  strict_source_validation?: boolean;
  block_hop_by_hop?: boolean;
  block_routing_header?: boolean;
  block_fragment_header?: boolean;
  block_destination_options?: boolean;
  nd_rate_limit?: number;
  icmpv6_rate_limit?: number;
  multicast_rate_limit?: number;
  ra_rate_limit?: number;
}

const LINK_LOCAL_64 = 0xfe80_0000_0000_0000n;

/** Modified EUI-64 interface identifier of a MAC (RFC 4291 appendix A). */
export function eui64(mac: string): bigint {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  const bytes = [b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  return bytes.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
}

/** The NIC's `ipv6.security` block from the stored request (protobuf JSON, proto field names). */
function nicSecurity(vm: VmRecord, nicId: string): NicSecurityJson {
  const network = (vm.config['network'] ?? []) as unknown as { id?: string; ipv6?: { security?: NicSecurityJson } }[];
  return network.find((n) => n.id === nicId)?.ipv6?.security ?? {};
}

function positive(v: number | undefined, fallback: number): number {
  return v !== undefined && v > 0 ? v : fallback;
}

export function portGuard(vm: VmRecord, nic: NicRecord, d: GuardDefaults): PortGuard {
  const sec = nicSecurity(vm, nic.id);
  const bridge = d.bridges.get(nic.bridge);
  const sourceGuard = sec.enable_source_guard ?? d.sourceGuard;
  // Same reading as the validation that gave the NIC its /64 (docs/decisions/0012).
  const strict = sec.strict_source_validation ?? sec.enable_source_guard ?? d.sourceGuard;
  const filtering = d.extensionHeaderFiltering;
  const iid = eui64(nic.mac);
  const sources128 = [LINK_LOCAL_64 << 64n | iid];
  const sources64: bigint[] = strict ? [] : [LINK_LOCAL_64];
  if (nic.ipv6Address) {
    const a = parseInterface(nic.ipv6Address);
    const upper = a.address >> 64n;
    sources128.push(a.address);
    if (nic.ipv6Allocation.endsWith('/64')) sources64.push(upper);
    // The guest also forms a SLAAC address from its MAC in an on-link /64 that radvd advertises.
    else if (a.length === 64) sources128.push((upper << 64n) | iid);
  }
  return {
    device: nic.hostDevice,
    vmId: vm.id,
    tenantId: vm.tenantId,
    nicId: nic.id,
    bridge: nic.bridge,
    mac: nic.mac,
    isolated: vm.isolated,
    routed: bridge?.routed ?? false,
    raGuard: sec.enable_ra_guard ?? (d.raGuard && (bridge?.raGuard ?? true)),
    sourceGuard,
    sources128: uniqueSorted(sources128),
    sources64: uniqueSorted(sources64),
    blockHopByHop: sec.block_hop_by_hop ?? filtering,
    allowMldHopByHop: bridge?.mldSnooping ?? true,
    blockRouting: sec.block_routing_header ?? filtering,
    // Off unless asked for: it breaks large UDP (EDNS) and some PMTUD (SPEC-NOTES 4).
    blockFragment: sec.block_fragment_header ?? false,
    blockDestinationOptions: sec.block_destination_options ?? false,
    rates: {
      nd: positive(sec.nd_rate_limit, d.rates.nd),
      icmp: positive(sec.icmpv6_rate_limit, d.rates.icmp),
      mcast: positive(sec.multicast_rate_limit, d.rates.mcast),
      ra: positive(sec.ra_rate_limit, d.rates.ra),
    },
    raSources: raSources(bridge, sec.allowed_ra_sources ?? []),
  };
}

/**
 * SPEC-NOTES 1: RAs always come from a link-local address. The bridge's own
 * RAs (metald's radvd; an allowed source naming one of the bridge's addresses)
 * are sent by the host and need no entry; link-local entries name other
 * routers on the bridge and are taken as they are; any other global address
 * cannot be matched to a link-local source and is left out (fail closed;
 * `metald config check` says so).
 */
export function raSources(bridge: BridgeGuardSettings | undefined, nicAllowed: readonly string[]): bigint[] {
  const listed = [...(bridge?.allowedRaSources ?? []), ...nicAllowed].map(parseIpv6);
  return uniqueSorted(listed.filter((a) => a >> 118n === 0xfe80n >> 6n));
}

export function portGuards(vms: readonly VmRecord[], d: GuardDefaults): PortGuard[] {
  const out: PortGuard[] = [];
  for (const vm of vms) for (const nic of vm.nics) out.push(portGuard(vm, nic, d));
  return out.sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : 0));
}

function uniqueSorted(xs: bigint[]): bigint[] {
  return [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
