// VmService over real HTTP (the API harness: manager, store, ConnectRPC
// server) with the Firecracker backend driving the spec-driven double: the
// API's view of a Firecracker VM (states, FAILED with Firecracker's reason).
// (`metald serve` itself refuses backend: firecracker on a host without
// hardware KVM — its doctor preflight — so the daemon is not used here.) Needs root.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import type { FirecrackerBackend } from '../../src/backends/firecracker/firecracker-backend.js';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { ipJson } from '../../src/kernel/netns.js';
import { startHarness, TOKENS, type Harness } from '../helpers/api-harness.js';
import { newFcEnv } from '../helpers/firecracker-env.js';
import { readProcStat } from '../../src/backends/sandbox/guest-process.js';

const CONFIG = `
ipv6:
  pools:
    - id: lab
      prefix: "fd00:10::/48"
`;

describe('VmService with the firecracker backend (test double)', { skip: process.env['FC_REAL_FIRECRACKER'] !== undefined }, () => {
  const env = newFcEnv();
  let h: Harness<FirecrackerBackend>;
  const alive = async (pid: number) => ((await readProcStat(pid))?.state ?? 'Z') !== 'Z';
  const taps = async (id: string) => (await ipJson(env.dp, ['link', 'show', 'type', 'tun'])).filter((l) => l['ifalias'] === `fcdt${env.tag}:${id}`);
  const config = (n: number) => ({
    tenantId: 'test-customer',
    cpu: { vcpuCount: 2 },
    memory: { sizeBytes: 256n * 1024n * 1024n },
    boot: { kernelPath: env.kernel },
    storage: [{ id: 'root', path: env.rootfs, isRootDevice: true }],
    network: [{ id: 'eth0', ipv6: { address: `fd00:10:0:1::${n}/64`, gateway: 'fd00:10:0:1::1' } }],
  });

  before(async () => {
    process.env['FC_DOUBLE_FAULT'] = 'fc-bad:PUT /drives/drive0';
    process.env['FC_DOUBLE_CONSOLE'] = 'fc-panic=panic;fc-silent=silent';
    const backend = env.backend({ bootTimeoutMs: 1500 });
    await backend.start();
    h = await startHarness({ configYaml: CONFIG, backend });
  });
  after(async () => {
    await h?.close();
    await env.cleanup();
  });

  it('create, boot, pause, resume, reboot, shutdown, delete', async () => {
    const c = h.client(TOKENS.customer);
    assert.equal((await c.createVm({ vmId: 'fc-1', config: config(11) })).state, VmState.CREATED);
    assert.equal((await taps('fc-1')).length, 1);
    assert.equal((await c.bootVm({ vmId: 'fc-1' })).state, VmState.RUNNING);
    const pid = env.double.vmm('fc-1').pid;
    // RUNNING came from the guest's word (readiness: marker) on the console Firecracker writes into the jail.
    const serial = env.double.requests('fc-1').find((r) => r.path === '/serial')!;
    assert.deepEqual(serial.body, { serial_out_path: '/console.log' });
    assert.match(readFileSync(path.join(h.backend.jailDir('fc-1'), 'root', 'console.log'), 'utf8'), /\nMETALD-READY\r\n/);
    const boot = env.double.requests('fc-1').find((r) => r.path === '/boot-source')!.body as { boot_args: string };
    assert.match(boot.boot_args, /metald\.ip6=fd00:10:0:1::11\/64 metald\.gw6=fd00:10:0:1::1/);
    assert.equal((await c.pauseVm({ vmId: 'fc-1' })).state, VmState.PAUSED);
    assert.equal((await c.getVmInfo({ vmId: 'fc-1' })).vm!.state, VmState.PAUSED);
    assert.equal((await c.resumeVm({ vmId: 'fc-1' })).state, VmState.RUNNING);
    assert.equal((await c.rebootVm({ vmId: 'fc-1' })).state, VmState.RUNNING);
    const pid2 = env.double.vmm('fc-1').pid;
    assert.notEqual(pid2, pid, 'a reboot is a new VMM (Firecracker cannot reboot in place)');
    assert.equal(await alive(pid), false);
    assert.equal((await c.shutdownVm({ vmId: 'fc-1' })).state, VmState.SHUTDOWN);
    assert.equal(await alive(pid2), false);
    for (const r of env.double.requests('fc-1')) assert.ok(r.status < 300, `${r.method} ${r.path} -> ${r.status} ${r.fault}`);
    await c.deleteVm({ vmId: 'fc-1' });
    assert.deepEqual(await taps('fc-1'), []);
    assert.equal(existsSync(h.backend.jailDir('fc-1')), false);
  });

  it('a request firecracker rejects: BootVm fails, the VM is FAILED with the reason, delete cleans up', async () => {
    const c = h.client(TOKENS.customer);
    await c.createVm({ vmId: 'fc-bad', config: config(12) });
    const err = await c.bootVm({ vmId: 'fc-bad' }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    assert.equal(err?.code, Code.Internal);
    assert.match(err!.rawMessage, /firecracker rejected PUT \/drives\/drive0: 400 injected fault/);
    const info = (await c.getVmInfo({ vmId: 'fc-bad' })).vm!;
    assert.equal(info.state, VmState.FAILED);
    assert.match(info.failureReason, /firecracker rejected PUT \/drives\/drive0: 400 injected fault/);
    assert.equal(await alive(env.double.vmm('fc-bad').pid), false, 'the failed VMM still runs');
    await c.deleteVm({ vmId: 'fc-bad' });
    assert.deepEqual(await taps('fc-bad'), []);
    assert.equal(existsSync(h.backend.jailDir('fc-bad')), false);
  });

  it('a guest kernel panic: BootVm fails at once, FAILED with the console tail, no VMM left', async () => {
    const c = h.client(TOKENS.customer);
    await c.createVm({ vmId: 'fc-panic', config: config(13) });
    const t0 = Date.now();
    await assert.rejects(c.bootVm({ vmId: 'fc-panic' }));
    assert.ok(Date.now() - t0 < 1500, 'the panic ended the wait, not the boot timeout');
    const info = (await c.getVmInfo({ vmId: 'fc-panic' })).vm!;
    assert.equal(info.state, VmState.FAILED);
    assert.match(info.failureReason, /kernel panic[\s\S]*console tail:[\s\S]*Linux version[\s\S]*Kernel panic - not syncing: VFS/);
    assert.equal(await alive(env.double.vmm('fc-panic').pid), false);
    await c.deleteVm({ vmId: 'fc-panic' });
    assert.equal(existsSync(h.backend.jailDir('fc-panic')), false);
  });

  it('a guest that never reports ready: FAILED after boot_timeout, VMM killed', async () => {
    const c = h.client(TOKENS.customer);
    await c.createVm({ vmId: 'fc-silent', config: config(14) });
    await assert.rejects(c.bootVm({ vmId: 'fc-silent' }));
    const info = (await c.getVmInfo({ vmId: 'fc-silent' })).vm!;
    assert.equal(info.state, VmState.FAILED);
    assert.match(info.failureReason, /no METALD-READY on the console within 1500 ms; console tail:\n\(empty\)/);
    assert.equal(await alive(env.double.vmm('fc-silent').pid), false, 'the VMM of a failed boot still runs');
    await c.deleteVm({ vmId: 'fc-silent' });
    assert.deepEqual(await taps('fc-silent'), []);
  });
});
