import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { rawRequest } from '../../src/backends/firecracker/api-client.js';
import { apiSocketPath } from '../../src/backends/firecracker/jailer-command.js';
import type { HostNics } from '../../src/backends/firecracker/host-nics.js';
import { DataPlaneNics } from '../../src/backends/firecracker/host-nics.js';
import { ipIn, ipJson } from '../../src/kernel/netns.js';
import { readProcStat } from '../../src/backends/sandbox/guest-process.js';
import { JAIL_GID, JAIL_UID, newFcEnv, type FcEnv } from '../helpers/firecracker-env.js';
import type { DoubleRequest } from '../helpers/firecracker-double/install.js';

// The Firecracker backend against the spec-driven double (real executables,
// real taps in a namespace of our own, real processes), or against the real
// binaries when FC_REAL_* is set (docs/firecracker.md).

const PRE_BOOT = /^PUT \/(machine-config|boot-source|drives\/|network-interfaces\/|mmds\/config)/;

/** Every request valid per the spec (2xx), pre-boot ones before InstanceStart, post-boot ones after. */
function assertLegalLog(reqs: DoubleRequest[]): void {
  assert.ok(reqs.length > 0, 'the double logged no request');
  let started = false;
  for (const r of reqs) {
    const key = `${r.method} ${r.path}`;
    assert.ok(r.status >= 200 && r.status < 300, `${key} ${JSON.stringify(r.body)} -> ${r.status} ${r.fault}`);
    if (PRE_BOOT.test(key)) assert.ok(!started, `${key} after InstanceStart`);
    if (key === 'PATCH /vm' || (r.body as { action_type?: string } | undefined)?.action_type === 'SendCtrlAltDel') assert.ok(started, `${key} before InstanceStart`);
    if ((r.body as { action_type?: string } | undefined)?.action_type === 'InstanceStart') started = true;
  }
}

async function tapInfo(env: FcEnv, name: string) {
  return (await ipJson(env.dp, ['-details', 'link', 'show', 'dev', name]))[0];
}

async function alive(pid: number): Promise<boolean> {
  const st = await readProcStat(pid);
  return st !== undefined && st.state !== 'Z';
}

test('create, boot, pause, resume, shutdown, boot again, delete: legal requests, exact jailer argv, nothing left', async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  const backend = env.backend();
  await backend.start();
  const spec = env.spec('vm-life1');
  const tap = spec.nics[0]!.hostDevice;

  let h = await backend.create(spec);
  const info = await tapInfo(env, tap);
  assert.equal(info?.['ifalias'], `fcdt${env.tag}:vm-life1`);
  assert.deepEqual((info?.['linkinfo'] as { info_data: object }).info_data, {
    type: 'tap', pi: false, vnet_hdr: true, multi_queue: false, persist: true, user: JAIL_UID, group: JAIL_GID,
  });
  assert.equal(await backend.status(h), 'stopped');

  h = await backend.boot(spec, h);
  const pid = h['pid'] as number;
  assert.equal(await backend.status(h), 'running');
  const jail = backend.jailDir('vm-life1');
  const chroot = path.join(jail, 'root');

  // Assets: same filesystem -> hard links; /dev/shm -> read-only bind mount.
  // (A real kernel may live on another filesystem than the temp dir: then it is bind-mounted.)
  if (!env.real) assert.deepEqual(h['staged'], ['hardlink', 'hardlink', 'bind']);
  if (!env.real) assert.equal(statSync(path.join(chroot, 'vmlinux')).ino, statSync(env.kernel).ino);
  assert.deepEqual((h['staged'] as string[]).slice(1), ['hardlink', 'bind']);
  assert.equal(statSync(env.rootfs).uid, JAIL_UID, 'the writable root drive belongs to the jail user');
  assert.equal(statSync(env.kernel).uid, 0, 'a read-only asset is never chowned');
  const ro = spawnSync('sh', ['-c', `echo x >> ${path.join(chroot, 'drive1')}`]);
  assert.notEqual(ro.status, 0, 'the bind-mounted read-only drive is writable');

  if (!env.real) {
    // The jailer command line, argument by argument.
    const runs = env.double.jailerRuns();
    assert.equal(runs.length, 1);
    assert.deepEqual(runs[0]!.argv, [
      '--id', 'vm-life1',
      '--exec-file', env.double.firecrackerPath,
      '--uid', String(JAIL_UID),
      '--gid', String(JAIL_GID),
      '--chroot-base-dir', path.join(env.dir, 'jail', `fcdt${env.tag}`),
      '--netns', `/var/run/netns/${env.dp}`,
      '--cgroup-version', '2',
      '--parent-cgroup', `metald-fcdt${env.tag}`,
      '--cgroup', 'cpu.max=200000 100000',
      '--cgroup', `memory.max=${256 * 1024 * 1024 + 64 * 1024 * 1024}`,
      '--daemonize',
      '--new-pid-ns',
    ]);
    assert.deepEqual(runs[0]!.cgroupValues, { 'cpu.max': '200000 100000', 'memory.max': String(320 * 1024 * 1024) });
    // The VMM: the jail user, seccomp on, in the data-plane namespace, pid as recorded.
    const vmm = env.double.vmm('vm-life1');
    assert.equal(vmm.pid, pid);
    assert.deepEqual([vmm.uid, vmm.gid, vmm.seccomp], [JAIL_UID, JAIL_GID, true]);
    assert.deepEqual(vmm.argv.slice(0, 2), ['--id', 'vm-life1']);
    assert.ok(!vmm.argv.includes('--no-seccomp'));
    assert.equal(statSync(`/proc/${pid}/ns/net`).ino, statSync(`/run/netns/${env.dp}`).ino);
    // What the guest is told: kernel args and the MMDS document.
    const reqs = env.double.requests('vm-life1');
    const boot = reqs.find((r) => r.path === '/boot-source')!.body as { boot_args: string };
    assert.match(boot.boot_args, /metald\.ip6=fd00:fc::10\/64 metald\.gw6=fd00:fc::1 metald\.dns=fd00:fc::53/);
    const nic = reqs.find((r) => r.path === '/network-interfaces/net0')!.body as Record<string, unknown>;
    assert.deepEqual([nic['host_dev_name'], nic['guest_mac']], [tap, '02:fc:00:00:00:01']);
    assert.deepEqual(reqs.find((r) => r.path === '/mmds')!.body, spec.guest);
  }

  // A restarted metald (a new backend object) finds the VMM from the stored handle.
  const stored = JSON.parse(JSON.stringify(h));
  assert.equal(await env.backend().status(stored), 'running');

  h = await backend.pause(h);
  assert.equal(await backend.status(h), 'paused');
  h = await backend.resume(h);
  assert.equal(await backend.status(h), 'running');

  h = await backend.shutdown(h, { force: false, timeoutMs: 5000 });
  assert.equal(await alive(pid), false);
  assert.equal(await backend.status(h), 'stopped');

  // Boot again: a fresh jail (the jailer refuses a used one).
  h = await backend.boot(spec, h);
  const pid2 = h['pid'] as number;
  assert.equal(await backend.status(h), 'running');

  await backend.delete('vm-life1', h);
  assert.equal(await alive(pid2), false, 'firecracker survived delete');
  assert.equal(existsSync(jail), false, 'jail directory left behind');
  assert.equal(await tapInfo(env, tap).catch(() => undefined), undefined, 'tap left behind');
  if (!env.real) assert.deepEqual(readdirSync(path.join(env.double.cgroupRoot, `metald-fcdt${env.tag}`)), [], 'cgroup left behind');
  assert.deepEqual(await backend.listResidues(), []);
  await backend.delete('vm-life1', h); // idempotent

  if (!env.real) {
    const reqs = env.double.requests('vm-life1');
    assertLegalLog(reqs.slice(0, reqs.findIndex((r, i) => i > 0 && r.body !== undefined && (r.body as { action_type?: string }).action_type === 'SendCtrlAltDel') + 1));
    const keys = reqs.map((r) => `${r.method} ${r.path}${r.body && (r.body as { action_type?: string }).action_type ? ` ${(r.body as { action_type: string }).action_type}` : ''}${r.path === '/vm' ? ` ${(r.body as { state: string }).state}` : ''}`);
    for (const k of ['PUT /actions InstanceStart', 'PATCH /vm Paused', 'PATCH /vm Resumed', 'PUT /actions SendCtrlAltDel']) assert.ok(keys.includes(k), `${k} missing`);
    // Each VMM process logs to the same file: the second boot's requests are legal on their own.
    const second = reqs.slice(reqs.findIndex((r) => (r.body as { action_type?: string } | undefined)?.action_type === 'SendCtrlAltDel') + 1);
    assertLegalLog(second);
  }
});

test('readiness: vmm makes a guest that cannot report RUNNING once Firecracker runs it', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  process.env['FC_DOUBLE_CONSOLE'] = 'vm-mute1=silent;vm-mute2=silent';
  const spec = env.spec('vm-mute1');
  const vmmReady = env.backend({ readiness: 'vmm', bootTimeoutMs: 60_000 });
  await vmmReady.start();
  const h = await vmmReady.boot(spec, await vmmReady.create(spec));
  assert.equal(await vmmReady.status(h), 'running');
  await vmmReady.delete('vm-mute1', h);
  // The same guest under readiness: marker fails after the timeout.
  const marker = env.backend({ bootTimeoutMs: 300 });
  const spec2 = env.spec('vm-mute2');
  const h2 = await marker.create(spec2);
  await assert.rejects(marker.boot(spec2, h2), /boot of vm-mute2 failed: no METALD-READY on the console within 300 ms/);
  assert.equal(await alive(env.double.vmm('vm-mute2').pid), false);
  await marker.delete('vm-mute2', h2);
});

test('a guest that ignores Ctrl-Alt-Del is killed after the shutdown timeout', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  process.env['FC_DOUBLE_CTRL_ALT_DEL'] = 'ignore';
  const backend = env.backend();
  await backend.start();
  const spec = env.spec('vm-stub1');
  let h = await backend.boot(spec, await backend.create(spec));
  const pid = h['pid'] as number;
  const t0 = Date.now();
  h = await backend.shutdown(h, { force: false, timeoutMs: 400 });
  assert.ok(Date.now() - t0 >= 400, 'killed before the timeout');
  assert.equal(await alive(pid), false);
  assert.equal(await backend.status(h), 'stopped');
  await backend.delete('vm-stub1', h);
});

test('a request the VMM rejects fails the boot with Firecracker\'s reason and leaves no process or jail', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  process.env['FC_DOUBLE_FAULT'] = 'PUT /network-interfaces/net0';
  const backend = env.backend();
  await backend.start();
  const spec = env.spec('vm-bad1');
  const h = await backend.create(spec);
  await assert.rejects(backend.boot(spec, h), /firecracker rejected PUT \/network-interfaces\/net0: 400 injected fault/);
  const run = env.double.jailerRuns()[0]!;
  assert.equal(await alive(run.pid!), false, 'firecracker left running');
  assert.equal(existsSync(backend.jailDir('vm-bad1')), false);
  assert.equal(await backend.status(h), 'stopped');
  await backend.delete('vm-bad1', h);
});

test('a tap Firecracker cannot open (no vnet_hdr) is a clear boot error', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  const real = new DataPlaneNics(env.dp);
  const noVnetHdr: HostNics = {
    ...real,
    tapOwner: (n) => real.tapOwner(n),
    owned: (p) => real.owned(p),
    removeTap: (n, o) => real.removeTap(n, o),
    async ensureTap(name, o) {
      await ipIn(env.dp, ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(o.uid), 'group', String(o.gid)]);
      await ipIn(env.dp, ['link', 'set', 'dev', name, 'alias', o.owner, 'up']);
    },
  };
  const backend = env.backend({ nics: noVnetHdr });
  await backend.start();
  const spec = env.spec('vm-novh');
  const h = await backend.create(spec);
  await assert.rejects(backend.boot(spec, h), /network-interfaces\/net0: 400 .*vnet_hdr/);
  await backend.delete('vm-novh', h);
  assert.equal(await tapInfo(env, spec.nics[0]!.hostDevice).catch(() => undefined), undefined);
});

test('the double enforces the spec and pre-/post-boot order on its socket', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  const backend = env.backend();
  await backend.start();
  const spec = env.spec('vm-dbl1');
  await backend.create(spec);
  // Start only the jailer + VMM (no configuration) by booting with a fault on the first request, then
  // talk to a fresh VMM directly: run the jailer by hand with the backend's own command line.
  const [file, args] = backend.jailerCommand(spec);
  const chroot = path.join(backend.jailDir('vm-dbl1'), 'root');
  spawnSync('mkdir', ['-p', chroot]);
  const r = spawnSync(file, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const sock = apiSocketPath({ chrootBase: path.join(env.dir, 'jail', `fcdt${env.tag}`), firecrackerPath: env.double.firecrackerPath }, 'vm-dbl1');
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((res) => setTimeout(res, 20));
  // The socket file appears at bind(), a moment before listen(): a loaded machine can connect in between.
  for (let i = 0; i < 100; i++) {
    const up = await rawRequest(sock, { method: 'GET', path: '/' }).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ECONNREFUSED');
    if (up) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  const send = (method: 'GET' | 'PUT' | 'PATCH', p: string, body?: unknown) => rawRequest(sock, { method, path: p, body });
  const fault = async (res: Promise<{ status: number; body: unknown }>, re: RegExp) => {
    const { status, body } = await res;
    assert.equal(status, 400);
    assert.match((body as { fault_message: string }).fault_message, re);
  };
  await fault(send('PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: '128' }), /mem_size_mib: expected an integer/);
  await fault(send('PUT', '/boot-source', { kernel_image_path: '/vmlinux', bootargs: 'x' }), /unknown field bootargs/);
  await fault(send('PATCH', '/vm', { state: 'Paused' }), /not supported before starting/);
  await fault(send('PUT', '/actions', { action_type: 'SendCtrlAltDel' }), /not supported before starting/);
  await fault(send('PUT', '/actions', { action_type: 'InstanceStart' }), /without kernel configuration/);
  await fault(send('PUT', '/boot-source', { kernel_image_path: env.kernel }), /Unable to open kernel/); // a host path is not in the jail
  await fault(send('PUT', '/drives/a', { drive_id: 'b', is_root_device: true, path_on_host: '/x', is_read_only: true }), /does not match the id/);
  await fault(send('PUT', '/network-interfaces/n0', { iface_id: 'n0', host_dev_name: 'nosuchtap' }), /No such device/);
  await fault(send('PUT', '/mmds/config', { network_interfaces: ['n0'] }), /does not correspond to any existing network interface/);
  // Valid setup, then the same pre-boot call after start is refused.
  spawnSync('ln', [env.kernel, path.join(chroot, 'vmlinux')]);
  assert.equal((await send('PUT', '/boot-source', { kernel_image_path: '/vmlinux', initrd_path: undefined })).status, 204);
  await fault(send('PUT', '/actions', { action_type: 'InstanceStart' }), /without a root block device or an initrd/);
  spawnSync('cp', [env.kernel, path.join(chroot, 'root.img')]);
  spawnSync('chown', [`${JAIL_UID}:${JAIL_GID}`, path.join(chroot, 'root.img')]);
  assert.equal((await send('PUT', '/drives/root', { drive_id: 'root', is_root_device: true, path_on_host: '/root.img', is_read_only: false })).status, 204);
  assert.equal((await send('PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
  await fault(send('PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128 }), /not supported after starting/);
  await fault(send('PUT', '/actions', { action_type: 'InstanceStart' }), /not supported after starting/);
  assert.equal((await send('PATCH', '/vm', { state: 'Paused' })).status, 204);
  const desc = await send('GET', '/');
  assert.deepEqual(desc.body, { app_name: 'Firecracker', id: 'vm-dbl1', state: 'Paused', vmm_version: '1.16.1' });
  await backend.delete('vm-dbl1', undefined);
  assert.deepEqual(await backend.listResidues(), []);
});

test('the double\'s jailer checks its command line like the real one', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, async (t) => {
  const env = newFcEnv();
  t.after(() => env.cleanup());
  const base = env.dir;
  const ok = ['--id', 'x1', '--exec-file', env.double.firecrackerPath, '--uid', '1000', '--gid', '1000', '--chroot-base-dir', base];
  const cases: [string[], RegExp][] = [
    [ok.slice(2), /Argument 'id' required/],
    [['--id', 'bad/id', ...ok.slice(2)], /Invalid instance ID/],
    [[...ok.slice(0, 3), env.double.jailerPath, ...ok.slice(4)], /must contain "firecracker"/],
    [[...ok.slice(0, 5), 'root', ...ok.slice(6)], /Invalid uid: root/],
    [[...ok, '--cgroup', 'cpu.max'], /Invalid format for cgroups: cpu.max/],
    [[...ok, '--cgroup', 'cpumax=1'], /Cgroup invalid file: cpumax/],
    [[...ok, '--cgroup-version', '3'], /invalid cgroup version/],
    [[...ok, '--parent-cgroup', '/abs'], /Parent cgroup path is invalid/],
    [[...ok, '--seccomp-level', '2'], /Found argument '--seccomp-level'/],
    [[...ok, '--id', 'x2'], /provided more than once/],
    [[...ok.slice(0, 9), path.join(base, 'missing')], /Failed to canonicalize/],
  ];
  for (const [args, re] of cases) {
    const r = spawnSync(env.double.jailerPath, args, { encoding: 'utf8' });
    assert.equal(r.status, 1, `${args.join(' ')} was accepted`);
    assert.match(r.stderr, re, args.join(' '));
  }
  // Spawned as a process-group leader (detached), --daemonize fails like the real setsid().
  const leader = spawnSync('setsid', ['-w', env.double.jailerPath, ...ok, '--daemonize', '--new-pid-ns'], { encoding: 'utf8' });
  assert.equal(leader.status, 1);
  assert.match(leader.stderr, /Failed to daemonize: setsid/);
});
