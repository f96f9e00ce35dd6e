import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '../../kernel/exec.js';
import { assertNetnsName } from '../../kernel/names.js';

// Runs one radvd per metald instance inside the data-plane namespace and keeps
// it in line with the text metald renders (render.ts).
//
// Why it is built this way (radvd 2.19, measured):
// - radvd exits when a SIGHUP makes it reread a bad file, so a new text is
//   checked with `radvd -c` on a temporary file and only then renamed over the
//   live one: a bad config never replaces a good one, and radvd keeps running.
// - With `-u <user>` radvd rereads the file as that user on SIGHUP (initial
//   read is as root), so the file must be readable by it through every parent
//   directory; that is checked once up front instead of killing radvd later.
// - Between exec and its main loop radvd has no SIGHUP handler (default
//   action: exit), so a start only counts once /proc shows the handler.
// - radvd is started in its own session with no pipes: it keeps advertising
//   while metald restarts (as VMs keep running), and the next supervisor
//   adopts it through the pidfile. stop() ends it, release() leaves it.

export interface RadvdLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RadvdSupervisorOptions {
  /** Data-plane namespace radvd runs in; undefined = the namespace metald runs in. */
  netns: string | undefined;
  /** Directory for the instance's files, e.g. /run/metald/<instance>/radvd. */
  dir: string;
  instance: string;
  log: RadvdLogger;
  /** User radvd drops to (`-u`); null keeps it root (inside its namespace). Default "radvd". */
  user?: string | null;
  /** radvd binary. */
  radvd?: string;
  /** Restart delay after radvd dies: doubles from initialMs up to maxMs. */
  backoff?: { initialMs: number; maxMs: number };
}

export interface RadvdStatus {
  running: boolean;
  pid: number | undefined;
  /** SIGHUPs sent (config changes while running). */
  reloads: number;
  /** Starts after radvd died on its own. */
  restarts: number;
  configPath: string;
  logPath: string;
}

export type ApplyResult = { changed: boolean; started: boolean; reloaded: boolean };

/** radvd refused the text; the previous config (if any) is still in place. */
export class RadvdConfigError extends Error {
  constructor(readonly output: string) {
    super(`radvd rejected the configuration: ${output.trim().slice(0, 1000)}`);
    this.name = 'RadvdConfigError';
  }
}

/** startTime (from /proc, 0 until known) tells our radvd from a process that reused its pid. */
type Proc = { pid: number; startTime: number; since: number; child?: ChildProcess };

const USER = /^[a-z_][a-z0-9_-]{0,31}$/i;
const LOG_ROTATE_BYTES = 1 << 20;
// Generous: `ip netns exec` copies the mount table, slow on hosts with thousands of namespaces.
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const ADOPTED_POLL_MS = 1_000;
/** A radvd that ran this long before dying gets the initial backoff again. */
const HEALTHY_RUN_MS = 30_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export class RadvdSupervisor {
  readonly configPath: string;
  readonly pidPath: string;
  readonly logPath: string;
  private readonly user: string | null;
  private readonly radvd: string;
  private readonly backoff: { initialMs: number; maxMs: number };
  private chain: Promise<unknown> = Promise.resolve();
  private proc: Proc | undefined;
  private wanted = false;
  private userChecked = false;
  private nextDelay: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private reloads = 0;
  private restarts = 0;

  constructor(private readonly opts: RadvdSupervisorOptions) {
    if (opts.netns !== undefined) assertNetnsName(opts.netns);
    // The instance name becomes part of file names: same rules as a namespace name (no '/', no '..').
    assertNetnsName(opts.instance);
    this.user = opts.user === undefined ? 'radvd' : opts.user;
    if (this.user !== null && !USER.test(this.user)) throw new Error(`invalid user name ${JSON.stringify(this.user)}`);
    this.radvd = opts.radvd ?? 'radvd';
    this.backoff = opts.backoff ?? { initialMs: 250, maxMs: 30_000 };
    this.nextDelay = this.backoff.initialMs;
    this.configPath = join(opts.dir, `radvd-${opts.instance}.conf`);
    this.pidPath = join(opts.dir, `radvd-${opts.instance}.pid`);
    this.logPath = join(opts.dir, `radvd-${opts.instance}.log`);
  }

  /** Make radvd run `text`: validated, swapped in atomically, radvd started or reloaded only when needed. */
  apply(text: string): Promise<ApplyResult> {
    return this.serial(() => this.applyLocked(text));
  }

  /** Terminate radvd (it sends final RAs with router lifetime 0) and stop restarting it. */
  stop(): Promise<void> {
    return this.serial(async () => {
      this.wanted = false;
      this.clearTimers();
      const p = this.proc;
      if (!p) return;
      this.signal(p, 'SIGTERM');
      const end = Date.now() + STOP_TIMEOUT_MS;
      while ((await isSame(p)) && Date.now() < end) await sleep(20);
      if (await isSame(p)) this.signal(p, 'SIGKILL');
      while (await isSame(p)) await sleep(20);
      this.proc = undefined;
      this.opts.log.info({ pid: p.pid }, 'radvd stopped');
    });
  }

  /** Stop supervising but leave radvd running (metald shutting down; the next start adopts it). */
  release(): Promise<void> {
    return this.serial(async () => {
      this.wanted = false;
      this.clearTimers();
      this.proc?.child?.removeAllListeners('exit');
      this.proc = undefined;
    });
  }

  status(): RadvdStatus {
    const { proc, reloads, restarts, configPath, logPath } = this;
    return { running: proc !== undefined, pid: proc?.pid, reloads, restarts, configPath, logPath };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  private async applyLocked(text: string): Promise<ApplyResult> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o755 });
    // Compared with the file, not a cached copy: a hand edit is undone by the next apply.
    const changed = (await readFile(this.configPath, 'utf8').catch(() => undefined)) !== text;
    if (changed) {
      const tmp = `${this.configPath}.tmp-${process.pid}`;
      await writeSynced(tmp, text);
      try {
        await this.check(tmp);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        const output = err instanceof CommandError ? err.stderr : String(err);
        this.opts.log.error({ output: output.trim() }, 'radvd config rejected; keeping the previous one');
        throw new RadvdConfigError(output);
      }
      await rename(tmp, this.configPath);
    }
    await this.checkUserCanRead();
    this.wanted = true;
    // Signals go to a verified pid only: a radvd that died since the last check is restarted now instead.
    if (this.proc && !(await isSame(this.proc))) this.onExit(this.proc, null, null);
    if (this.proc === undefined) {
      const adopted = await this.adopt();
      if (!adopted) {
        await this.start();
        return { changed, started: true, reloaded: false };
      }
      // An adopted radvd may predate the file (metald died between rename and SIGHUP): reload once.
      this.sighup(adopted);
      return { changed, started: false, reloaded: true };
    }
    if (!changed) return { changed, started: false, reloaded: false };
    this.sighup(this.proc);
    return { changed, started: false, reloaded: true };
  }

  /** `radvd <args> [-u user]` inside the data-plane namespace, as file + argument array. */
  private radvdArgv(args: string[]): [string, string[]] {
    const full = [...args, ...(this.user === null ? [] : ['-u', this.user])];
    return this.opts.netns === undefined ? [this.radvd, full] : ['ip', ['netns', 'exec', this.opts.netns, this.radvd, ...full]];
  }

  /** `radvd -c` where radvd runs, with the same -u (radvd then also checks the file's permissions for that user). */
  private async check(file: string): Promise<void> {
    const [cmd, args] = this.radvdArgv(['-c', '-C', file]);
    await run(cmd, args, { timeoutMs: 10_000 });
  }

  private async checkUserCanRead(): Promise<void> {
    if (this.user === null || this.userChecked) return;
    let uid: number;
    let gid: number;
    try {
      const f = (await run('getent', ['passwd', this.user])).trim().split(':');
      [uid, gid] = [Number(f[2]), Number(f[3])];
    } catch {
      throw new Error(`radvd user ${JSON.stringify(this.user)} does not exist (create it, or run radvd as root with user: null)`);
    }
    const readable = await new Promise<boolean>((resolve) => {
      execFile('test', ['-r', this.configPath], { uid, gid, timeout: 5_000 }, (err) => resolve(!err));
    });
    if (!readable) {
      throw new Error(`radvd drops to user ${this.user} and rereads ${this.configPath} on every reload, but that user cannot read it `
        + `(every directory above ${this.opts.dir} must be searchable by it). Use a directory under a searchable path, or user: null`);
    }
    this.userChecked = true;
  }

  /** Before every start: the data-plane namespace may have been recreated since the last one. */
  private async ensureForwarding(): Promise<void> {
    if (this.opts.netns === undefined) {
      // Never touch the sysctls of a namespace metald does not own; radvd only warns.
      const v = (await readFile('/proc/sys/net/ipv6/conf/all/forwarding', 'utf8').catch(() => '?')).trim();
      if (v !== '1') this.opts.log.warn({ forwarding: v }, 'IPv6 forwarding is off in this namespace; radvd advertises a router that does not route');
    } else {
      // A router advertises itself as default router; radvd warns unless it forwards.
      await run('ip', ['netns', 'exec', this.opts.netns, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    }
  }

  /** A radvd of ours left by an earlier metald (same pidfile and config path), if any. */
  private async adopt(): Promise<Proc | undefined> {
    const pid = Number((await readFile(this.pidPath, 'utf8').catch(() => '')).trim());
    if (!Number.isSafeInteger(pid) || pid <= 1) return undefined;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const c = argv.indexOf('-C');
    if (!(argv[0] ?? '').endsWith('radvd') || c < 0 || argv[c + 1] !== this.configPath) return undefined;
    const st = await procStat(pid);
    if (!st || st.state === 'Z') return undefined;
    const p: Proc = { pid, startTime: st.startTime, since: Date.now() };
    if (!(await this.waitReady(p).then(() => true, () => false))) return undefined;
    this.proc = p;
    this.watchAdopted(p);
    this.opts.log.info({ pid }, 'adopted running radvd');
    return p;
  }

  private async start(): Promise<void> {
    await this.ensureForwarding();
    await rotate(this.logPath);
    const [cmd, argv] = this.radvdArgv(['-n', '-C', this.configPath, '-p', this.pidPath, '-m', 'logfile', '-l', this.logPath]);
    // Own session, no pipes: radvd must not die with metald's terminal or a closed pipe.
    const child = spawn(cmd, argv, { detached: true, stdio: 'ignore' });
    child.unref();
    const exited = new Promise<void>((resolve) => {
      child.once('error', () => resolve());
      child.once('exit', () => resolve());
    });
    if (child.pid === undefined) {
      await exited;
      throw new Error(`could not start ${cmd}`);
    }
    // `ip netns exec` execs radvd, so the child's pid is radvd's pid.
    const p: Proc = { pid: child.pid, startTime: 0, since: Date.now(), child };
    child.on('exit', (code, sig) => this.onExit(p, code, sig));
    const ready = await Promise.race([this.waitReady(p).then(() => true, () => false), exited.then(() => false)]);
    if (!ready) {
      const tail = await logTail(this.logPath);
      this.opts.log.error({ log: tail }, 'radvd exited during start');
      throw new Error(`radvd exited during start: ${tail}`);
    }
    this.proc = p;
    this.opts.log.info({ pid: p.pid, netns: this.opts.netns }, 'radvd started');
  }

  /** Until radvd (not the `ip` that execs it) has its SIGHUP handler installed. */
  private async waitReady(p: Proc): Promise<void> {
    const end = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const st = await procStat(p.pid);
      if (st && st.comm === 'radvd' && (await catchesHup(p.pid))) {
        p.startTime = st.startTime;
        return;
      }
      if (!st || st.state === 'Z') throw new Error(`radvd (pid ${p.pid}) is gone`);
      if (Date.now() > end) {
        if (p.child) this.signal(p, 'SIGKILL');
        throw new Error(`radvd (pid ${p.pid}) did not become ready within ${READY_TIMEOUT_MS} ms`);
      }
      await sleep(10);
    }
  }

  private watchAdopted(p: Proc): void {
    const tick = async () => {
      if (this.proc !== p) return;
      if (!(await isSame(p))) this.onExit(p, null, null);
      else this.pollTimer = setTimeout(tick, ADOPTED_POLL_MS).unref();
    };
    this.pollTimer = setTimeout(tick, ADOPTED_POLL_MS).unref();
  }

  private onExit(p: Proc, code: number | null, sig: NodeJS.Signals | null): void {
    if (this.proc !== p) return; // a start that never became ready, or already stopped/released
    this.proc = undefined;
    if (!this.wanted) return;
    if (Date.now() - p.since > HEALTHY_RUN_MS) this.nextDelay = this.backoff.initialMs;
    const delay = this.scheduleRestart();
    void logTail(this.logPath).then((tail) => this.opts.log.warn({ pid: p.pid, code, signal: sig, restartInMs: delay, log: tail }, 'radvd died; restarting'));
  }

  private scheduleRestart(): number {
    const delay = this.nextDelay;
    this.nextDelay = Math.min(this.nextDelay * 2, this.backoff.maxMs);
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.serial(async () => {
        if (!this.wanted || this.proc) return;
        this.restarts++;
        try {
          await this.start();
        } catch (err) {
          this.opts.log.error({ err: String(err), retryInMs: this.nextDelay }, 'radvd restart failed');
          if (this.wanted && !this.proc) this.scheduleRestart();
        }
      });
    }, delay);
    this.restartTimer.unref();
    return delay;
  }

  private sighup(p: Proc): void {
    this.signal(p, 'SIGHUP');
    this.reloads++;
    this.opts.log.info({ pid: p.pid }, 'radvd reloaded');
  }

  private signal(p: Proc, sig: NodeJS.Signals): void {
    try {
      process.kill(p.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  private clearTimers(): void {
    clearTimeout(this.restartTimer);
    clearTimeout(this.pollTimer);
    this.restartTimer = this.pollTimer = undefined;
  }
}

async function writeSynced(path: string, text: string): Promise<void> {
  // 0644: radvd refuses a file writable by others (or, with -u, by its user).
  const fh = await open(path, 'w', 0o644);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.chmod(0o644);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function procStat(pid: number): Promise<{ comm: string; state: string; startTime: number } | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    const close = s.lastIndexOf(')');
    const f = s.slice(close + 2).split(' ');
    return { comm: s.slice(s.indexOf('(') + 1, close), state: f[0] ?? '', startTime: Number(f[19]) };
  } catch {
    return undefined;
  }
}

/** Still the very process we started or adopted (a reused pid has another start time). */
async function isSame(p: Proc): Promise<boolean> {
  const st = await procStat(p.pid);
  return st !== undefined && st.state !== 'Z' && (p.startTime === 0 || st.startTime === p.startTime);
}

async function catchesHup(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status);
  return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n; // bit 0 = signal 1 = SIGHUP
}

async function rotate(path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (st && st.size > LOG_ROTATE_BYTES) await rename(path, `${path}.1`);
}

async function logTail(path: string, bytes = 2000): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.slice(-bytes).trim();
}
