import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

// The operator's incident hook (the guide's incident-response.sh), run as
// `<hook> SEVERITY EVENT_TYPE VM_ID TENANT_ID` with execFile (no shell),
// a timeout, a rate limit and a cap on concurrent runs; a failure (exit code,
// signal, timeout, missing file) is logged with the tail of its output.
//
// The guide's script calls `curl -X POST http://localhost:8080/...IsolateVm
// -d '{"vm_id":"..."}'` without a token or a JSON content type. Each run gets
// CURL_HOME pointing at a fresh .curlrc (decision 0029) that adds
// `Content-Type: application/json`, a token valid only for IsolateVm and
// GetVmInfo on the event's tenant until the run ends, and `connect-to` so
// "localhost:8080" reaches this instance wherever it listens. The same token
// and address are in METALD_TOKEN and METALD_API for the metald CLI.

export type HookArgs = [severity: string, eventType: string, vmId: string, tenantId: string];

export interface HookCredentials {
  /** Bearer token for the run, when the API needs one. */
  token?: string;
  /** Called when the run is over. */
  revoke(): void;
}

export interface HookOptions {
  path: string;
  timeoutMs: number;
  /** Runs per minute at most (token bucket, burst of the same size). */
  perMinute: number;
  maxConcurrent?: number;
  /** The API as the hook should reach it. */
  api: { host: string; port: number };
  credentials: (args: HookArgs) => HookCredentials;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  now?: () => number;
}

export interface HookStats {
  runs: number;
  failures: number;
  /** Runs skipped by the rate limit or the concurrency cap. */
  skipped: number;
}

const OUTPUT_TAIL = 2000;

export class HookRunner {
  readonly stats: HookStats = { runs: 0, failures: 0, skipped: 0 };
  private tokens: number;
  private refilledAt: number;
  private running = 0;
  private readonly now: () => number;

  constructor(private readonly opts: HookOptions) {
    this.now = opts.now ?? Date.now;
    this.tokens = opts.perMinute;
    this.refilledAt = this.now();
  }

  /** Runs the hook unless the rate limit or concurrency cap says no; resolves when it is over (never rejects). */
  async run(args: HookArgs): Promise<'ok' | 'failed' | 'skipped'> {
    const t = this.now();
    this.tokens = Math.min(this.opts.perMinute, this.tokens + ((t - this.refilledAt) / 60_000) * this.opts.perMinute);
    this.refilledAt = t;
    if (this.tokens < 1 || this.running >= (this.opts.maxConcurrent ?? 4)) {
      this.stats.skipped++;
      this.opts.log.warn({ hook: this.opts.path, args }, 'incident hook not run: rate limit or concurrent runs reached');
      return 'skipped';
    }
    this.tokens--;
    this.running++;
    this.stats.runs++;
    const cred = this.opts.credentials(args);
    const dir = await mkdtemp(path.join(tmpdir(), 'metald-hook-'));
    try {
      await writeFile(path.join(dir, '.curlrc'), curlrc(this.opts.api, cred.token), { mode: 0o600 });
      const r = await this.exec(args, dir, cred.token);
      if (r.err) {
        this.stats.failures++;
        this.opts.log.warn({ hook: this.opts.path, args, err: r.err, output: r.output }, 'incident hook failed');
        return 'failed';
      }
      this.opts.log.info({ hook: this.opts.path, args, output: r.output }, 'incident hook ran');
      return 'ok';
    } finally {
      this.running--;
      cred.revoke();
      await rm(dir, { recursive: true, force: true });
    }
  }

  private exec(args: HookArgs, curlHome: string, token: string | undefined): Promise<{ err?: string; output: string }> {
    const api = `http://${hostForUrl(this.opts.api.host)}:${this.opts.api.port}`;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: curlHome,
      CURL_HOME: curlHome,
      METALD_API: api,
      ...(token ? { METALD_TOKEN: token } : {}),
      ...(process.env['METALD_TEST_TAG'] ? { METALD_TEST_TAG: process.env['METALD_TEST_TAG'] } : {}),
    };
    return new Promise((resolve) => {
      execFile(this.opts.path, args, { timeout: this.opts.timeoutMs, killSignal: 'SIGKILL', env, maxBuffer: 1 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`.trim().slice(-OUTPUT_TAIL);
        if (!err) return resolve({ output });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string; code?: unknown };
        const why = e.killed ? `timed out after ${this.opts.timeoutMs} ms` : typeof e.code === 'number' ? `exit ${e.code}` : e.signal ? `signal ${e.signal}` : e.message;
        resolve({ err: why, output });
      });
    });
  }
}

/** The .curlrc of one run (exported for its test). */
export function curlrc(api: { host: string; port: number }, token: string | undefined): string {
  const target = `${hostForUrl(api.host)}:${api.port}`;
  return [
    '# Written by metald for one incident hook run; removed when it ends.',
    'header = "Content-Type: application/json"',
    ...(token ? [`header = "Authorization: Bearer ${token}"`] : []),
    `connect-to = "localhost:8080:${target}"`,
    `connect-to = "127.0.0.1:8080:${target}"`,
    '',
  ].join('\n');
}

/** A wildcard listen address is reached on loopback; IPv6 in brackets. */
function hostForUrl(h: string): string {
  const host = h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '::1' : h;
  return host.includes(':') ? `[${host}]` : host;
}
