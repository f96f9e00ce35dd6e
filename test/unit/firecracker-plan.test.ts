import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  DESCRIBE, INSTANCE_START, SEND_CTRL_ALT_DEL, bootArgs, preBootRequests, vmState, type ApiRequest,
} from '../../src/backends/firecracker/api-plan.js';
import {
  apiSocketPath, cgroupLimits, chrootDir, jailerArgs, pidFilePath, type JailerSettings,
} from '../../src/backends/firecracker/jailer-command.js';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { Spec } from '../helpers/firecracker-double/spec-validator.mjs';
import { SPEC_FILE } from '../helpers/firecracker-double/install.js';

const GOLDEN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/firecracker/preboot-requests.golden.json');
const spec = new Spec(SPEC_FILE);

const settings: JailerSettings = {
  jailerPath: '/usr/local/bin/jailer',
  firecrackerPath: '/usr/local/bin/firecracker-v1.16.1',
  uid: 10000,
  gid: 10001,
  chrootBase: '/srv/jailer/metald',
  netns: 'metald-dp',
  parentCgroup: 'metald-metald',
  seccomp: true,
};

const vm: BackendVmSpec = {
  id: 'vm-abc',
  vcpuCount: 2,
  memoryBytes: 512n * 1024n * 1024n,
  kernelPath: '/var/lib/metald/vmlinux',
  kernelArgs: 'console=ttyS0 reboot=k panic=1',
  initrdPath: '/var/lib/metald/initrd.gz',
  drives: [
    { id: 'rootfs', path: '/var/lib/metald/vm-abc.ext4', readOnly: false, isRoot: true },
    { id: 'data', path: '/data/shared.img', readOnly: true, isRoot: false },
  ],
  nics: [
    { id: 'eth0', hostDevice: 'mabcdefghijklmn', mac: '02:00:00:00:00:01', mtu: 1500, ipv6Address: '2600:beef:1000:100::10/64', ipv6Gateway: '2600:beef:1000:100::1' },
    { id: 'eth1', hostDevice: 'mabcdefghijklmo', mac: '02:00:00:00:00:02', mtu: 9000, ipv6Address: '', ipv6Gateway: '' },
  ],
  guest: {
    latest: {
      'meta-data': {
        'instance-id': 'vm-abc',
        'tenant-id': 'acme',
        network: { interfaces: [{ 'interface-id': 'eth0', mac: '02:00:00:00:00:01', 'device-number': 0, ipv6: '2600:beef:1000:100::10/64', 'ipv6-gateway': '2600:beef:1000:100::1', 'privacy-extensions': false, slaac: true }] },
        dns: { servers: ['2600:beef:1010::53'], search: ['example.internal'], dnssec: true, 'dns-over-tls': false },
      },
    },
  },
};

function specErrors(r: ApiRequest): string[] {
  const route = spec.route(r.method, r.path);
  if (route.error !== undefined) return [route.error];
  return [...spec.validateParams(route.op, route.params), ...spec.validateBody(route.op, r.body, r.body !== undefined)];
}

test('jailer command line, argument by argument', () => {
  assert.deepEqual(jailerArgs(settings, vm), [
    '--id', 'vm-abc',
    '--exec-file', '/usr/local/bin/firecracker-v1.16.1',
    '--uid', '10000',
    '--gid', '10001',
    '--chroot-base-dir', '/srv/jailer/metald',
    '--netns', '/var/run/netns/metald-dp',
    '--cgroup-version', '2',
    '--parent-cgroup', 'metald-metald',
    '--cgroup', 'cpu.max=200000 100000',
    '--cgroup', `memory.max=${512 * 1024 * 1024 + 64 * 1024 * 1024}`,
    '--daemonize',
    '--new-pid-ns',
  ]);
  // Seccomp stays Firecracker's default; only an explicit "off" passes --no-seccomp to the VMM.
  assert.deepEqual(jailerArgs({ ...settings, seccomp: false }, vm).slice(-2), ['--', '--no-seccomp']);
  assert.ok(!jailerArgs({ ...settings, netns: undefined }, vm).includes('--netns'));
});

test('jail paths follow the jailer layout', () => {
  assert.equal(chrootDir(settings, 'vm-abc'), '/srv/jailer/metald/firecracker-v1.16.1/vm-abc/root');
  assert.equal(apiSocketPath(settings, 'vm-abc'), '/srv/jailer/metald/firecracker-v1.16.1/vm-abc/root/run/firecracker.socket');
  assert.equal(pidFilePath(settings, 'vm-abc'), '/srv/jailer/metald/firecracker-v1.16.1/vm-abc/root/firecracker-v1.16.1.pid');
});

test('jailer arguments refuse what the jailer would refuse, or what would be unsafe', () => {
  assert.throws(() => jailerArgs({ ...settings, firecrackerPath: '/usr/bin/vmm' }, vm), /to contain "firecracker"/);
  assert.throws(() => jailerArgs({ ...settings, uid: 0 }, vm), /invalid jailer uid 0/);
  assert.throws(() => jailerArgs(settings, { ...vm, id: '../x' }), /invalid jail id/);
  assert.throws(() => jailerArgs({ ...settings, parentCgroup: '../up' }, vm), /invalid parent cgroup/);
  assert.throws(() => cgroupLimits({ id: 'a', vcpuCount: 33, memoryBytes: 1n << 30n }), /vCPU count/);
});

test('pre-boot requests match the golden file and are valid per the Firecracker spec', () => {
  const reqs = preBootRequests(vm, { rxBytesPerSec: 125_000_000, txBytesPerSec: 125_000_000, txPacketsPerSec: 100_000 });
  const text = `${JSON.stringify(reqs, null, 2)}\n`;
  if (process.env['UPDATE_GOLDEN']) writeFileSync(GOLDEN, text);
  assert.equal(text, readFileSync(GOLDEN, 'utf8'));
  for (const r of [...reqs, INSTANCE_START, SEND_CTRL_ALT_DEL, vmState('Paused'), vmState('Resumed'), DESCRIBE]) {
    assert.deepEqual(specErrors(r), [], `${r.method} ${r.path}`);
  }
});

test('boot arguments: the VM\'s own (or Firecracker\'s defaults), then the guest network arguments', () => {
  assert.equal(bootArgs(vm), 'console=ttyS0 reboot=k panic=1 metald.ip6=2600:beef:1000:100::10/64 metald.gw6=2600:beef:1000:100::1 metald.dns=2600:beef:1010::53 metald.search=example.internal');
  assert.match(bootArgs({ kernelArgs: '', guest: undefined }), /^console=ttyS0 reboot=k panic=1 pci=off$/);
  assert.throws(() => bootArgs({ kernelArgs: 'a\ninit=/bin/sh', guest: undefined }), /line break/);
});

test('the plan refuses a VM Firecracker cannot boot', () => {
  assert.throws(() => preBootRequests({ ...vm, kernelPath: '' }), /no kernel/);
  assert.throws(() => preBootRequests({ ...vm, drives: vm.drives.map((d) => ({ ...d, isRoot: true })) }), /2 root drives/);
});

// The validator must reject: one that accepts everything proves nothing.
test('spec validator rejects wrong bodies', () => {
  const bad: [ApiRequest, RegExp][] = [
    [{ method: 'PUT', path: '/machine-config', body: { vcpu_count: 2 } }, /missing required field mem_size_mib/],
    [{ method: 'PUT', path: '/machine-config', body: { vcpu_count: '2', mem_size_mib: 128 } }, /vcpu_count: expected an integer/],
    [{ method: 'PUT', path: '/machine-config', body: { vcpu_count: 33, mem_size_mib: 128 } }, /above the maximum 32/],
    [{ method: 'PUT', path: '/machine-config', body: { vcpu_count: 1, mem_size_mib: 128, huge_pages: '1G' } }, /not one of "None", "2M"/],
    [{ method: 'PUT', path: '/boot-source', body: { kernel_image_path: '/k', boot_arg: 'typo' } }, /unknown field boot_arg/],
    [{ method: 'PUT', path: '/drives/d0', body: { drive_id: 'd0', path_on_host: '/x' } }, /missing required field is_root_device/],
    [{ method: 'PUT', path: '/drives/d0', body: { drive_id: 'd0', is_root_device: 'yes' } }, /expected a boolean/],
    [{ method: 'PUT', path: '/network-interfaces/n0', body: { iface_id: 'n0', host_dev_name: 't', mtu: 40 } }, /below the minimum 68/],
    [{ method: 'PUT', path: '/network-interfaces/n0', body: { iface_id: 'n0', host_dev_name: 't', rx_rate_limiter: { bandwidth: { size: 1 } } } }, /missing required field refill_time/],
    [{ method: 'PUT', path: '/mmds/config', body: { network_interfaces: ['n0'], ipv4_address: '10.0.0.1' } }, /does not match the format/],
    [{ method: 'PUT', path: '/mmds/config', body: { version: 'V3', network_interfaces: [] } }, /not one of "V1", "V2"/],
    [{ method: 'PUT', path: '/actions', body: { action_type: 'Reboot' } }, /not one of/],
    [{ method: 'PUT', path: '/actions' }, /Empty request body/],
    [{ method: 'PATCH', path: '/vm', body: { state: 'Running' } }, /not one of "Paused", "Resumed"/],
    [{ method: 'PUT', path: '/vm', body: { state: 'Paused' } }, /Invalid request method/],
    [{ method: 'PUT', path: '/nope', body: {} }, /Invalid request method and\/or path/],
    [{ method: 'PUT', path: '/drives/a%2Fb', body: { drive_id: 'a/b', is_root_device: false } }, /only alphanumerics/],
  ];
  for (const [req, re] of bad) {
    const errs = specErrors(req);
    assert.ok(errs.some((e) => re.test(e)), `${req.method} ${req.path} ${JSON.stringify(req.body)}: expected ${re}, got ${JSON.stringify(errs)}`);
  }
  // MMDS contents are free-form (additionalProperties: true).
  assert.deepEqual(specErrors({ method: 'PUT', path: '/mmds', body: { anything: { at: ['all'] } } }), []);
});
