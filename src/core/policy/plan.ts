// PURE: every NIC's ingress/egress lists -> the policy classes, their mark
// ids and the set elements that bind ports to them (docs/decisions/0024).
// This is the shape the guard table (docs/decisions/0017) can carry without
// growing per packet or per update with the number of VMs:
//
//   map pol_out { type ifname : mark }     port -> id of its egress class   (one element per filtered NIC)
//   map pol_in  { type ifname : mark }     port -> id of its ingress class  (one element per filtered NIC)
//   map pol_chains { type mark : verdict } id -> goto pc_<hash>             (one element per CLASS)
//   set policy_log { type ifname }         ports with log_security_events
//   set flows_tcp / flows_udp              accepted flows (timeouts), for the replies
//   chain pc_<hash>                        one per class (src/core/policy/compile.ts)
//
// A port maps to a class id through a data map, not a verdict map: jump
// elements make every commit re-validate all of them (decision 0017), and
// there are only as many of those as there are classes.

import { compileClass, DENY_CHAIN, FLOW_SETS, type CompiledClass, type Direction } from './compile.js';
import type { NicRule } from './nic-rules.js';

export interface NicPolicy {
  /** Host device of the NIC (the guard table's port name). */
  port: string;
  ingress: readonly NicRule[];
  egress: readonly NicRule[];
  logSecurityEvents: boolean;
}

export interface PortBinding {
  port: string;
  /** Chain of the egress / ingress class, null when that direction is not filtered. */
  egress: string | null;
  ingress: string | null;
  log: boolean;
}

export interface PolicyPlan {
  /** Distinct classes in use, sorted by chain name. */
  classes: CompiledClass[];
  /** Chain -> mark id (1..), stable for classes that were in `previous`. */
  classIds: Map<string, number>;
  ports: PortBinding[];
}

export const PORT_CLASS_MAP: Record<Direction, string> = { egress: 'pol_out', ingress: 'pol_in' };
export const CLASS_VMAP = 'pol_chains';
export const POLICY_LOG_SET = 'policy_log';
/** Idle time after which an accepted flow's replies stop passing. */
export const FLOW_TIMEOUT = { tcp: '1h', udp: '2m' } as const;
export const FLOW_SET_SIZE = 1_048_576;
export const POLICY_PORT_SET_SIZE = 262_144;

export function bindPort(nic: NicPolicy): { binding: PortBinding; classes: CompiledClass[] } {
  const eg = compileClass('egress', nic.egress);
  const ing = compileClass('ingress', nic.ingress);
  return {
    binding: { port: nic.port, egress: eg?.chain ?? null, ingress: ing?.chain ?? null, log: nic.logSecurityEvents },
    classes: [eg, ing].filter((c): c is CompiledClass => c !== null),
  };
}

/**
 * Ids for the classes in use: a class keeps the id it had in `previous`; new
 * ones take the smallest free ids in chain-name order, so the result depends
 * only on the inputs. Id 0 is never used: it is the mark of an unfiltered packet.
 */
export function assignClassIds(chains: readonly string[], previous: ReadonlyMap<string, number> = new Map()): Map<string, number> {
  const ids = new Map<string, number>();
  const used = new Set<number>();
  for (const c of chains) {
    const id = previous.get(c);
    if (id !== undefined && id >= 1 && !used.has(id)) {
      ids.set(c, id);
      used.add(id);
    }
  }
  let next = 1;
  for (const c of [...chains].sort()) {
    if (ids.has(c)) continue;
    while (used.has(next)) next++;
    ids.set(c, next);
    used.add(next);
  }
  return ids;
}

export function compilePolicy(nics: readonly NicPolicy[], previous?: ReadonlyMap<string, number>): PolicyPlan {
  const classes = new Map<string, CompiledClass>();
  const ports: PortBinding[] = [];
  for (const nic of nics) {
    const { binding, classes: cs } = bindPort(nic);
    ports.push(binding);
    for (const c of cs) classes.set(c.chain, c);
  }
  const sorted = [...classes.values()].sort((a, b) => (a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : 0));
  return { classes: sorted, classIds: assignClassIds(sorted.map((c) => c.chain), previous), ports };
}

export const markText = (id: number) => `0x${id.toString(16).padStart(8, '0')}`;

/** Set/map name -> elements for one port (what a per-VM update adds or deletes). */
export function portPolicyElements(b: PortBinding, classIds: ReadonlyMap<string, number>): Map<string, string[]> {
  const m = new Map<string, string[]>();
  const d = JSON.stringify(b.port);
  for (const dir of ['egress', 'ingress'] as const) {
    const chain = b[dir];
    if (chain === null) continue;
    const id = classIds.get(chain);
    if (id === undefined) throw new Error(`class ${chain} has no id`); // a caller bug: ids come from the same plan
    m.set(PORT_CLASS_MAP[dir], [`${d} : ${markText(id)}`]);
  }
  if (b.log) m.set(POLICY_LOG_SET, [d]);
  return m;
}

/** The class vmap's element for one class. */
export const classElement = (chain: string, id: number) => `${markText(id)} : goto ${chain}`;

/** Replies of accepted flows: the reversed tuple is in a flow set. A pure SYN is never a reply. */
export const REPLY_RULES: readonly string[] = [
  `tcp flags & (syn | ack) != syn ip6 daddr . th dport . ip6 saddr . th sport @${FLOW_SETS.tcp} accept`,
  `meta l4proto udp ip6 daddr . th dport . ip6 saddr . th sport @${FLOW_SETS.udp} accept`,
  `icmpv6 type echo-reply ip6 daddr . ip6 saddr . icmpv6 id @${FLOW_SETS.echo} accept`,
];

/** Last rule of vm_in (egress) and vm_out (ingress): the port's class, if it has one. */
export const DISPATCH_RULE: Record<Direction, string> = {
  egress: `meta mark set iifname map @${PORT_CLASS_MAP.egress} meta mark vmap @${CLASS_VMAP}`,
  ingress: `meta mark set oifname map @${PORT_CLASS_MAP.ingress} meta mark vmap @${CLASS_VMAP}`,
};

/**
 * The policy part of a guard table as nft text: declarations, the deny
 * chains, the class chains and, as comments, where the reply and dispatch
 * rules go in the fixed chains. `counterSet` is the per-port counter set of
 * denies (d_policy_deny in the guard table's naming).
 */
export function renderPolicyFragment(plan: PolicyPlan, opts: { logGroup: number; logRate: number; counterSet: string }): string {
  const all = new Map<string, string[]>();
  for (const b of plan.ports) {
    for (const [set, els] of portPolicyElements(b, plan.classIds)) all.set(set, [...(all.get(set) ?? []), ...els]);
  }
  const els = (name: string, extra: readonly string[] = []) => {
    const e = [...(all.get(name) ?? []), ...extra];
    return e.length ? ` elements = { ${e.join(', ')} }` : '';
  };
  const vmap = plan.classes.map((c) => classElement(c.chain, plan.classIds.get(c.chain) as number));
  const out = [
    `set ${POLICY_LOG_SET} { type ifname; size ${POLICY_PORT_SET_SIZE};${els(POLICY_LOG_SET)} }`,
    `map ${PORT_CLASS_MAP.egress} { type ifname : mark; size ${POLICY_PORT_SET_SIZE};${els(PORT_CLASS_MAP.egress)} }`,
    `map ${PORT_CLASS_MAP.ingress} { type ifname : mark; size ${POLICY_PORT_SET_SIZE};${els(PORT_CLASS_MAP.ingress)} }`,
    `set ${FLOW_SETS.tcp} { type ipv6_addr . inet_service . ipv6_addr . inet_service; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT.tcp}; }`,
    `set ${FLOW_SETS.udp} { type ipv6_addr . inet_service . ipv6_addr . inet_service; size ${FLOW_SET_SIZE}; flags dynamic,timeout; timeout ${FLOW_TIMEOUT.udp}; }`,
  ];
  const chain = (name: string, body: readonly string[]) => out.push(`chain ${name} {`, ...body.map((l) => `\t${l}`), '}');
  for (const [dir, key] of [['egress', 'iifname'], ['ingress', 'oifname']] as const) {
    chain(DENY_CHAIN[dir], [
      `update @${opts.counterSet} { ${key} }`,
      `${key} @${POLICY_LOG_SET} limit rate ${opts.logRate}/second burst ${opts.logRate} packets log prefix "metald-policy deny${dir === 'ingress' ? '-in' : ''} " group ${opts.logGroup}`,
      'drop',
    ]);
  }
  for (const c of plan.classes) chain(c.chain, [`# ${c.direction}: ${c.rules.join(' | ')}`, ...c.body]);
  // After the chains it names, so the text loads in one pass.
  out.push(`map ${CLASS_VMAP} { type mark : verdict;${els(CLASS_VMAP, vmap)} }`);
  out.push(
    `# vm_in, after the guards: ${[...REPLY_RULES, DISPATCH_RULE.egress].join(' ; ')}`,
    `# vm_out, after the guards: ${[...REPLY_RULES, DISPATCH_RULE.ingress].join(' ; ')}`,
  );
  return `${out.join('\n')}\n`;
}
