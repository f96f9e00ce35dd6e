import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { assertTableName } from '../kernel/nft.js';
import { assertNetnsName } from '../kernel/names.js';
import { CounterSetParser, type CounterSink } from './kernel-dumps.js';

// One long-lived `nft -j -i` in the data-plane namespace for the collector's
// reads. A process per read costs ~3 ms (nsenter + nft start) before any
// work, a collection tick reads up to 16 sets, 10 times a second. nft answers
// a `list set` with one line of JSON (errors on stderr); the line is parsed as
// it arrives, chunk by chunk (kernel-dumps.ts), never held whole. Measured
// and rejected (nft 1.0.6): text output (nft formats it faster but writes it
// unbuffered, a write(2) per token: 50k for 10k elements, dearer for both
// processes), and `get element` for single ports (nft fetches the whole
// table's cache for it: 250 ms at 1k ports against 35 ms for a whole set;
// under churn it did not answer at all). One read in flight at a time.
// The process lives in the namespace, so /proc/<pid>/net/dev is that
// namespace's link statistics: read without spawning anything.

type Family = 'bridge' | 'ip6';

export class NftSession {
  private child: ChildProcess | undefined;
  private err = '';
  private waiter: { onText: (s: string) => void; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly netns: string | undefined, private readonly timeoutMs = 10_000) {
    if (netns !== undefined) assertNetnsName(netns);
  }

  /** `nft -j list set <family> <table> <set>`: every element, streamed into `sink`. */
  readSet(family: Family, table: string, set: string, sink: CounterSink): Promise<void> {
    return this.read(`list set ${family} ${this.ref(table, set)}`, sink);
  }

  /** /proc/net/dev of the session's namespace. */
  async netDev(): Promise<string> {
    if (this.netns === undefined) return readFile('/proc/self/net/dev', 'latin1');
    const pid = this.start().pid;
    if (pid === undefined) throw new Error('nft could not be started');
    return readFile(`/proc/${pid}/net/dev`, 'latin1');
  }

  /** CPU time (ns) the nft process has used so far, user + system (schedstat: exact, not in clock ticks). */
  async cpuNs(): Promise<number> {
    const pid = this.child?.pid;
    if (pid === undefined) return 0;
    const s = await readFile(`/proc/${pid}/schedstat`, 'latin1').catch(() => '');
    return Number(s.slice(0, s.indexOf(' '))) || 0;
  }

  /** Ends the nft process; reads after this fail instead of starting another. */
  close(): void {
    this.closed = true;
    this.stop();
  }

  private stop(): void {
    this.child?.kill();
    this.child = undefined;
  }

  private ref(table: string, set: string): string {
    assertTableName(table);
    if (!/^[a-z0-9_]+$/.test(set)) throw new Error(`invalid set name ${JSON.stringify(set)}`);
    return `${table} ${set}`;
  }

  private read(cmd: string, sink: CounterSink): Promise<void> {
    const parser = new CounterSetParser(sink);
    return this.ask(cmd, (text) => parser.push(text)).then(() => parser.finish());
  }

  private ask(cmd: string, onText: (s: string) => void): Promise<void> {
    const next = this.chain.then(() => this.askNow(cmd, onText), () => this.askNow(cmd, onText));
    this.chain = next.catch(() => {});
    return next;
  }

  private askNow(cmd: string, onText: (s: string) => void): Promise<void> {
    const child = this.start();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.stop();
        reject(new Error(`nft did not answer "${cmd}" within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiter = { onText, resolve, reject, timer };
      child.stdin!.write(`${cmd}\n`);
    });
  }

  private start(): ChildProcess {
    if (this.closed) throw new Error('nft session closed');
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const args = ['-j', '-i'];
    const argv = this.netns === undefined ? ['nft', args] as const : ['nsenter', [`--net=/run/netns/${this.netns}`, '--', 'nft', ...args]] as const;
    const child = spawn(argv[0], [...argv[1]], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.err = '';
    child.on('error', () => {});
    child.stdin.on('error', () => {});
    child.stdout.on('data', (d: Buffer) => {
      if (this.child !== child) return;
      const text = d.toString('latin1');
      const w = this.waiter;
      if (!w) return;
      try {
        w.onText(text);
      } catch (err) {
        this.settle(err as Error);
        return;
      }
      // The answer is one line: its newline ends it.
      if (text.charCodeAt(text.length - 1) === 10) this.settle(undefined);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (this.child !== child) return;
      this.err += d;
      // An error is several lines (message, command, caret); let them all arrive.
      setTimeout(() => {
        if (!this.err) return;
        const text = this.err.trim();
        this.err = '';
        this.settle(new Error(`nft: ${text.split('\n')[0]}`));
      }, 5);
    });
    child.once('exit', (code, signal) => this.child === child && this.settle(new Error(`nft exited (${signal ?? `code ${code}`})`)));
    this.child = child;
    return child;
  }

  private settle(err: Error | undefined): void {
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    clearTimeout(w.timer);
    if (err) w.reject(err);
    else w.resolve();
  }
}
