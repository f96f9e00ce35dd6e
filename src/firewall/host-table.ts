// PURE: the guide's `table ip6 metald_security` (step 1.1), made safe
// (docs/decisions/0018): guards before accepts (SPEC-NOTES 5), RAs and
// redirects never change the host's routes, VMs reach only what IPv6 itself
// needs on the host (ND, RS, MLD, echo to their gateway) — never sshd or the
// API — and management access is restricted only when a management prefix is
// configured (a default drop without one would lock the operator out).

export interface HostTableInput {
  table: string;
  /** Bridges (and shards) that VMs hang off. */
  vmBridges: readonly string[];
  /** Host devices of routed attachments (decision 0021): VM-facing too, one per NIC (set elements only). */
  routedDevices?: readonly string[];
  /** Pool prefixes: the only sources routed traffic from VMs may carry. */
  vmRanges: readonly string[];
  managementPrefixes: readonly string[];
  /** TCP ports reachable from the management prefixes (22 and the API port). */
  managementPorts: readonly number[];
  /** Link-local sources whose RAs the host accepts (already resolved, SPEC-NOTES 1). */
  allowedRaSources: readonly string[];
  ndRate: number;
  icmpRate: number;
  /** Errors (unreachable, too big, time exceeded, parameter problem) per second. */
  icmpErrorRate: number;
  /** nflog group for denied packets (events issue). */
  logGroup: number;
}

/**
 * Every deny is counted and dropped; its log line is a sample (docs/decisions/0032): a flood at the
 * host must not become a flood of nflog messages for metald's reader to parse.
 */
export const HOST_LOG_RATE = 50;
const LOG = (g: number) => `log prefix "metald-ipv6-deny: " group ${g}`;
const DENY = 'counter jump deny';

function set(name: string, decl: string, elements: readonly string[]): string {
  return `\tset ${name} { ${decl}${elements.length ? ` elements = { ${elements.join(', ')} }` : ''} }`;
}

export function renderHostTable(h: HostTableInput): string {
  const mgmt = h.managementPrefixes.length > 0;
  const errors = 'destination-unreachable, packet-too-big, time-exceeded, parameter-problem';
  const mld = 'mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report';
  const input = [
    'type filter hook input priority 0; policy accept;',
    'iif lo accept',
    'rt type 0 counter drop',
    'icmpv6 type nd-redirect counter drop',
    'icmpv6 type nd-router-advert iifname @vm_bridges counter drop',
    'icmpv6 type nd-router-advert ip6 saddr != @allowed_ra_sources counter drop',
    'ct state invalid counter drop',
    'ct state established,related accept',
    `icmpv6 type { ${errors} } limit rate ${h.icmpErrorRate}/second accept`,
    `icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } limit rate ${h.ndRate}/second accept`,
    `icmpv6 type nd-router-solicit limit rate ${h.ndRate}/second accept`,
    `icmpv6 type { ${mld} } ip6 saddr { fe80::/10, :: } accept`,
    `icmpv6 type echo-request limit rate ${h.icmpRate}/second accept`,
    `iifname @vm_bridges ${DENY}`,
    ...(mgmt
      ? [`tcp dport { ${h.managementPorts.join(', ')} } ip6 saddr @management_prefixes accept`, DENY]
      : []),
  ];
  const forward = [
    'type filter hook forward priority 0; policy drop;',
    'rt type 0 counter drop',
    'ct state invalid counter drop',
    'ct state established,related accept',
    `iifname @vm_bridges ip6 saddr != @vm_ranges ${DENY}`,
    // Only reached when bridged traffic is sent through ip6 hooks (bridge-nf-call-ip6tables=1).
    ...h.vmBridges.map((b) => `iifname ${JSON.stringify(b)} oifname ${JSON.stringify(b)} accept`),
    'iifname @vm_bridges accept',
    `meta l4proto ipv6-icmp limit rate ${h.icmpRate}/second accept`,
    DENY,
  ];
  return [
    `table ip6 ${h.table} {`,
    '\tcomment "metald host firewall: managed by metald, changes are reverted"',
    set('vm_bridges', 'type ifname;', [...h.vmBridges, ...(h.routedDevices ?? [])].map((b) => JSON.stringify(b))),
    set('vm_ranges', 'type ipv6_addr; flags interval;', h.vmRanges),
    set('management_prefixes', 'type ipv6_addr; flags interval;', h.managementPrefixes),
    set('allowed_ra_sources', 'type ipv6_addr;', h.allowedRaSources),
    // Jumped to, so it comes first (the text loads in one pass).
    '\tchain deny {', `\t\tlimit rate ${HOST_LOG_RATE}/second burst ${HOST_LOG_RATE} packets ${LOG(h.logGroup)}`, '\t\tdrop', '\t}',
    '\tchain input {', ...input.map((r) => `\t\t${r}`), '\t}',
    '\tchain forward {', ...forward.map((r) => `\t\t${r}`), '\t}',
    '}',
    '',
  ].join('\n');
}
