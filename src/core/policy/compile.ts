// PURE: one NIC rule list (ingress or egress) compiled to the body of one
// bridge-family nft chain (docs/decisions/0024). The chain depends only on
// the rules and the direction, never on the VM, so every NIC with the same
// list shares it: a "policy class", named after a hash of its canonical text.
//
// Chain layout:
//   meta mark set 0                 the dispatch used the mark to pick this chain; give it back clean
//   icmpv6 type { essentials } accept   ND, MLD, errors (RFC 4890): never blockable
//   <one line per rule, first match wins>
//   jump drop_policy_deny[_out]     default: a non-empty list denies what it does not allow
// Allowed TCP/UDP records the flow in @flows_tcp / @flows_udp, whose reversed
// tuple lets the replies pass (the reply rules sit before the dispatch).

import { createHash } from 'node:crypto';
import { printNicRule, printAddress, printPort, type Endpoint, type NicRule } from './nic-rules.js';

/** ingress: what the VM receives (checked on the way to its port); egress: what it sends. */
export type Direction = 'ingress' | 'egress';

/**
 * ICMPv6 that IPv6 cannot work without (RFC 4890 4.3.1 and 4.4.1): errors
 * (destination unreachable, packet too big, time exceeded, parameter
 * problem), neighbour discovery (RS, RA, NS, NA: the port guards already
 * police who may send which) and MLD (with MLD snooping on, a VM whose reports
 * are dropped stops receiving its solicited-node NS). Echo is not essential.
 */
export const ESSENTIAL_ICMPV6 = [
  'destination-unreachable', 'packet-too-big', 'time-exceeded', 'parameter-problem',
  'nd-router-solicit', 'nd-router-advert', 'nd-neighbor-solicit', 'nd-neighbor-advert',
  'mld-listener-query', 'mld-listener-report', 'mld-listener-done', 'mld2-listener-report',
] as const;

export const FLOW_SETS = { tcp: 'flows_tcp', udp: 'flows_udp', echo: 'flows_echo' } as const;
/**
 * Flows a receiving port's ingress rules accepted, keyed by that port: its
 * delivery fast path (the shared sets above also hold flows only a sender's
 * egress rules saw, which must not skip the receiver's rules).
 */
export const RX_FLOW_SETS = { tcp: 'flows_rx_tcp', udp: 'flows_rx_udp' } as const;
/** Port -> its sender mark (src/core/policy/zones.ts). */
export const PORT_ZONE_MAP = 'port_zone';
/** Where a cross-boundary packet that no explicit rule admits goes (decision 0027). */
export const ISOLATION_DENY_CHAIN = 'drop_tenant_isolation_out';
/** Where denies go: one chain per direction that counts per port, logs for ports in @policy_log, drops. */
export const DENY_CHAIN: Record<Direction, string> = { egress: 'drop_policy_deny', ingress: 'drop_policy_deny_out' };

export interface CompiledClass {
  /** "pc_" + 16 hex digits of sha256(key): the same list always gets the same chain. */
  chain: string;
  direction: Direction;
  /** Canonical rules (printNicRule), in order. */
  rules: string[];
  /** The chain body, one nft rule per line. */
  body: string[];
}

export interface ClassWarning {
  /** Index of the rule the warning is about. */
  rule: number;
  message: string;
}

export function classKey(direction: Direction, rules: readonly NicRule[]): string {
  return `${direction}\n${rules.map(printNicRule).join('\n')}`;
}

export function className(direction: Direction, rules: readonly NicRule[]): string {
  return `pc_${createHash('sha256').update(classKey(direction, rules)).digest('hex').slice(0, 16)}`;
}

const set = (items: readonly string[]) => (items.length === 1 ? items[0]! : `{ ${items.join(', ')} }`);

function addressMatch(field: 'saddr' | 'daddr', e: Endpoint): string[] {
  return e.addresses === 'any' ? [] : [`ip6 ${field} ${set(e.addresses.map(printAddress))}`];
}

function portMatch(proto: 'tcp' | 'udp', field: 'sport' | 'dport', e: Endpoint): string[] {
  return e.ports === null ? [] : [`${proto} ${field} ${set(e.ports.map(printPort))}`];
}

const RECORD = (proto: 'tcp' | 'udp', direction: Direction) =>
  `update @${FLOW_SETS[proto]} { ip6 saddr . th sport . ip6 daddr . th dport }`
  + (direction === 'ingress' ? ` update @${RX_FLOW_SETS[proto]} { oifname . ip6 saddr . th sport . ip6 daddr . th dport }` : '');
/** An accepted echo request lets its reply through (keyed by addresses and echo id). */
export const RECORD_ECHO = `icmpv6 type echo-request update @${FLOW_SETS.echo} { ip6 saddr . ip6 daddr . icmpv6 id }`;

/** The nft lines of one rule (an `allow all` is three: TCP and UDP record their flow). */
export function ruleLines(r: NicRule, direction: Direction): string[] {
  const where = (proto: 'tcp' | 'udp' | null, l4: string | null) => {
    const ports = proto ? [...portMatch(proto, 'sport', r.from), ...portMatch(proto, 'dport', r.to)] : [];
    // A port match already implies the protocol; say it only when nothing else does.
    const protoMatch = l4 && ports.length === 0 ? [`meta l4proto ${l4}`] : [];
    return [...protoMatch, ...addressMatch('saddr', r.from), ...addressMatch('daddr', r.to), ...ports];
  };
  const line = (parts: string[], verdict: string) => [...parts, verdict].join(' ');
  if (r.action === 'deny') {
    const l4 = r.protocol === 'all' ? null : r.protocol === 'icmpv6' ? 'ipv6-icmp' : r.protocol;
    return [line(where(r.protocol === 'tcp' || r.protocol === 'udp' ? r.protocol : null, l4), `jump ${DENY_CHAIN[direction]}`)];
  }
  switch (r.protocol) {
    case 'tcp':
    case 'udp':
      return [line(where(r.protocol, r.protocol), `${RECORD(r.protocol, direction)} accept`)];
    case 'icmpv6':
      return [line(where(null, null), `${RECORD_ECHO} accept`), line(where(null, 'ipv6-icmp'), 'accept')];
    case 'all':
      return [
        line(where('tcp', 'tcp'), `${RECORD('tcp', direction)} accept`),
        line(where('udp', 'udp'), `${RECORD('udp', direction)} accept`),
        line(where(null, null), `${RECORD_ECHO} accept`),
        line(where(null, null), 'accept'),
      ];
  }
}

const catchAll = (r: NicRule) => r.protocol === 'all' && r.from.addresses === 'any' && r.to.addresses === 'any';

/**
 * The dispatch borrowed the mark to pick the class; give it back: what the
 * VM sends carries its sender mark on (the receiving side's isolation checks
 * read it), what it receives needs none.
 */
const RESTORE_MARK: Record<Direction, string> = { egress: `meta mark set iifname map @${PORT_ZONE_MAP}`, ingress: 'meta mark set 0' };

/** One class: its chain name and body. An empty list has no class (the NIC is not filtered). */
export function compileClass(direction: Direction, rules: readonly NicRule[]): CompiledClass | null {
  if (rules.length === 0) return null;
  // Rules after a catch-all are never reached (classWarnings says so), and the default after it neither.
  const stop = rules.findIndex(catchAll);
  const reached = stop < 0 ? rules : rules.slice(0, stop + 1);
  const body = [
    RESTORE_MARK[direction],
    `icmpv6 type { ${ESSENTIAL_ICMPV6.join(', ')} } accept`,
    ...reached.flatMap((r) => ruleLines(r, direction)),
    ...(stop < 0 ? [`jump ${DENY_CHAIN[direction]}`] : []),
  ];
  return { chain: className(direction, rules), direction, rules: rules.map(printNicRule), body };
}

/**
 * The ingress class for packets that cross a tenant or VLAN boundary which
 * only an explicit policy opens (decision 0027): the NIC's rules that name
 * their source (never `from any`), in order; what they do not admit is an
 * isolation drop. Null when no rule names a source: nothing crosses.
 */
export function compileExplicitClass(rules: readonly NicRule[]): CompiledClass | null {
  const named = rules.filter((r) => r.from.addresses !== 'any');
  if (named.length === 0) return null;
  const body = [
    RESTORE_MARK.ingress,
    ...named.flatMap((r) => ruleLines(r, 'ingress')),
    `jump ${ISOLATION_DENY_CHAIN}`,
  ];
  const key = `explicit\n${classKey('ingress', named)}`;
  return { chain: `pc_${createHash('sha256').update(key).digest('hex').slice(0, 16)}`, direction: 'ingress', rules: named.map(printNicRule), body };
}

const coversIcmp = (r: NicRule) => r.protocol === 'all' || r.protocol === 'icmpv6';

/**
 * What an operator should know about a list that is nevertheless valid:
 * denies that cannot touch the essential ICMPv6 (kept, with this warning:
 * docs/decisions/0024), rules after a catch-all (never reached), and a list
 * that only denies (the default denies the rest too).
 */
export function classWarnings(rules: readonly NicRule[]): ClassWarning[] {
  const out: ClassWarning[] = [];
  let icmpAllowed = false;
  let caughtAt = -1;
  rules.forEach((r, i) => {
    const text = JSON.stringify(printNicRule(r));
    if (caughtAt >= 0) {
      out.push({ rule: i, message: `${text} is never reached: rule [${caughtAt}] matches every packet first` });
      return;
    }
    if (r.action === 'deny' && coversIcmp(r) && !icmpAllowed) {
      out.push({
        rule: i,
        message: `${text} does not apply to the ICMPv6 that IPv6 needs (neighbor discovery, MLD, packet-too-big and other errors, RFC 4890): those always pass`,
      });
    }
    if (r.action === 'allow' && coversIcmp(r) && r.from.addresses === 'any' && r.to.addresses === 'any') icmpAllowed = true;
    if (catchAll(r)) caughtAt = i;
  });
  if (rules.length > 0 && rules.every((r) => r.action === 'deny')) {
    out.push({
      rule: rules.length - 1,
      message: 'this list only denies, and a rule list denies what it does not allow: add "allow all from any to any" at the end to let the rest through',
    });
  }
  return out;
}
