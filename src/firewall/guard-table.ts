import { classSet, DROP_REASONS, GC_INTERVAL, IN_COUNTER_SETS, LOG_SAMPLE_PER_PORT, LOG_SAMPLE_RATE, limiterSet, OUT_REASONS, PORT_CAP, rateBurst, sampleSet, type DropReason } from './guard-names.js';
import { mergeElements, type ClassIds } from './guard-elements.js';
import { RATE_KINDS, type PortGuard, type RateKind } from './port-guard.js';
import { ADMISSION_MASK, ADMISSION_SETS, hexMark, MASK, type AdmissionSet } from '../core/policy/zones.js';
import { ESSENTIAL_ICMPV6, FLOW_SETS, PORT_ZONE_MAP, RX_FLOW_SETS, type CompiledClass } from '../core/policy/compile.js';
import { CLASS_VMAP, classElement, DISPATCH_RULE, FLOW_GC_INTERVAL, FLOW_SET_SIZE, FLOW_TIMEOUT, REPLY_RULES } from '../core/policy/plan.js';

// PURE: the bridge-family table that guards every VM port (docs/decisions/0017).
// Its chains and rules never name a VM. Everything per port lives in set
// elements keyed by the port's name, so adding the (N+1)-th VM adds a
// constant number of elements and never a rule, chain or verdict-map entry:
// nft's cache work and the kernel's commit then do not grow with N (a chain
// per VM made `nft` dump every chain on each change: 10 ms at 1k VMs, 110 ms
// at 10k; `jump` elements in verdict maps made every commit re-validate all of
// them: 8 ms at 1k, 20 ms at 50k). Per-packet work is a fixed list of hash
// lookups; the common packet (unicast TCP/UDP from a known port, MAC and
// address) takes one on the way in and one on the way out.

/**
 * `bridge`: VM ports on Linux bridges (the default). `ip6`: routed attachments
 * (docs/decisions/0021), whose host devices are not bridge ports: the same
 * guards on the IP hooks.
 */
export type GuardFamily = 'bridge' | 'ip6';

export interface GuardTableInput {
  family: GuardFamily;
  table: string;
  ports: readonly PortGuard[];
  /** Ports on metald bridges that are not VM ports but may talk to VMs (shard uplinks, router ports). */
  trustedPorts: readonly string[];
  /** Rates every table carries a class for even with no VM using them (the global defaults). */
  defaultRates: Record<RateKind, number>;
  /** nflog group of sampled guard drops (the events issue reads it). */
  logGroup: number;
  /** Ids of the policy classes (the chains come from the ports); missing ones are assigned in chain order. */
  classIds?: ClassIds;
}

export interface SetDecl {
  name: string;
  decl: string;
  /** Default 'set'. */
  kind?: 'set' | 'map';
}

const ifSet = (name: string): SetDecl => ({ name, decl: 'type ifname;' });
const ifMap = (name: string): SetDecl => ({ name, kind: 'map', decl: 'type ifname : mark;' });
/** Sender mark (masked) . receiving port: the isolation checks (src/core/policy/zones.ts). */
const peerSet = (name: string): SetDecl => ({ name, decl: 'typeof meta mark . oifname;' });
/** Per-port state the packet path keeps (limiters, log sampling): capped, gone a minute after the port's last packet. */
const meterDecl = (gc: string) => `type ifname; size ${PORT_CAP}; flags dynamic,timeout; timeout 1m; gc-interval ${gc};`;
const counterSet = (name: string): SetDecl => ({ name, decl: `type ifname; size ${PORT_CAP}; flags dynamic,timeout; counter; gc-interval ${GC_INTERVAL.counters};` });

/** Every static set of the table (rate classes come on top), in render order. */
export const STATIC_SETS: readonly SetDecl[] = [
  ifSet('vm_ports'),
  ifSet('known_ports'),
  { name: 'fast', kind: 'map', decl: `type ifname . ether_addr . ipv6_addr . inet_proto : mark;` },
  // The same for ports with egress rules: their packets of a flow those rules accepted (decision 0027).
  { name: 'fast_pol', kind: 'map', decl: `type ifname . ether_addr . ipv6_addr . inet_proto : mark;` },
  ifMap(PORT_ZONE_MAP),
  peerSet('rx_zone'),
  peerSet('rx_zone_pol'),
  ifSet('rx_fast'),
  { name: 'port_mac', decl: `type ifname . ether_addr;` },
  { name: 'port_lla', decl: `typeof iifname . @th,208,48;` },
  { name: 'src128', decl: `type ifname . ipv6_addr;` },
  { name: 'na128', decl: `typeof iifname . @th,64,128;` },
  { name: 'src64', decl: `typeof iifname . @nh,64,64;` },
  { name: 'na64', decl: `typeof iifname . @th,64,64;` },
  { name: 'ra_allowed', decl: `type ifname . ipv6_addr;` },
  ifSet('ra_guard'),
  ifSet('src_guard'),
  ifSet('block_hbh'),
  ifSet('block_hbh_all'),
  ifSet('block_rt'),
  ifSet('block_frag'),
  ifSet('block_dst'),
  ifSet('isolated'),
  ...Object.values(ADMISSION_SETS).map(peerSet),
  ifMap('pol_out'),
  ifMap('pol_in'),
  ifMap('pol_in_x'),
  ifSet('policy_log'),
];

/** Reflexive flow sets (decision 0024): the kernel fills them, they are never diffed. */
export const FLOW_SET_DECLS: readonly SetDecl[] = [
  { name: FLOW_SETS.tcp, decl: `type ipv6_addr . inet_service . ipv6_addr . inet_service; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT.tcp}; gc-interval ${FLOW_GC_INTERVAL.tcp};` },
  { name: FLOW_SETS.udp, decl: `type ipv6_addr . inet_service . ipv6_addr . inet_service; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT.udp}; gc-interval ${FLOW_GC_INTERVAL.udp};` },
  ...(['tcp', 'udp'] as const).map((p) => ({
    name: RX_FLOW_SETS[p], decl: `type ifname . ipv6_addr . inet_service . ipv6_addr . inet_service; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT[p]}; gc-interval ${FLOW_GC_INTERVAL[p]};`,
  })),
  { name: FLOW_SETS.echo, decl: `typeof ip6 saddr . ip6 daddr . icmpv6 id; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT.udp}; gc-interval ${FLOW_GC_INTERVAL.udp};` },
];

/** Per-port log sampling state, one set per drop chain: the kernel fills them, they are never diffed. */
export const SAMPLE_SET_DECLS: readonly SetDecl[] = [
  ...DROP_REASONS.map((r) => sampleSet(r, 'iifname')),
  ...OUT_REASONS.map((r) => sampleSet(r, 'oifname')),
].map((name) => ({ name, decl: meterDecl(GC_INTERVAL.samples) }));

/** Sets whose elements the kernel counts (never compared for drift, only pre-filled). */
export const COUNTER_SETS: readonly SetDecl[] = [...DROP_REASONS.map((r) => counterSet(`d_${r}`)), ...IN_COUNTER_SETS.map(counterSet)];

/** Drops go through one chain per reason: count per port, log a sample, drop (matches are evaluated once). */
const drop = (reason: DropReason, key: 'iifname' | 'oifname' = 'iifname') => `jump drop_${reason}${key === 'oifname' ? '_out' : ''}`;

function dropChains(logGroup: number): string[][] {
  const chain = (reason: DropReason, key: 'iifname' | 'oifname'): string[] => [
    `drop_${reason}${key === 'oifname' ? '_out' : ''}`,
    // Drops of what a VM was sent count for it in d_<reason>_in, never as if it had attacked.
    `update @d_${reason}${key === 'oifname' ? '_in' : ''} { ${key} }`,
    // A VM knocking on a boundary is counted as the sender too (when it is on this bridge).
    ...(reason === 'tenant_isolation' && key === 'oifname' ? ['iifname @vm_ports update @d_tenant_isolation { iifname }'] : []),
    // A NIC's rule denies reach the log only when it asked (log_security_events). queue-threshold 1: the
    // kernel hands each sample over at once, not in batches flushed every second (nfnetlink_log's default),
    // so an attack is an event within milliseconds (decision 0028).
    `${reason === 'policy_deny' ? `${key} @policy_log ` : ''}update @${sampleSet(reason, key)} { ${key} limit rate ${LOG_SAMPLE_PER_PORT}/second burst ${LOG_SAMPLE_PER_PORT} packets }`
    + ` limit rate ${LOG_SAMPLE_RATE}/second burst ${LOG_SAMPLE_RATE} packets log prefix "metald-guard ${reason}${key === 'oifname' ? '-in' : ''} " group ${logGroup} queue-threshold 1`,
    'drop',
  ];
  return [...DROP_REASONS.map((r) => chain(r, 'iifname')), ...OUT_REASONS.map((r) => chain(r, 'oifname'))];
}

const ND = 'nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert';

// Fast path in: unicast TCP/UDP, no extension header, not a DHCPv6 server, from the port's MAC and an
// exact address, in one lookup. Per-VM packet and byte counts come from the ports' link statistics.
const FAST_IN = 'th sport != 547 ip6 daddr != ff00::/8 meta mark set iifname . ether saddr . ip6 saddr . ip6 nexthdr map @fast counter accept comment "fast_in"';

/**
 * Ports with egress rules: a packet of a flow those rules accepted (its tuple is in the flow set, and
 * only this VM can send from its address) skips the full checks too. Not refreshed here: when the
 * entry expires, the next packet takes the rules again and records it anew.
 */
const FAST_IN_FLOW = (p: 'tcp' | 'udp') =>
  `meta l4proto ${p} ip6 daddr != ff00::/8 ${p === 'udp' ? 'th sport != 547 ' : ''}meta mark set iifname . ether saddr . ip6 saddr . ip6 nexthdr map @fast_pol`
  + ` ip6 saddr . th sport . ip6 daddr . th dport @${FLOW_SETS[p]} counter accept comment "fast_in_flow"`;

const SEGMENT = hexMark(MASK.segment);
/** Delivery to a port with ingress rules: from its tenant and VLAN, a flow those rules accepted. */
const FAST_OUT_FLOW = (p: 'tcp' | 'udp') =>
  `meta l4proto ${p} meta mark & ${SEGMENT} . oifname @rx_zone_pol oifname . ip6 saddr . th sport . ip6 daddr . th dport @${RX_FLOW_SETS[p]}`;
/** Fast delivery: from a VM of the receiver's own tenant and VLAN, or from what is not a VM (mark 0). */
const FAST_OUT = `meta l4proto != ipv6-icmp meta mark & ${SEGMENT} . oifname @rx_zone`;
const FAST_OUT_HOST = 'meta l4proto != ipv6-icmp meta mark 0 oifname @rx_fast';
// Bridge ports: `ether type ip6` read from the frame, not the dependency nft adds for `ip6 daddr`
// (`meta protocol`): the kernel moves a VLAN tag into skb metadata before the bridge, so a tagged
// frame has protocol ip6 and took the fast paths past the vlan_tag guard (attack udp-vlan);
// `ether type` sees the tag.
const bridgeOnly = (rule: string) => `ether type ip6 ${rule}`;

/** Bridge ports: prerouting (from the port), forward (from other ports), output (from the host). */
function bridgeHooks(): string[][] {
  return [
    ['prerouting', 'type filter hook prerouting priority -200; policy accept;', ...[FAST_IN, FAST_IN_FLOW('udp'), FAST_IN_FLOW('tcp')].map(bridgeOnly), 'iifname @vm_ports jump vm_in'],
    // What a VM receives is guarded where it is sent to the port: `forward` for frames from other
    // ports, `output` for the host's own (radvd's RAs); no postrouting hook, one hook less per frame.
    // Fast path: non-ICMP from a known port to a port that is not isolated.
    ['forward', 'type filter hook forward priority -200; policy accept;',
      // A sender mark is only ever set on a VM port's way in: a marked frame never came from an unknown port.
      `${FAST_OUT} counter accept comment "fast_out"`,
      // Flows before the mark-0 rule: VM-to-VM frames to ports with rules skip one rule (~1 %). The rules
      // are disjoint (no rx_zone_pol element has segment 0), so a table with the earlier order is kept.
      `${FAST_OUT_FLOW('udp')} counter accept comment "fast_out_flow"`,
      `${FAST_OUT_FLOW('tcp')} counter accept comment "fast_out_flow"`,
      `${FAST_OUT_HOST} iifname @known_ports counter accept comment "fast_out_host"`,
      'oifname @vm_ports jump vm_out_forwarded'],
    ['output', 'type filter hook output priority -200; policy accept;', 'oifname @vm_ports jump vm_out'],
    // Fail closed: a port metald does not know (on any bridge in this table's reach) never reaches a VM.
    // SPEC-NOTES 1: RAs forwarded to a VM come only from its allowed routers' link-local addresses;
    // the bridge's own RAs (metald's radvd) are sent by the host and take the output hook.
    ['vm_out_forwarded',
      'iifname != @known_ports counter drop comment "unknown_port"',
      `icmpv6 type nd-router-advert oifname @ra_guard oifname . ip6 saddr != @ra_allowed ${drop('ra_guard', 'oifname')}`,
      'jump vm_out'],
  ];
}

/**
 * Routed host devices: the same guards on the IP hooks. Prerouting runs before
 * conntrack and routing (raw priority); what the VM receives is checked where
 * it is routed to it (forward) or sent by the host (output). Link-local traffic
 * is never forwarded, so there is no foreign RA to allow-list and no unknown port.
 */
function routedHooks(): string[][] {
  return [
    ['prerouting', 'type filter hook prerouting priority -300; policy accept;', FAST_IN, FAST_IN_FLOW('udp'), FAST_IN_FLOW('tcp'), 'iifname @vm_ports jump vm_in'],
    ['forward', 'type filter hook forward priority -300; policy accept;',
      `${FAST_OUT} counter accept comment "fast_out"`,
      `${FAST_OUT_FLOW('udp')} counter accept comment "fast_out_flow"`,
      `${FAST_OUT_FLOW('tcp')} counter accept comment "fast_out_flow"`,
      `${FAST_OUT_HOST} counter accept comment "fast_out_host"`,
      'oifname @vm_ports jump vm_out'],
    ['output', 'type filter hook output priority -300; policy accept;', 'oifname @vm_ports jump vm_out'],
  ];
}

/** The fixed chains (rate_<kind> get one rule per class on top). Guards come before any accept (SPEC-NOTES 5). */
function chains(family: GuardFamily): string[][] {
  return [
    ...(family === 'bridge' ? bridgeHooks() : routedHooks()),
    ['vm_in',
      `iifname @isolated ${drop('isolation')}`,
      // The sender's mark: the receiving side's isolation checks read it (decision 0027).
      `meta mark set iifname map @${PORT_ZONE_MAP}`,
      `ether type vlan ${drop('vlan_tag')}`,
      `ether type 0x88a8 ${drop('vlan_tag')}`,
      `iifname . ether saddr != @port_mac ${drop('source_guard')}`,
      `ether type != ip6 ${drop('non_ipv6')}`,
      `udp sport 547 ${drop('dhcpv6_server')}`,
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
      `icmpv6 type { ${ND} } jump rate_nd`,
      `icmpv6 type != { ${ND} } jump rate_icmp`,
      'meta l4proto != ipv6-icmp ip6 daddr ff00::/8 jump rate_mcast',
      // The NIC's egress rules (decision 0024): replies of accepted flows, then its class.
      ...REPLY_RULES,
      DISPATCH_RULE.egress],
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
      `oifname @isolated ${drop('isolation', 'oifname')}`,
      'icmpv6 type nd-router-advert jump rate_ra',
      // From another VM (mark 0: the host, a router, the outside): tenant and VLAN isolation.
      'meta mark != 0 jump peer_check',
      ...REPLY_RULES,
      DISPATCH_RULE.ingress],
    // Decision 0027: one masked lookup per situation, cheapest and commonest first.
    ['peer_check',
      admissionRule('peer_same', 'return'),
      ...REPLY_RULES.map((r) => r.replace(/accept$/, 'return')),
      admissionRule('seg_refuse', 'goto isolation_deny'),
      admissionRule('seg_grant', 'goto admit'),
      admissionRule('peer_tenant', 'return'),
      admissionRule('peer_vlan', 'return'),
      admissionRule('peer_open', 'return'),
      admissionRule('peer_same_x', 'goto explicit_in'),
      admissionRule('peer_tenant_x', 'goto explicit_in'),
      admissionRule('peer_vlan_x', 'goto explicit_in'),
      admissionRule('peer_open_x', 'goto explicit_in'),
      'goto isolation_deny'],
    // Admitted across a boundary by a segment rule: the replies must come back across it too.
    ['admit',
      `meta l4proto tcp update @${FLOW_SETS.tcp} { ip6 saddr . th sport . ip6 daddr . th dport }`,
      `meta l4proto udp update @${FLOW_SETS.udp} { ip6 saddr . th sport . ip6 daddr . th dport }`,
      `icmpv6 type echo-request update @${FLOW_SETS.echo} { ip6 saddr . ip6 daddr . icmpv6 id }`],
    // Only the receiver's rules that name their source may open the boundary.
    // Neighbours that a policy may connect must resolve each other (the answer goes the other way, where
    // nothing is named) and see errors: essential ICMPv6 passes between them; strict pairs never get here.
    ['explicit_in', `icmpv6 type { ${ESSENTIAL_ICMPV6.join(', ')} } return`, `meta mark set oifname map @pol_in_x meta mark vmap @${CLASS_VMAP}`, 'goto isolation_deny'],
    // Multicast floods (DAD, MLD, mDNS) cross every port: dropped at a boundary without counting a VM.
    ['isolation_deny', 'ip6 daddr ff00::/8 counter drop', drop('tenant_isolation', 'oifname')],
  ];
}

function admissionRule(set: AdmissionSet, verdict: string): string {
  return `meta mark & ${hexMark(ADMISSION_MASK[set])} . oifname @${set} ${verdict}`;
}

/** Ids for the classes the ports use: the given ones, then the smallest free ids in chain order. */
export function classIdsFor(ports: readonly PortGuard[], given: ClassIds = new Map()): Map<string, number> {
  const ids = new Map(given);
  const used = new Set(ids.values());
  let next = 1;
  const chains = [...new Set(ports.flatMap((p) => policyClasses([p]).map((c) => c.chain)))].sort();
  for (const c of chains) {
    if (ids.has(c)) continue;
    while (used.has(next)) next++;
    ids.set(c, next);
    used.add(next);
  }
  return ids;
}

/** Distinct policy classes of the ports, by chain name. */
export function policyClasses(ports: readonly PortGuard[]): CompiledClass[] {
  const m = new Map<string, CompiledClass>();
  for (const p of ports) for (const c of [p.policy.egress, p.policy.ingress, p.policy.explicit]) if (c) m.set(c.chain, c);
  return [...m.values()].sort((a, b) => (a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : 0));
}

/**
 * Commands that add a policy class to an existing table `ref` (chain, rules, its dispatch element).
 * The chain is flushed first: it may be there without its dispatch element (lost to drift, then
 * a restart), and its rules must not be added twice.
 */
export function policyClassCommands(ref: string, c: CompiledClass, id: number): string[] {
  return [`add chain ${ref} ${c.chain}`, `flush chain ${ref} ${c.chain}`, ...c.body.map((l) => `add rule ${ref} ${c.chain} ${l}`),
    `add element ${ref} ${CLASS_VMAP} { ${classElement(c.chain, id)} }`];
}

/** Rate classes: the defaults plus each distinct (kind, rate) in use, sorted. */
export function rateClasses(ports: readonly PortGuard[], defaults: Record<RateKind, number>): [RateKind, number][] {
  const seen = new Map<string, [RateKind, number]>();
  for (const k of RATE_KINDS) seen.set(`${k}/${defaults[k]}`, [k, defaults[k]]);
  for (const p of ports) for (const k of RATE_KINDS) seen.set(`${k}/${p.rates[k]}`, [k, p.rates[k]]);
  return [...seen.values()].sort((a, b) => (a[0] === b[0] ? a[1] - b[1] : a[0] < b[0] ? -1 : 1));
}

/** One class: its port set, its limiter set and its rule in chain rate_<kind>. */
function rateClass(kind: RateKind, rate: number): { sets: string[]; rule: string } {
  const key = kind === 'ra' ? 'oifname' : 'iifname';
  const lim = limiterSet(kind, rate);
  return {
    sets: [
      `set ${classSet(kind, rate)} { type ifname; }`,
      `set ${lim} { ${meterDecl(GC_INTERVAL.limiters)} }`,
    ],
    rule: `${key} @${classSet(kind, rate)} update @${lim} { ${key} limit rate over ${rate}/second burst ${rateBurst(rate)} packets } ${drop('rate_limit', key)}`,
  };
}

/** Commands that add a class to an existing table `ref` ("<family> <table>"); only for a class it lacks (`add rule` appends). */
export function rateClassCommands(ref: string, kind: RateKind, rate: number): string[] {
  const c = rateClass(kind, rate);
  return [...c.sets.map((s) => `add ${s.replace(/^set /, `set ${ref} `)}`), `add rule ${ref} rate_${kind} ${c.rule}`];
}

export const LAYOUT_CHAIN = 'layout_2';

/** The whole table as one `nft -f` text. */
export function renderGuardTable(input: GuardTableInput): string {
  const ids = classIdsFor(input.ports, input.classIds);
  const els = mergeElements(input.ports, input.trustedPorts, ids);
  const out = [`table ${input.family} ${input.table} {`, `\tcomment "metald port guards: managed by metald, changes are reverted"`];
  const elements = (name: string) => {
    const e = els.get(name) ?? [];
    return e.length === 0 ? '' : ` elements = { ${e.join(', ')} }`;
  };
  for (const s of [...STATIC_SETS, ...COUNTER_SETS, ...FLOW_SET_DECLS, ...SAMPLE_SET_DECLS]) out.push(`\t${s.kind ?? 'set'} ${s.name} { ${s.decl}${elements(s.name)} }`);
  const classes = rateClasses(input.ports, input.defaultRates);
  for (const [k, r] of classes) {
    const [ports, lim] = rateClass(k, r).sets;
    out.push(`\t${ports!.replace(/ \}$/, `${elements(classSet(k, r))} }`)}`, `\t${lim}`);
  }
  const block = (name: string, body: readonly string[]) => out.push(`\tchain ${name} {`, ...body.map((r) => `\t\t${r}`), '\t}');
  // An empty chain that names the table's layout: a table an earlier metald wrote (fixed-size sets
  // with 1 s GC) lacks it, so the structural check replaces that table whole on upgrade.
  block(LAYOUT_CHAIN, []);
  for (const [name, ...body] of dropChains(input.logGroup)) block(name!, body);
  // Policy classes, then the map that names them (the text loads in one pass).
  const classes_ = policyClasses(input.ports);
  for (const c of classes_) block(c.chain, c.body);
  const vmap = classes_.map((c) => classElement(c.chain, ids.get(c.chain)!));
  out.push(`\tmap ${CLASS_VMAP} { type mark : verdict;${vmap.length ? ` elements = { ${vmap.join(', ')} }` : ''} }`);
  for (const k of RATE_KINDS) block(`rate_${k}`, classes.filter(([ck]) => ck === k).map(([, r]) => rateClass(k, r).rule));
  // Chains that others jump to come first, so the text loads in one pass.
  for (const [name, ...body] of chains(input.family).reverse()) block(name!, body);
  out.push('}');
  return `${out.join('\n')}\n`;
}
