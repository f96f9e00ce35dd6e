// "kill -9 the daemon in the middle of creates, restart: store, namespaces and
// processes agree, nothing leaked." The real daemon, the sandbox backend, real
// namespaces and guest processes; needs root. Everything is removed in `after`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { VmState, type VmInfo } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { run } from '../../src/kernel/exec.js';
import { netnsList } from '../../src/kernel/netns.js';
import {
  addrsOf, alive, baseConfig, cleanupEnv, client, cmdline, type Daemon, dpVeths, type Json, leftovers, netnsPids, newEnv, poolClient,
  procStat, sleep, startDaemon, taggedGuests, TOKENS, vmNamespaces, vmNetns, waitUntil, writeConfig,
} from '../helpers/daemon-harness.js';

const S = VmState;
const TRANSITIONAL = [S.CREATING, S.DELETING, S.BOOTING, S.SHUTTING_DOWN];

describe('metald crash recovery (kill -9, restart)', { timeout: 300_000 }, async () => {
  const env = await newEnv();
  let daemon: Daemon;
  const admin = () => client(env, TOKENS.admin);

  async function listAll(): Promise<VmInfo[]> {
    return (await admin().listVms({ pageSize: 1000 })).vms;
  }

  async function restart(): Promise<Json> {
    await daemon.kill('SIGKILL');
    // Let `ip` commands the dead daemon had started run out, as a supervisor's restart delay would.
    await sleep(300);
    daemon = await startDaemon(env);
    await waitUntil('the start-up reconcile log line', async () => daemon.logs().some((l) => l['msg'] === 'start-up reconcile done'));
    return daemon.logs().find((l) => l['msg'] === 'start-up reconcile done')!;
  }

  /**
   * Every disagreement between the store, the namespaces, the data plane and the processes.
   * Guest processes that no RUNNING/PAUSED VM accounts for start with "LEAK".
   */
  async function inconsistencies(): Promise<string[]> {
    const problems: string[] = [];
    const vms = await listAll();
    const namespaces = await netnsList();
    const veths = await dpVeths(env);
    const guestsOfLiveVms = new Set<number>();
    for (const vm of vms) {
      const id = vm.vmId;
      const st = S[vm.state];
      const ns = vmNetns(env, id);
      const hasNs = namespaces.includes(ns);
      const pids = hasNs ? await netnsPids(ns) : [];
      if (TRANSITIONAL.includes(vm.state)) problems.push(`${id}: left in ${st}`);
      if (vm.state === S.FAILED && !vm.failureReason) problems.push(`${id}: FAILED without failure_reason`);
      if (vm.state !== S.FAILED && !hasNs) problems.push(`${id}: ${st} but namespace ${ns} is missing`);
      if (hasNs && !veths.includes(vm.networkStatus[0]?.hostDevice ?? '')) problems.push(`${id}: host veth missing in ${env.dp}`);
      if (vm.state === S.RUNNING || vm.state === S.PAUSED) {
        if (pids.length !== 1) problems.push(`${id}: ${st} with ${pids.length} processes in its namespace`);
        for (const pid of pids) {
          guestsOfLiveVms.add(pid);
          const ps = await procStat(pid);
          if ((await cmdline(pid)) !== 'sleep infinity') problems.push(`${id}: process ${pid} is not the guest`);
          if ((ps?.state === 'T') !== (vm.state === S.PAUSED)) problems.push(`${id}: ${st} but guest ${pid} is in state ${ps?.state}`);
        }
      } else if (pids.length > 0) {
        problems.push(`LEAK ${id}: ${st}${vm.failureReason ? ` (${vm.failureReason})` : ''} but processes ${pids.join(',')} run in its namespace`);
      }
    }
    const ids = new Set(vms.map((v) => v.vmId));
    for (const ns of await vmNamespaces(env)) {
      if (!ids.has(ns.slice(`${env.inst}-vm-`.length))) problems.push(`orphan namespace ${ns}`);
    }
    const hostDevs = new Set(vms.map((v) => v.networkStatus[0]?.hostDevice));
    for (const v of veths) if (!hostDevs.has(v)) problems.push(`orphan host veth ${v} in ${env.dp}`);
    for (const pid of await taggedGuests(env)) {
      if (!guestsOfLiveVms.has(pid)) problems.push(`LEAK guest process ${pid} (not the guest of a RUNNING/PAUSED VM)`);
    }
    return problems;
  }

  const nicFor = (subnet: number, host: number) => [{
    id: 'eth0', ipv6: { address: `fd00:77:0:${subnet}::${host.toString(16)}/64`, gateway: `fd00:77:0:${subnet}::1` },
  }];

  before(async () => {
    writeConfig(env, baseConfig(env));
    daemon = await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  const createdBeforeKill = new Set<string>();
  const bootedBeforeKill = new Set<string>();

  it('SIGKILL after ~15 of 30 concurrent CreateVm+BootVm were answered; after restart everything agrees', async (t) => {
    const c = admin();
    // Killed once about half the VMs have an answer, and some of them a boot answer.
    let release!: () => void;
    const half = new Promise<void>((r) => (release = r));
    const answered = () => { if (createdBeforeKill.size + bootedBeforeKill.size >= 15 && bootedBeforeKill.size >= 3) release(); };
    // Staggered a little, so at the kill some VMs are running, some booting and some creating.
    const ops = Array.from({ length: 30 }, (_, i) => `r${i}`).map(async (id, i) => {
      await sleep(i * 20);
      try {
        await c.createVm({ vmId: id, config: { tenantId: i % 2 ? 'tenant-a' : 'tenant-b', network: nicFor(3, 0x10 + i) } });
        createdBeforeKill.add(id);
        answered();
      } catch {
        return;
      }
      try {
        await c.bootVm({ vmId: id });
        bootedBeforeKill.add(id);
        answered();
      } catch {
        // cut off by the kill
      }
    });
    await Promise.race([half, Promise.allSettled(ops)]);
    await daemon.kill('SIGKILL');
    await Promise.allSettled(ops);
    t.diagnostic(`answered before the kill: ${createdBeforeKill.size} creates, ${bootedBeforeKill.size} boots`);
    assert.ok(createdBeforeKill.size + bootedBeforeKill.size < 60, 'every call was answered: the kill interrupted nothing');

    const report = await restart();
    t.diagnostic(`start-up reconcile: ${JSON.stringify(report)}`);
    const vms = await listAll();
    const byId = new Map(vms.map((v) => [v.vmId, v]));
    // (a) nothing half-way
    assert.deepEqual(vms.filter((v) => TRANSITIONAL.includes(v.state)).map((v) => `${v.vmId} ${S[v.state]}`), []);
    // (d) an answered create is durable; an answered boot left a RUNNING VM
    for (const id of createdBeforeKill) assert.ok(byId.has(id), `${id} was created (answered) but is gone after restart`);
    for (const id of bootedBeforeKill) assert.equal(S[byId.get(id)!.state], 'RUNNING', `${id} was booted (answered)`);
    // (b), (c): store, namespaces and data plane agree
    assert.deepEqual((await inconsistencies()).filter((p) => !p.startsWith('LEAK')), []);
    // IPAM: no address is both free and in use, none leaked, none held twice.
    const allocs = (await poolClient(env).listAllocations({ includeQuarantined: true })).allocations;
    assert.equal(new Set(allocs.map((a) => a.prefix)).size, allocs.length, 'an allocation is stored twice');
    for (const v of vms) {
      for (const n of v.networkStatus) {
        const held = allocs.find((a) => a.vmId === v.vmId && a.nicId === n.id && !a.releasedAt);
        assert.ok(held && n.ipv6Address.startsWith(`${held.address}/`), `${v.vmId}/${n.id} ${n.ipv6Address} has no allocation`);
      }
    }
    for (const a of allocs) {
      if (!a.releasedAt) assert.ok(byId.has(a.vmId), `${a.prefix} is held for ${a.vmId}, which does not exist (leak)`);
    }
    // A VM created now gets an address nobody holds.
    const fresh = (await admin().createVm({ vmId: 'after-crash', config: { tenantId: 'tenant-a', network: [{ id: 'eth0' }] } })).vm!;
    const addr = fresh.networkStatus[0]!.ipv6Address.split('/')[0];
    assert.ok(!allocs.some((a) => a.address === addr), `${addr} was handed out twice`);
    await admin().deleteVm({ vmId: 'after-crash' });
  });

  // BUG (src/lifecycle/reconciler.ts decide(), case 'booting'; src/lifecycle/manager.ts boot()): the guest
  // is spawned before its pid is recorded (the handle is written only with RUNNING), so a crash
  // during BootVm leaves a VM that start-up marks FAILED "boot was interrupted" while its guest
  // keeps running in the VM's namespace, unknown to the store (and, by the code, a later BootVm spawns a second one).
  it('after the crash no guest process runs that is not the guest of a RUNNING/PAUSED VM', async () => {
    assert.deepEqual((await inconsistencies()).filter((p) => p.startsWith('LEAK')), []);
  });

  it('a second restart finds nothing to repair and changes no state', async () => {
    const before = (await listAll()).map((v) => `${v.vmId} ${S[v.state]}`);
    const report = await restart();
    for (const k of ['rolledBack', 'deleted', 'markedFailed', 'orphansRemoved', 'recreated']) {
      assert.deepEqual(report[k], [], `second reconcile ${k}`);
    }
    assert.deepEqual((await listAll()).map((v) => `${v.vmId} ${S[v.state]}`), before);
  });

  const drift = { killed: 'x1', nsGone: 'x2', healthy: 'x3', orphan: '' };
  const pids = new Map<string, number>();

  it('drift while stopped: guest killed → FAILED (guest exited), namespace deleted → FAILED (sandbox disappeared), orphan namespace removed', async () => {
    const c = admin();
    for (const [i, id] of [drift.killed, drift.nsGone, drift.healthy].entries()) {
      await c.createVm({ vmId: id, config: { tenantId: 'tenant-a', network: nicFor(4, 0x10 + i) } });
      await c.bootVm({ vmId: id });
      const [pid] = await netnsPids(vmNetns(env, id));
      assert.ok(pid !== undefined, `${id} has no guest`);
      pids.set(id, pid);
    }
    await daemon.kill('SIGKILL');
    process.kill(pids.get(drift.killed)!, 'SIGKILL');
    await waitUntil('the guest to die', async () => !(await alive(pids.get(drift.killed)!)));
    await run('ip', ['netns', 'del', vmNetns(env, drift.nsGone)]);
    drift.orphan = `${env.inst}-vm-orphan1`;
    await run('ip', ['netns', 'add', drift.orphan]);

    const report = await restart();
    const get = async (id: string) => (await admin().getVmInfo({ vmId: id })).vm!;
    const killed = await get(drift.killed);
    assert.equal(S[killed.state], 'FAILED');
    assert.match(killed.failureReason, /guest process exited/);
    const gone = await get(drift.nsGone);
    assert.equal(S[gone.state], 'FAILED');
    assert.match(gone.failureReason, /sandbox disappeared/);
    const healthy = await get(drift.healthy);
    assert.equal(S[healthy.state], 'RUNNING');
    assert.deepEqual(await netnsPids(vmNetns(env, drift.healthy)), [pids.get(drift.healthy)], 'the healthy guest was not adopted as is');
    assert.equal((await netnsList()).includes(drift.orphan), false, 'orphan namespace survived');
    assert.deepEqual([...(report['markedFailed'] as string[])].sort(), [drift.killed, drift.nsGone]);
    assert.deepEqual(report['orphansRemoved'], ['orphan1']);
    assert.deepEqual((await inconsistencies()).filter((p) => !p.startsWith('LEAK')), []);
  });

  // BUG (src/lifecycle/reconciler.ts, case 'set' to failed): a RUNNING VM whose namespace vanished
  // is marked FAILED, but its guest process (pid and start time are in the stored handle) is
  // left running, now in an unnamed namespace nobody can reach.
  it('a VM marked FAILED because its sandbox disappeared leaves no guest process running', async () => {
    assert.equal(await alive(pids.get(drift.nsGone)!), false, `guest ${pids.get(drift.nsGone)} of ${drift.nsGone} still runs`);
  });

  it('BootVm recovers a FAILED VM whose guest died: a new guest in its namespace', async () => {
    assert.equal((await admin().bootVm({ vmId: drift.killed })).state, S.RUNNING);
    const now = await netnsPids(vmNetns(env, drift.killed));
    assert.equal(now.length, 1);
    assert.notEqual(now[0], pids.get(drift.killed));
    assert.equal((await admin().getVmInfo({ vmId: drift.killed })).vm!.failureReason, '');
  });

  // BUG (src/backends/sandbox/sandbox-backend.ts boot(): `if (await liveGuest(h)) return handle`
  // runs before the namespace check): with the old guest still alive (see above), BootVm of the
  // VM whose namespace is gone answers RUNNING although the VM has no namespace.
  it('BootVm of a VM whose sandbox disappeared never reports RUNNING without a namespace', async () => {
    let state: string;
    try {
      state = S[(await admin().bootVm({ vmId: drift.nsGone })).state]!;
    } catch {
      state = S[(await admin().getVmInfo({ vmId: drift.nsGone })).vm!.state]!;
    }
    if (state === 'RUNNING') {
      assert.ok((await netnsList()).includes(vmNetns(env, drift.nsGone)), 'RUNNING without a namespace');
      assert.equal((await netnsPids(vmNetns(env, drift.nsGone))).length, 1, 'RUNNING without a guest in its namespace');
    } else {
      assert.equal(state, 'FAILED');
    }
  });

  it('while the daemon runs, the periodic reconcile (every 10 s) marks a VM whose guest died FAILED', async () => {
    const c = admin();
    await c.createVm({ vmId: 'p1', config: { tenantId: 'tenant-b', network: nicFor(5, 0x10) } });
    await c.bootVm({ vmId: 'p1' });
    const [pid] = await netnsPids(vmNetns(env, 'p1'));
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    await waitUntil('p1 to be marked FAILED', async () => (await c.getVmInfo({ vmId: 'p1' })).vm!.state === S.FAILED, 25_000);
    assert.match((await c.getVmInfo({ vmId: 'p1' })).vm!.failureReason, /guest process exited/);
  });

  it('a CREATED VM whose namespace was deleted while metald was down gets it back at restart', async () => {
    const c = admin();
    await c.createVm({ vmId: 'x4', config: { tenantId: 'tenant-a', network: nicFor(6, 0x10) } });
    await daemon.kill('SIGKILL');
    await run('ip', ['netns', 'del', vmNetns(env, 'x4')]);
    const report = await restart();
    assert.deepEqual(report['recreated'], ['x4']);
    assert.equal(S[(await c.getVmInfo({ vmId: 'x4' })).vm!.state], 'CREATED');
    assert.ok((await addrsOf(vmNetns(env, 'x4'), 'eth0')).addrs.includes('fd00:77:0:6::10/64'), 'eth0 not restored');
  });

  // BUG (src/lifecycle/reconciler.ts reconcileAll(): no per-VM error handling; src/daemon/daemon.ts
  // start() awaits it before listening): one VM whose repair throws (here: its host device name is
  // taken in the data plane, so re-creating its sandbox fails with "File exists") aborts the whole
  // start-up reconcile, and metald exits instead of serving the other VMs. The periodic pass has
  // the same flaw: it stops at that VM every 10 s.
  it('one VM that cannot be repaired does not keep metald from starting', async () => {
    const c = admin();
    const vm = (await c.createVm({ vmId: 'x5', config: { tenantId: 'tenant-a', network: nicFor(7, 0x10) } })).vm!;
    const host = vm.networkStatus[0]!.hostDevice;
    let started: string | undefined;
    await daemon.kill('SIGKILL');
    try {
      await run('ip', ['netns', 'del', vmNetns(env, 'x5')]);
      await waitUntil('the old host veth to go', async () => !(await dpVeths(env)).includes(host));
      await run('ip', ['-n', env.dp, 'link', 'add', host, 'type', 'bridge']);
      await sleep(300);
      daemon = await startDaemon(env);
      started = 'yes';
      const x5 = (await admin().getVmInfo({ vmId: 'x5' })).vm!;
      assert.ok(x5.state === S.FAILED ? x5.failureReason !== '' : (await netnsList()).includes(vmNetns(env, 'x5')),
        `x5 is ${S[x5.state]} without its namespace or a failure reason`);
    } catch (err) {
      if (started) throw err;
      started = String(err).split('\n').slice(0, 3).join(' ');
    } finally {
      await run('ip', ['-n', env.dp, 'link', 'del', host]).catch(() => {});
      if (!daemon.running) daemon = await startDaemon(env);
    }
    assert.equal(started, 'yes', 'metald did not start');
  });

  it('deleting every VM through the API leaves no namespace, veth or guest', async () => {
    const c = admin();
    for (const vm of await listAll()) await c.deleteVm({ vmId: vm.vmId });
    assert.equal((await c.listVms({})).totalCount, 0);
    assert.deepEqual(await vmNamespaces(env), []);
    assert.deepEqual(await dpVeths(env), []);
    assert.deepEqual(await taggedGuests(env), []);
    assert.equal(daemon.running, true, `daemon died:\n${daemon.stderr}`);
  });
});
