import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BoundedQueue } from './bounded-queue.js';

// The local syslog socket (/dev/log: journald or rsyslog) is a Unix datagram
// socket, which Node cannot open. One long-lived util-linux `logger`
// (Debian: bsdutils, always installed) reads lines from a pipe and sends one
// datagram each: `--prio-prefix` takes each line's own "<PRI>", so one process
// serves every severity, at the cost of a pipe write per event, not a process.
// While the socket is missing or logger is down, lines wait in a bounded queue
// (oldest dropped, counted); logger is restarted with a growing delay.
// Decision 0027.

export interface LocalSyslogOptions {
  socket: string;
  /** local: glibc syslog(3)'s format, what journald parses; rfc3164 adds the host name; rfc5424 (rsyslog). */
  format: 'local' | 'rfc3164' | 'rfc5424';
  tag: string;
  maxBuffered: number;
  log: { warn(o: object, m?: string): void };
}

export class LocalSyslog {
  readonly queue: BoundedQueue;
  sent = 0;
  private child: ChildProcess | undefined;
  private stopped = false;
  private retryMs = 1000;
  private timer: NodeJS.Timeout | undefined;
  private warned = false;

  constructor(private readonly opts: LocalSyslogOptions) {
    this.queue = new BoundedQueue(opts.maxBuffered);
  }

  get dropped(): number {
    return this.queue.dropped;
  }

  /** `<PRI>text`, text on one line. */
  send(pri: number, text: string): void {
    this.queue.push(`<${pri}>${text}\n`);
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.child?.stdin?.end();
    this.child?.kill();
    this.child = undefined;
  }

  private pump(): void {
    const c = this.ensure();
    if (!c) return;
    for (let m = this.queue.shift(); m !== undefined; m = this.queue.shift()) {
      this.sent++;
      // A full pipe: the rest waits for 'drain' (bounded by the queue).
      if (!c.stdin!.write(m)) return;
    }
  }

  private ensure(): ChildProcess | undefined {
    if (this.child || this.stopped || this.timer) return this.child;
    if (!existsSync(this.opts.socket)) {
      this.retry(`syslog socket ${this.opts.socket} does not exist`);
      return undefined;
    }
    // logger's own default for a Unix socket is syslog(3)'s local format (no host name).
    const fmt = { local: [], rfc3164: ['--rfc3164'], rfc5424: ['--rfc5424=notq'] }[this.opts.format];
    const child = spawn('logger', ['--socket', this.opts.socket, '--socket-errors=on', '--prio-prefix', ...fmt,
      '-t', this.opts.tag, `--id=${process.pid}`, '--size', '8192'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-500)));
    child.on('error', (e) => (err += String(e)));
    child.stdin!.on('error', () => {});
    child.stdin!.on('drain', () => this.pump());
    const born = Date.now();
    // A logger that cannot be started reports 'error' and maybe no 'exit': either one ends it, once.
    child.once('error', () => gone());
    child.once('exit', () => gone());
    const gone = () => {
      if (this.child !== child) return;
      this.child = undefined;
      // A logger that ran for a while was a working socket: start the delays (and the warning) afresh.
      if (Date.now() - born > 10_000) {
        this.retryMs = 1000;
        this.warned = false;
      }
      if (!this.stopped) this.retry(err.trim() || 'logger exited');
    };
    this.child = child;
    return child;
  }

  private retry(why: string): void {
    if (!this.warned) {
      this.opts.log.warn({ socket: this.opts.socket, err: why, buffered_max: this.opts.maxBuffered }, 'local syslog unavailable; security events wait in a bounded buffer');
      this.warned = true;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, this.retryMs).unref();
    this.retryMs = Math.min(this.retryMs * 2, 30_000);
  }
}
