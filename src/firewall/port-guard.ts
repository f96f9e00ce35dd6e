import { parseInterface, parseIpv6 } from '../core/net/ipv6.js';
import type { NicRecord, VmRecord } from '../core/vm/record.js';
import { effectiveIsolation, effectiveProfile, PROFILES, type IsolationLevel, type Profile } from '../core/policy/attach.js';
import { compileClass, compileExplicitClass, type CompiledClass } from '../core/policy/compile.js';
import { refineGuard, type HostPolicy } from '../core/policy/host-policy.js';
import { parseNicRule, type NicRule } from '../core/policy/nic-rules.js';
import type { Reception, Zone } from '../core/policy/zones.js';

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
  /** Isolation and policies (docs/decisions/0024, 0027); absent = every VM at the defaults of profile high, no policy. */
  segmentation?: SegmentationSettings;
}

export interface SegmentationSettings {
  /** `default_security_profile`: the profile of a pool that sets none. */
  defaultProfile: Profile;
  /** `enable_vlans`: off, VLAN ids are recorded but do not separate. */
  vlans: boolean;
  pools: readonly { id: string; network: bigint; length: number; profile: Profile }[];
  /** Section-2 policies with the profiles they are attached to. */
  policies: readonly { id: string; profiles: readonly Profile[]; policy: HostPolicy }[];
}

/** The NIC's rule lists compiled (decision 0024) and what it logs. */
export interface PortPolicy {
  egress: CompiledClass | null;
  ingress: CompiledClass | null;
  /** Ingress rules that name their source, for packets only an explicit policy lets across a boundary. */
  explicit: CompiledClass | null;
  log: boolean;
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
  /** Who it is as a sender (its packets' mark) and whom it admits as a receiver (decision 0027). */
  zone: Zone;
  reception: Reception;
  policy: PortPolicy;
}

/** Tenant id -> its index on this host (1..16383), shared by every table that marks packets. */
export type TenantIndex = (tenantId: string) => number;

interface NicPolicyJson {
  ingress_rules?: string[];
  egress_rules?: string[];
  tenant_isolation_level?: string;
  log_security_events?: boolean;
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

type NicJson = { id?: string; ipv6?: { security?: NicSecurityJson }; security_policy?: NicPolicyJson };

/** The NIC as stored (protobuf JSON, proto field names). */
function nicJson(vm: VmRecord, nicId: string): NicJson {
  const network = (vm.config['network'] ?? []) as unknown as NicJson[];
  return network.find((n) => n.id === nicId) ?? {};
}

/** Rules were validated when the VM was created; a rule that no longer parses is dropped (fail closed: the list still ends in deny). */
function rules(list: readonly string[] | undefined): NicRule[] {
  const out: NicRule[] = [];
  for (const r of list ?? []) {
    try {
      out.push(parseNicRule(r));
    } catch {
      /* skipped */
    }
  }
  return out;
}

const asProfile = (v: unknown): Profile | '' => ((PROFILES as readonly string[]).includes(String(v)) ? (v as Profile) : '');
const asLevel = (v: unknown): IsolationLevel | '' => (['strict', 'moderate', 'none'].includes(String(v)) ? (v as IsolationLevel) : '');

/** The egress list whose records a microsegmented VM without one keeps (parsed once). */
const RECORD_ALL = [parseNicRule('allow all from any to any')];

/** Zone, reception and policy of one NIC (decisions 0024, 0027). */
function segmentation(vm: VmRecord, nic: NicRecord, json: NicJson, d: GuardDefaults, tenantIndex: TenantIndex) {
  const seg = d.segmentation ?? { defaultProfile: 'high' as Profile, vlans: false, pools: [], policies: [] };
  const addr = nic.ipv6Address ? parseInterface(nic.ipv6Address).address : undefined;
  const pool = addr === undefined ? undefined : seg.pools.find((p) => addr >> BigInt(128 - p.length) === p.network >> BigInt(128 - p.length));
  const poolProfile = pool?.profile ?? seg.defaultProfile;
  const requested = (vm.config['security_profile'] ?? {}) as { profile_name?: string; enable_network_microsegmentation?: boolean };
  const profile = effectiveProfile(asProfile(requested.profile_name), poolProfile);
  const attached = seg.policies.find((p) => p.profiles.includes(profile));
  const pj = json.security_policy ?? {};
  const vlan = seg.vlans ? (nic.vlanId ?? 0) : 0;
  const zone: Zone = {
    tenant: tenantIndex(vm.tenantId),
    vlan,
    level: effectiveIsolation(asLevel(pj.tenant_isolation_level), profile, poolProfile),
    between: attached?.policy.betweenVlans ?? 'deny',
    policyProfile: attached ? profile : null,
  };
  const ingress = rules(pj.ingress_rules);
  // Microsegmentation: the VM's own ingress rules decide which VMs reach it; without any, none does.
  const reception: Reception = { microsegmentation: requested.enable_network_microsegmentation === true && ingress.length === 0, grantedBy: [], refusedBy: [] };
  for (const p of seg.policies) {
    const rule = p.policy.segments.find((r) => (r.pool === null || r.pool === pool?.id) && (r.vlan === null || r.vlan === vlan));
    if (!rule) continue;
    for (const prof of p.profiles) (rule.action === 'allow' ? reception.grantedBy : reception.refusedBy).push(prof);
  }
  // A microsegmented VM admits no other VM, but the replies of its own connections must come back:
  // with no egress list of its own it records its flows as an `allow all` list does (decision 0027).
  const egress = rules(pj.egress_rules);
  const policy: PortPolicy = {
    egress: compileClass('egress', egress.length === 0 && reception.microsegmentation ? RECORD_ALL : egress),
    ingress: compileClass('ingress', ingress),
    explicit: compileExplicitClass(ingress),
    // High-profile VMs always have their denies sampled to the log.
    log: pj.log_security_events === true || profile === 'high',
  };
  return { zone, reception, policy, hostPolicy: attached?.policy };
}

function positive(v: number | undefined, fallback: number): number {
  return v !== undefined && v > 0 ? v : fallback;
}

/** Without an index (renders, tests), tenants are numbered in order of appearance within one call. */
function localIndex(): TenantIndex {
  const m = new Map<string, number>();
  return (t) => m.get(t) ?? (m.set(t, m.size + 1), m.size);
}

export function portGuard(vm: VmRecord, nic: NicRecord, d: GuardDefaults, tenantIndex: TenantIndex = localIndex()): PortGuard {
  const json = nicJson(vm, nic.id);
  const sec = json.ipv6?.security ?? {};
  const { zone, reception, policy, hostPolicy } = segmentation(vm, nic, json, d, tenantIndex);
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
  return refineGuard({
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
    zone,
    reception,
    policy,
  }, hostPolicy);
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

export function portGuards(vms: readonly VmRecord[], d: GuardDefaults, tenantIndex: TenantIndex = localIndex()): PortGuard[] {
  const out: PortGuard[] = [];
  for (const vm of vms) for (const nic of vm.nics) out.push(portGuard(vm, nic, d, tenantIndex));
  return out.sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : 0));
}

function uniqueSorted(xs: bigint[]): bigint[] {
  return [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
