import { basename, join } from 'node:path';

// The jailer's command line and the paths it implies, as pure functions (unit
// tested argument by argument). Layout, as the jailer builds it from its
// arguments (firecracker docs/jailer.md):
//   <chrootBase>/<exec file name>/<id>/root      the chroot (pivot_root target)
//   <chroot>/run/firecracker.socket              Firecracker's default API socket
//   <chroot>/<exec file name>.pid                pid of the VMM (written with --new-pid-ns)
//   <cgroup v2 root>/<parent cgroup>/<id>        the VM's cgroup

/** Jailer ids: alphanumerics and '-', at most 64 (jailer's validate_instance_id); VM ids are a subset. */
const JAIL_ID = /^[A-Za-z0-9-]{1,64}$/;
/** cgroup v2 period for cpu.max, in microseconds (the kernel's default period). */
export const CPU_PERIOD_US = 100_000;
/**
 * Memory the VMM needs besides guest RAM: its own heap, device emulation
 * buffers, page cache charged for the kernel/initrd it reads. Firecracker
 * documents < 5 MiB of VMM overhead; 64 MiB leaves room for the page cache so
 * memory.max never OOM-kills a healthy VMM (decision 0019).
 */
export const VMM_MEMORY_OVERHEAD_BYTES = 64n * 1024n * 1024n;

export interface JailerSettings {
  jailerPath: string;
  firecrackerPath: string;
  uid: number;
  gid: number;
  /** Per-instance base: `<firecracker.chroot_base_dir>/<instance_name>`. */
  chrootBase: string;
  /** Network namespace the VMM joins (where its taps are); undefined = the jailer's own. */
  netns: string | undefined;
  /** Parent cgroup (relative), so instances on one host do not share cgroup names. */
  parentCgroup: string;
  seccomp: boolean;
}

export interface JailerVm {
  id: string;
  vcpuCount: number;
  memoryBytes: bigint;
}

export function assertJailId(id: string): string {
  if (!JAIL_ID.test(id)) throw new Error(`invalid jail id ${JSON.stringify(id)}: 1-64 chars of [A-Za-z0-9-]`);
  return id;
}

/** File name of the Firecracker binary; the jailer insists that it contains "firecracker". */
export function execFileName(firecrackerPath: string): string {
  const name = basename(firecrackerPath);
  if (!name.includes('firecracker')) {
    throw new Error(`firecracker.binary_path ${JSON.stringify(firecrackerPath)}: the jailer requires the file name to contain "firecracker"`);
  }
  return name;
}

/** `<chrootBase>/<exec>/<id>`: everything the jailer creates for one VM (removed on delete). */
export function jailDir(s: Pick<JailerSettings, 'chrootBase' | 'firecrackerPath'>, id: string): string {
  return join(s.chrootBase, execFileName(s.firecrackerPath), assertJailId(id));
}

export function chrootDir(s: Pick<JailerSettings, 'chrootBase' | 'firecrackerPath'>, id: string): string {
  return join(jailDir(s, id), 'root');
}

/** Host path of Firecracker's API socket (its default `--api-sock /run/firecracker.socket`). */
export function apiSocketPath(s: Pick<JailerSettings, 'chrootBase' | 'firecrackerPath'>, id: string): string {
  return join(chrootDir(s, id), 'run', 'firecracker.socket');
}

/** Where the jailer (with --new-pid-ns) records the VMM's pid. */
export function pidFilePath(s: Pick<JailerSettings, 'chrootBase' | 'firecrackerPath'>, id: string): string {
  return join(chrootDir(s, id), `${execFileName(s.firecrackerPath)}.pid`);
}

/**
 * cgroup v2 limits from the VM's size: `cpu.max` lets the VMM use at most
 * `vcpus` whole CPUs per period (vCPU threads plus the VMM's own); `memory.max`
 * is guest RAM plus the VMM overhead.
 */
export function cgroupLimits(vm: JailerVm): string[] {
  if (!Number.isInteger(vm.vcpuCount) || vm.vcpuCount < 1 || vm.vcpuCount > 32) throw new Error(`invalid vCPU count ${vm.vcpuCount}: 1-32`);
  if (vm.memoryBytes < 1024n * 1024n) throw new Error(`invalid memory size ${vm.memoryBytes} bytes`);
  return [
    `cpu.max=${vm.vcpuCount * CPU_PERIOD_US} ${CPU_PERIOD_US}`,
    `memory.max=${vm.memoryBytes + VMM_MEMORY_OVERHEAD_BYTES}`,
  ];
}

/** The jailer's argv (without argv[0]). */
export function jailerArgs(s: JailerSettings, vm: JailerVm): string[] {
  execFileName(s.firecrackerPath);
  for (const [k, v] of [['uid', s.uid], ['gid', s.gid]] as const) {
    // uid 0 would leave the VMM root inside its jail: the point of the jailer is the drop.
    if (!Number.isInteger(v) || v < 1 || v > 0xfffffffe) throw new Error(`invalid jailer ${k} ${v}: 1-4294967294`);
  }
  if (/(^|\/)\.\.?(\/|$)|^\//.test(s.parentCgroup) || s.parentCgroup === '') throw new Error(`invalid parent cgroup ${JSON.stringify(s.parentCgroup)}`);
  const args = [
    '--id', assertJailId(vm.id),
    '--exec-file', s.firecrackerPath,
    '--uid', String(s.uid),
    '--gid', String(s.gid),
    '--chroot-base-dir', s.chrootBase,
  ];
  if (s.netns !== undefined) args.push('--netns', `/var/run/netns/${s.netns}`);
  args.push('--cgroup-version', '2', '--parent-cgroup', s.parentCgroup);
  for (const c of cgroupLimits(vm)) args.push('--cgroup', c);
  args.push('--daemonize', '--new-pid-ns');
  // After `--`: Firecracker's own arguments. Seccomp is Firecracker's default;
  // only an explicit `security.seccomp_enabled: false` turns it off.
  if (!s.seccomp) args.push('--', '--no-seccomp');
  return args;
}
