// bench/nflog (issue 7): what reading the nflog groups costs metald under a flood.
//
//   npm run bench -- nflog            8 s per phase
//   npm run bench -- nflog --quick    4 s per phase
//
// A namespace with rules shaped like metald's: a host-table-like deny that logs
// every packet to group 1 (no kernel limit, default batching) and a guard-like
// drop that logs at most 20/s to group 2 (queue-threshold 1). A sender process
// floods one of them with UDP on lo as fast as it can; metald's NflogReader
// (the real tcpdump, parser, gate and event ring; one reader per group, as
// metald runs them) reads both groups with its defaults. Figures per phase: packets logged, records read and events made
// per second, CPU of this process (the reader) and of its tcpdump as % of one
// core, and how long a single guard sample sent during the flood takes to
// become an event. Target: reader + tcpdump ≤ 25 % of a core under a
// host-deny flood, and the guard sample an event within 1 s.
//
// Needs root. The namespace (`mtdbench-nf-<hex>`) is deleted at the end, also on failure.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { netnsAdd, netnsDelete, ipIn } from '../src/kernel/netns.js';
import { nftApply } from '../src/kernel/nft.js';
import { NflogReader } from '../src/events/nflog/nflog-reader.js';
import { PortDirectory } from '../src/events/nflog/port-directory.js';
import { EventRing } from '../src/events/security-events.js';

const TARGET_CPU = 0.25;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.split(' ') ?? [];
  return (Number(f[11] ?? 0) + Number(f[12] ?? 0)) / 100;
}

const FLOOD = `import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2]); n = 0; port = int(sys.argv[1])
while time.monotonic() < end:
    for _ in range(200):
        try: s.sendto(b"x", ("::1", port))
        except OSError: pass
    n += 200
print(n)`;

export async function main(args: string[]): Promise<void> {
  const secs = args.includes('--quick') ? 4 : 8;
  const ns = `mtdbench-nf-${randomBytes(3).toString('hex')}`;
  await netnsAdd(ns);
  const ring = new EventRing(100_000, 3_600_000);
  // As metald runs them: one reader per group, the defaults of security_events.nflog.
  const directory = new PortDirectory({ listVms: async () => [], listLinks: async () => new Map([[1, 'lo']]) });
  const readers = [2, 1].map((g) => new NflogReader({
    netns: ns, groups: [g], ring, log: { info: () => {}, warn: (o, m) => console.error(m, o) }, maxRecordsPerSecond: 2000, directory,
    gate: { perKeyIntervalMs: 1000, maxPerSecond: 100, enhanced: () => false },
  }));
  const stats = () => readers.map((r) => r.stats).reduce((a, b) => ({ ...a, records: a.records + b.records, events: a.events + b.events, paused: a.paused + b.paused, restarts: a.restarts + b.restarts }));
  const tcpdumpCpu = async () => (await Promise.all(readers.map((r) => cpuSeconds(r.pid)))).reduce((a, b) => a + b, 0);
  try {
    await ipIn(ns, ['link', 'set', 'lo', 'up']);
    await nftApply(ns, [
      'table inet bench {', 'chain out {', 'type filter hook output priority 0; policy accept;',
      'udp dport 9 counter log prefix "metald-ipv6-deny: " group 1 drop',
      // Two guard reasons, each with its own 20/s sample limit as in the guard table: the flood hits one, the probe the other.
      'udp dport 10 counter jump guard', 'udp dport 11 counter jump guard2', '}',
      'chain guard {', 'limit rate 20/second burst 20 packets log prefix "metald-guard source_guard " group 2 queue-threshold 1', 'drop', '}',
      'chain guard2 {', 'limit rate 20/second burst 20 packets log prefix "metald-guard ra_guard " group 2 queue-threshold 1', 'drop', '}', '}', '',
    ].join('\n'));
    for (const r of readers) r.start();
    await Promise.all(readers.map((r) => r.ready));
    const rows: string[] = [];
    process.once('SIGTERM', () => { for (const r of readers) r.stop(); void netnsDelete(ns).finally(() => process.exit(1)); });
    const figures: Record<string, number> = {};
    for (const [phase, port] of [['host-deny flood', 9], ['guard flood', 10]] as const) {
      const s0 = stats();
      const cpu0 = process.cpuUsage();
      const td0 = await tcpdumpCpu();
      const t0 = performance.now();
      const sender = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', FLOOD, String(port), String(secs)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let sent = '';
      sender.stdout.on('data', (d) => (sent += String(d)));
      const senderDone = new Promise((r) => sender.once('exit', r));
      // Mid-flood, one packet of another guard rule (port 11): how long until it is an event?
      await sleep((secs * 1000) / 2);
      let seenAt = NaN;
      const seen = new Promise<void>((resolve) => {
        const off = ring.onEvent((e) => {
          if (e.type === 'guard_sample' && e.packet?.dport === 11) {
            seenAt = performance.now();
            off();
            resolve();
          }
        });
        setTimeout(() => { off(); resolve(); }, 3000).unref();
      });
      const send = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', 'import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"m", ("::1", 11))'], { stdio: 'ignore' });
      await new Promise((r) => send.once('exit', r));
      const sentAt = performance.now();
      await seen;
      // The packet left between the sender's start and exit: report the time from its exit (0 if the event came first).
      const markerMs = Math.max(0, seenAt - sentAt);
      await senderDone;
      const wall = (performance.now() - t0) / 1000;
      const du = process.cpuUsage(cpu0);
      const s1 = stats();
      const metald = (du.user + du.system) / 1e6 / wall;
      const tcpdump = ((await tcpdumpCpu()) - td0) / wall;
      const pps = Number(sent.trim()) / secs;
      rows.push(`${phase.padEnd(16)} sent ${Math.round(pps)}/s, read ${Math.round((s1.records - s0.records) / wall)}/s, events ${Math.round((s1.events - s0.events) / wall)}/s, `
        + `paused ${s1.paused - s0.paused}x, tcpdump restarts ${s1.restarts - s0.restarts}; CPU reader ${(metald * 100).toFixed(1)} %, tcpdump ${(tcpdump * 100).toFixed(1)} %; guard sample during it: event after ${markerMs.toFixed(0)} ms`);
      const key = port === 9 ? 'host' : 'guard';
      figures[`${key}_cpu_pct`] = (metald + tcpdump) * 100;
      figures[`${key}_sample_ms`] = markerMs;
      await sleep(1500);
    }
    console.log(rows.join('\n'));
    const met = figures['host_cpu_pct']! <= TARGET_CPU * 100 && figures['host_sample_ms']! < 1000 && figures['guard_sample_ms']! < 1000;
    console.log(`BENCH nflog host_flood_cpu_pct=${figures['host_cpu_pct']!.toFixed(1)} guard_flood_cpu_pct=${figures['guard_cpu_pct']!.toFixed(1)} `
      + `sample_ms_in_host_flood=${figures['host_sample_ms']!.toFixed(0)} sample_ms_in_guard_flood=${figures['guard_sample_ms']!.toFixed(0)} `
      + `target reader+tcpdump<=${TARGET_CPU * 100}%_of_a_core_and_sample<1s ${met ? 'met' : 'missed'}`);
  } finally {
    for (const r of readers) r.stop();
    await netnsDelete(ns).catch(() => {});
  }
}
