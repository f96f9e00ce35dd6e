import { formatIpv6 } from '../core/net/ipv6.js';
import { RATE_KINDS, type PortGuard, type RateKind } from './port-guard.js';

// PURE: the bridge-family table that guards every VM port (docs/decisions/0017).
// Its chains and rules are fixed: nothing in them names a VM. Everything per
// port lives in set and map elements keyed by the port's name, so adding the
// (N+1)-th VM adds a constant number of elements and never a rule or chain —
// nft's own cache work then does not grow with N (a rule or chain per VM
// made `nft` dump every chain on each change: 10 ms at 1k VMs, 110 ms at 10k).
// Per-packet work is a fixed list of hash lookups.

/** Why a guard dropped a packet; one dynamic counter set per reason, keyed by port. */
export const DROP_REASONS = [
  'ra_guard', 'source_guard', 'nd_spoof', 'ext_header', 'rate_limit', 'vlan_tag', 'non_ipv6', 'dhcpv6_server',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export const PORT_SET_SIZE = 262_144;
export const ADDR_SET_SIZE = 1_048_576;

export interface GuardTableInput {
  table: string;
  ports: readonly PortGuard[];
  /** Ports on metald bridges that are not VM ports but may talk to VMs (shard uplinks, router ports). */
  trustedPorts: readonly string[];
  /** Rates every table carries a class chain for even with no VM using them (the global defaults). */
  defaultRates: Record<RateKind, number>;
  /** nflog group of sampled guard drops (the events issue reads it). */
  logGroup: number;
}

/** Set/map name -> its elements, for one port. Same text in the full table and in element updates. */
export type ElementMap = Map<string, string[]>;

const q = (s: string) => JSON.stringify(s);
const hex = (v: bigint, bits: number) => `0x${v.toString(16).padStart(bits / 4, '0')}`;

export function rateChain(kind: RateKind, rate: number): string {
  return `rl_${kind}_${rate}`;
}

/** Burst a limiter allows: small enough that a measured rate stays within 10 % over a few seconds. */
export function rateBurst(rate: number): number {
  return Math.max(5, Math.ceil(rate / 20));
}

export function portElements(p: PortGuard): ElementMap {
  const d = q(p.device);
  const m: ElementMap = new Map();
  const put = (set: string, ...els: string[]) => m.set(set, [...(m.get(set) ?? []), ...els]);
  put('vm_ports', d);
  put('known_ports', d);
  put('port_mac', `${d} . ${p.mac}`);
  put('port_lla', `${d} . 0x${p.mac.replaceAll(':', '')}`);
  put('src128', ...p.sources128.map((a) => `${d} . ${formatIpv6(a)}`));
  put('na128', ...p.sources128.map((a) => `${d} . ${hex(a, 128)}`));
  put('src64', ...p.sources64.map((u) => `${d} . ${hex(u, 64)}`));
  put('na64', ...p.sources64.map((u) => `${d} . ${hex(u, 64)}`));
  put('ra_allowed', ...p.raSources.map((a) => `${d} . ${formatIpv6(a)}`));
  if (p.raGuard) put('ra_guard', d);
  if (p.sourceGuard) put('src_guard', d);
  if (p.blockHopByHop) put(p.allowMldHopByHop ? 'block_hbh' : 'block_hbh_all', d);
  if (p.blockRouting) put('block_rt', d);
  if (p.blockFragment) put('block_frag', d);
  if (p.blockDestinationOptions) put('block_dst', d);
  for (const k of RATE_KINDS) put(`rl_${k}`, `${d} : jump ${rateChain(k, p.rates[k])}`);
  for (const r of DROP_REASONS) put(`d_${r}`, d);
  put('c_tx', d);
  put('c_rx', d);
  return m;
}

interface SetDecl {
  name: string;
  decl: string;
}

const ifSet = (name: string): SetDecl => ({ name, decl: `type ifname; size ${PORT_SET_SIZE};` });
const counterSet = (name: string): SetDecl => ({ name, decl: `type ifname; size ${PORT_SET_SIZE}; flags dynamic; counter;` });

/** Every static set and map of the table, in render order. */
export const STATIC_SETS: readonly SetDecl[] = [
  ifSet('vm_ports'),
  ifSet('known_ports'),
  { name: 'port_mac', decl: `type ifname . ether_addr; size ${PORT_SET_SIZE};` },
  { name: 'port_lla', decl: `typeof iifname . @th,208,48; size ${PORT_SET_SIZE};` },
  { name: 'src128', decl: `type ifname . ipv6_addr; size ${ADDR_SET_SIZE};` },
  { name: 'na128', decl: `typeof iifname . @th,64,128; size ${ADDR_SET_SIZE};` },
  { name: 'src64', decl: `typeof iifname . @nh,64,64; size ${ADDR_SET_SIZE};` },
  { name: 'na64', decl: `typeof iifname . @th,64,64; size ${ADDR_SET_SIZE};` },
  { name: 'ra_allowed', decl: `type ifname . ipv6_addr; size ${ADDR_SET_SIZE};` },
  ifSet('ra_guard'),
  ifSet('src_guard'),
  ifSet('block_hbh'),
  ifSet('block_hbh_all'),
  ifSet('block_rt'),
  ifSet('block_frag'),
  ifSet('block_dst'),
  ifSet('isolated'),
  ...RATE_KINDS.map((k) => ({ name: `rl_${k}`, decl: `type ifname : verdict; size ${PORT_SET_SIZE};` })),
];

/** Sets whose elements the kernel creates or counts (never compared for drift, only pre-filled). */
export const COUNTER_SETS: readonly SetDecl[] = [...DROP_REASONS.map((r) => counterSet(`d_${r}`)), counterSet('c_tx'), counterSet('c_rx')];

/** Drops go through one chain per reason: count per port, log a sample, drop (matches are evaluated once). */
const drop = (reason: DropReason, key: 'iifname' | 'oifname' = 'iifname') => `jump drop_${reason}${key === 'oifname' ? '_out' : ''}`;

/** Reasons that are also counted for the receiving port (RAs forwarded to a VM, its RA rate limit). */
const OUT_REASONS: readonly DropReason[] = ['ra_guard', 'rate_limit'];

/** Logged packets per second per reason: enough to attribute an attack, never a flood (the counters stay exact). */
export const LOG_SAMPLE_RATE = 20;

function dropChains(logGroup: number): string[][] {
  const chain = (reason: DropReason, key: 'iifname' | 'oifname'): string[] => [
    `drop_${reason}${key === 'oifname' ? '_out' : ''}`,
    `update @d_${reason} { ${key} }`,
    `limit rate ${LOG_SAMPLE_RATE}/second burst ${LOG_SAMPLE_RATE} packets log prefix "metald-guard ${reason}${key === 'oifname' ? '-in' : ''} " group ${logGroup}`,
    'drop',
  ];
  return [...DROP_REASONS.map((r) => chain(r, 'iifname')), ...OUT_REASONS.map((r) => chain(r, 'oifname'))];
}

const ND = 'nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert';

/** The fixed chains. Order inside vm_in: cheap L2 checks, the fast path, then guards before any accept (SPEC-NOTES 5). */
function chains(): string[][] {
  return [
    ['prerouting', 'type filter hook prerouting priority -200; policy accept;', 'iifname @vm_ports jump vm_in'],
    // Fail closed: a port metald does not know (on any bridge in this table's reach) never reaches a VM.
    ['forward', 'type filter hook forward priority -200; policy accept;',
      'oifname @vm_ports iifname != @known_ports counter drop comment "unknown_port"',
      // SPEC-NOTES 1: RAs forwarded to a VM come only from its allowed routers' link-local addresses.
      // The bridge's own RAs (metald's radvd) are sent by the host and never pass this hook.
      `oifname @ra_guard icmpv6 type nd-router-advert oifname . ip6 saddr != @ra_allowed ${drop('ra_guard', 'oifname')}`],
    ['postrouting', 'type filter hook postrouting priority -200; policy accept;', 'oifname @vm_ports jump vm_out'],
    ['vm_in',
      'iifname @isolated counter drop comment "isolated"',
      `ether type vlan ${drop('vlan_tag')}`,
      `ether type 0x88a8 ${drop('vlan_tag')}`,
      `iifname . ether saddr != @port_mac ${drop('source_guard')}`,
      `ether type != ip6 ${drop('non_ipv6')}`,
      `udp sport 547 ${drop('dhcpv6_server')}`,
      // Fast path: unicast TCP/UDP with no extension header from one of the port's exact addresses.
      'ip6 nexthdr { tcp, udp } ip6 daddr != ff00::/8 iifname . ip6 saddr @src128 update @c_tx { iifname } return',
      `iifname @ra_guard icmpv6 type nd-router-advert ${drop('ra_guard')}`,
      `icmpv6 type nd-redirect ${drop('nd_spoof')}`,
      // RFC 6980: no ND in fragments; RFC 7112: a first fragment carries the whole header chain.
      `exthdr frag exists icmpv6 type 133-137 ${drop('nd_spoof')}`,
      'frag frag-off 0 frag more-fragments 1 jump first_fragment',
      `rt type 0 ${drop('ext_header')}`,
      `iifname @block_rt exthdr rt exists ${drop('ext_header')}`,
      `iifname @block_hbh_all exthdr hbh exists ${drop('ext_header')}`,
      'iifname @block_hbh exthdr hbh exists jump hbh_mld_only',
      `iifname @block_frag exthdr frag exists ${drop('ext_header')}`,
      `iifname @block_dst exthdr dst exists ${drop('ext_header')}`,
      'iifname @src_guard jump source_check',
      `iifname @src_guard icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } jump nd_check`,
      `icmpv6 type { ${ND} } iifname vmap @rl_nd`,
      `icmpv6 type != { ${ND} } iifname vmap @rl_icmp`,
      'meta l4proto != ipv6-icmp ip6 daddr ff00::/8 iifname vmap @rl_mcast',
      'update @c_tx { iifname }'],
    ['first_fragment', '@th,0,64 0-0xffffffffffffffff return', drop('ext_header')],
    ['hbh_mld_only',
      `meta l4proto != ipv6-icmp ${drop('ext_header')}`,
      `icmpv6 type != { mld-listener-report, mld-listener-done, mld2-listener-report } ${drop('ext_header')}`,
      // MLDv2 reports go to ff02::16, MLDv1 reports to the group itself (a bridge querier speaks
      // MLDv1 by default, so guests fall back to it): any multicast destination, hop limit 1.
      `ip6 daddr != ff00::/8 ${drop('ext_header')}`,
      `ip6 hoplimit != 1 ${drop('ext_header')}`],
    ['source_check',
      'ip6 saddr :: jump unspecified_source',
      'ip6 saddr :: return',
      'iifname . ip6 saddr @src128 return',
      'iifname . @nh,64,64 @src64 return',
      drop('source_guard')],
    // `::` only for DAD and the MLD reports a host sends before it has an address.
    ['unspecified_source',
      `meta l4proto != ipv6-icmp ${drop('source_guard')}`,
      `icmpv6 type != { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } ${drop('source_guard')}`],
    // NS/NA: no extension headers, the target of an NA is the VM's own, at most one option, and a
    // link-layer address option carries the port's MAC (a nonce option is allowed for enhanced DAD).
    ['nd_check',
      `ip6 nexthdr != ipv6-icmp ${drop('nd_spoof')}`,
      'icmpv6 type nd-neighbor-advert jump na_target',
      'ip6 length 24 return',
      `ip6 length != 32 ${drop('nd_spoof')}`,
      'icmpv6 type nd-neighbor-solicit @th,192,16 0x0e01 return',
      `icmpv6 type nd-neighbor-solicit @th,192,16 != 0x0101 ${drop('nd_spoof')}`,
      `icmpv6 type nd-neighbor-advert @th,192,16 != 0x0201 ${drop('nd_spoof')}`,
      `iifname . @th,208,48 != @port_lla ${drop('nd_spoof')}`],
    ['na_target', 'iifname . @th,64,128 @na128 return', 'iifname . @th,64,64 @na64 return', drop('nd_spoof')],
    ['vm_out',
      'oifname @isolated counter drop comment "isolated"',
      'icmpv6 type nd-router-advert oifname vmap @rl_ra',
      'update @c_rx { oifname }'],
  ];
}

/** Rate classes: one limiter set and chain per (kind, rate) in use. */
export function rateClasses(ports: readonly PortGuard[], defaults: Record<RateKind, number>): [RateKind, number][] {
  const seen = new Set<string>();
  const out: [RateKind, number][] = [];
  const add = (k: RateKind, r: number) => {
    if (!seen.has(`${k}/${r}`)) {
      seen.add(`${k}/${r}`);
      out.push([k, r]);
    }
  };
  for (const k of RATE_KINDS) add(k, defaults[k]);
  for (const p of ports) for (const k of RATE_KINDS) add(k, p.rates[k]);
  return out.sort((a, b) => (a[0] === b[0] ? a[1] - b[1] : a[0] < b[0] ? -1 : 1));
}

function rateLimiter(kind: RateKind, rate: number): { set: string; chain: string; rule: string } {
  const key = kind === 'ra' ? 'oifname' : 'iifname';
  const set = `lim_${kind}_${rate}`;
  return {
    set: `set ${set} { type ifname; size ${PORT_SET_SIZE}; flags dynamic,timeout; timeout 1m; }`,
    chain: rateChain(kind, rate),
    rule: `update @${set} { ${key} limit rate over ${rate}/second burst ${rateBurst(rate)} packets } ${drop('rate_limit', key)}`,
  };
}

/** Commands that create a rate class in an existing table; idempotent (flush + add). */
export function rateClassCommands(table: string, kind: RateKind, rate: number): string[] {
  const l = rateLimiter(kind, rate);
  return [
    `add ${l.set.replace(/^set /, `set bridge ${table} `)}`,
    `add chain bridge ${table} ${l.chain}`,
    `flush chain bridge ${table} ${l.chain}`,
    `add rule bridge ${table} ${l.chain} ${l.rule}`,
  ];
}

export function mergeElements(ports: readonly PortGuard[], trusted: readonly string[]): ElementMap {
  const all: ElementMap = new Map();
  for (const p of ports) for (const [set, els] of portElements(p)) all.set(set, [...(all.get(set) ?? []), ...els]);
  all.set('known_ports', [...(all.get('known_ports') ?? []), ...trusted.map(q)]);
  return all;
}

/** The whole table as one `nft -f` text. */
export function renderGuardTable(input: GuardTableInput): string {
  const els = mergeElements(input.ports, input.trustedPorts);
  const out = [`table bridge ${input.table} {`, `\tcomment "metald port guards: managed by metald, changes are reverted"`];
  const elements = (name: string) => {
    const e = els.get(name) ?? [];
    return e.length === 0 ? '' : ` elements = { ${e.join(', ')} }`;
  };
  for (const s of [...STATIC_SETS, ...COUNTER_SETS]) {
    out.push(`\t${s.decl.includes(': verdict') ? 'map' : 'set'} ${s.name} { ${s.decl}${elements(s.name)} }`);
  }
  const classes = rateClasses(input.ports, input.defaultRates).map(([k, r]) => rateLimiter(k, r));
  for (const c of classes) out.push(`\t${c.set}`);
  for (const [name, ...body] of dropChains(input.logGroup)) out.push(`\tchain ${name} {`, ...body.map((r) => `\t\t${r}`), '\t}');
  for (const c of classes) out.push(`\tchain ${c.chain} {`, `\t\t${c.rule}`, '\t}');
  // Chains that others jump to come first, so the text loads in one pass.
  for (const [name, ...body] of chains().reverse()) out.push(`\tchain ${name} {`, ...body.map((r) => `\t\t${r}`), '\t}');
  out.push('}');
  return `${out.join('\n')}\n`;
}

/** `add element` (or `delete element`) lines for one port. */
export function portElementCommands(table: string, verb: 'add' | 'delete', p: PortGuard): string[] {
  const lines: string[] = [];
  for (const [set, els] of portElements(p)) {
    if (els.length === 0) continue;
    // Deleting from a map names only the key.
    const items = verb === 'delete' ? els.map((e) => e.replace(/ : .*$/, '')) : els;
    lines.push(`${verb} element bridge ${table} ${set} { ${items.join(', ')} }`);
  }
  return lines;
}
