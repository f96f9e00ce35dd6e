// bench/firewall (issue 5): what the nftables port guards cost.
//
//   npm run bench -- firewall            full run: N = 1k, 10k, 50k; 50 updates per level; 5 pps runs each way (~3 min)
//   npm run bench -- firewall --quick    N = 1k and 10k; 20 updates per level; 3 pps runs each way (< 1 min);
//                                        update_ratio is then p50(10k) / p50(1k), update_p50_50k_ms=na
//   npm run bench -- firewall --pps-only part 2 alone
//   npm run bench -- firewall --rules    the same with every VM carrying 3 ingress and 3 egress rules
//                                        (issue 6; they allow the measured traffic), levels 1k and 10k:
//                                        update_ratio is then p50(10k) / p50(1k)
//
// 1. Update cost of the (N+1)-th VM: the guard table is loaded whole with N
//    VMs' guards (one `nft -f`; its time and nft's peak RSS are printed), then
//    FirewallPlane.ensureVm (on a no-op inner plane, adopting the loaded table)
//    is timed for further VMs, the levels side by side (one netns each, samples
//    interleaved): p50/p99 per level and p50(50k) / p50(1k).
//    Target: ratio <= 1.2. Guards key on port names, so the N synthetic VMs need
//    no interfaces. Also printed: render time and a no-op reconcile (structure
//    check; set contents compared) at 1k and 10k.
// 2. 64-byte UDP packets per second between two VMs (netns + veth on a bridge in
//    the data-plane netns, sandbox style, bridge-nf-call-ip6tables=0) with the
//    full ruleset at 10k VMs (the two real VMs + 9 998 synthetic) / with the
//    table deleted: `iperf3 -u -b 0 -l 64 -t 3 -A 0,1`, with and without runs
//    alternating side by side, medians. pps = frames delivered to VM b's port per
//    second. Target: ratio >= 0.9 (of the medians; pps_pair_ratio, the median of each round's own
//    ratio, is printed beside it as a check on drifting load). In every "with" run the guards' fast-path rule
//    counters must equal the frames sent/delivered (within 1 %), or the figure does not count.
//
// Needs root. Everything lives in namespaces made here (`mtdbench-fw-<hex>`,
// `-a`, `-b`), deleted at the end, also on failure or Ctrl-C; the iperf3 server
// started here is killed; the scratch dir is removed.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VmRecord } from '../src/core/vm/record.js';
import { run } from '../src/kernel/exec.js';
import { ipBatch, netnsAdd, netnsDelete } from '../src/kernel/netns.js';
import { iperf, scratchCleanup, setupPair, startServer, warmUp, type PairVm } from './_pps-pair.js';
import { nftApply, nftDeleteTable, nftList, type NftObject } from '../src/kernel/nft.js';
import { FirewallPlane, type FirewallPlaneOptions } from '../src/firewall/firewall-plane.js';
import { portElements } from '../src/firewall/guard-elements.js';
import { classIdsFor, renderGuardTable } from '../src/firewall/guard-table.js';
import { portGuards, type GuardDefaults } from '../src/firewall/port-guard.js';
import { UnmanagedNetworkPlane } from '../src/network/plane.js';
import { vmRecord } from '../test/helpers/hostnet-fixtures.js';
import { memoryLog, pinBridgeNetfilterOff } from '../test/helpers/hostnet-kernel.js';

const UPDATE_TARGET = 1.2;
const PPS_TARGET = 0.9;
export const PPS_VMS = 10_000;

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const median = (xs: readonly number[]) => pct(xs, 50);
const label = (n: number) => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const hex2 = (b: number) => b.toString(16).padStart(2, '0');

export interface Ctx {
  dp: string;
  table: string;
  tag: string;
  bridge: string;
  defaults: GuardDefaults;
  /** Scratch dir (GNU time's report), removed at the end. */
  tmp: string;
  /** Every VM carries NIC_RULES (issue 6). */
  rules: boolean;
}

/** Guard defaults of every pps run: all guards on, rates high enough not to limit the measured flow. */
export function benchDefaults(bridge: string): GuardDefaults {
  return {
    raGuard: true, sourceGuard: true, extensionHeaderFiltering: true,
    rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
    bridges: new Map([[bridge, { raGuard: true, allowedRaSources: [], mldSnooping: true }]]),
  };
}

/** 3 ingress and 3 egress rules that let iperf3 (TCP control, UDP data on 5201) and ping through. */
export const NIC_RULES = {
  ingress_rules: ['allow udp from any to any port 5201', 'allow tcp from any to any port 5201', 'allow icmpv6 from any to any'],
  egress_rules: ['allow udp from any to any port 5201', 'allow tcp from any to any port 5201', 'allow icmpv6 from any to any'],
};

function withRules(c: Ctx, vm: VmRecord): VmRecord {
  return c.rules ? { ...vm, config: { network: vm.nics.map((n) => ({ id: n.id, security_policy: NIC_RULES })) } } : vm;
}

/** VM number i: a port named after it, its own /64, a MAC of its own (52:54:01:… so the two real VMs never clash). */
export function syntheticVm(c: Ctx, i: number): VmRecord {
  const mac = `52:54:01:${[(i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff].map(hex2).join(':')}`;
  return withRules(c, vmRecord(`s${i}`, [{
    hostDevice: `f${c.tag}${i.toString(36)}`, bridge: c.bridge, mac,
    address: `fd00:b1:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::10/64`,
  }]));
}

/** The pps runs' VMs: the two real ones (a, b), then synthetic ones up to PPS_VMS; all with NIC_RULES when `c.rules`. */
export function ppsRecords(c: Ctx, pair: readonly PairVm[]): VmRecord[] {
  const real = pair.map((v, k) => withRules(c, vmRecord(`vm-${k}`, [{ hostDevice: v.port, bridge: c.bridge, mac: v.mac, address: `${v.addr}/64` }])));
  return [...real, ...Array.from({ length: PPS_VMS - real.length }, (_, i) => syntheticVm(c, i))];
}

/** metald's guard table `c.table` for these VMs. */
export function ppsTable(c: Ctx, recs: readonly VmRecord[]): string {
  return renderGuardTable({ family: 'bridge', table: c.table, ports: portGuards([...recs], c.defaults), trustedPorts: [], defaultRates: c.defaults.rates, logGroup: 2 });
}

/** `nft -f` of the whole table in the data-plane netns: wall time and nft's peak RSS (GNU time). */
async function loadTable(c: Ctx, text: string): Promise<{ ms: number; rssMiB: number }> {
  const t = performance.now();
  const file = join(c.tmp, 'time.out');
  await run('/usr/bin/time', ['-f', 'RSSKB %M', '-o', file, 'nsenter', `--net=/run/netns/${c.dp}`, '--', 'nft', '-f', '-'],
    { input: text, timeoutMs: 600_000 });
  const ms = performance.now() - t;
  const kb = Number(/RSSKB (\d+)/.exec(await readFile(file, 'utf8'))?.[1] ?? NaN);
  return { ms, rssMiB: kb / 1024 };
}

/** Packets counted by the rule of `chain` with this comment. */
async function ruleCounter(c: Ctx, chain: string, comment: string): Promise<number> {
  const objs: NftObject[] = await nftList(c.dp, ['chain', 'bridge', c.table, chain]);
  for (const o of objs) {
    const rule = o['rule'] as { comment?: string; expr?: Record<string, unknown>[] } | undefined;
    if (rule?.comment !== comment) continue;
    const counter = rule.expr?.find((e) => 'counter' in e)?.['counter'] as { packets?: number } | undefined;
    return Number(counter?.packets ?? 0);
  }
  return 0;
}

async function setSize(c: Ctx, set: string): Promise<number> {
  const objs = await nftList(c.dp, ['set', 'bridge', c.table, set]);
  return ((objs.find((o) => 'set' in o)?.['set'] as { elem?: unknown[] } | undefined)?.elem ?? []).length;
}

async function idleP50(file: string, argv: string[]): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    await run(file, argv);
    xs.push(performance.now() - t);
  }
  return median(xs);
}

interface LevelResult { n: number; p50: number; p99: number }

/** Part 1: full load with N VMs, then ensureVm timed for `samples` more VMs, per level. */
async function updateCost(c: Ctx, levels: readonly number[], samples: number, full: boolean): Promise<LevelResult[]> {
  const { log, lines: warnings } = memoryLog();
  const opts: FirewallPlaneOptions = { netns: c.dp, guardTable: c.table, hostTable: `${c.table}_host`, defaults: c.defaults, guardLogGroup: 2, host: undefined, log };
  // Evidence for the report: the real renderer and a no-op reconcile (what the periodic drift check does).
  for (const n of full ? [1000, 10_000] : [1000]) {
    const recs = Array.from({ length: n }, (_, i) => syntheticVm(c, i));
    const ports = portGuards(recs, c.defaults);
    let t = performance.now();
    const real = renderGuardTable({ family: 'bridge', table: c.table, ports, trustedPorts: [], defaultRates: c.defaults.rates, logGroup: 2 });
    const realMs = performance.now() - t;
    await nftDeleteTable(c.dp, 'bridge', c.table);
    await nftApply(c.dp, real);
    const plane = new FirewallPlane(new UnmanagedNetworkPlane(), opts);
    t = performance.now();
    const outcome = await plane.reconcile(recs).then(
      () => `writes ${plane.stats.writes}, full ${plane.stats.fullApplies}, repairs ${plane.stats.driftRepairs}`,
      (err: unknown) => `FAILED: ${String(err).split('\n')[0]}`);
    const reconcileMs = performance.now() - t;
    console.log(`N=${label(n).padEnd(3)} renderGuardTable ${realMs.toFixed(0)} ms; no-op reconcile ${reconcileMs.toFixed(0)} ms (${outcome})`);
  }
  const nftIdle = await idleP50('nsenter', [`--net=/run/netns/${c.dp}`, '--', 'nft', '--version']);
  console.log(`idle \`nsenter --net nft --version\` p50 ${nftIdle.toFixed(2)} ms (process cost every update pays)`);

  const out: LevelResult[] = [];
  const ready: Level[] = [];
  for (const n of levels) {
    // Reported, not hidden: the BENCH line then shows na for this level and says missed.
    await setupLevel(c, n, opts).then((l) => ready.push(l), (err: unknown) =>
      console.log(`N=${label(n).padEnd(3)} could not be loaded on this machine: ${String(err).split('\n')[0]}`));
  }
  for (let s = 1; s <= samples; s++) {
    for (const l of ready) {
      const vm = syntheticVm(l.c, l.n + s);
      const t = performance.now();
      await l.plane.ensureVm(vm);
      l.xs.push(performance.now() - t);
    }
  }
  for (const l of ready) out.push(await finishLevel(l, samples));
  if (warnings.length) console.log(`plane warnings: ${warnings.slice(0, 3).join(' | ')}`);
  await nftDeleteTable(c.dp, 'bridge', c.table);
  return out;
}

interface Level { n: number; c: Ctx; plane: FirewallPlane; xs: number[] }

/**
 * Each level in a namespace of its own (`<dp>-u<N>`), so all levels stay loaded and
 * their samples interleave: a change in machine load hits every level alike.
 */
async function setupLevel(c0: Ctx, n: number, opts: FirewallPlaneOptions): Promise<Level> {
  const c = { ...c0, dp: levelNetns(c0.dp, n) };
  await netnsAdd(c.dp);
  const recs = Array.from({ length: n }, (_, i) => syntheticVm(c, i));
  let t = performance.now();
  const text = renderGuardTable({ family: 'bridge', table: c.table, ports: portGuards(recs, c.defaults), trustedPorts: [], defaultRates: c.defaults.rates, logGroup: 2 });
  const renderMs = performance.now() - t;
  const load = await loadTable(c, text);
  const elements = text.split(', ').length + text.split(' elements = {').length - 2;
  // A fresh plane adopts the loaded table: its first ensureVm checks the structure
  // (rule counts, no set contents) and adds the rate-class chains; not timed.
  const plane = new FirewallPlane(new UnmanagedNetworkPlane(), { ...opts, netns: c.dp });
  t = performance.now();
  await plane.ensureVm(syntheticVm(c, n));
  const adoptMs = performance.now() - t;
  if (plane.stats.fullApplies !== 0) throw new Error(`N=${n}: the plane replaced the loaded table instead of adopting it`);
  console.log(`N=${label(n).padEnd(3)} full load: ${elements} elements, ${(text.length / 2 ** 20).toFixed(1)} MiB text (built in ${renderMs.toFixed(0)} ms),`
    + ` nft -f ${load.ms.toFixed(0)} ms, nft RSS ${load.rssMiB.toFixed(0)} MiB; first ensureVm after adopt ${adoptMs.toFixed(1)} ms`);
  return { n, c, plane, xs: [] };
}

const levelNetns = (dp: string, n: number) => `${dp}-u${label(n)}`;

async function finishLevel(l: Level, samples: number): Promise<LevelResult> {
  const { c, n } = l;
  const ports = await setSize(c, 'vm_ports');
  if (ports !== n + samples + 1) throw new Error(`N=${n}: vm_ports holds ${ports}, expected ${n + samples + 1}`);
  const r = { n, p50: pct(l.xs, 50), p99: pct(l.xs, 99) };
  const g = portGuards([syntheticVm(c, n)], c.defaults);
  const sets = portElements(g[0]!, classIdsFor(g)).size;
  console.log(`N=${label(n).padEnd(3)} ensureVm of VM N+1 (elements in ${sets} sets, 1 transaction) x${samples}: p50 ${r.p50.toFixed(2)} ms p99 ${r.p99.toFixed(2)} ms;`
    + ` vm_ports = ${ports}`);
  await netnsDelete(c.dp);
  return r;
}

interface PpsResult { with: number[]; without: number[]; verified: boolean }

/**
 * Part 2: two VM namespaces on a bridge in the data-plane netns; the guard table
 * with their two guards and 9 998 synthetic ones is loaded fresh before each
 * "with" run (its counters start at zero) and deleted for each "without" run.
 */
async function ppsBench(c: Ctx, runs: number, secs: number, children: ChildProcess[]): Promise<PpsResult> {
  const [A, B] = await setupPair(c.dp, c.tag, c.bridge);
  const vms = [A, B];
  const text = ppsTable(c, ppsRecords(c, vms));
  const load = async () => {
    await nftDeleteTable(c.dp, 'bridge', c.table);
    await nftApply(c.dp, text);
  };

  // Kernel memory the loaded table holds (vmalloc'd hash buckets and slab elements), system-wide, so
  // approximate: fixed-size sets once took 486 MB here before the first VM (decision 0017).
  const kernelKiB = async () => {
    const m = await readFile('/proc/meminfo', 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(m)?.[1] ?? NaN);
    return kb('VmallocUsed') + kb('Slab');
  };
  const before = await kernelKiB();
  await nftApply(c.dp, text);
  console.log(`kernel memory of the ${PPS_VMS}-VM guard table: ~${((await kernelKiB() - before) / 1024).toFixed(0)} MiB (vmalloc + slab)`);
  await nftDeleteTable(c.dp, 'bridge', c.table);

  startServer(B, children);
  await load();
  await warmUp(c.dp, A, B);

  const res: PpsResult = { with: [], without: [], verified: true };
  for (let i = 0; i < runs; i++) {
    // Alternate which goes first, so a drift in machine load hits both sides alike.
    for (const withRules of i % 2 === 0 ? [true, false] : [false, true]) {
      if (withRules) await load();
      else await nftDeleteTable(c.dp, 'bridge', c.table);
      const r = await iperf(c.dp, A, B, secs);
      let note = '';
      if (withRules && c.rules) {
        // Rule-carrying ports: the first packet of the flow takes the full checks and the classes, the rest the
        // flow fast paths (their UDP rules come first, so ruleCounter finds them).
        const tx = await ruleCounter(c, 'prerouting', 'fast_in_flow');
        const rx = await ruleCounter(c, 'forward', 'fast_out_flow');
        const near = (a: number, b: number) => Math.abs(a - b) <= b * 0.01 + 100;
        const ok = near(tx, r.sent) && near(rx, r.delivered);
        if (!ok) res.verified = false;
        note = ` | rules: fast_in_flow ${(tx / r.sent).toFixed(3)} x sent, fast_out_flow ${(rx / r.delivered).toFixed(3)} x delivered${ok ? '' : ' NOT VERIFIED'}`;
      } else if (withRules) {
        // The fast-path rules count every frame a VM port sent through the guards (fast_in)
        // and every frame delivered to a VM port (fast_out); the table is new for each run.
        const tx = await ruleCounter(c, 'prerouting', 'fast_in');
        const rx = await ruleCounter(c, 'forward', 'fast_out');
        // Within 1 % (+100 for iperf3's control connection, ND and the bridge's own MLD/ND frames).
        const near = (a: number, b: number) => Math.abs(a - b) <= b * 0.01 + 100;
        const ok = near(tx, r.sent) && near(rx, r.delivered);
        if (!ok) res.verified = false;
        note = ` | guards: fast_in ${(tx / r.sent).toFixed(3)} x sent, fast_out ${(rx / r.delivered).toFixed(3)} x delivered${ok ? '' : ` NOT VERIFIED (fast_in ${tx}, fast_out ${rx})`}`;
      }
      (withRules ? res.with : res.without).push(r.pps);
      console.log(`pps run ${i + 1} ${withRules ? 'with   ' : 'without'}: ${(r.pps / 1000).toFixed(1)}k pps delivered (sent ${r.sent}, delivered ${r.delivered},`
        + ` iperf3 receiver got ${(r.appPps / 1000).toFixed(1)}k pps)${note}`);
    }
  }
  console.log(`ruleset for the pps runs: ${PPS_VMS} VMs' guards (${(text.length / 2 ** 20).toFixed(1)} MiB text)`);
  return res;
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const rules = args.includes('--rules');
  const levels = quick || rules ? [1000, 10_000] : [1000, 10_000, 50_000];
  const samples = quick ? 20 : 50;
  const runs = quick ? 3 : 5;
  const tag = randomBytes(2).toString('hex');
  const dp = `mtdbench-fw-${tag}`;
  const bridge = `fwbr${tag}`;
  const c: Ctx = {
    dp, tag, bridge, table: `fwbench_${tag}`, tmp: await mkdtemp(join(tmpdir(), 'mtdbench-fw-')), rules,
    defaults: benchDefaults(bridge),
  };
  const children: ChildProcess[] = [];
  const { cleanup, release } = scratchCleanup(children, [...levels.map((n) => levelNetns(dp, n)), `${dp}-a`, `${dp}-b`, dp], () => rm(c.tmp, { recursive: true, force: true }));

  const started = performance.now();
  let upd: LevelResult[] = [];
  let pps: PpsResult = { with: [], without: [], verified: false };
  try {
    await netnsAdd(dp);
    await ipBatch(dp, ['link set lo up']);
    await pinBridgeNetfilterOff(dp);
    if (!args.includes('--pps-only')) upd = await updateCost(c, levels, samples, !quick);
    pps = await ppsBench(c, runs, 3, children);
  } finally {
    await cleanup();
    release();
  }
  console.log(`wall time ${((performance.now() - started) / 1000).toFixed(0)} s`);

  const p50 = (n: number) => upd.find((r) => r.n === n)?.p50;
  const top = levels[levels.length - 1]!;
  const ratio = (p50(top) ?? NaN) / (p50(1000) ?? NaN);
  const withPps = median(pps.with);
  const withoutPps = median(pps.without);
  const ppsRatio = withPps / withoutPps;
  // Also the median of each round's own ratio (its two runs back to back): less moved by load that drifts
  // across rounds. Printed next to the judged ratio of medians, not instead of it.
  const pairRatio = median(pps.with.map((w, i) => w / pps.without[i]!).filter(Number.isFinite));
  const fmt = (v: number | undefined, d = 2) => (v === undefined || !Number.isFinite(v) ? 'na' : v.toFixed(d));
  const met = ratio <= UPDATE_TARGET && ppsRatio >= PPS_TARGET && pps.verified;
  if (quick) console.log(`--quick: update_ratio is p50(${label(top)}) / p50(1k); (the issue's ratio is 50k / 1k: full run)`);
  if (rules) console.log(`--rules: every VM has 3 ingress and 3 egress rules; update_ratio is p50(10k) / p50(1k) (issue 6)`);
  if (!pps.verified) console.log('pps: the guard counters did not match the packets sent: the "with" figure does not count');
  console.log(`BENCH firewall${rules ? ' rules=3+3' : ''} update_p50_1k_ms=${fmt(p50(1000))} update_p50_10k_ms=${fmt(p50(10_000))} update_p50_50k_ms=${fmt(p50(50_000))}`
    + ` update_ratio=${fmt(ratio)} pps_with=${fmt(withPps, 0)} pps_without=${fmt(withoutPps, 0)} pps_ratio=${fmt(ppsRatio, 3)} pps_pair_ratio=${fmt(pairRatio, 3)}`
    + ` target update_ratio<=${UPDATE_TARGET},pps_ratio>=${PPS_TARGET} ${met ? 'met' : 'missed'}`);
}
