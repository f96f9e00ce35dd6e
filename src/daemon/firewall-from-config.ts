import { allBridges, allPools, type MetaldConfig } from '../config/schema.js';
import type { FirewallPlaneOptions } from '../firewall/firewall-plane.js';
import type { GuardDefaults, SegmentationSettings } from '../firewall/port-guard.js';
import { parsePrefix } from '../core/net/ipv6.js';
import { parseHostRule } from '../core/policy/host-rules.js';
import { compileHostPolicy } from '../core/policy/host-policy.js';

// The firewall plane's settings from the config (docs/config.md says where each key takes effect).

/** Default RAs per second a VM accepts from its routers when its NIC sets no ra_rate_limit. */
export const DEFAULT_RA_RATE = 10;
/** ICMPv6 errors per second the host answers to (the guide's step 1.1). */
export const HOST_ICMP_ERROR_RATE = 100;
/** nflog group of the host firewall's denies (the events issue reads it). */
export const HOST_DENY_LOG_GROUP = 1;
/** nflog group of sampled port-guard drops. */
export const GUARD_LOG_GROUP = 2;

export function guardDefaults(cfg: MetaldConfig): GuardDefaults {
  const s = cfg.ipv6.security;
  return {
    raGuard: s.enable_ra_guard,
    sourceGuard: s.enable_source_guard,
    extensionHeaderFiltering: s.enable_extension_header_filtering,
    rates: { nd: s.global_nd_rate_limit, icmp: s.global_icmpv6_rate_limit, mcast: s.global_multicast_rate_limit, ra: DEFAULT_RA_RATE },
    bridges: new Map(allBridges(cfg).map((b) => [b.name, {
      routed: b.mode === 'routed', raGuard: b.enable_ra_guard, allowedRaSources: b.allowed_ra_sources, mldSnooping: b.enable_mld_snooping,
    }])),
    segmentation: segmentationSettings(cfg),
  };
}

/** Pools with their profiles and the section-2 policies, compiled (the schema has parsed and cross-checked them). */
export function segmentationSettings(cfg: MetaldConfig): SegmentationSettings {
  return {
    defaultProfile: cfg.ipv6.security.default_security_profile,
    vlans: cfg.ipv6.enable_vlans,
    pools: allPools(cfg).map((p) => {
      const prefix = parsePrefix(p.prefix);
      return { id: p.id, network: prefix.network, length: prefix.length, profile: p.security_profile ?? cfg.ipv6.security.default_security_profile };
    }),
    policies: cfg.ipv6.security_policies.map((p) => ({ id: p.id, profiles: p.profiles, policy: compileHostPolicy(p.rules.map(parseHostRule)).policy })),
  };
}

export function tableNames(cfg: MetaldConfig): { guardTable: string; hostTable: string; routedTable: string } {
  // The guide's name for the default instance; every other instance gets its own (issue 4 item 9).
  return { guardTable: `${cfg.instance_name}_guard`, hostTable: `${cfg.instance_name}_security`, routedTable: `${cfg.instance_name}_routed` };
}

/** The guards of routed NICs: the same checks in an ip6 table; the host table belongs to the bridge plane. */
export function routedFirewallOptions(cfg: MetaldConfig): Omit<FirewallPlaneOptions, 'log' | 'trustedPorts'> {
  const t = tableNames(cfg);
  return { ...firewallOptions(cfg), family: 'ip6', guardTable: t.routedTable, host: undefined };
}

export function firewallOptions(cfg: MetaldConfig): Omit<FirewallPlaneOptions, 'log' | 'trustedPorts'> {
  const s = cfg.ipv6.security;
  const bridges = allBridges(cfg);
  const isLinkLocal = (a: string) => /^fe[89ab]/i.test(a);
  return {
    netns: cfg.dataplane.netns,
    guardTable: tableNames(cfg).guardTable,
    hostTable: tableNames(cfg).hostTable,
    defaults: guardDefaults(cfg),
    guardLogGroup: GUARD_LOG_GROUP,
    host: {
      vmBridges: bridges.map((b) => b.name),
      vmRanges: allPools(cfg).map((p) => p.prefix),
      managementPrefixes: cfg.ipv6.management_prefixes,
      managementPorts: [22, cfg.port],
      allowedRaSources: [...new Set(bridges.flatMap((b) => b.allowed_ra_sources).filter(isLinkLocal))],
      ndRate: s.global_nd_rate_limit,
      icmpRate: s.global_icmpv6_rate_limit,
      icmpErrorRate: HOST_ICMP_ERROR_RATE,
      logGroup: HOST_DENY_LOG_GROUP,
    },
  };
}
