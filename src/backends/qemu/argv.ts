import type { BackendVmSpec } from '../backend.js';
import { guestKernelArgs } from '../../core/guest/network-config.js';

// The qemu-system-x86_64 command line for one VM: a pure function of the VM
// spec and the host facts it needs (golden-tested). Every value is one argv
// element; nothing here is ever parsed by a shell.

export type Machine = 'microvm' | 'q35';
export type Accel = 'kvm' | 'tcg';

export interface LaunchFiles {
  /** QMP control socket. */
  qmp: string;
  pidfile: string;
  /** Serial console, appended to (a reboot or a second boot keeps the earlier output). */
  console: string;
}

export interface QemuLaunch {
  machine: Machine;
  accel: Accel;
  kernel: string;
  initrd: string;
  /** Host TSC frequency for `tsc_early_khz`; undefined = not known. */
  tscKhz: number | undefined;
  files: LaunchFiles;
}

/**
 * Paths reach qemu's option parser inside `-drive`/`-chardev` values, where a
 * comma starts the next option: refuse them (and line breaks, for logs).
 */
export function assertQemuPath(p: string, what: string): string {
  if (!p.startsWith('/') || /[,\n\r\0]/.test(p)) throw new Error(`${what} ${JSON.stringify(p)}: must be an absolute path without commas or line breaks`);
  return p;
}

/**
 * The guest kernel command line: console and timer settings first, then the
 * guest network document (metald.ip6= ...), then the VM's own kernel_args,
 * which therefore win where the kernel takes the last value.
 */
export function kernelCommandLine(spec: BackendVmSpec, l: Pick<QemuLaunch, 'machine' | 'tscKhz'>): string {
  const args = ['console=ttyS0', 'quiet', 'panic=-1'];
  if (l.machine === 'microvm') {
    // microvm has no HPET and no ACPI PM timer: without a TSC frequency the
    // kernel's calibration can fail and the boot hangs (about 1 in 7 here).
    if (l.tscKhz !== undefined) args.push(`tsc_early_khz=${l.tscKhz}`);
    // No PCI bus on microvm: skip the probe (and its "No config space" error).
    args.push('pci=off');
  }
  if (spec.guest) args.push(...guestKernelArgs(spec.guest));
  const own = spec.kernelArgs.trim();
  if (own !== '') args.push(own);
  return args.join(' ');
}

/** Largest MiB count handed to `-m`; the API already caps memory at 1 TiB. */
function memoryMiB(bytes: bigint): number {
  return Number(bytes / (1024n * 1024n));
}

export function qemuArgv(spec: BackendVmSpec, l: QemuLaunch): string[] {
  const dev = (kind: 'net' | 'blk') => `virtio-${kind}-${l.machine === 'microvm' ? 'device' : 'pci'}`;
  const argv = [
    '-name', `metald-${spec.id}`,
    '-machine', l.machine,
    '-accel', l.accel,
    '-m', String(memoryMiB(spec.memoryBytes)),
    '-smp', String(spec.vcpuCount),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-daemonize', '-pidfile', assertQemuPath(l.files.pidfile, 'pidfile'),
    '-chardev', `file,id=console,path=${assertQemuPath(l.files.console, 'console log')},append=on`,
    '-serial', 'chardev:console',
    '-qmp', `unix:${assertQemuPath(l.files.qmp, 'QMP socket')},server=on,wait=off`,
    '-kernel', assertQemuPath(l.kernel, 'kernel'),
    '-append', kernelCommandLine(spec, l),
  ];
  if (l.initrd !== '') argv.push('-initrd', assertQemuPath(l.initrd, 'initrd'));
  spec.drives.forEach((d, i) => {
    const ro = d.readOnly ? ',readonly=on' : '';
    argv.push('-drive', `id=drive${i},file=${assertQemuPath(d.path, `drive ${d.id}`)},format=raw,if=none${ro}`);
    argv.push('-device', `${dev('blk')},drive=drive${i}`);
  });
  spec.nics.forEach((n, i) => {
    // The tap exists already (HostNics, in the data-plane namespace); qemu only opens it.
    argv.push('-netdev', `tap,id=net${i},ifname=${n.hostDevice},script=no,downscript=no`);
    // host_mtu tells the guest driver the link MTU (VIRTIO_NET_F_MTU).
    const mtu = n.mtu !== 1500 ? `,host_mtu=${n.mtu}` : '';
    argv.push('-device', `${dev('net')},netdev=net${i},mac=${n.mac}${mtu}`);
  });
  return argv;
}

/** kHz of the first CPU in /proc/cpuinfo ("cpu MHz : 2599.998" -> 2599998), or undefined. */
export function tscKhzFromCpuinfo(cpuinfo: string): number | undefined {
  const m = /^cpu MHz\s*:\s*(\d+(?:\.\d+)?)\s*$/m.exec(cpuinfo);
  if (!m) return undefined;
  const khz = Math.round(Number(m[1]) * 1000);
  return khz > 0 ? khz : undefined;
}
