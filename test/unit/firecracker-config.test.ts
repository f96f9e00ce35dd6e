import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firecrackerFromConfig } from '../../src/backends/firecracker/from-config.js';
import { parseConfig } from '../../src/config/load.js';

test('firecracker keys reach the jailer command line', () => {
  const { config } = parseConfig(`
instance_name: edge1
backend: firecracker
dataplane: { netns: metald-dp }
firecracker:
  binary_path: /opt/fc/firecracker-v1.16.1
  jailer_path: /opt/fc/jailer-v1.16.1
  uid: 20000
  gid: 20001
  chroot_base_dir: /var/lib/jails
  nic_rate_limit: { tx_packets_per_sec: 50000 }
security: { seccomp_enabled: false }
`, 'test');
  const b = firecrackerFromConfig(config);
  const [file, args] = b.jailerCommand({ id: 'vm-1', vcpuCount: 1, memoryBytes: 128n << 20n });
  assert.equal(file, '/opt/fc/jailer-v1.16.1');
  const value = (k: string) => args[args.indexOf(k) + 1];
  assert.deepEqual([value('--exec-file'), value('--uid'), value('--gid'), value('--chroot-base-dir'), value('--netns')],
    ['/opt/fc/firecracker-v1.16.1', '20000', '20001', '/var/lib/jails/edge1', '/var/run/netns/metald-dp']);
  assert.deepEqual(args.slice(-2), ['--', '--no-seccomp']);
  assert.equal(b.jailDir('vm-1'), '/var/lib/jails/edge1/firecracker-v1.16.1/vm-1');
});

test('defaults: jailer on, seccomp on, unprivileged uid', () => {
  const { config } = parseConfig('backend: firecracker\n', 'test');
  assert.deepEqual(config.firecracker, {
    binary_path: '/usr/local/bin/firecracker', jailer_path: '/usr/local/bin/jailer', uid: 10000, gid: 10000,
    chroot_base_dir: '/srv/jailer', boot_timeout: 60_000, readiness: 'marker', nic_rate_limit: {},
  });
  const args = firecrackerFromConfig(config).jailerCommand({ id: 'vm-1', vcpuCount: 1, memoryBytes: 128n << 20n })[1];
  assert.ok(!args.includes('--no-seccomp'));
});

test('unsafe or unusable firecracker settings are refused, naming the key', () => {
  const bad: [string, RegExp][] = [
    ['backend: firecracker\nsecurity: { jailer_enabled: false }\n', /security\.jailer_enabled.*must be true with backend: firecracker/],
    ['backend: firecracker\nsecurity: { enable_process_isolation: false }\n', /security\.enable_process_isolation/],
    ['backend: firecracker\nfirecracker: { uid: 0 }\n', /firecracker\.uid.*from 1 to/],
    ['backend: firecracker\nfirecracker: { readiness: guest }\n', /firecracker\.readiness/],
    ['backend: firecracker\nfirecracker: { binary_path: /usr/bin/vmm }\n', /firecracker\.binary_path.*must contain "firecracker"/],
    ['backend: firecracker\nfirecracker: { chroot_base_dir: jails }\n', /firecracker\.chroot_base_dir.*absolute/],
    ['firecracker: { nic_rate_limit: { rx_bytes_per_sec: 0 } }\n', /rx_bytes_per_sec/],
    ['firecracker: { jail_dir: /x }\n', /jail_dir/],
  ];
  for (const [yaml, re] of bad) assert.throws(() => parseConfig(yaml, 'test'), re, yaml);
  // The sandbox backend does not care about the jailer switch.
  assert.doesNotThrow(() => parseConfig('backend: sandbox\nsecurity: { jailer_enabled: false }\n', 'test'));
});
