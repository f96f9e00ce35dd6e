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

/**
 * Cap on the sets the packet path adds to (counters, limiters): one element per port at most.
 * Sets only metald writes carry no `size`: the kernel then uses a resizable hash whose memory
 * follows the elements. A `size` makes it a fixed hash table allocated whole at load: 486 MB of
 * vmalloc for an empty guard table with 1M-element sizes, before the first VM (decision 0017).
 */
export const PORT_CAP = 262_144;

/**
 * The kernel walks every dynamic set for expired elements each `gc-interval` (1 s by default).
 * At 10k VMs that walk of the counter sets took about a quarter of a core with no traffic at all.
 * Counter elements never expire (no timeout is ever set on them), so their sets are declared with
 * the timeout flag only to be allowed a day-long interval; limiter state is a few bytes per port.
 */
export const GC_INTERVAL = { counters: '1d', limiters: '5m', samples: '5m' } as const;

/**
 * Logged packets per second: at most LOG_SAMPLE_PER_PORT for one port and reason, so one flooding
 * VM cannot use up the samples that would reveal another's attack, and at most LOG_SAMPLE_RATE per
 * reason for the whole table, so many cannot flood the reader. The counters stay exact.
 */
export const LOG_SAMPLE_PER_PORT = 5;
export const LOG_SAMPLE_RATE = 50;
/** Per-port sampling state of one drop chain (dynamic, expires when the port stops dropping). */
export const sampleSet = (reason: DropReason, key: 'iifname' | 'oifname') => `ls_${reason}${key === 'oifname' ? '_in' : ''}`;

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
