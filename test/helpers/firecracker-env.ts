import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { FirecrackerBackend, type FirecrackerBackendOptions } from '../../src/backends/firecracker/firecracker-backend.js';
import { removeJail } from '../../src/backends/firecracker/jail.js';
import { netnsDelete } from '../../src/kernel/netns.js';
import { installDouble, type Double } from './firecracker-double/install.js';

// One isolated world for Firecracker backend tests: a data-plane namespace,
// a temp dir (chroot base, assets, the double's logs) and the backend.
//
// Against the real binaries on a KVM host (docs/firecracker.md): set
// FC_REAL_JAILER, FC_REAL_FIRECRACKER, FC_REAL_KERNEL and FC_REAL_ROOTFS; the
// same tests then run the real jailer and VMM instead of the double (the
// checks that read the double's logs are skipped).

export const JAIL_UID = 61234;
export const JAIL_GID = 61235;

export interface FcEnv {
  tag: string;
  dp: string;
  dir: string;
  double: Double;
  real: boolean;
  kernel: string;
  rootfs: string;
  /** A read-only data drive on another filesystem (/dev/shm), to exercise the bind-mount path. */
  shmDrive: string;
  backend(extra?: Partial<FirecrackerBackendOptions>): FirecrackerBackend;
  spec(id: string, over?: Partial<BackendVmSpec>): BackendVmSpec;
  cleanup(): Promise<void>;
}

const REAL = process.env['FC_REAL_FIRECRACKER'] !== undefined;

export function newFcEnv(): FcEnv {
  const tag = randomBytes(3).toString('hex');
  const dp = `fcdt-dp-${tag}`;
  const dir = mkdtempSync(path.join(tmpdir(), `fcdt-${tag}-`));
  // The fake VMM runs as the jail user without pivot_root: it must be able to walk to its chroot.
  chmodSync(dir, 0o711);
  const double = installDouble(path.join(dir, 'double'));
  for (const [k, v] of Object.entries(double.env)) process.env[k] = v;
  const assets = path.join(dir, 'assets');
  mkdirSync(assets, { mode: 0o755 });
  const kernel = process.env['FC_REAL_KERNEL'] ?? path.join(assets, 'vmlinux');
  const rootfs = path.join(assets, 'rootfs.ext4');
  if (!REAL) writeFileSync(kernel, 'not a kernel\n', { mode: 0o644 });
  // A per-VM writable root filesystem: owned by root, 0600 (staging gives it to the jail user).
  writeFileSync(rootfs, 'not a filesystem\n', { mode: 0o600 });
  if (process.env['FC_REAL_ROOTFS']) copyFileSync(process.env['FC_REAL_ROOTFS'], rootfs);
  const shmDrive = path.join('/dev/shm', `fcdt-${tag}-data`);
  writeFileSync(shmDrive, 'data\n', { mode: 0o644 });
  const env: FcEnv = {
    tag, dp, dir, double, real: REAL, kernel, rootfs, shmDrive,
    backend: (extra = {}) => new FirecrackerBackend({
      instanceName: `fcdt${tag}`,
      firecrackerPath: process.env['FC_REAL_FIRECRACKER'] ?? double.firecrackerPath,
      jailerPath: process.env['FC_REAL_JAILER'] ?? double.jailerPath,
      uid: JAIL_UID,
      gid: JAIL_GID,
      chrootBaseDir: path.join(dir, 'jail'),
      dataplaneNetns: dp,
      seccomp: true,
      cgroupRoot: REAL ? undefined : double.cgroupRoot,
      // A real guest of your own may not print METALD-READY (docs/firecracker.md).
      readiness: REAL ? (process.env['FC_REAL_READINESS'] === 'marker' ? 'marker' : 'vmm') : 'marker',
      ...extra,
    }),
    spec: (id, over = {}) => ({
      id,
      vcpuCount: 2,
      memoryBytes: 256n * 1024n * 1024n,
      kernelPath: kernel,
      kernelArgs: '',
      initrdPath: '',
      drives: [
        { id: 'rootfs', path: rootfs, readOnly: false, isRoot: true },
        { id: 'data', path: shmDrive, readOnly: true, isRoot: false },
      ],
      nics: [{
        id: 'eth0', hostDevice: `fct${tag}${id.slice(-2)}`.slice(0, 15), mac: '02:fc:00:00:00:01', mtu: 1500,
        ipv6Address: 'fd00:fc::10/64', ipv6Gateway: 'fd00:fc::1',
      }],
      guest: {
        latest: {
          'meta-data': {
            'instance-id': id,
            'tenant-id': 'tenant-a',
            network: { interfaces: [{ 'interface-id': 'eth0', mac: '02:fc:00:00:00:01', 'device-number': 0, ipv6: 'fd00:fc::10/64', 'ipv6-gateway': 'fd00:fc::1', 'privacy-extensions': false, slaac: false }] },
            dns: { servers: ['fd00:fc::53'], search: [], dnssec: false, 'dns-over-tls': false },
          },
        },
      },
      ...over,
    }),
    async cleanup() {
      // Whatever a failed test left: processes first (by the jails' pid files), then namespaces and files.
      await removeJail(path.join(dir, 'jail')).catch(() => {});
      await netnsDelete(dp).catch(() => {});
      rmSync(shmDrive, { force: true });
      rmSync(dir, { recursive: true, force: true });
      for (const k of Object.keys(double.env)) delete process.env[k];
      delete process.env['FC_DOUBLE_FAULT'];
      delete process.env['FC_DOUBLE_CTRL_ALT_DEL'];
    },
  };
  return env;
}
