import { mkdir, readdir, readFile, realpath, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  BackendHandle, BackendStatus, BackendVmSpec, ShutdownOptions, VmBackend,
} from '../backend.js';
import { failedPrecondition, invalidArgument } from '../../core/errors.js';
import { run } from '../../kernel/exec.js';
import { assertIfName, assertMac, assertNetnsName } from '../../kernel/names.js';
import { ipIn, netnsAdd, netnsExists } from '../../kernel/netns.js';
import { liveGuest, readProcStat, signal, waitFor, type Guest } from '../sandbox/guest-process.js';
import { chooseAccel, type AccelMode } from './accel.js';
import { assertQemuPath, qemuArgv, tscKhzFromCpuinfo, type Accel, type LaunchFiles, type Machine } from './argv.js';
import { consoleTail, fileSize, readFrom, watchBoot } from '../serial-console.js';
import { dataPlaneNics, type HostNics } from './host-nics.js';
import { qmp, queryStatus } from './qmp.js';

// Real guests in qemu-system-x86_64 (docs/decisions/0023): one daemonised
// qemu per VM, running in the data-plane namespace (where its taps are),
// driven over QMP, identified by pid + start time so a restarted metald
// finds it again. Per VM, <state_dir>/<vm id>/ holds the QMP socket, the
// pid file, the serial console log and the names of the VM's taps.

export interface QemuBackendOptions {
  /** Where host taps live; undefined = the root namespace (production daemon only). */
  dataplaneNetns: string | undefined;
  binary: string;
  machine: Machine;
  accel: AccelMode;
  /** The default guest image (scripts/build-guest-image.sh), for VMs that name none. */
  kernelPath: string;
  initrdPath: string;
  /** Kernel, initrd and drive paths a VM may name must lie inside one of these. */
  imageDirs: string[];
  stateDir: string;
  bootTimeoutMs: number;
  /** marker: RUNNING once the guest prints METALD-READY; vmm: once QMP says running. */
  readiness: 'marker' | 'vmm';
  hostNics?: HostNics;
  /** Starts qemu (which daemonises); replaced by the boot benchmark to time metald alone. */
  launcher?: (file: string, args: string[]) => Promise<void>;
}

type QemuHandle = {
  dir: string;
  taps: string[];
  pid: number | null;
  startTime: number | null;
  accel: string | null;
};

const VM_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** sun_path is 108 bytes including the NUL. */
const MAX_SOCKET_PATH = 107;
const LAUNCH_TIMEOUT_MS = 30_000;
const QUIT_WAIT_MS = 3_000;
const KILL_WAIT_MS = 5_000;
/** The console log is cut back to nothing at boot once it has grown past this. */
const MAX_CONSOLE_BYTES = 1024 * 1024;

function isInt(v: unknown, min: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

/** Runs the qemu command line; with -daemonize it returns once qemu is initialised. */
export async function launchQemu(file: string, args: string[]): Promise<void> {
  await run(file, args, { timeoutMs: LAUNCH_TIMEOUT_MS });
}

function isDir(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

function parseHandle(h: BackendHandle): QemuHandle {
  const { dir, taps, pid = null, startTime = null, accel = null } = h;
  const ok = typeof dir === 'string' && Array.isArray(taps) && taps.every((t) => typeof t === 'string')
    && (pid === null ? startTime === null : isInt(pid, 2) && isInt(startTime, 0))
    && (accel === null || typeof accel === 'string');
  if (!ok) throw new Error('malformed qemu handle');
  (taps as string[]).forEach(assertIfName);
  return { dir, taps: taps as string[], pid: pid as number | null, startTime: startTime as number | null, accel: accel as string | null };
}

export class QemuBackend implements VmBackend {
  readonly name = 'qemu';
  readonly nicKind = 'tap' as const;

  private readonly opts: QemuBackendOptions;
  private readonly nics: HostNics;
  private accelChoice: Promise<{ accel: Accel; detail: string }> | undefined;
  private tscKhz: number | undefined;

  constructor(opts: QemuBackendOptions) {
    if (opts.dataplaneNetns !== undefined) assertNetnsName(opts.dataplaneNetns);
    assertQemuPath(opts.stateDir, 'qemu.state_dir');
    if (!Number.isInteger(opts.bootTimeoutMs) || opts.bootTimeoutMs <= 0) throw new Error('invalid boot timeout');
    this.opts = { ...opts, imageDirs: [...opts.imageDirs] };
    this.nics = opts.hostNics ?? dataPlaneNics(opts.dataplaneNetns);
  }

  vmDir(vmId: string): string {
    if (!VM_ID.test(vmId)) throw new Error(`invalid VM id ${JSON.stringify(vmId)}`);
    return join(this.opts.stateDir, vmId);
  }

  files(vmId: string): LaunchFiles {
    const dir = this.vmDir(vmId);
    return { qmp: join(dir, 'qmp'), pidfile: join(dir, 'qemu.pid'), console: join(dir, 'console.log') };
  }

  /** The accelerator chosen for this backend (probes KVM once when accel is auto). */
  accel(): Promise<{ accel: Accel; detail: string }> {
    this.accelChoice ??= chooseAccel(this.opts.accel, {
      binary: this.opts.binary, kernel: this.opts.kernelPath, initrd: this.opts.initrdPath,
      machine: this.opts.machine, tscKhz: this.tscKhz,
    });
    return this.accelChoice;
  }

  async start(): Promise<void> {
    this.tscKhz = tscKhzFromCpuinfo(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''));
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    // The data-plane namespace holds the taps and the qemu processes (the daemon's preflight checks it next).
    const dp = this.opts.dataplaneNetns;
    if (dp !== undefined && !(await netnsExists(dp))) {
      await netnsAdd(dp);
      await ipIn(dp, ['link', 'set', 'lo', 'up']);
    }
  }

  async stop(): Promise<void> {
    // Guests outlive the daemon: a restarted metald finds them through their handles.
  }

  async create(spec: BackendVmSpec): Promise<BackendHandle> {
    const dir = this.vmDir(spec.id);
    if (this.files(spec.id).qmp.length > MAX_SOCKET_PATH) {
      throw failedPrecondition(`QMP socket path for VM ${spec.id} exceeds ${MAX_SOCKET_PATH} bytes: shorten qemu.state_dir`);
    }
    for (const n of spec.nics) {
      assertIfName(n.hostDevice);
      assertMac(n.mac);
    }
    await this.images(spec); // refuses bad paths before anything is made
    // Leftovers of an interrupted attempt: start from nothing.
    if (await isDir(dir)) await this.delete(spec.id, undefined);
    const taps = spec.nics.map((n) => n.hostDevice);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // Recorded before the taps exist, so a delete without a handle still finds them.
      await writeFile(join(dir, 'taps'), `${JSON.stringify(taps)}\n`);
      for (const n of spec.nics) await this.nics.ensureTap(n.hostDevice, { mtu: n.mtu });
    } catch (err) {
      await this.delete(spec.id, undefined).catch(() => {});
      throw err;
    }
    return { dir, taps, pid: null, startTime: null, accel: null } satisfies QemuHandle;
  }

  async boot(spec: BackendVmSpec, handle: BackendHandle): Promise<BackendHandle> {
    const h = this.ownHandle(spec.id, handle);
    if (await liveGuest(h)) return handle;
    // A qemu started by a boot that metald did not live to record must not run beside the new one.
    await this.killStale(spec.id);
    const { kernel, initrd, drives } = await this.images(spec);
    const { accel } = await this.accel();
    const files = this.files(spec.id);
    if ((await fileSize(files.console)) > MAX_CONSOLE_BYTES) await truncate(files.console, 0);
    const offset = await fileSize(files.console);
    await rm(files.pidfile, { force: true });
    const argv = qemuArgv({ ...spec, drives }, {
      machine: this.opts.machine, accel, kernel, initrd, tscKhz: this.tscKhz, files,
    });
    try {
      await this.launch(argv);
    } catch (err) {
      const tail = consoleTail(await readFrom(files.console, offset));
      throw new Error(`qemu for ${spec.id} did not start: ${err instanceof Error ? err.message : String(err)}${tail ? `\nconsole:\n${tail}` : ''}`);
    }
    const booted = await this.recorded(spec.id, h, accel);
    await this.awaitReady(spec.id, booted, offset);
    return booted;
  }

  async status(handle: BackendHandle): Promise<BackendStatus> {
    const h = parseHandle(handle);
    if (!(await isDir(h.dir))) return 'absent';
    for (const t of h.taps) if (!(await this.nics.hasTap(t))) return 'absent';
    if (!(await liveGuest(h))) return 'stopped';
    return queryStatus(join(h.dir, 'qmp'));
  }

  async pause(handle: BackendHandle): Promise<BackendHandle> {
    const h = await this.liveHandle(handle, 'pause');
    await qmp(join(h.dir, 'qmp'), [{ execute: 'stop' }]);
    if ((await queryStatus(join(h.dir, 'qmp'))) !== 'paused') throw new Error(`qemu of ${h.dir} did not pause`);
    return handle;
  }

  async resume(handle: BackendHandle): Promise<BackendHandle> {
    const h = await this.liveHandle(handle, 'resume');
    await qmp(join(h.dir, 'qmp'), [{ execute: 'cont' }]);
    if ((await queryStatus(join(h.dir, 'qmp'))) !== 'running') throw new Error(`qemu of ${h.dir} did not resume`);
    return handle;
  }

  /** ACPI power button, then `quit` once the timeout is over, then SIGKILL. */
  async shutdown(handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    const h = parseHandle(handle);
    const sock = join(h.dir, 'qmp');
    if (await liveGuest(h)) {
      let gone = false;
      if (!opts.force) {
        // A paused guest cannot see the button: let it run first.
        await qmp(sock, [{ execute: 'cont' }, { execute: 'system_powerdown' }]).catch(() => {});
        gone = await waitFor(async () => !(await liveGuest(h)), Math.max(0, opts.timeoutMs));
      }
      if (!gone) {
        await qmp(sock, [{ execute: 'quit' }], QUIT_WAIT_MS).catch(() => {});
        gone = await waitFor(async () => !(await liveGuest(h)), QUIT_WAIT_MS);
      }
      if (!gone) await this.kill(h);
    }
    const id = h.dir.slice(this.opts.stateDir.length + 1);
    if (VM_ID.test(id) && this.vmDir(id) === h.dir) await this.killStale(id);
    return { ...h, pid: null, startTime: null } satisfies QemuHandle;
  }

  /** A hard reset (QMP system_reset), then the same readiness wait as a boot. */
  async reboot(spec: BackendVmSpec, handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    const h = this.ownHandle(spec.id, handle);
    if (!(await liveGuest(h))) return this.boot(spec, (await this.shutdown(handle, opts)));
    const files = this.files(spec.id);
    const offset = await fileSize(files.console);
    await qmp(files.qmp, [{ execute: 'system_reset' }, { execute: 'cont' }]);
    await this.awaitReady(spec.id, h, offset);
    return handle;
  }

  /** Works from the VM id alone; the handle adds the pid and tap names in case the directory is gone. */
  async delete(vmId: string, handle: BackendHandle | undefined): Promise<void> {
    const dir = this.vmDir(vmId);
    let h: QemuHandle | undefined;
    try {
      h = handle === undefined ? undefined : parseHandle(handle);
    } catch {
      h = undefined; // a half-written handle must not block deletion
    }
    // A corrupt handle naming another VM's directory must never make us touch that VM.
    if (h !== undefined && h.dir !== dir) h = undefined;
    if (h !== undefined) await this.kill(h);
    await this.killStale(vmId);
    const taps = new Set(h?.taps ?? []);
    const recorded = await readFile(join(dir, 'taps'), 'utf8').then((t) => JSON.parse(t) as unknown, () => []);
    if (Array.isArray(recorded)) for (const t of recorded) if (typeof t === 'string') taps.add(assertIfName(t));
    for (const t of taps) await this.nics.removeTap(t);
    await rm(dir, { recursive: true, force: true });
  }

  async listResidues(): Promise<string[]> {
    const names = await readdir(this.opts.stateDir).catch(() => [] as string[]);
    return names.filter((n) => VM_ID.test(n));
  }

  private ownHandle(vmId: string, handle: BackendHandle): QemuHandle {
    const h = parseHandle(handle);
    if (h.dir !== this.vmDir(vmId)) throw new Error(`handle of ${h.dir} does not belong to VM ${vmId}`);
    return h;
  }

  private async liveHandle(handle: BackendHandle, op: string): Promise<QemuHandle> {
    const h = parseHandle(handle);
    if (!(await liveGuest(h))) throw new Error(`cannot ${op} ${h.dir}: qemu is not running`);
    return h;
  }

  private async launch(argv: string[]): Promise<void> {
    const dp = this.opts.dataplaneNetns;
    // qemu must open its taps by name in the namespace they live in.
    const [file, args] = dp === undefined
      ? [this.opts.binary, argv]
      : ['nsenter', [`--net=/run/netns/${dp}`, '--', this.opts.binary, ...argv]];
    // With -daemonize the command returns once qemu is initialised (taps
    // opened, image loaded), so set-up errors come back here with its stderr.
    await (this.opts.launcher ?? launchQemu)(file, args);
  }

  /** The daemonised qemu's pid (from its pid file) and start time. */
  private async recorded(vmId: string, h: QemuHandle, accel: Accel): Promise<QemuHandle> {
    const text = await readFile(this.files(vmId).pidfile, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    const st = isInt(pid, 2) ? await readProcStat(pid) : undefined;
    if (st === undefined) throw new Error(`qemu for ${vmId} exited at once (pid file: ${JSON.stringify(text.trim())})`);
    return { ...h, pid, startTime: st.startTime, accel };
  }

  private async awaitReady(vmId: string, h: QemuHandle, offset: number): Promise<void> {
    const files = this.files(vmId);
    const outcome = await watchBoot(files.console, {
      offset,
      timeoutMs: this.opts.bootTimeoutMs,
      alive: async () => (await liveGuest(h)) !== undefined,
      vmmReady: this.opts.readiness === 'vmm'
        ? async () => (await queryStatus(files.qmp).catch(() => 'paused')) === 'running'
        : undefined,
    });
    if (outcome.ready) return;
    const tail = consoleTail(await readFrom(files.console, offset));
    await this.kill(h);
    throw new Error(`boot of ${vmId} failed (${h.accel ?? '?'}): ${outcome.why}; console tail:\n${tail || '(empty)'}`);
  }

  /** Kernel, initrd and drives as real paths, checked against qemu.image_dirs. */
  private async images(spec: BackendVmSpec): Promise<{ kernel: string; initrd: string; drives: BackendVmSpec['drives'] }> {
    const own = spec.kernelPath !== '';
    const kernel = own
      ? await this.allowed(spec.kernelPath, 'config.boot.kernel_path')
      : await this.defaultImage(this.opts.kernelPath, 'qemu.kernel_path');
    let initrd = '';
    if (spec.initrdPath !== '') initrd = await this.allowed(spec.initrdPath, 'config.boot.initrd_path');
    else if (!own && this.opts.initrdPath !== '') initrd = await this.defaultImage(this.opts.initrdPath, 'qemu.initrd_path');
    const drives = await Promise.all(spec.drives.map(async (d, i) => ({ ...d, path: await this.allowed(d.path, `config.storage[${i}].path`) })));
    return { kernel, initrd, drives };
  }

  private async defaultImage(path: string, key: string): Promise<string> {
    try {
      return assertQemuPath(await realpath(path), key);
    } catch {
      throw failedPrecondition(`guest image ${path} (${key}) is missing: build it with scripts/build-guest-image.sh`);
    }
  }

  /**
   * qemu runs as root: a path a tenant names would otherwise let it read any
   * host file into its guest. Symlinks are resolved before the check, and
   * qemu is given the resolved path.
   */
  private async allowed(path: string, field: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(path);
    } catch {
      throw invalidArgument(field, `${JSON.stringify(path)} does not exist`);
    }
    if (/[,\n\r\0]/.test(real)) throw invalidArgument(field, `${JSON.stringify(path)} contains a comma or line break`);
    const dirs = await Promise.all(this.opts.imageDirs.map((d) => realpath(d).catch(() => undefined)));
    if (!dirs.some((d) => d !== undefined && real.startsWith(d.endsWith('/') ? d : `${d}/`))) {
      throw invalidArgument(field, `${JSON.stringify(path)} is outside qemu.image_dirs (${this.opts.imageDirs.join(', ') || 'none'})`);
    }
    return real;
  }

  /** SIGKILL a qemu of this VM that no handle records (found through its pid file). */
  private async killStale(vmId: string): Promise<void> {
    const files = this.files(vmId);
    const pid = Number((await readFile(files.pidfile, 'utf8').catch(() => '')).trim());
    if (!isInt(pid, 2)) return;
    const st = await readProcStat(pid);
    if (st === undefined) return;
    // Only if the process really is this VM's qemu: the pid may have been reused.
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes(`unix:${files.qmp},server=on,wait=off`)) await this.kill({ pid, startTime: st.startTime });
  }

  private async kill(g: Guest): Promise<void> {
    if (g.pid === null || !(await liveGuest(g))) return;
    signal(g.pid, 'SIGKILL', false);
    if (!(await waitFor(async () => !(await liveGuest(g)), KILL_WAIT_MS))) throw new Error(`qemu ${g.pid} survived SIGKILL`);
  }
}
