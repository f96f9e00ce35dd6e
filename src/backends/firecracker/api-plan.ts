import { guestKernelArgs, type GuestNetworkDocument } from '../../core/guest/network-config.js';
import type { BackendVmSpec } from '../backend.js';

// The pre-boot API requests for one VM, as data (a pure function with a golden
// test). Paths are those the VMM sees inside its chroot: assets are staged
// there under fixed names, so no request ever carries a host path.

export interface ApiRequest {
  method: 'GET' | 'PUT' | 'PATCH';
  path: string;
  body?: unknown;
}

/** Tokens per second, per direction; a bucket holds one second's worth. */
export interface NicRateLimit {
  rxBytesPerSec?: number;
  txBytesPerSec?: number;
  rxPacketsPerSec?: number;
  txPacketsPerSec?: number;
}

/** Boot arguments Firecracker recommends when the VM gives none: serial console, reboot = exit. */
export const DEFAULT_BOOT_ARGS = 'console=ttyS0 reboot=k panic=1 pci=off';

/** In-chroot names of the staged assets. */
export const KERNEL_IN_JAIL = '/vmlinux';
export const INITRD_IN_JAIL = '/initrd';
/** The guest's serial console (PUT /serial): readiness is read from it, a failed boot explained with it. */
export const CONSOLE_IN_JAIL = '/console.log';
export const driveInJail = (i: number) => `/drive${i}`;
/** Firecracker API ids (path segment and body): fixed, never taken from the request. */
export const driveApiId = (i: number) => `drive${i}`;
export const nicApiId = (i: number) => `net${i}`;

function bucket(perSec: number | undefined): { size: number; refill_time: number } | undefined {
  return perSec === undefined ? undefined : { size: perSec, refill_time: 1000 };
}

function limiter(bytes: number | undefined, packets: number | undefined): Record<string, unknown> | undefined {
  const bandwidth = bucket(bytes);
  const ops = bucket(packets);
  if (!bandwidth && !ops) return undefined;
  return { ...(bandwidth ? { bandwidth } : {}), ...(ops ? { ops } : {}) };
}

export function bootArgs(spec: Pick<BackendVmSpec, 'kernelArgs' | 'guest'>): string {
  const base = spec.kernelArgs.trim() === '' ? DEFAULT_BOOT_ARGS : spec.kernelArgs.trim();
  const args = [base, ...(spec.guest ? guestKernelArgs(spec.guest) : [])].join(' ');
  // A line break would end the kernel command line in the middle of our own arguments.
  if (/[\0\r\n]/.test(args)) throw new Error('kernel arguments contain a line break or NUL');
  return args;
}

/** Everything before InstanceStart, in an order Firecracker accepts. */
export function preBootRequests(spec: BackendVmSpec, rate: NicRateLimit = {}): ApiRequest[] {
  if (spec.kernelPath === '') throw new Error(`VM ${spec.id} has no kernel (boot.kernel_path)`);
  const roots = spec.drives.filter((d) => d.isRoot);
  if (roots.length > 1) throw new Error(`VM ${spec.id} has ${roots.length} root drives; Firecracker takes one`);
  const reqs: ApiRequest[] = [
    {
      method: 'PUT',
      path: '/machine-config',
      body: { vcpu_count: spec.vcpuCount, mem_size_mib: Number(spec.memoryBytes / (1024n * 1024n)), smt: false },
    },
    {
      method: 'PUT',
      path: '/boot-source',
      body: {
        kernel_image_path: KERNEL_IN_JAIL,
        boot_args: bootArgs(spec),
        ...(spec.initrdPath !== '' ? { initrd_path: INITRD_IN_JAIL } : {}),
      },
    },
    // Without it a daemonised Firecracker's serial output goes to /dev/null (the jailer's stdio).
    { method: 'PUT', path: '/serial', body: { serial_out_path: CONSOLE_IN_JAIL } },
  ];
  spec.drives.forEach((d, i) => {
    reqs.push({
      method: 'PUT',
      path: `/drives/${driveApiId(i)}`,
      body: { drive_id: driveApiId(i), path_on_host: driveInJail(i), is_root_device: d.isRoot, is_read_only: d.readOnly },
    });
  });
  spec.nics.forEach((n, i) => {
    const rx = limiter(rate.rxBytesPerSec, rate.rxPacketsPerSec);
    const tx = limiter(rate.txBytesPerSec, rate.txPacketsPerSec);
    reqs.push({
      method: 'PUT',
      path: `/network-interfaces/${nicApiId(i)}`,
      body: {
        iface_id: nicApiId(i),
        host_dev_name: n.hostDevice,
        guest_mac: n.mac,
        mtu: n.mtu,
        ...(rx ? { rx_rate_limiter: rx } : {}),
        ...(tx ? { tx_rate_limiter: tx } : {}),
      },
    });
  });
  if (spec.guest && spec.nics.length > 0) reqs.push(...mmdsRequests(spec.guest, spec.nics.length));
  return reqs;
}

/**
 * MMDS V2 (session tokens, so a guest process cannot be tricked into a
 * metadata read by a forged request) on every NIC, holding the guest network document.
 */
function mmdsRequests(doc: GuestNetworkDocument, nicCount: number): ApiRequest[] {
  return [
    {
      method: 'PUT',
      path: '/mmds/config',
      body: { version: 'V2', network_interfaces: Array.from({ length: nicCount }, (_, i) => nicApiId(i)) },
    },
    { method: 'PUT', path: '/mmds', body: doc },
  ];
}

export const INSTANCE_START: ApiRequest = { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } };
export const SEND_CTRL_ALT_DEL: ApiRequest = { method: 'PUT', path: '/actions', body: { action_type: 'SendCtrlAltDel' } };
export const vmState = (state: 'Paused' | 'Resumed'): ApiRequest => ({ method: 'PATCH', path: '/vm', body: { state } });
export const DESCRIBE: ApiRequest = { method: 'GET', path: '/' };
