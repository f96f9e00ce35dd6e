import { spawn, type ChildProcess } from 'node:child_process';
import { assertNetnsName } from '../../kernel/names.js';
import type { EventRing } from '../security-events.js';
import { classify, LogEventGate, type Attributed, type GateOptions } from './log-events.js';
import { PcapNflogParser, summarise, type NflogRecord } from './pcap-nflog.js';
import type { PortDirectory, PortOwner } from './port-directory.js';

// Reads the guards' and the host firewall's nflog groups in the data-plane
// namespace: one long-lived `tcpdump -i nflog:1,2 -U -w -` (libpcap speaks
// nfnetlink_log; Node has no netlink sockets), its pcap stream parsed here.
// Bounded three ways so a flood cannot overwhelm metald: the kernel rules
// sample (guards: LOG_SAMPLE_PER_PORT/s per port and reason, LOG_SAMPLE_RATE/s per reason), at most `maxRecordsPerSecond`
// records are read (past it the pipe is paused: tcpdump blocks and the kernel
// drops what its socket buffer cannot take, at no cost to metald), and the
// gate turns records into at most `maxEventsPerSecond` events. Exact counts
// stay with the counter collector (decision 0028).

export interface NflogReaderOptions {
  netns?: string;
  groups: readonly number[];
  ring: EventRing;
  directory: PortDirectory;
  gate: GateOptions;
  maxRecordsPerSecond: number;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  /** Bytes of each packet copied (TLVs + headers are enough to attribute and summarise). */
  snaplen?: number;
}

export interface NflogStats {
  records: number;
  events: number;
  /** Records read but not attributed (queue full) or over the gate's memory bound. */
  dropped: number;
  /** Times reading paused because the record budget of the second was used. */
  paused: number;
  restarts: number;
}

const MAX_QUEUE = 4096;

export class NflogReader {
  private readonly counts = { records: 0, events: 0, queueDropped: 0, paused: 0, restarts: 0 };
  private child: ChildProcess | undefined;
  private stopped = true;
  private readonly gate: LogEventGate;
  private readonly queue: NflogRecord[] = [];
  private draining = false;
  private windowStart = 0;
  private windowCount = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = 1000;
  private onReady: (() => void) | undefined;
  /** Resolves once tcpdump has bound the groups (tests wait for it; the daemon does not). */
  ready: Promise<void>;

  constructor(private readonly opts: NflogReaderOptions) {
    if (opts.netns !== undefined) assertNetnsName(opts.netns);
    for (const g of opts.groups) if (!Number.isInteger(g) || g < 0 || g > 65535) throw new Error(`invalid nflog group ${g}`);
    this.gate = new LogEventGate(opts.gate);
    this.ready = new Promise((r) => (this.onReady = r));
  }

  get stats(): NflogStats {
    const c = this.counts;
    return { records: c.records, events: c.events, dropped: c.queueDropped + this.gate.dropped, paused: c.paused, restarts: c.restarts };
  }

  /** tcpdump's pid (its CPU is part of the reader's cost). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): void {
    this.stopped = false;
    this.spawn();
    this.flushTimer = setInterval(() => {
      for (const d of this.gate.flush(Date.now())) this.add(d);
    }, 250).unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.flushTimer);
    clearTimeout(this.restartTimer);
    this.child?.kill();
    this.child = undefined;
  }

  private spawn(): void {
    const tcpdump = ['tcpdump', '-i', `nflog:${this.opts.groups.join(',')}`, '-s', String(this.opts.snaplen ?? 256), '-U', '-n', '-w', '-'];
    const [file, ...args] = this.opts.netns === undefined ? tcpdump : ['nsenter', `--net=/run/netns/${this.opts.netns}`, '--', ...tcpdump];
    const child = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const parser = new PcapNflogParser();
    let err = '';
    child.on('error', (e) => (err += String(e)));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (/listening on/.test(d)) {
        this.backoffMs = 1000;
        this.opts.log.info({ groups: this.opts.groups, netns: this.opts.netns }, 'reading nflog groups');
        this.onReady?.();
      } else err = (err + d).slice(-2000);
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      try {
        parser.feed(chunk, (r) => this.take(r));
      } catch (e) {
        err += String(e);
        child.kill();
      }
      this.budget(child);
    });
    // A program that cannot be started reports 'error' and maybe no 'exit': either one restarts, once.
    child.once('error', () => gone(null, null));
    child.once('exit', (code, signal) => gone(code, signal));
    const gone = (code: number | null, signal: NodeJS.Signals | null) => {
      if (this.stopped || this.child !== child) return;
      this.child = undefined;
      this.counts.restarts++;
      this.opts.log.warn({ code, signal, err: err.trim().slice(0, 500), retry_ms: this.backoffMs }, 'nflog reader exited; guard samples pause until it is back (counters still count)');
      this.restartTimer = setTimeout(() => this.spawn(), this.backoffMs).unref();
      this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
    };
  }

  /** Past the second's record budget, stop reading until the next second. */
  private budget(child: ChildProcess): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowCount = 0;
    }
    if (this.windowCount < this.opts.maxRecordsPerSecond) return;
    this.counts.paused++;
    child.stdout!.pause();
    setTimeout(() => child.stdout?.resume(), this.windowStart + 1000 - now).unref();
  }

  private take(r: NflogRecord): void {
    this.counts.records++;
    this.windowCount++;
    if (this.queue.length >= MAX_QUEUE) {
      this.counts.queueDropped++;
      return;
    }
    this.queue.push(r);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const a = await this.attribute(this.queue.shift()!).catch(() => undefined);
        if (!a) continue;
        const d = this.gate.offer(a, Date.now());
        if (d) this.add(d);
      }
    } finally {
      this.draining = false;
    }
  }

  private add(d: Parameters<EventRing['add']>[0]): void {
    this.counts.events++;
    this.opts.ring.add(d);
  }

  private async attribute(r: NflogRecord): Promise<Attributed | undefined> {
    const cls = classify(r.prefix);
    if (!cls) return undefined;
    const dir = this.opts.directory;
    let port: string | undefined;
    let owner: PortOwner | undefined;
    const packet = summarise(r);
    if (cls.kind === 'guard') {
      // Bridge family: physindev is the port, indev the bridge; ip6 family (routed): indev is the port.
      port = await dir.ifname(cls.inbound ? (r.physoutdev ?? r.outdev) : (r.physindev ?? r.indev));
      owner = port ? await dir.byPort(port) : undefined;
    } else {
      // Host table: bridged traffic arrives on the bridge (bridge-nf-call-ip6tables is off, so no
      // physindev); the source MAC, which the guards pin to the port, names the VM, else the address.
      port = await dir.ifname(r.physindev ?? r.indev);
      owner = (port ? await dir.byPort(port) : undefined)
        ?? (packet.src_mac ? await dir.byMac(packet.src_mac) : undefined)
        ?? (packet.src ? await dir.byAddress(packet.src) : undefined);
    }
    return {
      cls, timeMs: r.timeMs, port: owner?.port ?? port ?? '', vmId: owner?.vmId ?? '', tenantId: owner?.tenantId ?? '', nic: owner?.nicId ?? '', packet,
    };
  }
}
