// bench/firewall-floor (issues 5 and 6): how close the port guards' packet rate
// is to the least any nftables ruleset of their shape can cost on this machine.
//
//   npm run bench -- firewall-floor [--rounds N] [--only v1,v2]   (default 7 rounds of 3 s per variant, ~6 min)
//
// The same two VMs and 64-byte UDP flow as bench/firewall (iperf3 between two
// namespaces on one bridge, pps = frames delivered to VM b's port), side by side in
// every round, the order reversed each round. Variants, 10k VMs' elements each:
//   none           no table
//   hooks          the two base chains (prerouting, forward), no rules
//   one_hook       forward only: one lookup of port, MAC, source and output port's
//                  group. Not a valid design (no guard before the bridge learns the
//                  source, multicast guarded per copy): the bound if a hook went
//   bypass         one_hook + a prerouting chain that passes unicast on at once (multicast
//                  would take the guards there): the shape of the one-lookup design the
//                  decision 0017 names
//   bypass_safe    bypass whose prerouting rule passes only IPv6 TCP/UDP to a unicast MAC (the
//                  bridge's ND and ARP suppression act on unicast frames before forward)
//   bypass_complete bypass_safe + the DHCPv6 server check in forward: the bypass design complete
//   minimal        one lookup in (port . MAC . source . next header -> mark), one out
//                  (mark & segment . port): the least a sender and receiver check costs
//   complete       minimal + the checks a complete guard needs on its fast path (multicast
//                  destination, DHCPv6 server port, ICMPv6 out), no counters
//   metald         metald's guard table (renderGuardTable), no rules
//   minimal_rules  minimal + each side's flow-set lookup (the least egress and ingress rules cost)
//   complete_rules minimal_rules behind complete's fast paths (which a and b, having rules, miss):
//                  what a host with ports of both kinds costs its ports with rules
//   metald_rules   metald's table, every VM with 3 ingress and 3 egress rules
// A minimal variant drops the UDP its lookup misses, so a wrong key shows as no traffic.
// Figures: each variant's median pps / none's (ratio of medians) and the median of each
// round's own ratio. Judged: metald within 3 % of complete, metald_rules of complete_rules (the
// least rulesets that guard as much).

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ipBatch, netnsAdd } from '../src/kernel/netns.js';
import { nftApply, nftDeleteTable } from '../src/kernel/nft.js';
import { pinBridgeNetfilterOff } from '../test/helpers/hostnet-kernel.js';
import { benchDefaults, PPS_VMS, ppsRecords, ppsTable, type Ctx } from './firewall.js';
import { iperf, scratchCleanup, setupPair, startServer, warmUp, type PairVm } from './_pps-pair.js';

const SECS = 3;
const NEAR = 0.97;
const MARK = '0x00001001';

interface Port { port: string; mac: string; addr: string }

const hook = (h: string, rules: string[]) =>
  `chain ${h} { type filter hook ${h} priority -200; policy accept;\n${rules.join('\n')}\n}`;
const table = (name: string, parts: string[]) => `table bridge ${name} {\n${parts.join('\n')}\n}\n`;
const elems = (xs: string[]) => (xs.length ? ` elements = { ${xs.join(', ')} }` : '');

function senderMap(name: string, ports: Port[]): string {
  return `map ${name} { type ifname . ether_addr . ipv6_addr . inet_proto : mark;${elems(ports.flatMap((p) =>
    ['udp', 'tcp'].map((proto) => `"${p.port}" . ${p.mac} . ${p.addr} . ${proto} : ${MARK}`)))} }`;
}
function zoneSet(name: string, ports: Port[]): string {
  return `set ${name} { type mark . ifname;${elems(ports.map((p) => `${MARK} . "${p.port}"`))} }`;
}
const SENDER = 'iifname . ether saddr . ip6 saddr . ip6 nexthdr';
const FLOW = 'ip6 saddr . udp sport . ip6 daddr . udp dport';
const flowSet = (name: string, key: string) =>
  `set ${name} { typeof ${key}; size 1048576; flags dynamic,timeout; timeout 30s; gc-interval 30s; }`;

/** The variants' rulesets; `a`, `b` first in `ports`; `a` has link group 1, `b` group 2. */
function variants(name: string, ports: Port[], metald: string, metaldRules: string): Map<string, string | null> {
  const groups = ports.map((p, i) => `"${p.port}" . ${p.mac} . ${p.addr} . udp . ${i === 0 ? 2 : i === 1 ? 1 : 7}`);
  return new Map<string, string | null>([
    ['none', null],
    ['hooks', table(name, [hook('prerouting', []), hook('forward', [])])],
    ['one_hook', table(name, [
      `set fastf { typeof iifname . ether saddr . ip6 saddr . ip6 nexthdr . meta oifgroup;${elems(groups)} }`,
      hook('forward', [`ether type ip6 ${SENDER} . meta oifgroup @fastf accept`, 'meta l4proto udp drop'])])],
    ['bypass', table(name, [
      `set fastf { typeof iifname . ether saddr . ip6 saddr . ip6 nexthdr . meta oifgroup;${elems(groups)} }`,
      hook('prerouting', ['ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 accept']),
      hook('forward', [`ether type ip6 ${SENDER} . meta oifgroup @fastf accept`, 'meta l4proto udp drop'])])],
    // The bypass made safe: the bridge acts on ICMPv6 (ND suppression answers NS) and ARP before the
    // forward hook whatever the destination MAC, so only IPv6 TCP/UDP may pass before the guards.
    // (MLD in a unicast frame is not snooped here: MLDv2 reports to a unicast MAC added no mdb entry.)
    ['bypass_safe', table(name, [
      `set fastf { typeof iifname . ether saddr . ip6 saddr . ip6 nexthdr . meta oifgroup;${elems(groups)} }`,
      hook('prerouting', ['ether type ip6 ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 meta l4proto { tcp, udp } accept']),
      hook('forward', [`ether type ip6 ${SENDER} . meta oifgroup @fastf accept`, 'meta l4proto udp drop'])])],
    // bypass_safe + the check a complete guard needs on that path (DHCPv6 server messages; ICMPv6
    // and multicast MACs already take prerouting's full checks): what the bypass design would cost.
    ['bypass_complete', table(name, [
      `set fastf { typeof iifname . ether saddr . ip6 saddr . ip6 nexthdr . meta oifgroup;${elems(groups)} }`,
      hook('prerouting', ['ether type ip6 ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 meta l4proto { tcp, udp } accept']),
      hook('forward', [`ether type ip6 th sport != 547 ${SENDER} . meta oifgroup @fastf accept`, 'meta l4proto udp drop'])])],
    ['minimal', table(name, [senderMap('fast', ports), zoneSet('rx_zone', ports),
      hook('prerouting', [`ether type ip6 meta mark set ${SENDER} map @fast accept`, 'meta l4proto udp drop']),
      hook('forward', ['meta mark & 0x03ffffff . oifname @rx_zone accept', 'meta l4proto udp drop'])])],
    // minimal + what a complete guard cannot leave out: multicast destinations and DHCPv6 server
    // messages take the full checks on the way in, ICMPv6 (RAs) on the way out. No counters.
    ['complete', table(name, [senderMap('fast', ports), zoneSet('rx_zone', ports),
      hook('prerouting', [`ether type ip6 th sport != 547 ip6 daddr != ff00::/8 meta mark set ${SENDER} map @fast accept`, 'meta l4proto udp drop']),
      hook('forward', ['meta l4proto != ipv6-icmp meta mark & 0x03ffffff . oifname @rx_zone accept', 'meta l4proto udp drop'])])],
    ['metald', metald],
    ['minimal_rules', rulesVariant(name, ports, false)],
    ['complete_rules', rulesVariant(name, ports, true)],
    ['metald_rules', metaldRules],
  ]);
}

/**
 * The least egress and ingress rules cost: each side's flow-set lookup (the first packet's update
 * stands in for the rules). `complete`: on a host where ports without rules take the plain fast
 * paths first (a and b are not in them), with complete's checks and no counters.
 */
function rulesVariant(name: string, ports: Port[], complete: boolean): string {
  const plain = ports.slice(2);
  const inChecks = complete ? 'ip6 daddr != ff00::/8 udp sport != 547 ' : '';
  return table(name, [senderMap('fast_pol', ports), zoneSet('rx_zone_pol', ports),
    ...(complete ? [senderMap('fast', plain), zoneSet('rx_zone', plain)] : []),
    flowSet('flows', FLOW), flowSet('rx_flows', `oifname . ${FLOW}`),
    hook('prerouting', [
      ...(complete ? [`ether type ip6 th sport != 547 ip6 daddr != ff00::/8 meta mark set ${SENDER} map @fast accept`] : []),
      `ether type ip6 meta l4proto udp ${inChecks}meta mark set ${SENDER} map @fast_pol ${FLOW} @flows accept`,
      `ether type ip6 meta l4proto udp ${inChecks}meta mark set ${SENDER} map @fast_pol update @flows { ${FLOW} } accept`,
      'meta l4proto udp drop']),
    hook('forward', [
      ...(complete ? ['meta l4proto != ipv6-icmp meta mark & 0x03ffffff . oifname @rx_zone accept'] : []),
      `meta l4proto udp meta mark & 0x03ffffff . oifname @rx_zone_pol oifname . ${FLOW} @rx_flows accept`,
      `meta l4proto udp meta mark & 0x03ffffff . oifname @rx_zone_pol update @rx_flows { oifname . ${FLOW} } accept`,
      'meta l4proto udp drop'])]);
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function main(args: string[]): Promise<void> {
  const at = args.indexOf('--rounds');
  const rounds = at >= 0 ? Number(args[at + 1]) : 7;
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds: expected a positive integer');
  const tag = randomBytes(2).toString('hex');
  const dp = `mtdbench-ff-${tag}`;
  const bridge = `ffbr${tag}`;
  const name = `floor_${tag}`;
  const children: ChildProcess[] = [];
  const { cleanup, release } = scratchCleanup(children, [`${dp}-a`, `${dp}-b`, dp]);

  const pps = new Map<string, number[]>();
  try {
    await netnsAdd(dp);
    await ipBatch(dp, ['link set lo up']);
    await pinBridgeNetfilterOff(dp);
    const [A, B] = await setupPair(dp, tag, bridge);
    await ipBatch(dp, [`link set ${A.port} group 1`, `link set ${B.port} group 2`]);
    const c = { dp, tag, bridge, table: name, tmp: '', rules: false, defaults: benchDefaults(bridge) } satisfies Ctx;
    const recs = (rules: boolean) => ppsRecords({ ...c, rules }, [A, B]);
    const ports: Port[] = recs(false).map((r) => ({ port: r.nics[0]!.hostDevice, mac: r.nics[0]!.mac, addr: r.nics[0]!.ipv6Address.split('/')[0]! }));
    const vs = variants(name, ports, ppsTable(c, recs(false)), ppsTable(c, recs(true)));
    const load = async (text: string | null) => {
      await nftDeleteTable(dp, 'bridge', name);
      if (text) await nftApply(dp, text);
    };

    startServer(B, children);
    await warmUp(dp, A, B);
    const only = args.indexOf('--only');
    const names = only >= 0 ? ['none', ...args[only + 1]!.split(',').filter((n) => n !== 'none')] : [...vs.keys()];
    for (const n of names) if (!vs.has(n)) throw new Error(`--only: no variant ${n} (${[...vs.keys()].join(', ')})`);
    for (const n of names) pps.set(n, []);
    console.log(`${PPS_VMS} VMs' elements per variant; ${rounds} rounds of ${SECS} s each, order reversed every round`);
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? names : [...names].reverse();
      const line: string[] = [];
      for (const n of order) {
        await load(vs.get(n)!);
        const run = await measure(dp, A, B, n);
        pps.get(n)!.push(run);
        line.push(`${n}=${(run / 1000).toFixed(0)}k`);
      }
      console.log(`round ${r + 1}: ${line.join(' ')}`);
    }
    await load(null);
  } finally {
    await cleanup();
    release();
  }

  const base = pps.get('none')!;
  const ratio = new Map<string, number>();
  for (const [n, xs] of pps) {
    ratio.set(n, median(xs) / median(base));
    const pair = median(xs.map((x, i) => x / base[i]!));
    console.log(`${n.padEnd(14)} median ${(median(xs) / 1000).toFixed(1)}k pps  ratio ${ratio.get(n)!.toFixed(3)}  median of round ratios ${pair.toFixed(3)}`);
  }
  const r = (n: string) => ratio.get(n) ?? NaN;
  // Judged against the least complete ruleset: minimal leaves out checks a guard cannot skip.
  const met = r('metald') >= NEAR * r('complete') && r('metald_rules') >= NEAR * r('complete_rules');
  console.log(`issue target pps_ratio >= 0.9: the least check of this shape gives ${r('minimal').toFixed(3)} (with rules ${r('minimal_rules').toFixed(3)}),`
    + ` the least complete guard ${r('complete').toFixed(3)} (with rules ${r('complete_rules').toFixed(3)})`);
  const of = (a: string, b: string) => `${a}_of_${b}=${(r(a) / r(b)).toFixed(3)}`;
  console.log(`BENCH firewall-floor ${[...ratio].filter(([n]) => n !== 'none').map(([n, v]) => `${n}=${v.toFixed(3)}`).join(' ')}`
    + ` ${of('metald', 'minimal')} ${of('metald', 'complete')} ${of('metald_rules', 'minimal_rules')} ${of('metald_rules', 'complete_rules')}`
    + ` target metald>=${NEAR}*complete,metald_rules>=${NEAR}*complete_rules ${met ? 'met' : 'missed'}`);
}

/** One run's delivered pps; a variant that lets through less than a tenth of the flow has a wrong key. */
async function measure(dp: string, a: PairVm, b: PairVm, variant: string): Promise<number> {
  const run = await iperf(dp, a, b, SECS);
  if (run.delivered < run.sent / 10) throw new Error(`${variant}: delivered ${run.delivered} of ${run.sent} packets: its fast path does not match the flow`);
  return run.pps;
}
