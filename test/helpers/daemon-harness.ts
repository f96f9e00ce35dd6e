// Runs the real daemon (`node bin/metald.js serve`) as a child process, with a
// sandbox backend, a unique instance name and its own data-plane namespace.
// Every process the daemon starts inherits METALD_TEST_TAG=<instance> in its
// environment, so cleanup (and leak checks) can find guests even after their
// namespace is gone. Nothing here touches the host's own network namespace.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { stringify } from 'yaml';
import { PoolService } from '../../src/gen/vmprovisioner/v1/pool_pb.js';
import { VmService, VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { run } from '../../src/kernel/exec.js';
import { ipJson, netnsDelete, netnsList, netnsPids } from '../../src/kernel/netns.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const TAG_VAR = 'METALD_TEST_TAG';

export const TOKENS = {
  admin: 'daemon-test-admin-token-0123456789',
  a: 'daemon-test-tenant-a-token-012345',
  b: 'daemon-test-tenant-b-token-012345',
} as const;

export type Json = Record<string, unknown>;

export interface Env {
  inst: string;
  dp: string;
  dir: string;
  dataDir: string;
  port: number;
  /** A free port for the metrics listener, so daemons of parallel tests never share :9464. */
  metricsPort: number;
  url: string;
  configFile: string;
  daemons: Daemon[];
}

export async function freePort(): Promise<number> {
  for (;;) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    if (port !== 9464) return port; // the default metrics_address port: the config would refuse it
  }
}

/** A fresh identity: instance `mtdt<hex>`, data plane `mtdtest-dp-<hex>`, temp dir, free port. */
export async function newEnv(): Promise<Env> {
  const hex = randomBytes(2).toString('hex');
  const inst = `mtdt${hex}`;
  const dp = `mtdtest-dp-${hex}${randomBytes(2).toString('hex')}`;
  const mine = (await netnsList()).filter((n) => n.startsWith(inst) || n === dp);
  if (mine.length) throw new Error(`random names already in use: ${mine.join(', ')}`);
  const dir = mkdtempSync(path.join(tmpdir(), `${inst}-`));
  const port = await freePort();
  let metricsPort = await freePort();
  while (metricsPort === port) metricsPort = await freePort();
  return {
    inst, dp, dir, dataDir: path.join(dir, 'data'), port, metricsPort, url: `http://127.0.0.1:${port}`,
    configFile: path.join(dir, 'metald.yaml'), daemons: [],
  };
}

/** The base config (sandbox, tokens for an admin and two tenants, a ULA pool); `patch` overrides top-level keys. */
export function baseConfig(env: Env, patch: Json = {}): Json {
  return {
    instance_name: env.inst,
    backend: 'sandbox',
    data_dir: env.dataDir,
    listen_address: '127.0.0.1',
    port: env.port,
    metrics_address: `127.0.0.1:${env.metricsPort}`,
    shutdown_timeout: '5s',
    auth: {
      mode: 'tokens',
      tokens: [
        { name: 'ops', token: TOKENS.admin, role: 'admin' },
        { name: 'a', token: TOKENS.a, tenant_id: 'tenant-a' },
        { name: 'b', token: TOKENS.b, tenant_id: 'tenant-b' },
      ],
    },
    dataplane: { netns: env.dp },
    ipv6: { default_pool: { id: 'test', prefix: 'fd00:77::/48' } },
    ...patch,
  };
}

export function writeConfig(env: Env, cfg: Json, file = env.configFile): string {
  writeFileSync(file, stringify(cfg));
  return file;
}

export class Daemon {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Parsed JSON log lines (pino writes one object per line on stdout). */
  logs(): Json[] {
    return this.stdout.split('\n').flatMap((l) => {
      try {
        return [JSON.parse(l) as Json];
      } catch {
        return [];
      }
    });
  }

  /** The exit status, or 'timeout' if the process still runs after `ms`. */
  exitWithin(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'timeout'> {
    return Promise.race([this.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.running) this.proc.kill(signal);
    await this.exited;
  }
}

function childEnv(env: Env | undefined): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env };
  if (env) e[TAG_VAR] = env.inst;
  delete e['NODE_TEST_CONTEXT'];
  delete e['METALD_TOKEN'];
  delete e['METALD_API'];
  return e;
}

/** Starts `metald serve` without waiting for it. */
export function spawnDaemon(env: Env, configFile = env.configFile): Daemon {
  const proc = spawn(process.execPath, ['bin/metald.js', 'serve', '--config', configFile, '--port', String(env.port)], {
    cwd: REPO, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'],
  });
  const d = new Daemon(proc);
  env.daemons.push(d);
  return d;
}

export async function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** Starts the daemon and waits until its port answers (start-up reconcile runs before it listens). */
export async function startDaemon(env: Env, configFile = env.configFile, timeoutMs = 30_000): Promise<Daemon> {
  const d = spawnDaemon(env, configFile);
  const deadline = Date.now() + timeoutMs;
  while (!(await portAnswers(env.port))) {
    if (!d.running) throw new Error(`metald exited before listening (${d.proc.exitCode ?? d.proc.signalCode}):\n${d.stderr}\n${d.stdout}`);
    if (Date.now() > deadline) {
      await d.kill();
      throw new Error(`metald did not listen on ${env.port} within ${timeoutMs} ms:\n${d.stderr}\n${d.stdout}`);
    }
    await sleep(50);
  }
  return d;
}

export function client(env: Env, token?: string): Client<typeof VmService> {
  const interceptors: Interceptor[] = token
    ? [(next) => async (req) => { req.header.set('authorization', `Bearer ${token}`); return next(req); }]
    : [];
  return createClient(VmService, createConnectTransport({ baseUrl: env.url, httpVersion: '1.1', interceptors }));
}

export function poolClient(env: Env, token: string = TOKENS.admin): Client<typeof PoolService> {
  const interceptors: Interceptor[] = [(next) => async (req) => { req.header.set('authorization', `Bearer ${token}`); return next(req); }];
  return createClient(PoolService, createConnectTransport({ baseUrl: env.url, httpVersion: '1.1', interceptors }));
}

export interface CliResult { code: number | null; stdout: string; stderr: string }

/** `node bin/metald.js ...args` against the env's API; `token: null` sends none. */
export function cli(env: Env | undefined, args: string[], token: string | null = TOKENS.admin): Promise<CliResult> {
  const pre = env ? ['--api', env.url] : [];
  if (token !== null) pre.push('--token', token);
  const proc = spawn(process.execPath, ['bin/metald.js', ...pre, ...args], {
    cwd: REPO, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => proc.once('close', (code) => resolve({ code, stdout, stderr })));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// ---- kernel observations (read-only) ----

export const vmNetns = (env: Env, id: string) => `${env.inst}-vm-${id}`;

/** Namespaces of this env's VMs (`<inst>-vm-*` and hashed `<inst>-vmh-*`). */
export async function vmNamespaces(env: Env): Promise<string[]> {
  return (await netnsList()).filter((n) => n.startsWith(`${env.inst}-vm`)).sort();
}

export { netnsPids };

export async function procStat(pid: number): Promise<{ state: string; start: number } | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, start: Number(f[19]) };
  } catch {
    return undefined;
  }
}

export async function cmdline(pid: number): Promise<string> {
  return readFile(`/proc/${pid}/cmdline`, 'utf8').then((c) => c.split('\0').filter(Boolean).join(' '), () => '');
}

export async function alive(pid: number): Promise<boolean> {
  const st = await procStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

/** Live processes carrying this env's tag (daemons, guests, transient `ip`s). */
export function taggedPids(env: Env): number[] {
  const marker = `${TAG_VAR}=${env.inst}\0`;
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/environ`, 'latin1').includes(marker)) out.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Guest processes (`sleep infinity`) started by this env's daemons, wherever they are now. */
export async function taggedGuests(env: Env): Promise<number[]> {
  const out: number[] = [];
  for (const pid of taggedPids(env)) if ((await cmdline(pid)) === 'sleep infinity' && (await alive(pid))) out.push(pid);
  return out.sort((a, b) => a - b);
}

/** Names of veth devices in the data-plane namespace. */
export async function dpVeths(env: Env): Promise<string[]> {
  const links = await ipJson(env.dp, ['link', 'show', 'type', 'veth']).catch(() => []);
  return links.map((l) => String(l['ifname']).split('@')[0]!).sort();
}

export async function addrsOf(ns: string, dev: string): Promise<{ mac: string; addrs: string[]; up: boolean }> {
  const [link] = await ipJson(ns, ['addr', 'show', 'dev', dev]);
  const info = (link?.['addr_info'] ?? []) as { family: string; local: string; prefixlen: number }[];
  return {
    mac: String(link?.['address'] ?? ''),
    up: String(link?.['operstate'] ?? '') !== 'DOWN' && ((link?.['flags'] ?? []) as string[]).includes('UP'),
    addrs: info.filter((a) => a.family === 'inet6').map((a) => `${a.local}/${a.prefixlen}`),
  };
}

// ---- cleanup (runs in `after`, even when a test failed) ----

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export async function cleanupEnv(env: Env): Promise<void> {
  for (const d of env.daemons) await d.kill('SIGKILL');
  // Guests (also those whose namespace was deleted by hand) and any stray child.
  for (const pid of taggedPids(env)) if (pid !== process.pid) killPid(pid);
  for (const ns of (await netnsList()).filter((n) => n.startsWith(env.inst) || n === env.dp)) {
    for (const pid of await netnsPids(ns).catch(() => [])) if (pid > 1 && pid !== process.pid) killPid(pid);
    await netnsDelete(ns).catch(() => run('ip', ['netns', 'del', ns]).catch(() => {}));
  }
  rmSync(env.dir, { recursive: true, force: true });
  // radvd's files (radvd itself carries the tag and was killed above) and per-VM resolv.conf dirs.
  rmSync(`/run/metald/${env.inst}`, { recursive: true, force: true });
  for (const d of existsSync('/etc/netns') ? readdirSync('/etc/netns') : []) {
    if (d.startsWith(`${env.inst}-`)) rmSync(`/etc/netns/${d}`, { recursive: true, force: true });
  }
}

/** What cleanup must leave: no namespace and no process of this env. */
export async function leftovers(env: Env): Promise<string[]> {
  await waitUntil('tagged processes to exit', async () => (await taggedGuests(env)).length === 0, 5_000).catch(() => {});
  const ns = (await netnsList()).filter((n) => n.startsWith(env.inst) || n === env.dp);
  const procs = (await taggedGuests(env)).map((p) => `pid ${p}`);
  return [...ns, ...procs];
}

/** A sandbox VM with one NIC at `ip`/64, created and booted through the API, as the guard tests use it. */
export async function bootedVm(env: Env, s: { id: string; token: string; tenant: string; ip: string }): Promise<{ id: string; tenant: string; ns: string; dev: string; mac: string; ip: string }> {
  const c = client(env, s.token);
  const res = await c.createVm({ vmId: s.id, config: { tenantId: s.tenant, network: [{ id: 'eth0', ipv6: { address: `${s.ip}/64` } }] } });
  const booted = await c.bootVm({ vmId: s.id });
  if (booted.state !== VmState.RUNNING) throw new Error(`${s.id} did not boot: state ${booted.state}`);
  const nic = res.vm!.networkStatus[0]!;
  return { id: s.id, tenant: s.tenant, ns: vmNetns(env, s.id), dev: nic.hostDevice, mac: nic.macAddress, ip: s.ip };
}
