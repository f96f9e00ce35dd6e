// Golden command lines for qemu (one argv element per line), the kernel
// command line metald builds, and the refusals that keep qemu's option
// parser from seeing a path's comma as a new option.
// UPDATE_GOLDEN=1 rewrites test/fixtures/qemu/*.argv from the builder.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { assertQemuPath, kernelCommandLine, qemuArgv, tscKhzFromCpuinfo, type QemuLaunch } from '../../src/backends/qemu/argv.js';
import { consoleTail } from '../../src/backends/serial-console.js';

const fixture = (name: string) => new URL(`../fixtures/qemu/${name}`, import.meta.url).pathname;

function golden(name: string, argv: string[]): void {
  const text = `${argv.join('\n')}\n`;
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(fixture(name), text);
  assert.equal(text, readFileSync(fixture(name), 'utf8'), `${name} differs from the golden file`);
}

const spec: BackendVmSpec = {
  id: 'vm-1', vcpuCount: 2, memoryBytes: 256n << 20n, kernelPath: '', kernelArgs: 'loglevel=4', initrdPath: '',
  drives: [{ id: 'root', path: '/var/lib/metald/images/root.ext4', readOnly: true, isRoot: true }],
  nics: [
    { id: 'eth0', hostDevice: 'mtd-1a2b3c4d', mac: '52:54:00:00:00:01', mtu: 1500, ipv6Address: '2600:beef:1000:100::10/64', ipv6Gateway: '2600:beef:1000:100::1' },
    { id: 'eth1', hostDevice: 'mtd-5e6f7a8b', mac: '52:54:00:00:00:02', mtu: 9000, ipv6Address: '', ipv6Gateway: '' },
  ],
  guest: {
    latest: {
      'meta-data': {
        'instance-id': 'vm-1', 'tenant-id': 't1',
        network: { interfaces: [{ 'interface-id': 'eth0', mac: '52:54:00:00:00:01', 'device-number': 0, ipv6: '2600:beef:1000:100::10/64', 'ipv6-gateway': '2600:beef:1000:100::1', 'privacy-extensions': false, slaac: false }] },
        dns: { servers: ['2001:4860:4860::8888', '2606:4700:4700::1111'], search: ['example.com'], dnssec: false, 'dns-over-tls': false },
      },
    },
  },
};

const launch: QemuLaunch = {
  machine: 'microvm', accel: 'tcg', kernel: '/var/cache/metald/guest/k/vmlinuz', initrd: '/var/cache/metald/guest/k/initramfs.cpio.gz',
  tscKhz: 2599998, files: { qmp: '/run/metald/m/qemu/vm-1/qmp', pidfile: '/run/metald/m/qemu/vm-1/qemu.pid', console: '/run/metald/m/qemu/vm-1/console.log' },
};

test('microvm command line (golden)', () => golden('microvm.argv', qemuArgv(spec, launch)));
test('q35 command line with KVM (golden): PCI devices, no tsc_early_khz', () => golden('q35-kvm.argv', qemuArgv(spec, { ...launch, machine: 'q35', accel: 'kvm' })));

test('kernel command line: console, timer, the guest network document, then the VM\'s own arguments', () => {
  assert.equal(kernelCommandLine(spec, launch),
    'console=ttyS0 quiet panic=-1 tsc_early_khz=2599998 pci=off metald.ip6=2600:beef:1000:100::10/64 '
    + 'metald.gw6=2600:beef:1000:100::1 metald.dns=2001:4860:4860::8888,2606:4700:4700::1111 metald.search=example.com loglevel=4');
  assert.equal(kernelCommandLine({ ...spec, guest: undefined, kernelArgs: '  ' }, { machine: 'microvm', tscKhz: undefined }), 'console=ttyS0 quiet panic=-1 pci=off');
});

test('paths with a comma or line break are refused (they would become qemu options)', () => {
  assert.throws(() => qemuArgv({ ...spec, drives: [{ id: 'd', path: '/img/a,file=/etc/shadow', readOnly: false, isRoot: false }] }, launch), /drive d .*without commas/);
  assert.throws(() => qemuArgv(spec, { ...launch, kernel: 'relative/vmlinuz' }), /kernel .*absolute path/);
  assert.throws(() => assertQemuPath('/a\nb', 'x'), /x/);
  assert.equal(assertQemuPath('/a/b', 'x'), '/a/b');
});

test('tsc_early_khz comes from the first "cpu MHz" line', () => {
  assert.equal(tscKhzFromCpuinfo('processor\t: 0\ncpu MHz\t\t: 2599.998\ncpu MHz\t\t: 1200.000\n'), 2599998);
  assert.equal(tscKhzFromCpuinfo('cpu MHz\t: 3000\n'), 3000000);
  assert.equal(tscKhzFromCpuinfo('processor\t: 0\n'), undefined);
  assert.equal(tscKhzFromCpuinfo('cpu MHz\t: 0.000\n'), undefined);
});

test('console tail: the last non-empty lines, capped for failure_reason', () => {
  assert.equal(consoleTail('a\r\n\r\nb\nc\n', 100, 2), 'b\nc');
  const long = consoleTail(`${'x'.repeat(5000)}\n`, 100);
  assert.equal(long.length, 101);
  assert.ok(long.startsWith('…'));
});
