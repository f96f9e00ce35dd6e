import type { RateKind } from './port-guard.js';

// Names and sizes shared by the guard table's renderer and its element updates.

/** Why a guard dropped a packet; one dynamic counter set per reason, keyed by port. */
export const DROP_REASONS = [
  'ra_guard', 'source_guard', 'nd_spoof', 'ext_header', 'rate_limit', 'vlan_tag', 'non_ipv6', 'dhcpv6_server',
  // Issue 6: a NIC's rule list, a tenant or VLAN boundary (docs/decisions/0027), IsolateVm.
  'policy_deny', 'tenant_isolation', 'isolation',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/**
 * Reasons also counted for the receiving port: RAs forwarded to it and its RA
 * rate limit, its ingress rules, boundaries it is behind, its isolation.
 */
export const OUT_REASONS = ['ra_guard', 'rate_limit', 'policy_deny', 'tenant_isolation', 'isolation'] as const satisfies readonly DropReason[];

/** Drops of packets sent TO a port, keyed by the receiving port. */
export const IN_COUNTER_SETS = OUT_REASONS.map((r) => `d_${r}_in` as const);

export const PORT_SET_SIZE = 262_144;
export const ADDR_SET_SIZE = 1_048_576;

/** Logged packets per second per reason: enough to attribute an attack, never a flood (the counters stay exact). */
export const LOG_SAMPLE_RATE = 20;

/** Ports whose `kind` limit is `rate` packets per second. */
export const classSet = (kind: RateKind, rate: number) => `rlp_${kind}_${rate}`;
/** The per-port limiter state of that class (dynamic, expires when idle). */
export const limiterSet = (kind: RateKind, rate: number) => `lim_${kind}_${rate}`;

/** "rlp_nd_1000" -> ["nd", 1000]. */
export function parseClassSet(name: string): [RateKind, number] | undefined {
  const m = /^rlp_(nd|icmp|mcast|ra)_(\d+)$/.exec(name);
  return m ? [m[1] as RateKind, Number(m[2])] : undefined;
}

/** Burst a limiter allows: small enough that a measured rate stays within 10 % over a few seconds. */
export function rateBurst(rate: number): number {
  return Math.max(5, Math.ceil(rate / 20));
}
