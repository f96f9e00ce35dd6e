import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { CommandError } from './exec.js';
import { assertNetnsName } from './names.js';

// One long-lived `ip -force -batch -` per namespace, fed line by line, so a
// VM's host-side setup costs netlink round trips instead of a process start
// (nsenter + ip: ~3 ms each on this machine, most of a VM's budget).
//
// Completion protocol: stderr is unbuffered and `ip -batch` reports every
// failing line as `Command failed -:<n>`. After each call's lines we send a
// marker that always fails — `link show dev` with a 16-char name, which no
// link can have — and the call is done when the marker's line number is
// reported. Any other reported line of the call is an error, with the text
// `ip` printed before it. Nothing is read from stdout (the lines are writes).

const MARKER = 'link show dev metald-marker-00';
const FAILED = /Command failed -:(\d+)\n/g;

interface Pending {
  first: number;
  marker: number;
  lines: string[];
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class IpSession {
  private child: ChildProcess | undefined;
  private identity: string | undefined;
  private written = 0;
  private stderr = '';
  private pending: Pending | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly netns: string | undefined, private readonly timeoutMs = 30_000) {
    if (netns !== undefined) assertNetnsName(netns);
  }

  /** Run the lines (in order; all of them even past a failure). Rejects naming each failing line. */
  run(lines: readonly string[]): Promise<void> {
    for (const l of lines) {
      // One line is one command; a line break inside would start a command nobody wrote.
      if (/[\r\n\0]/.test(l)) return Promise.reject(new Error(`ip batch line contains a line break: ${JSON.stringify(l)}`));
    }
    if (lines.length === 0) return Promise.resolve();
    const next = this.chain.then(() => this.runNow([...lines]));
    this.chain = next.catch(() => {});
    return next;
  }

  /** Ends the process (it also ends by itself when metald dies: its stdin closes). */
  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }

  private async runNow(lines: string[]): Promise<void> {
    await this.ensureProcess();
    const child = this.child!;
    return new Promise<void>((resolve, reject) => {
      const first = this.written + 1;
      const marker = first + lines.length;
      this.written = marker;
      const timer = setTimeout(() => this.fail(new Error(`ip -batch session: no answer in ${this.timeoutMs} ms`)), this.timeoutMs);
      this.pending = { first, marker, lines, resolve, reject, timer };
      child.stdin!.write(`${lines.join('\n')}\n${MARKER}\n`);
    });
  }

  /**
   * A namespace deleted and made again under the same name is another
   * namespace: the session follows the name, like every other `ip` call.
   */
  private async ensureProcess(): Promise<void> {
    const id = this.netns === undefined ? 'root' : await stat(`/run/netns/${this.netns}`).then((s) => `${s.dev}:${s.ino}`, () => 'missing');
    if (this.child && this.identity === id) return;
    this.close();
    const [file, args] = this.netns === undefined
      ? ['ip', ['-force', '-batch', '-']]
      : ['nsenter', [`--net=/run/netns/${this.netns}`, '--', 'ip', '-force', '-batch', '-']];
    const child = spawn(file, args as string[], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.identity = id;
    this.written = 0;
    this.stderr = '';
    child.stdout!.resume();
    child.stdin!.on('error', () => {}); // EPIPE when ip died: reported through 'exit'
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.onStderr(d));
    child.on('error', (err) => this.gone(child, err));
    child.on('exit', (code) => this.gone(child, new CommandError([file, ...args], code, this.stderr || 'ip -batch session ended')));
    // Idle sessions must not keep metald (or a test) alive.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void }).unref?.();
  }

  private onStderr(d: string): void {
    this.stderr += d;
    const p = this.pending;
    if (!p) return;
    const failures: string[] = [];
    let done = false;
    let from = 0;
    for (const m of this.stderr.matchAll(FAILED)) {
      const n = Number(m[1]);
      const text = this.stderr.slice(from, m.index).trim();
      from = m.index! + m[0].length;
      if (n === p.marker) done = true;
      else if (n >= p.first && n < p.marker) failures.push(`${p.lines[n - p.first]}: ${text}`);
    }
    if (!done) return;
    this.stderr = this.stderr.slice(from);
    clearTimeout(p.timer);
    this.pending = undefined;
    if (failures.length) p.reject(new CommandError(['ip', '-batch', '-'], 1, failures.join('\n')));
    else p.resolve();
  }

  private gone(child: ChildProcess, err: Error): void {
    if (this.child !== child) return; // an old session, already given up
    this.child = undefined;
    this.fail(err);
  }

  private fail(err: Error): void {
    const p = this.pending;
    if (!p) return;
    clearTimeout(p.timer);
    this.pending = undefined;
    // Whatever the process did with the lines is unknown now: start afresh next time.
    this.child?.kill('SIGKILL');
    this.child = undefined;
    p.reject(err);
  }
}
