// The `ipv6:` section: pools (IPAM), bridges (host networking), DNS handed to
// guests, VLANs, port guards and isolation policies. Cross-field rules live in
// one superRefine so each error carries the path of the value to fix.

import { z } from 'zod';
import { addressScope, formatPrefix, parseIpv6, parsePrefix, prefixContains, prefixesOverlap, type Prefix } from '../core/net/ipv6.js';
import {
  dnsName,
  duration,
  formatPath,
  identifier,
  ifName,
  intIn,
  ipv6Address,
  ipv6InterfaceAddress,
  ipv6Prefix,
  lowerEnum,
  nonEmpty,
  type RuleParser,
  type SchemaOptions,
  withArticle,
} from './schema-common.js';
import { ParseError, tokenize } from '../core/policy/lexer.js';
import { parseHostRule, type HostRule } from '../core/policy/host-rules.js';
import { compileHostPolicy } from '../core/policy/host-policy.js';

export const SECURITY_PROFILES = ['high', 'medium', 'low'] as const;
const securityProfile = z.enum(SECURITY_PROFILES);

export const POOL_MIN_LENGTH = 32;
export const POOL_MAX_LENGTH = 64;
/** Address-mode pools may be smaller than a /64 (lab pools, a /112 slice). */
export const ADDRESS_POOL_MAX_LENGTH = 120;
const POOL_SCOPES_REFUSED = new Set(['unspecified', 'loopback', 'multicast', 'link-local', 'ipv4-mapped']);

const pool = z
  .strictObject({
    id: identifier,
    prefix: ipv6Prefix,
    description: z.string().default(''),
    auto_assign: z.boolean().default(true),
    reserved: z.array(ipv6Address).default([]),
    // Absent means "ipv6.security.default_security_profile", filled in below.
    security_profile: securityProfile.optional(),
    // Allocations per hour. Absent: unlimited. 0: the pool hands out nothing new (draining).
    rate_limit: intIn(0).optional(),
    // Allocations per hour per tenant in this pool. Absent: unlimited.
    tenant_rate_limit: intIn(0).optional(),
    // Tenants that may take addresses from this pool. Empty: every tenant.
    tenants: z.array(identifier).default([]),
    // address: one /128 per NIC. prefix: one /64 per NIC (RFC 8273), which lets
    // guests use privacy / stable-privacy addresses under the source guard.
    mode: z.enum(['address', 'prefix']).default('address'),
  })
  .superRefine((p, ctx) => {
    const prefix = parsePrefix(p.prefix);
    const max = p.mode === 'address' ? ADDRESS_POOL_MAX_LENGTH : POOL_MAX_LENGTH;
    if (prefix.length < POOL_MIN_LENGTH || prefix.length > max) {
      ctx.addIssue({
        code: 'custom',
        path: ['prefix'],
        message: `pool prefix length must be /${POOL_MIN_LENGTH} to /${max}${p.mode === 'address' ? ' for an address-mode pool' : ''}, got /${prefix.length}`,
      });
      return;
    }
    const scope = addressScope(prefix.network);
    if (POOL_SCOPES_REFUSED.has(scope)) {
      ctx.addIssue({ code: 'custom', path: ['prefix'], message: `${p.prefix} is ${withArticle(scope)} prefix and cannot be a VM address pool` });
      return;
    }
    if (p.mode === 'prefix' && prefix.length >= 64) {
      ctx.addIssue({
        code: 'custom',
        path: ['mode'],
        message: `a prefix-mode pool hands out /64s, so its prefix must be shorter than /64 (got ${p.prefix})`,
      });
    }
    const seen = new Map<string, number>();
    p.reserved.forEach((r, i) => {
      if (!prefixContains(prefix, parseIpv6(r))) {
        ctx.addIssue({ code: 'custom', path: ['reserved', i], message: `${r} is outside pool ${p.id} (${p.prefix})` });
      }
      const first = seen.get(r);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['reserved', i], message: `${r} is already listed at reserved[${first}]` });
      else seen.set(r, i);
    });
  });

const bridge = z.strictObject({
  name: ifName,
  ipv6_address: ipv6InterfaceAddress.optional(),
  mtu: intIn(1280, 9216).default(1500),
  enable_stp: z.boolean().default(false),
  // Seconds; the kernel's range is 2..30 when STP is on.
  forward_delay: intIn(2, 30).default(15),
  enable_ra_guard: z.boolean().default(true),
  enable_mld_snooping: z.boolean().default(true),
  // Routers whose RAs are accepted (SPEC-NOTES 1: matched by the router's link-local source).
  allowed_ra_sources: z.array(ipv6Address).default([]),
  // bridged: a Linux bridge (sharded past 1023 ports, decision 0020). routed: no bridge; each
  // VM NIC is a point-to-point link with its /128 (or /64) routed to it and fe80::1 as its
  // gateway (decision 0021). The tenant names either kind with bridge_name.
  mode: z.enum(['bridged', 'routed']).default('bridged'),
});

const dns = z.strictObject({
  servers: z.array(ipv6Address).default([]),
  search_domain: dnsName.optional(),
  enable_dnssec: z.boolean().default(false),
  dns_over_tls: z.boolean().default(false),
});

export const SYSLOG_FACILITIES = [
  'kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', 'news', 'uucp', 'cron', 'authpriv', 'ftp',
  'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7',
] as const;

const security = z.strictObject({
  enable_ra_guard: z.boolean().default(true),
  enable_source_guard: z.boolean().default(true),
  enable_extension_header_filtering: z.boolean().default(true),
  default_security_profile: securityProfile.default('high'),
  global_nd_rate_limit: intIn(1).default(1000),
  global_icmpv6_rate_limit: intIn(1).default(1000),
  global_multicast_rate_limit: intIn(1).default(500),
  enable_firewall_integration: z.boolean().default(true),
  firewall_backend: z
    .string()
    .refine((s) => s === 'nftables', {
      error: (iss) => `${JSON.stringify(iss.input)} is not supported: metald only supports the nftables firewall backend`,
    })
    .transform(() => 'nftables' as const)
    .prefault('nftables'),
  enable_security_logging: z.boolean().default(true),
  log_level: lowerEnum(['debug', 'info', 'warn', 'error'], 'a log level', { warning: 'warn' }).prefault('info'),
  syslog_facility: lowerEnum(SYSLOG_FACILITIES, 'a syslog facility').prefault('daemon'),
});

/** The section-2 rule language (src/core/policy/host-rules.ts) as the schema's rule hook. */
export const hostRuleParser: RuleParser = (rule) => {
  try {
    parseHostRule(rule);
    return null;
  } catch (e) {
    if (e instanceof ParseError) return { message: e.message, column: e.column };
    throw e;
  }
};

function securityPolicy(opts: SchemaOptions) {
  const parse = opts.ruleParser ?? hostRuleParser;
  return z.strictObject({
    id: identifier,
    description: z.string().default(''),
    // The security profiles whose VMs get this policy (docs/decisions/0024); at most one policy per profile.
    profiles: z.array(securityProfile).default([]),
    rules: z.array(nonEmpty).superRefine((rules, ctx) => {
      if (rules.length === 0) ctx.addIssue({ code: 'custom', message: 'a policy needs at least one rule' });
      rules.forEach((rule, i) => {
        if (rule.trim() === '') return; // "must not be empty" already
        const err = parse(rule);
        if (err) ctx.addIssue({ code: 'custom', path: [i], message: err.message, params: { column: err.column } });
      });
    }),
  });
}

/** Cross-checks of the policies: one policy per profile, segments that name pools, no conflicting rules. */
function checkPolicies(v: Ipv6Input, issues: Issue[]): void {
  const poolIds = [...(v.default_pool ? [v.default_pool.id] : []), ...v.pools.map((p) => p.id)];
  const byProfile = new Map<string, number>();
  v.security_policies.forEach((p, i) => {
    p.profiles.forEach((prof, j) => {
      const other = byProfile.get(prof);
      if (other !== undefined && other !== i) {
        issues.push({ path: ['security_policies', i, 'profiles', j], message: `profile ${prof} already has a policy (security_policies[${other}]); a VM gets one policy` });
      } else byProfile.set(prof, i);
    });
    const parsed: HostRule[] = [];
    p.rules.forEach((text, j) => {
      let r: HostRule;
      try {
        r = parseHostRule(text);
      } catch {
        return; // reported by the rule hook
      }
      parsed.push(r);
      if (r.kind === 'to' && r.segment !== null && !poolIds.includes(r.segment)) {
        const tokens = tokenize(text);
        const column = tokens[tokens.findIndex((t) => t.text.toLowerCase() === 'to') + 1]?.column;
        issues.push({
          path: ['security_policies', i, 'rules', j],
          message: `expected the id of a configured pool, got ${JSON.stringify(r.segment)} (pools: ${poolIds.join(', ') || 'none'})`,
          column,
        });
      }
    });
    if (parsed.length === p.rules.length) {
      for (const c of compileHostPolicy(parsed).issues) issues.push({ path: ['security_policies', i, 'rules', c.rule], message: c.message });
    }
  });
}

type Issue = { path: (string | number)[]; message: string; column?: number };

function checkPoolsAndBridges(v: Ipv6Input, issues: Issue[]): void {
  const pools = [
    ...(v.default_pool ? [{ path: ['default_pool'], p: v.default_pool }] : []),
    ...v.pools.map((p, i) => ({ path: ['pools', i], p })),
  ];
  const ids = new Map<string, string>();
  const seen: { id: string; prefix: Prefix; text: string }[] = [];
  for (const { path, p } of pools) {
    const label = formatPath(['ipv6', ...path]);
    const other = ids.get(p.id);
    if (other) issues.push({ path: [...path, 'id'], message: `duplicate pool id ${JSON.stringify(p.id)} (also ${other}.id)` });
    else ids.set(p.id, label);
    const prefix = parsePrefix(p.prefix);
    const clash = seen.find((s) => prefixesOverlap(s.prefix, prefix));
    if (clash) {
      issues.push({ path: [...path, 'prefix'], message: `pool ${p.id} (${p.prefix}) overlaps pool ${clash.id} (${clash.text})` });
    }
    seen.push({ id: p.id, prefix, text: formatPrefix(prefix) });
  }

  const bridges = [
    ...(v.bridge ? [{ path: ['bridge'], b: v.bridge }] : []),
    ...v.bridges.map((b, i) => ({ path: ['bridges', i], b })),
  ];
  const names = new Map<string, string>();
  for (const { path, b } of bridges) {
    const label = formatPath(['ipv6', ...path]);
    const other = names.get(b.name);
    if (other) issues.push({ path: [...path, 'name'], message: `duplicate bridge name ${JSON.stringify(b.name)} (also ${other}.name)` });
    else names.set(b.name, label);
    if (b.mode === 'routed' && b.ipv6_address !== undefined) {
      issues.push({
        path: [...path, 'ipv6_address'],
        message: `a routed attachment has no bridge to put ${b.ipv6_address} on: each VM's gateway is the host's link-local fe80::1 (remove ipv6_address, or use mode: bridged)`,
      });
    }
  }
}

const ipv6Base = (opts: SchemaOptions) =>
  z.strictObject({
    // Present section, absent key: the operator wrote an ipv6 section, so they mean it.
    enabled: z.boolean().default(true),
    default_pool: pool.optional(),
    pools: z.array(pool).default([]),
    bridge: bridge.optional(),
    bridges: z.array(bridge).default([]),
    dns: dns.prefault({}),
    enable_vlans: z.boolean().default(false),
    // Tenants stay off VLAN 1, the native VLAN on most switches (VLAN-hopping target).
    default_vlan: intIn(1, 4094).default(100),
    management_vlan: intIn(1, 4094).default(1),
    security: security.prefault({}),
    security_policies: z.array(securityPolicy(opts)).default([]),
    // How long a released address stays unallocatable, so a new VM never inherits
    // an old one's neighbour-cache entries, firewall state or reputation.
    quarantine: duration({ min: 0 }).prefault('10m'),
    // Sources allowed to reach ssh and the API (SPEC-NOTES 6: must be valid prefixes).
    management_prefixes: z.array(ipv6Prefix).default([]),
  });

type Ipv6Input = z.output<ReturnType<typeof ipv6Base>>;

export function ipv6Schema(opts: SchemaOptions = {}) {
  return ipv6Base(opts)
    .superRefine((v, ctx) => {
      const issues: Issue[] = [];
      checkPoolsAndBridges(v, issues);
      if (v.default_vlan === v.management_vlan) {
        issues.push({
          path: ['default_vlan'],
          message: `default_vlan and management_vlan are both ${v.default_vlan}; tenant VMs must not share the management VLAN`,
        });
      }
      const s = v.security;
      const guards = (['enable_ra_guard', 'enable_source_guard', 'enable_extension_header_filtering'] as const).filter((k) => s[k]);
      if (!s.enable_firewall_integration && guards.length > 0) {
        issues.push({
          path: ['security', 'enable_firewall_integration'],
          message: `the port guards are enforced with nftables; with firewall integration off, ${guards.join(', ')} would be silently unenforced (turn those off too, or keep this on)`,
        });
      }
      checkPolicies(v, issues);
      const policyIds = new Map<string, number>();
      v.security_policies.forEach((p, i) => {
        const first = policyIds.get(p.id);
        if (first !== undefined) issues.push({ path: ['security_policies', i, 'id'], message: `duplicate policy id ${JSON.stringify(p.id)} (also security_policies[${first}].id)` });
        else policyIds.set(p.id, i);
      });
      for (const { column, ...i } of issues) ctx.addIssue({ code: 'custom', ...i, ...(column !== undefined ? { params: { column } } : {}) });
    })
    .transform((v) => {
      const withProfile = <P extends { security_profile?: (typeof SECURITY_PROFILES)[number] | undefined }>(p: P) => ({
        ...p,
        security_profile: p.security_profile ?? v.security.default_security_profile,
      });
      return { ...v, default_pool: v.default_pool && withProfile(v.default_pool), pools: v.pools.map(withProfile) };
    });
}
