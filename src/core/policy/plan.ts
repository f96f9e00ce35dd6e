// PURE: the names and fixed rules that bind ports to their policy classes in
// the guard table (docs/decisions/0024; src/firewall/guard-table.ts renders
// them, src/firewall/guard-elements.ts writes the elements).
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

import { FLOW_SETS, type Direction } from './compile.js';

export const PORT_CLASS_MAP: Record<Direction, string> = { egress: 'pol_out', ingress: 'pol_in' };
export const CLASS_VMAP = 'pol_chains';
export const POLICY_LOG_SET = 'policy_log';
/** Idle time after which an accepted flow's replies stop passing. */
export const FLOW_TIMEOUT = { tcp: '1h', udp: '2m' } as const;
/** A cap, not an allocation (resizable hash): the flows an attacker can make a set hold. */
export const FLOW_SET_SIZE = 1_048_576;
/**
 * How often the kernel sweeps expired flows (default 1 s: a walk of every element, which at a
 * million flows costs more than a core). Expired flows never match; until swept they only
 * count towards FLOW_SET_SIZE.
 */
export const FLOW_GC_INTERVAL = { tcp: '5m', udp: '30s' } as const;

export const markText = (id: number) => `0x${id.toString(16).padStart(8, '0')}`;

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
