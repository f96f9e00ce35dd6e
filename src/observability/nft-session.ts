import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { assertTableName } from '../kernel/nft.js';
import { assertNetnsName } from '../kernel/names.js';

// One long-lived `nft -j -i` in the data-plane namespace for the collector's
// reads. A process per read costs ~3 ms (nsenter + nft start) before any
// work, a collection tick reads up to 16 sets, 10 times a second. nft prints
// one line of JSON per successful command and errors on stderr, so a read is
// done at the first line on either stream (one read in flight at a time).
// The process lives in the namespace, so /proc/<pid>/net/dev is that
// namespace's link statistics: read without spawning anything.

export class NftSession {
  private child: ChildProcess | undefined;
  private out = '';
  private err = '';
  private waiter: { resolve: (s: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly netns: string | undefined, private readonly timeoutMs = 10_000) {
    if (netns !== undefined) assertNetnsName(netns);
  }

  /** `nft -j list set <family> <table> <set>`: the JSON line. */
  listSet(family: 'bridge' | 'ip6', table: string, set: string): Promise<string> {
    assertTableName(table);
    if (!/^[a-z0-9_]+$/.test(set)) throw new Error(`invalid set name ${JSON.stringify(set)}`);
    return this.ask(`list set ${family} ${table} ${set}`);
  }

  /** /proc/net/dev of the session's namespace. */
  async netDev(): Promise<string> {
    if (this.netns === undefined) return readFile('/proc/self/net/dev', 'utf8');
    const pid = this.start().pid;
    if (pid === undefined) throw new Error('nft could not be started');
    return readFile(`/proc/${pid}/net/dev`, 'utf8');
  }

  /** CPU seconds the nft process has used so far (user + system), for the cost figures. */
  async cpuSeconds(): Promise<number> {
    const pid = this.child?.pid;
    if (pid === undefined) return 0;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11] ?? 0) + Number(f[12] ?? 0)) / 100; // clock ticks (USER_HZ = 100)
  }

  close(): void {
    this.child?.kill();
    this.child = undefined;
  }

  private ask(cmd: string): Promise<string> {
    const next = this.chain.then(() => this.askNow(cmd), () => this.askNow(cmd));
    this.chain = next.catch(() => {});
    return next;
  }

  private askNow(cmd: string): Promise<string> {
    const child = this.start();
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.close();
        reject(new Error(`nft did not answer "${cmd}" within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiter = { resolve, reject, timer };
      child.stdin!.write(`${cmd}\n`);
    });
  }

  private start(): ChildProcess {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const argv = this.netns === undefined ? ['nft', ['-j', '-i']] as const : ['nsenter', [`--net=/run/netns/${this.netns}`, '--', 'nft', '-j', '-i']] as const;
    const child = spawn(argv[0], [...argv[1]], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.out = '';
    this.err = '';
    child.on('error', () => {});
    child.stdin.on('error', () => {});
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      this.out += d;
      const nl = this.out.indexOf('\n');
      if (nl < 0) return;
      const line = this.out.slice(0, nl);
      this.out = this.out.slice(nl + 1);
      this.settle(undefined, line);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.err += d;
      // An error is several lines (message, command, caret); let them all arrive.
      setTimeout(() => {
        if (!this.err) return;
        const text = this.err.trim();
        this.err = '';
        this.settle(new Error(`nft: ${text.split('\n')[0]}`));
      }, 5);
    });
    child.once('exit', () => this.settle(new Error('nft exited')));
    this.child = child;
    return child;
  }

  private settle(err: Error | undefined, line?: string): void {
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    clearTimeout(w.timer);
    if (err) w.reject(err);
    else w.resolve(line!);
  }
}
