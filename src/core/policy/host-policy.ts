// PURE: a section-2 policy (`ipv6.security_policies[]`) as the settings it
// gives the VMs it is attached to (docs/decisions/0024): how traffic between
// VLANs is treated, which segments are reachable, which extension headers are
// dropped and the per-VM ICMPv6 / ND / multicast rates. The port guards
// already enforce headers and rates per port; refineGuard() folds the policy
// into a port's guard settings, never loosening what the NIC asked for.

import type { ExtHeader, HostRule, RateTraffic } from './host-rules.js';

export interface SegmentRule {
  action: 'allow' | 'deny';
  /** Pool id whose addresses are the segment (null: any address). */
  pool: string | null;
  /** VLAN of the destination VM (null: any VLAN). */
  vlan: number | null;
}

export interface HostPolicy {
  /**
   * Traffic between VMs on different VLANs. deny: dropped; same-tenant:
   * dropped unless both VMs are the same tenant's; explicit-policy: passes
   * where the receiving NIC's ingress rules name the sender (not `any`);
   * allow: passes (subject to the NICs' rules). Default when no rule says: deny.
   */
  betweenVlans: 'deny' | 'same-tenant' | 'explicit-policy' | 'allow';
  /** Exceptions to the VLAN rule, first match wins. */
  segments: SegmentRule[];
  blockHeaders: ExtHeader[];
  /** Packets per second per VM port. */
  rates: Partial<Record<RateTraffic, number>>;
}

export interface HostPolicyIssue {
  rule: number;
  message: string;
}

/** Settings from the parsed rules, or the conflicts that make them ambiguous. */
export function compileHostPolicy(rules: readonly HostRule[]): { policy: HostPolicy; issues: HostPolicyIssue[] } {
  const policy: HostPolicy = { betweenVlans: 'deny', segments: [], blockHeaders: [], rates: {} };
  const issues: HostPolicyIssue[] = [];
  let vlanRule = -1;
  const rateRule = new Map<RateTraffic, number>();
  rules.forEach((r, i) => {
    switch (r.kind) {
      case 'between-vlans':
        if (vlanRule >= 0) {
          issues.push({ rule: i, message: `a policy has one "between vlans" rule (rules[${vlanRule}] is the other)` });
          return;
        }
        vlanRule = i;
        policy.betweenVlans = r.action === 'allow' ? (r.exception === 'explicit-policy' ? 'explicit-policy' : 'allow') : r.exception === 'same-tenant' ? 'same-tenant' : 'deny';
        return;
      case 'to':
        policy.segments.push({ action: r.action, pool: r.segment, vlan: r.vlan });
        return;
      case 'extension-headers':
        for (const h of r.headers) if (!policy.blockHeaders.includes(h)) policy.blockHeaders.push(h);
        return;
      case 'rate-limit': {
        const other = rateRule.get(r.traffic);
        if (other !== undefined) {
          issues.push({ rule: i, message: `${r.traffic} is already limited by rules[${other}]` });
          return;
        }
        rateRule.set(r.traffic, i);
        policy.rates[r.traffic] = r.pps;
      }
    }
  });
  return { policy, issues };
}

/** The guard settings a policy refines (a structural subset of the firewall's PortGuard). */
export interface GuardKnobs {
  blockHopByHop: boolean;
  blockRouting: boolean;
  blockFragment: boolean;
  blockDestinationOptions: boolean;
  rates: { nd: number; icmp: number; mcast: number };
}

/**
 * A port's guards under a policy: a header the policy denies is blocked even
 * if the NIC did not ask; a rate is the lower of the NIC's and the policy's.
 * A tenant can make its VM stricter than the operator's policy, never looser.
 */
export function refineGuard<G extends GuardKnobs>(guard: G, policy: HostPolicy | undefined): G {
  if (!policy) return guard;
  const b = (h: ExtHeader) => policy.blockHeaders.includes(h);
  const min = (a: number, p: number | undefined) => (p === undefined ? a : Math.min(a, p));
  return {
    ...guard,
    blockHopByHop: guard.blockHopByHop || b('hop-by-hop'),
    blockRouting: guard.blockRouting || b('routing'),
    blockFragment: guard.blockFragment || b('fragment'),
    blockDestinationOptions: guard.blockDestinationOptions || b('destination-options'),
    rates: {
      ...guard.rates,
      nd: min(guard.rates.nd, policy.rates.nd),
      icmp: min(guard.rates.icmp, policy.rates.icmpv6),
      mcast: min(guard.rates.mcast, policy.rates.multicast),
    },
  };
}
