// What `metald doctor` checks, as data: the probe, the expected value, whether
// metald cannot work without it ("must") or only works worse ("advice"), and
// the fix. Pure: probe.ts does the I/O, report.ts the printing. Which checks
// are must-have follows from the config (see buildChecks).

import { allBridges, type MetaldConfig } from '../config/schema.js';
import type { TableRef } from './foreign-marks.js';

export type Level = 'must' | 'advice';
/** fail = a must-have is missing; warn = advice not followed; n-a = not checkable here. */
export type Status = 'pass' | 'fail' | 'warn' | 'n-a';
export type NftFamily = 'bridge' | 'inet' | 'ip6' | 'netdev';
export type LinkFeature = 'bridge' | 'tun' | 'vlan' | 'vlan_filtering';

export type Probe =
  /** hostWide: the key exists only in the initial namespace (the neighbour table is global). */
  | { kind: 'sysctl'; key: string; want: string; hostWide: boolean }
  /** Load a tiny table of `family` (with `rule` in a chain, when given) in the scratch namespace. */
  | { kind: 'nft'; family: NftFamily; rule?: string }
  | { kind: 'link'; feature: LinkFeature }
  | { kind: 'kvm' }
  | { kind: 'binary'; file: string; args: readonly string[]; version: RegExp }
  /** The target's ruleset: rules of tables other than `own` that set the packet mark. */
  | { kind: 'marks'; own: readonly TableRef[] };

export interface Check {
  id: string;
  title: string;
  level: Level;
  probe: Probe;
  expected: string;
  fix: string;
}

/** Where the sysctls are read (and, with --fix, written). */
export type Target = { kind: 'netns'; name: string } | { kind: 'root' };

export interface CheckResult {
  id: string;
  title: string;
  level: Level;
  status: Status;
  found: string;
  expected: string;
  /** Empty when the check passed. */
  fix: string;
  /** Why the status is n-a (JSON only; the table prints it once below). */
  note?: string;
}

/** What a probe saw. `na`: the check does not apply to the target (host-wide keys in a namespace). */
export interface Observation {
  ok: boolean;
  found: string;
  na?: boolean;
  /** Replaces the check's fix text (e.g. "start metald" when the namespace is missing). */
  fix?: string;
  note?: string;
}

/** The guide's "Host Network Hardening" sysctl baseline, in its order. */
export const SYSCTL_BASELINE: readonly { key: string; value: string; title: string; hostWide?: true }[] = [
  { key: 'net.ipv6.conf.all.forwarding', value: '1', title: 'IPv6 forwarding (all)' },
  { key: 'net.ipv6.conf.default.forwarding', value: '1', title: 'IPv6 forwarding (new interfaces)' },
  { key: 'net.ipv6.conf.all.use_tempaddr', value: '0', title: 'no privacy addresses (all)' },
  { key: 'net.ipv6.conf.default.use_tempaddr', value: '0', title: 'no privacy addresses (new interfaces)' },
  { key: 'net.ipv6.conf.all.accept_ra', value: '0', title: 'ignore router advertisements (all)' },
  { key: 'net.ipv6.conf.default.accept_ra', value: '0', title: 'ignore router advertisements (new interfaces)' },
  { key: 'net.ipv6.conf.all.accept_redirects', value: '0', title: 'ignore ICMPv6 redirects (all)' },
  { key: 'net.ipv6.conf.default.accept_redirects', value: '0', title: 'ignore ICMPv6 redirects (new interfaces)' },
  { key: 'net.ipv6.neigh.default.gc_thresh1', value: '1024', title: 'neighbour table gc_thresh1', hostWide: true },
  { key: 'net.ipv6.neigh.default.gc_thresh2', value: '2048', title: 'neighbour table gc_thresh2', hostWide: true },
  { key: 'net.ipv6.neigh.default.gc_thresh3', value: '4096', title: 'neighbour table gc_thresh3', hostWide: true },
  { key: 'net.ipv6.neigh.default.gc_interval', value: '30', title: 'neighbour table gc_interval', hostWide: true },
  { key: 'net.ipv6.icmp.ratelimit', value: '100', title: 'ICMPv6 rate limit' },
  { key: 'net.ipv6.conf.all.accept_source_route', value: '0', title: 'no source routing (all)' },
  { key: 'net.ipv6.conf.default.accept_source_route', value: '0', title: 'no source routing (new interfaces)' },
];

/** The facts of the config that decide which checks are must-have. */
export interface DoctorContext {
  target: Target;
  backend: MetaldConfig['backend'];
  ipv6Enabled: boolean;
  bridges: number;
  extHdrFiltering: boolean;
  /** metald's nftables tables (guard, routed guard, host firewall). */
  ownTables: readonly TableRef[];
}

export function doctorContext(cfg: MetaldConfig, target: Target): DoctorContext {
  return {
    target,
    backend: cfg.backend,
    ipv6Enabled: cfg.ipv6.enabled,
    bridges: cfg.ipv6.enabled ? allBridges(cfg).length : 0,
    extHdrFiltering: cfg.ipv6.security.enable_extension_header_filtering,
    ownTables: [
      { family: 'bridge', name: `${cfg.instance_name}_guard` },
      { family: 'ip6', name: `${cfg.instance_name}_routed` },
      { family: 'ip6', name: `${cfg.instance_name}_security` },
    ],
  };
}

export function describeTarget(t: Target): string {
  return t.kind === 'root' ? 'the root network namespace' : `network namespace ${t.name}`;
}

/** The command that sets `key=value` in the target (what --fix runs). */
export function sysctlFixCommand(t: Target, key: string, value: string): string {
  return `${t.kind === 'netns' ? `ip netns exec ${t.name} ` : ''}sysctl -w ${key}=${value}`;
}

export const HOST_WIDE_NOTE = 'n/a in this namespace (host-wide: checked in the root namespace read-only)';

const NFT_KCONFIG: Record<NftFamily, string> = {
  bridge: 'CONFIG_NF_TABLES_BRIDGE',
  inet: 'CONFIG_NF_TABLES_INET',
  ip6: 'CONFIG_NF_TABLES_IPV6',
  netdev: 'CONFIG_NF_TABLES_NETDEV',
};

const level = (must: boolean): Level => (must ? 'must' : 'advice');

export function buildChecks(ctx: DoctorContext): Check[] {
  const hasBridges = ctx.bridges > 0;
  const needsTap = ctx.backend === 'firecracker' || ctx.backend === 'qemu';
  const checks: Check[] = SYSCTL_BASELINE.map((s) => ({
    id: s.key,
    title: s.title,
    // Without IPv6 metald touches no host networking: the baseline is then advice.
    level: level(ctx.ipv6Enabled),
    probe: { kind: 'sysctl', key: s.key, want: s.value, hostWide: s.hostWide === true },
    expected: s.value,
    fix: sysctlFixCommand(ctx.target, s.key, s.value),
  }));

  for (const family of ['bridge', 'inet', 'ip6', 'netdev'] as const) {
    checks.push({
      id: `nft.family.${family}`,
      title: `nf_tables ${family} family`,
      level: 'must',
      probe: { kind: 'nft', family },
      expected: 'supported',
      fix: `kernel with ${NFT_KCONFIG[family]}`,
    });
  }
  checks.push(
    {
      id: 'nft.bridge.exthdr',
      title: 'IPv6 extension-header matching in the bridge family',
      level: level(hasBridges && ctx.extHdrFiltering),
      probe: { kind: 'nft', family: 'bridge', rule: 'ether type ip6 exthdr hbh exists drop' },
      expected: 'supported',
      fix: 'kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_BRIDGE (exthdr is part of nf_tables)',
    },
    {
      id: 'nft.bridge.ct',
      title: 'connection tracking (ct state) in the bridge family',
      level: 'advice',
      probe: { kind: 'nft', family: 'bridge', rule: 'ct state established accept' },
      expected: 'supported',
      fix: 'kernel with CONFIG_NF_CONNTRACK_BRIDGE (optional: metald\'s port guards are stateless)',
    },
    {
      id: 'nft.foreign-marks',
      title: 'no other table sets packet marks',
      // Decision 0027: a non-zero mark on traffic towards a VM is read as the sending VM's tenant and VLAN.
      level: 'advice',
      probe: { kind: 'marks', own: ctx.ownTables },
      expected: 'none',
      fix: 'leave the mark of traffic to and from VM bridges at 0 in that table: metald reads a mark as the sending VM\'s tenant and VLAN, so marked traffic to VMs is judged by tenant isolation (decision 0027)',
    },
    {
      id: 'link.bridge',
      title: 'Linux bridge',
      level: level(hasBridges),
      probe: { kind: 'link', feature: 'bridge' },
      expected: 'supported',
      fix: 'kernel with CONFIG_BRIDGE (modprobe bridge)',
    },
    {
      id: 'link.tun',
      title: 'tun/tap devices',
      level: level(needsTap),
      probe: { kind: 'link', feature: 'tun' },
      expected: 'supported',
      fix: 'kernel with CONFIG_TUN (modprobe tun); /dev/net/tun must exist',
    },
    {
      id: 'link.vlan',
      title: '802.1Q VLAN devices',
      level: 'advice',
      probe: { kind: 'link', feature: 'vlan' },
      expected: 'supported',
      fix: 'kernel with CONFIG_VLAN_8021Q (modprobe 8021q)',
    },
    {
      id: 'link.vlan_filtering',
      title: 'bridge vlan_filtering',
      level: 'advice',
      probe: { kind: 'link', feature: 'vlan_filtering' },
      expected: 'supported',
      fix: 'kernel with CONFIG_BRIDGE_VLAN_FILTERING',
    },
    {
      id: 'kvm',
      title: 'hardware virtualisation (KVM)',
      // Firecracker has no fallback; QEMU falls back to TCG (slow, but it boots).
      level: level(ctx.backend === 'firecracker'),
      probe: { kind: 'kvm' },
      expected: '/dev/kvm with kvm_intel or kvm_amd',
      fix: 'bare metal or nested virtualisation, then modprobe kvm_intel (or kvm_amd)',
    },
    binary('bin.ip', 'iproute2 (ip)', 'must', 'ip', ['-V'], /iproute2-[\w.]+/, 'apt-get install iproute2'),
    // The bridges' ND ports hold the bridge MAC's fdb entry (decision 0030): `bridge fdb`.
    binary('bin.bridge', 'iproute2 (bridge)', level(hasBridges), 'bridge', ['-V'], /\d+(\.\d+)+/, 'apt-get install iproute2'),
    binary('bin.nft', 'nftables (nft)', 'must', 'nft', ['--version'], /v\d+(\.\d+)+/, 'apt-get install nftables'),
    binary('bin.radvd', 'radvd', level(hasBridges), 'radvd', ['--version'], /\d+(\.\d+)+/, 'apt-get install radvd'),
    binary('bin.qemu', 'QEMU', level(ctx.backend === 'qemu'), 'qemu-system-x86_64', ['--version'], /\d+(\.\d+)+/,
      'apt-get install qemu-system-x86'),
    // Security events (decision 0028): without tcpdump guard drops still become events from the counters, only later;
    // without logger none reach syslog.
    binary('bin.tcpdump', 'tcpdump (nflog samples as security events)', 'advice', 'tcpdump', ['--version'], /tcpdump version [\d.]+/, 'apt-get install tcpdump'),
    binary('bin.logger', 'logger (security events to syslog)', 'advice', 'logger', ['--version'], /util-linux [\d.]+/, 'apt-get install bsdutils'),
  );
  return checks;
}

function binary(id: string, title: string, lvl: Level, file: string, args: string[], version: RegExp, fix: string): Check {
  return { id, title, level: lvl, probe: { kind: 'binary', file, args, version }, expected: 'installed', fix };
}

/** Observation → result: a failed must-have is "fail", failed advice is "warn". */
export function judge(check: Check, obs: Observation): CheckResult {
  const status: Status = obs.na ? 'n-a' : obs.ok ? 'pass' : check.level === 'must' ? 'fail' : 'warn';
  const fix = status === 'pass' || (obs.na && obs.ok) ? '' : (obs.fix ?? check.fix);
  const r: CheckResult = { id: check.id, title: check.title, level: check.level, status, found: obs.found, expected: check.expected, fix };
  if (obs.note !== undefined) r.note = obs.note;
  return r;
}
