import { spawn } from 'node:child_process';
import { chown, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  BackendHandle, BackendStatus, BackendVmSpec, ShutdownOptions, VmBackend,
} from '../backend.js';
import { liveGuest, readProcStat, signal, waitFor, type Guest } from '../sandbox/guest-process.js';
import { assertIfName, assertMac, assertNetnsName } from '../../kernel/names.js';
import { ipIn, netnsAdd, netnsExists } from '../../kernel/netns.js';
import { consoleTail, readFrom, watchBoot } from '../serial-console.js';
import {
  CONSOLE_IN_JAIL, DESCRIBE, INITRD_IN_JAIL, INSTANCE_START, KERNEL_IN_JAIL, SEND_CTRL_ALT_DEL, driveInJail, preBootRequests, vmState,
  type NicRateLimit,
} from './api-plan.js';
import { call, rawRequest } from './api-client.js';
import { DataPlaneNics, type HostNics } from './host-nics.js';
import { checkAsset, exists, freshChroot, removeJail, stageAsset, type Asset, type StageMethod } from './jail.js';
import {
  apiSocketPath, chrootDir, execFileName, jailDir, jailerArgs, pidFilePath, type JailerSettings,
} from './jailer-command.js';

// Firecracker through its jailer. create() makes the VM's taps; boot() builds
// a fresh jail (assets staged into the chroot), starts the jailer, and drives
// the VMM over its API socket; the VMM's pid and start time are the handle, so
// a restarted metald finds it again. Firecracker cannot reboot in place (a
// guest reboot ends the process), hence reboot = shutdown + boot.
// Readiness (decision 0023, as for qemu): with `marker` a boot returns once the
// guest prints METALD-READY on its serial console (PUT /serial into the jail);
// a kernel panic, the VMM's exit or the boot timeout fail it with the console
// tail. `vmm`: once Firecracker reports Running, for guests that cannot report.

export interface FirecrackerBackendOptions {
  instanceName: string;
  firecrackerPath: string;
  jailerPath: string;
  uid: number;
  gid: number;
  /** `firecracker.chroot_base_dir`; the instance name is appended. */
  chrootBaseDir: string;
  /** Where taps live and the VMM runs; undefined = the root namespace. */
  dataplaneNetns: string | undefined;
  seccomp: boolean;
  rateLimit?: NicRateLimit;
  /** cgroup v2 mount point, for removing the VM's cgroup on delete; default from /proc/mounts. */
  cgroupRoot?: string;
  nics?: HostNics;
  /** marker (default): RUNNING once the guest prints METALD-READY; vmm: once Firecracker says Running. */
  readiness?: 'marker' | 'vmm';
  /** Longest a boot may take until ready (default 60 s). */
  bootTimeoutMs?: number;
  log?: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
}

type FcHandle = {
  vmId: string;
  taps: string[];
  pid: number | null;
  startTime: number | null;
  /** How each asset got into the chroot at the last boot (for operators and tests). */
  staged: string[];
};

const VM_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const JAILER_TIMEOUT_MS = 10_000;
const SOCKET_WAIT_MS = 5_000;
const KILL_WAIT_MS = 5_000;
const BOOT_TIMEOUT_MS = 60_000;

function assertVmId(id: string): string {
  if (!VM_ID.test(id)) throw new Error(`invalid VM id ${JSON.stringify(id)}`);
  return id;
}

function isInt(v: unknown, min: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

function parseHandle(h: BackendHandle): FcHandle {
  const { vmId, taps, pid = null, startTime = null, staged = [] } = h;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((n) => typeof n === 'string');
  const ok = typeof vmId === 'string' && VM_ID.test(vmId) && strings(taps) && strings(staged)
    // pid 0 or 1 would make kill() hit our own group or every process.
    && (pid === null ? startTime === null : isInt(pid, 2) && isInt(startTime, 0));
  if (!ok) throw new Error('malformed firecracker handle');
  taps.forEach(assertIfName);
  return { vmId, taps, pid: pid as number | null, startTime: startTime as number | null, staged };
}

async function cgroup2Mount(): Promise<string | undefined> {
  const text = await readFile('/proc/mounts', 'utf8').catch(() => '');
  return text.split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
}

export class FirecrackerBackend implements VmBackend {
  readonly name = 'firecracker';
  readonly nicKind = 'tap' as const;

  private readonly jailer: JailerSettings;
  private readonly nics: HostNics;

  constructor(private readonly opts: FirecrackerBackendOptions) {
    assertNetnsName(opts.instanceName);
    if (opts.dataplaneNetns !== undefined) assertNetnsName(opts.dataplaneNetns);
    execFileName(opts.firecrackerPath);
    this.jailer = {
      jailerPath: opts.jailerPath,
      firecrackerPath: opts.firecrackerPath,
      uid: opts.uid,
      gid: opts.gid,
      chrootBase: join(opts.chrootBaseDir, opts.instanceName),
      netns: opts.dataplaneNetns,
      parentCgroup: `metald-${opts.instanceName}`,
      seccomp: opts.seccomp,
    };
    this.nics = opts.nics ?? new DataPlaneNics(opts.dataplaneNetns);
  }

  /** The jailer command line for a VM (what boot() runs). */
  jailerCommand(spec: Pick<BackendVmSpec, 'id' | 'vcpuCount' | 'memoryBytes'>): [string, string[]] {
    return [this.jailer.jailerPath, jailerArgs(this.jailer, { id: assertVmId(spec.id), vcpuCount: spec.vcpuCount, memoryBytes: spec.memoryBytes })];
  }

  jailDir(vmId: string): string {
    return jailDir(this.jailer, assertVmId(vmId));
  }

  private owner(vmId: string): string {
    return `${this.opts.instanceName}:${vmId}`;
  }

  async start(): Promise<void> {
    const dp = this.opts.dataplaneNetns;
    if (dp === undefined || (await netnsExists(dp))) return;
    await netnsAdd(dp);
    await ipIn(dp, ['link', 'set', 'lo', 'up']);
  }

  async stop(): Promise<void> {
    // VMMs outlive the daemon: a restarted metald adopts them from their handles.
  }

  private assets(spec: BackendVmSpec): Asset[] {
    return [
      { what: 'kernel', hostPath: spec.kernelPath, jailPath: KERNEL_IN_JAIL, writable: false },
      ...(spec.initrdPath !== '' ? [{ what: 'initrd', hostPath: spec.initrdPath, jailPath: INITRD_IN_JAIL, writable: false }] : []),
      ...spec.drives.map((d, i) => ({ what: `drive ${d.id}`, hostPath: d.path, jailPath: driveInJail(i), writable: !d.readOnly })),
    ];
  }

  async create(spec: BackendVmSpec): Promise<BackendHandle> {
    assertVmId(spec.id);
    // Everything boot() will need, checked now so that CreateVm fails rather than BootVm.
    preBootRequests(spec, this.opts.rateLimit);
    this.jailerCommand(spec);
    for (const n of spec.nics) {
      assertIfName(n.hostDevice);
      assertMac(n.mac);
    }
    for (const a of this.assets(spec)) await checkAsset(a, this.opts);
    const taps: string[] = [];
    try {
      for (const n of spec.nics) {
        await this.nics.ensureTap(n.hostDevice, { uid: this.opts.uid, gid: this.opts.gid, mtu: n.mtu, owner: this.owner(spec.id) });
        taps.push(n.hostDevice);
      }
    } catch (err) {
      await this.delete(spec.id, undefined).catch(() => {});
      throw err;
    }
    return { vmId: spec.id, taps, pid: null, startTime: null, staged: [] } satisfies FcHandle;
  }

  async boot(spec: BackendVmSpec, handle: BackendHandle): Promise<BackendHandle> {
    const h = parseHandle(handle);
    if (h.vmId !== spec.id) throw new Error(`handle of ${h.vmId} does not belong to VM ${spec.id}`);
    if ((await liveGuest(h)) !== undefined && (await this.describe(spec.id)) === 'Running') return handle;
    await this.kill(h);
    await this.killJailVmm(spec.id);
    const jail = this.jailDir(spec.id);
    const chroot = chrootDir(this.jailer, spec.id);
    await freshChroot(jail, chroot);
    let booted: FcHandle = { ...h, pid: null, startTime: null, staged: [] };
    try {
      const methods: StageMethod[] = [];
      for (const a of this.assets(spec)) methods.push(await stageAsset(chroot, a, this.opts));
      booted.staged = methods;
      // Made here, owned by the jail user: Firecracker opens it after dropping root.
      const consoleLog = join(chroot, CONSOLE_IN_JAIL);
      await writeFile(consoleLog, '', { mode: 0o600 });
      await chown(consoleLog, this.opts.uid, this.opts.gid);
      const [file, args] = this.jailerCommand(spec);
      await runJailer(file, args);
      const pid = Number((await readFile(pidFilePath(this.jailer, spec.id), 'utf8')).trim());
      const st = isInt(pid, 2) ? await readProcStat(pid) : undefined;
      if (st === undefined) throw new Error(`firecracker of ${spec.id} exited at once (pid file says ${pid})`);
      booted = { ...booted, pid, startTime: st.startTime };
      const sock = apiSocketPath(this.jailer, spec.id);
      const up = await waitFor(async () => {
        if (!(await liveGuest(booted))) throw new Error(`firecracker of ${spec.id} exited before serving its API`);
        return rawRequest(sock, DESCRIBE, 1000).then((r) => r.status === 200, () => false);
      }, SOCKET_WAIT_MS);
      if (!up) throw new Error(`firecracker of ${spec.id} did not answer on ${sock} within ${SOCKET_WAIT_MS} ms`);
      for (const req of preBootRequests(spec, this.opts.rateLimit)) await call(sock, req);
      await call(sock, INSTANCE_START);
      const state = await this.describe(spec.id);
      if (state !== 'Running') throw new Error(`firecracker of ${spec.id} reports ${JSON.stringify(state)} after InstanceStart`);
      if ((this.opts.readiness ?? 'marker') === 'marker') await this.awaitReady(spec.id, booted, consoleLog);
      this.opts.log?.info({ vm_id: spec.id, pid, staged: methods }, 'firecracker started');
      return booted;
    } catch (err) {
      await this.kill(booted).catch(() => {});
      await removeJail(jail).catch(() => {});
      throw err;
    }
  }

  /** Until the guest's ready marker; else an error with the console tail (→ failure_reason). */
  private async awaitReady(vmId: string, g: Guest, consoleLog: string): Promise<void> {
    const timeoutMs = this.opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS;
    const outcome = await watchBoot(consoleLog, {
      offset: 0, // a fresh jail, so a fresh console, at every boot
      timeoutMs,
      vmm: 'firecracker',
      alive: async () => (await liveGuest(g)) !== undefined,
    });
    if (outcome.ready) return;
    const tail = consoleTail(await readFrom(consoleLog, 0));
    throw new Error(`boot of ${vmId} failed: ${outcome.why}; console tail:\n${tail || '(empty)'}`);
  }

  /** Firecracker's instance state ("Not started", "Running", "Paused"). */
  private async describe(vmId: string): Promise<string> {
    const body = await call(apiSocketPath(this.jailer, vmId), DESCRIBE);
    const state = (body as { state?: unknown } | undefined)?.state;
    if (typeof state !== 'string') throw new Error(`firecracker of ${vmId}: GET / has no state`);
    return state;
  }

  async status(handle: BackendHandle): Promise<BackendStatus> {
    const h = parseHandle(handle);
    if ((await liveGuest(h)) !== undefined) {
      const state = await this.describe(h.vmId);
      if (state === 'Running') return 'running';
      if (state === 'Paused') return 'paused';
      return 'stopped'; // "Not started": a boot that did not finish
    }
    for (const tap of h.taps) if ((await this.nics.tapOwner(tap)) !== this.owner(h.vmId)) return 'absent';
    return 'stopped';
  }

  async pause(handle: BackendHandle): Promise<BackendHandle> {
    return this.patchState(handle, 'Paused');
  }

  async resume(handle: BackendHandle): Promise<BackendHandle> {
    return this.patchState(handle, 'Resumed');
  }

  private async patchState(handle: BackendHandle, state: 'Paused' | 'Resumed'): Promise<BackendHandle> {
    const h = parseHandle(handle);
    if ((await liveGuest(h)) === undefined) throw new Error(`cannot set ${h.vmId} ${state}: firecracker is not running`);
    await call(apiSocketPath(this.jailer, h.vmId), vmState(state));
    return handle;
  }

  async shutdown(handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    const h = parseHandle(handle);
    if ((await liveGuest(h)) !== undefined && !opts.force) {
      const sock = apiSocketPath(this.jailer, h.vmId);
      try {
        // A paused guest cannot see the key press.
        if ((await this.describe(h.vmId)) === 'Paused') await call(sock, vmState('Resumed'));
        await call(sock, SEND_CTRL_ALT_DEL);
        await waitFor(async () => !(await liveGuest(h)), Math.max(0, opts.timeoutMs));
      } catch (err) {
        this.opts.log?.warn({ vm_id: h.vmId, err: String(err) }, 'graceful shutdown failed; killing firecracker');
      }
    }
    await this.kill(h);
    // Also a VMM started by a boot that metald did not live to record.
    await this.killJailVmm(h.vmId);
    return { ...h, pid: null, startTime: null } satisfies FcHandle;
  }

  async reboot(spec: BackendVmSpec, handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    return this.boot(spec, await this.shutdown(handle, opts));
  }

  /** Works from the VM id; the handle only adds the pid. A corrupt handle never blocks deletion. */
  async delete(vmId: string, handle: BackendHandle | undefined): Promise<void> {
    assertVmId(vmId);
    let h: FcHandle | undefined;
    try {
      h = handle === undefined ? undefined : parseHandle(handle);
    } catch {
      h = undefined;
    }
    if (h !== undefined && h.vmId === vmId) await this.kill(h);
    await this.killJailVmm(vmId);
    await removeJail(this.jailDir(vmId));
    await this.removeCgroup(vmId);
    // By owner, not by the handle's list: also the taps of a create that never recorded its handle.
    const owner = this.owner(vmId);
    for (const t of await this.nics.owned(owner)) if (t.owner === owner) await this.nics.removeTap(t.name, owner);
  }

  /** Kill the VMM named by the VM's jail pid file, if that pid still is this VM's Firecracker. */
  private async killJailVmm(vmId: string): Promise<void> {
    const pid = Number((await readFile(pidFilePath(this.jailer, vmId), 'utf8').catch(() => '')).trim());
    if (!isInt(pid, 2)) return;
    const st = await readProcStat(pid);
    if (st === undefined) return;
    // The jailer passes `--id <id>` to Firecracker: a recycled pid will not carry it.
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const at = argv.indexOf('--id');
    if (at >= 0 && argv[at + 1] === vmId) await this.kill({ pid, startTime: st.startTime });
  }

  private async removeCgroup(vmId: string): Promise<void> {
    const root = this.opts.cgroupRoot ?? (await cgroup2Mount());
    if (root === undefined) return;
    await rmdir(join(root, this.jailer.parentCgroup, vmId)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw new Error(`cannot remove cgroup of ${vmId}: ${err.message}`);
    });
  }

  async listResidues(): Promise<string[]> {
    const ids = new Set<string>();
    const base = join(this.jailer.chrootBase, execFileName(this.jailer.firecrackerPath));
    for (const id of await readdir(base).catch(() => [] as string[])) if (VM_ID.test(id)) ids.add(id);
    const prefix = `${this.opts.instanceName}:`;
    for (const t of await this.nics.owned(prefix)) {
      const id = t.owner.slice(prefix.length);
      if (VM_ID.test(id)) ids.add(id);
    }
    return [...ids];
  }

  /** SIGKILL the VMM (pid 1 of its pid namespace, so everything in it dies too). */
  private async kill(g: Guest): Promise<void> {
    if (g.pid === null || !(await liveGuest(g))) return;
    signal(g.pid, 'SIGKILL', false);
    if (!(await waitFor(async () => !(await liveGuest(g)), KILL_WAIT_MS))) throw new Error(`firecracker ${g.pid} survived SIGKILL`);
  }

  /** Whether the jail of a VM exists (tests, doctor). */
  jailExists(vmId: string): Promise<boolean> {
    return exists(this.jailDir(vmId));
  }
}

/**
 * Run the jailer and wait for it: with --new-pid-ns it exits once the VMM is
 * started and its pid recorded. It must not be a process-group leader (its
 * setsid() for --daemonize would fail), so it is spawned in our group, not detached.
 */
function runJailer(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), JAILER_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run the jailer ${file}: ${err.message}`));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`jailer failed (${code ?? sig}): ${out.trim().slice(-1000)}`));
    });
  });
}
