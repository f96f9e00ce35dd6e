// Two VM namespaces (a, b) on one bridge in a data-plane netns, and the 64-byte
// UDP packet rate between them: what bench/firewall and bench/firewall-floor
// measure the guards with. Needs root; the caller owns (and deletes) the namespaces.
import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '../src/kernel/exec.js';
import { ipBatch, ipJson, netnsAdd, netnsDelete } from '../src/kernel/netns.js';

export interface PairVm { ns: string; port: string; mac: string; addr: string }
export interface PpsRun { pps: number; sent: number; received: number; delivered: number; appPps: number }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** VM a and VM b: netns `<dp>-a|b`, veth port `a|b<tag>` on `bridge` in `dp`. */
export async function setupPair(dp: string, tag: string, bridge: string): Promise<[PairVm, PairVm]> {
  const vms = (['a', 'b'] as const).map((x, k) => ({
    ns: `${dp}-${x}`, port: `${x}${tag}`, mac: `52:54:00:fb:00:0${k + 1}`, addr: `fd00:fb::${k + 1}`,
  }));
  await ipBatch(dp, [`link add ${bridge} type bridge`, `link set ${bridge} up`]);
  for (const v of vms) {
    await netnsAdd(v.ns);
    await ipBatch(dp, [`link add ${v.port} type veth peer name eth0 netns ${v.ns}`, `link set ${v.port} master ${bridge} up`]);
    await run('ip', ['netns', 'exec', v.ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.eth0.accept_dad=0']);
    await ipBatch(v.ns, ['link set lo up', `link set eth0 address ${v.mac}`, 'link set eth0 up', `address add ${v.addr}/64 dev eth0 nodad`]);
  }
  return [vms[0]!, vms[1]!];
}

/** iperf3's server in b (killed by the caller through `children`). */
export function startServer(b: PairVm, children: ChildProcess[]): void {
  const server = spawn('nsenter', [`--net=/run/netns/${b.ns}`, '--', 'iperf3', '-s', '-B', b.addr], { stdio: 'ignore' });
  server.on('error', () => {});
  children.push(server);
}

/** Legitimate traffic first (ND included), then a 1 s warm-up that also waits for the server. */
export async function warmUp(dp: string, a: PairVm, b: PairVm): Promise<void> {
  await run('ip', ['netns', 'exec', a.ns, 'ping', '-6', '-n', '-c', '2', '-i', '0.2', '-W', '2', b.addr]);
  for (let i = 0; ; i++) {
    try {
      await iperf(dp, a, b, 1);
      return;
    } catch (err) {
      if (i >= 20) throw err;
      await sleep(250);
    }
  }
}

/** Packets the data-plane netns handed to a port's veth (what reached the VM's interface). */
async function txPackets(dp: string, port: string): Promise<number> {
  const [link] = await ipJson(dp, ['-s', 'link', 'show', 'dev', port]);
  return Number((link?.['stats64'] as { tx?: { packets?: number } } | undefined)?.tx?.packets ?? NaN);
}

/**
 * One `iperf3 -u -b 0 -l 64` from VM a to VM b. pps = frames the bridge delivered
 * to b's port per second (b's port tx counter). The sender is the bottleneck and
 * pays for the bridge and the guards in its own softirq; iperf3's receiver loses
 * packets in its socket buffer at random, so its count is printed but not used.
 * Client on CPU 0, server on CPU 1 (`-A 0,1`): unpinned runs on the 2 shared
 * cores scattered twice as widely.
 */
export async function iperf(dp: string, a: PairVm, b: PairVm, secs: number): Promise<PpsRun> {
  const before = await txPackets(dp, b.port);
  const out = await run('nsenter', [`--net=/run/netns/${a.ns}`, '--', 'iperf3', '-6', '-u', '-b', '0', '-l', '64', '-t', String(secs), '-J',
    '-A', '0,1', '-c', b.addr], { timeoutMs: (secs + 20) * 1000 });
  const delivered = (await txPackets(dp, b.port)) - before;
  const j = JSON.parse(out) as { end?: { sum?: { packets?: number; lost_packets?: number; seconds?: number } }; error?: string };
  const sum = j.end?.sum;
  if (j.error || !sum?.packets || !sum.seconds) throw new Error(`iperf3: ${j.error ?? 'no summary'}`);
  const received = sum.packets - (sum.lost_packets ?? 0);
  return { pps: delivered / sum.seconds, sent: sum.packets, received, delivered, appPps: received / sum.seconds };
}

/**
 * Cleanup of a benchmark's scratch state, run once: kills `children`, deletes `namespaces`
 * (their tables go with them), then `after`. Also on Ctrl-C or SIGTERM until `release`.
 */
export function scratchCleanup(children: ChildProcess[], namespaces: readonly string[], after?: () => Promise<void>):
  { cleanup: () => Promise<void>; release: () => void } {
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    for (const ch of children) if (ch.exitCode === null) ch.kill('SIGTERM');
    for (const ns of namespaces) await netnsDelete(ns).catch((e: unknown) => console.error(String(e)));
    await after?.();
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { cleanup, release: () => { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); } };
}
