// The real daemon (`node bin/metald.js serve`) with the sandbox backend, driven
// through its API: VMs get real namespaces, veths and guest processes. Needs root.
// Names: instance `mtdt<hex>`, data plane `mtdtest-dp-<hex>`; all removed in `after`.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { netnsList } from '../../src/kernel/netns.js';
import {
  addrsOf, baseConfig, cleanupEnv, client, cmdline, type Daemon, dpVeths, freePort, leftovers, netnsPids, newEnv,
  portAnswers, procStat, spawnDaemon, startDaemon, taggedGuests, TOKENS, vmNetns, waitUntil, writeConfig,
} from '../helpers/daemon-harness.js';
import { run } from '../../src/kernel/exec.js';

async function code(p: Promise<unknown>): Promise<Code | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

const VMS = [
  // Written non-canonically on purpose: the daemon stores and applies RFC 5952 text.
  { id: 'e2e-1', token: TOKENS.a, tenant: 'tenant-a', addr: 'FD00:77:0:1:0::11/64', canon: 'fd00:77:0:1::11/64', gw: 'fd00:77:0:1::1' },
  { id: 'e2e-2', token: TOKENS.a, tenant: 'tenant-a', addr: 'fd00:77:0:1::12/64', canon: 'fd00:77:0:1::12/64', gw: 'fd00:77:0:1::1' },
  { id: 'e2e-3', token: TOKENS.b, tenant: 'tenant-b', addr: 'fd00:77:0:2::13/64', canon: 'fd00:77:0:2::13/64', gw: 'fd00:77:0:2::1' },
];

describe('metald serve: VM lifecycle through the API', { timeout: 180_000 }, async () => {
  const env = await newEnv();
  const admin = client(env, TOKENS.admin);
  const guests = new Map<string, number>();
  let daemon: Daemon;

  before(async () => {
    writeConfig(env, baseConfig(env));
    daemon = await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('creates 3 VMs with static IPv6: namespace, eth0 with the address and MAC, host veth in the data plane', async () => {
    for (const v of VMS) {
      const res = await client(env, v.token).createVm({
        vmId: v.id,
        config: { tenantId: v.tenant, network: [{ id: 'eth0', ipv6: { address: v.addr, gateway: v.gw } }] },
      });
      assert.equal(res.state, VmState.CREATED);
      const nic = res.vm!.networkStatus[0]!;
      assert.equal(nic.ipv6Address, v.canon);
      assert.equal(nic.ipv6Gateway, v.gw);
      const ns = vmNetns(env, v.id);
      assert.ok((await netnsList()).includes(ns), `namespace ${ns} missing`);
      const eth0 = await addrsOf(ns, 'eth0');
      assert.ok(eth0.addrs.includes(v.canon), `eth0 in ${ns} has ${eth0.addrs.join(', ')}, not ${v.canon}`);
      assert.equal(eth0.mac, nic.macAddress);
      assert.ok((await dpVeths(env)).includes(nic.hostDevice), `host end ${nic.hostDevice} not in ${env.dp}`);
      assert.deepEqual(await netnsPids(ns), [], 'a created VM runs no guest yet');
    }
    assert.equal(daemon.running, true);
  });

  it('boots them: RUNNING, one live guest inside each namespace, default route via the gateway', async () => {
    for (const v of VMS) {
      const res = await client(env, v.token).bootVm({ vmId: v.id });
      assert.equal(res.state, VmState.RUNNING);
      assert.equal((await admin.getVmInfo({ vmId: v.id })).vm!.state, VmState.RUNNING);
      const ns = vmNetns(env, v.id);
      const pids = await netnsPids(ns);
      assert.equal(pids.length, 1, `guests in ${ns}: ${pids.join(', ')}`);
      const pid = pids[0]!;
      assert.equal(await cmdline(pid), 'sleep infinity');
      assert.match((await procStat(pid))!.state, /^[RS]$/);
      guests.set(v.id, pid);
      assert.match(await run('ip', ['-n', ns, '-6', 'route', 'show', 'default']), new RegExp(`via ${v.gw} dev eth0`));
    }
    assert.deepEqual(await taggedGuests(env), [...guests.values()].sort((a, b) => a - b), 'guests outside the VM namespaces');
  });

  it('keeps tenants apart: another tenant\'s VM is not found, lists are scoped', async () => {
    assert.equal(await code(client(env, TOKENS.b).getVmInfo({ vmId: 'e2e-1' })), Code.NotFound);
    assert.equal(await code(client(env, TOKENS.b).pauseVm({ vmId: 'e2e-1' })), Code.NotFound);
    assert.equal(await code(client(env, TOKENS.a).listVms({ tenantId: 'tenant-b' })), Code.PermissionDenied);
    assert.deepEqual((await client(env, TOKENS.a).listVms({})).vms.map((v) => v.vmId), ['e2e-1', 'e2e-2']);
    assert.equal((await admin.listVms({})).totalCount, 3);
    assert.equal(await code(client(env, 'not-a-configured-token-xyz').listVms({})), Code.Unauthenticated);
    assert.equal(await code(client(env).listVms({})), Code.Unauthenticated);
  });

  it('pause stops the guest process (state T), resume continues it', async () => {
    const pid = guests.get('e2e-2')!;
    assert.equal((await admin.pauseVm({ vmId: 'e2e-2' })).state, VmState.PAUSED);
    assert.equal((await procStat(pid))?.state, 'T');
    assert.equal((await admin.getVmInfo({ vmId: 'e2e-2' })).vm!.state, VmState.PAUSED);
    assert.equal(await code(admin.pauseVm({ vmId: 'e2e-2' })), Code.FailedPrecondition);
    assert.equal((await admin.resumeVm({ vmId: 'e2e-2' })).state, VmState.RUNNING);
    assert.notEqual((await procStat(pid))?.state, 'T');
    assert.equal((await admin.getVmInfo({ vmId: 'e2e-2' })).vm!.state, VmState.RUNNING);
  });

  it('shutdown ends the guest but keeps the sandbox; a shut-down VM boots again', async () => {
    const pid1 = guests.get('e2e-1')!;
    assert.equal((await admin.shutdownVm({ vmId: 'e2e-1', timeoutSeconds: 5 })).state, VmState.SHUTDOWN);
    assert.equal(await procStat(pid1).then((s) => s !== undefined && s.state !== 'Z'), false, 'guest survived shutdown');
    // A paused guest still gets a graceful shutdown (SIGTERM needs a SIGCONT to be delivered).
    const pid2 = guests.get('e2e-2')!;
    await admin.pauseVm({ vmId: 'e2e-2' });
    const t0 = Date.now();
    assert.equal((await admin.shutdownVm({ vmId: 'e2e-2', timeoutSeconds: 5 })).state, VmState.SHUTDOWN);
    assert.ok(Date.now() - t0 < 4_000, 'a paused guest waited for the shutdown timeout');
    assert.equal(await procStat(pid2).then((s) => s !== undefined && s.state !== 'Z'), false);
    for (const id of ['e2e-1', 'e2e-2']) {
      assert.deepEqual(await netnsPids(vmNetns(env, id)), []);
      assert.ok((await addrsOf(vmNetns(env, id), 'eth0')).addrs.length > 0, 'the sandbox lost its NIC');
    }
    assert.equal((await admin.bootVm({ vmId: 'e2e-1' })).state, VmState.RUNNING);
    const [again] = await netnsPids(vmNetns(env, 'e2e-1'));
    assert.ok(again !== undefined && again !== pid1, 'no new guest after boot');
    assert.equal(await code(admin.resumeVm({ vmId: 'e2e-2' })), Code.FailedPrecondition);
  });

  it('delete removes namespace, host veth and guest; the VM is then not found', async () => {
    const hostDevs = new Map((await admin.listVms({})).vms.map((v) => [v.vmId, v.networkStatus[0]!.hostDevice]));
    for (const v of VMS) {
      assert.equal((await admin.deleteVm({ vmId: v.id })).success, true);
      assert.equal((await netnsList()).includes(vmNetns(env, v.id)), false, `namespace of ${v.id} survived delete`);
      assert.equal((await dpVeths(env)).includes(hostDevs.get(v.id)!), false, `host veth of ${v.id} survived delete`);
      assert.equal(await code(admin.getVmInfo({ vmId: v.id })), Code.NotFound);
    }
    assert.deepEqual(await taggedGuests(env), []);
    assert.equal((await admin.listVms({})).totalCount, 0);
    assert.equal(daemon.running, true, `daemon died:\n${daemon.stderr}`);
  });
});

describe('metald serve: start-up checks', { timeout: 120_000 }, async () => {
  const env = await newEnv();

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), []);
  });

  it('refuses to start with auth.mode tokens and no tokens (non-zero exit, clear stderr)', async () => {
    const file = writeConfig(env, baseConfig(env, { auth: { mode: 'tokens' } }), path.join(env.dir, 'no-tokens.yaml'));
    const d = spawnDaemon(env, file);
    const exit = await d.exitWithin(30_000);
    assert.ok(exit !== 'timeout', 'the daemon kept running without tokens');
    assert.notEqual(exit.code, 0);
    assert.match(d.stderr, /auth\.tokens is empty/);
    assert.match(d.stderr, /auth\.mode: none/);
    assert.equal((await netnsList()).includes(env.dp), false, 'it touched the host before refusing');
  });

  it('with auth.mode none: logs a warn line saying authentication is disabled, serves without a token, stops cleanly on SIGTERM', async () => {
    // The config names another port: `--port` (env.port) must win.
    const configPort = await freePort();
    const file = writeConfig(env, baseConfig(env, { auth: { mode: 'none' }, port: configPort }), path.join(env.dir, 'no-auth.yaml'));
    const d = await startDaemon(env, file);
    assert.equal(await portAnswers(configPort), false, 'listening on the config port despite --port');
    await waitUntil('the serving log line', async () => d.logs().some((l) => l['msg'] === 'metald serving'));
    const warn = d.logs().find((l) => l['level'] === 'warn' && /authentication is disabled/i.test(String(l['msg'])));
    assert.ok(warn, `no warn line about disabled authentication in:\n${d.stdout}`);
    assert.equal((await client(env).listVms({})).totalCount, 0);
    // A second daemon on the same data dir must refuse: both would think they own every VM.
    const rival = spawnDaemon({ ...env, port: await freePort(), daemons: env.daemons }, file);
    const rivalExit = await rival.exitWithin(30_000);
    assert.ok(rivalExit !== 'timeout' && rivalExit.code !== 0, 'a second daemon started on the same data dir');
    assert.match(rival.stderr, /data dir .* is in use by pid/);
    d.proc.kill('SIGTERM');
    assert.deepEqual(await d.exitWithin(15_000), { code: 0, signal: null });
    assert.equal(existsSync(path.join(env.dataDir, 'metald.lock')), false, 'data dir lock not released');
  });

  // BUG (src/core/vm/ids.ts TENANT_ID_PATTERN vs src/config/schema.ts TENANT_ID): the config accepts
  // tenant ids with ':' and '@' up to 128 chars (as docs/config.md documents), but CreateVm only
  // accepts [A-Za-z0-9_.-]{1,64}, so such a tenant's token can never create a VM. Expected to fail
  // until the two patterns agree.
  it('a tenant id the config accepts (with "@") can create its own VMs', async () => {
    const tenant = 'ops@example.com';
    const token = 'daemon-test-at-tenant-token-0123';
    const file = writeConfig(env, baseConfig(env, { auth: { tokens: [{ token, tenant_id: tenant }] } }), path.join(env.dir, 'at.yaml'));
    const d = await startDaemon(env, file);
    try {
      const res = await client(env, token).createVm({ vmId: 'at-1', config: { network: [{ id: 'eth0' }] } });
      assert.equal(res.vm!.tenantId, tenant);
      await client(env, token).deleteVm({ vmId: 'at-1' });
    } finally {
      await d.kill();
    }
  });
});
