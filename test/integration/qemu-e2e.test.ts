// End to end with `backend: qemu`: a real metald (child process) with its own
// data-plane namespace, bridge and radvd, booting two real guests under TCG
// through the API. Cleanup (cleanupEnv) kills every process carrying the
// env's tag, qemu included, and removes the namespaces and the temp dir.
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { linkExists } from '../../src/kernel/netns.js';
import {
  alive, baseConfig, cleanupEnv, client, leftovers, newEnv, startDaemon, taggedPids, TOKENS, writeConfig, type Daemon,
} from '../helpers/daemon-harness.js';
import { ping6 } from '../helpers/hostnet-kernel.js';
import { nftList } from '../../src/kernel/nft.js';
import {
  attackScript, guestImage, guestRun, listenScript, pidsMentioning, pingScript, ROGUE_PREFIX,
} from '../helpers/qemu-guests.js';

const GW = 'fd00:77:0:5::1';
const SPOOF = 'fd00:77:0:5::99';
const ATTACKS = 3;
// q1 attacks the port guards from inside its guest once it has pinged; q2 listens (guest/metald-pkt.c).
const VMS = [
  { id: 'q1', addr: 'fd00:77:0:5::11', other: 'fd00:77:0:5::12',
    then: attackScript({ self: 'fd00:77:0:5::11', victim: 'fd00:77:0:5::12', spoof: SPOOF, count: ATTACKS }) },
  { id: 'q2', addr: 'fd00:77:0:5::12', other: 'fd00:77:0:5::11', then: listenScript({ attacker: 'fd00:77:0:5::11' }) },
];

/** Packets a port's per-port drop counter holds for `reason` (set d_<reason> of the bridge guard table). */
async function drops(dp: string, table: string, reason: string, dev: string): Promise<number> {
  const [o] = await nftList(dp, ['set', 'bridge', table, `d_${reason}`]);
  const set = o?.['set'] as { elem?: { elem?: { val: string; counter?: { packets: number } } }[] } | undefined;
  return set?.elem?.find((e) => e.elem?.val === dev)?.elem?.counter?.packets ?? 0;
}

describe('metald serve with backend: qemu', { timeout: 300_000 }, async () => {
  const env = await newEnv();
  const admin = client(env, TOKENS.admin);
  const stateDir = path.join(env.dir, 'qemu');
  let daemon: Daemon;

  before(async () => {
    const image = await guestImage();
    writeConfig(env, baseConfig(env, {
      backend: 'qemu',
      qemu: {
        // KVM detection is covered by the backend test; its probe would only add seconds here.
        accel: 'tcg', kernel_path: image.kernel, initrd_path: image.initrd, image_dirs: [image.dir],
        state_dir: stateDir, boot_timeout: '90s',
      },
      // The bridge address makes radvd advertise on brq: its RAs are the listener's control (q2 sees RAs).
      ipv6: {
        default_pool: { id: 'test', prefix: 'fd00:77::/48', reserved: [GW] },
        bridge: { name: 'brq', ipv6_address: `${GW}/64` },
      },
    }));
    daemon = await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
    assert.deepEqual(await pidsMentioning(stateDir), [], 'qemu left behind');
  });

  it('CreateVm + BootVm: guests boot, get their IPv6, reach the gateway and each other', async () => {
    for (const v of VMS) {
      const res = await client(env, TOKENS.a).createVm({
        vmId: v.id,
        config: {
          tenantId: 'tenant-a',
          boot: { kernelArgs: guestRun(pingScript([GW, v.other]) + v.then) },
          network: [{ id: 'eth0', bridgeName: 'brq', ipv6: { address: `${v.addr}/64`, gateway: GW } }],
        },
      });
      assert.equal(res.state, VmState.CREATED);
      assert.ok(await linkExists(env.dp, res.vm!.networkStatus[0]!.hostDevice), 'tap in the data plane');
    }
    const t0 = Date.now();
    const booted = await Promise.all(VMS.map((v) => client(env, TOKENS.a).bootVm({ vmId: v.id })));
    assert.deepEqual(booted.map((b) => b.state), [VmState.RUNNING, VmState.RUNNING]);
    const bootMs = Date.now() - t0;
    for (const v of VMS) {
      const info = (await admin.getVmInfo({ vmId: v.id })).vm!;
      assert.equal(info.state, VmState.RUNNING);
      assert.equal(info.networkStatus[0]!.ipv6Address, `${v.addr}/64`);
      await ping6(env.dp, v.addr, ['-W5']);
    }
    // The guests' own pings, read from their consoles.
    for (const v of VMS) {
      const file = path.join(stateDir, v.id, 'console.log');
      let con = '';
      const end = Date.now() + 90_000;
      while (!/METALD-RUN-DONE/.test(con) && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 250));
        con = await readFile(file, 'utf8');
      }
      assert.match(con, new RegExp(`PING-OK ${GW}\\b`), con);
      assert.match(con, new RegExp(`PING-OK ${v.other}\\b`), con);
    }
    assert.ok(bootMs < 90_000, `boot took ${bootMs} ms`);
  });

  it('from inside q1, spoofed-source echoes and rogue RAs are dropped before q2 and counted against q1', async () => {
    const con = await Promise.all(VMS.map((v) => readFile(path.join(stateDir, v.id, 'console.log'), 'utf8')));
    const [attacker, victim] = con as [string, string];
    const taps = await Promise.all(VMS.map(async (v) => (await admin.getVmInfo({ vmId: v.id })).vm!.networkStatus[0]!.hostDevice));
    const table = `${env.inst}_guard`;
    const counts = async (dev: string) => ({
      source_guard: await drops(env.dp, table, 'source_guard', dev), ra_guard: await drops(env.dp, table, 'ra_guard', dev),
    });
    const [c1, c2] = [await counts(taps[0]!), await counts(taps[1]!)];
    const seen = `attacker console:\n${attacker}\nvictim console:\n${victim}\ncounters q1 ${JSON.stringify(c1)} q2 ${JSON.stringify(c2)}`;
    // The attack really left q1 ...
    assert.equal(attacker.match(new RegExp(`SENT echo dst=${VMS[1]!.addr} text=SPOOF src=${SPOOF}`, 'g'))?.length, ATTACKS, seen);
    assert.match(attacker, new RegExp(`SENT ra prefix=${ROGUE_PREFIX} count=${ATTACKS}`), seen);
    // ... q2's listener worked (q1's own echoes before and after the attack, radvd's answer to its RS) ...
    assert.match(victim, new RegExp(`RX echo src=${VMS[0]!.addr} text=ATTACK-START`), seen);
    assert.match(victim, new RegExp(`RX echo src=${VMS[0]!.addr} text=METALD-END\r?\nLISTEN-END`), seen);
    assert.match(victim, /RX ra src=fe80::\S+ prefix=fd00:77:0:5::\/64/, seen);
    // ... and got none of it.
    assert.doesNotMatch(victim, /text=SPOOF/, seen);
    assert.doesNotMatch(victim, new RegExp(`prefix=${ROGUE_PREFIX}`), seen);
    // Counted on q1's port under the right reasons, nothing on q2's.
    assert.ok(c1.source_guard >= ATTACKS, seen);
    assert.ok(c1.ra_guard >= ATTACKS, seen);
    assert.deepEqual(c2, { source_guard: 0, ra_guard: 0 }, seen);
  });

  it('the guests keep running across a metald restart and are adopted', async () => {
    await daemon.kill('SIGKILL');
    daemon = await startDaemon(env);
    for (const v of VMS) assert.equal((await admin.getVmInfo({ vmId: v.id })).vm!.state, VmState.RUNNING);
    await ping6(env.dp, VMS[0]!.addr, ['-W5']);
  });

  it('Pause / Resume / Reboot / Shutdown', async () => {
    const c = client(env, TOKENS.a);
    assert.equal((await c.pauseVm({ vmId: 'q1' })).state, VmState.PAUSED);
    await assert.rejects(ping6(env.dp, VMS[0]!.addr), 'a paused guest must not answer');
    assert.equal((await c.resumeVm({ vmId: 'q1' })).state, VmState.RUNNING);
    await ping6(env.dp, VMS[0]!.addr, ['-W5']);
    assert.equal((await c.rebootVm({ vmId: 'q1' })).state, VmState.RUNNING);
    await ping6(env.dp, VMS[0]!.addr, ['-W5']);
    assert.equal((await c.shutdownVm({ vmId: 'q2', timeoutSeconds: 30 })).state, VmState.SHUTDOWN);
    await assert.rejects(ping6(env.dp, VMS[1]!.addr));
  });

  it('a failed boot is FAILED with the console tail in failure_reason', async () => {
    await client(env, TOKENS.a).createVm({
      vmId: 'q3',
      config: {
        tenantId: 'tenant-a', boot: { kernelArgs: 'rdinit=/no/such/init' },
        network: [{ id: 'eth0', bridgeName: 'brq', ipv6: { address: 'fd00:77:0:5::13/64', gateway: GW } }],
      },
    });
    await assert.rejects(client(env, TOKENS.a).bootVm({ vmId: 'q3' }));
    const info = (await admin.getVmInfo({ vmId: 'q3' })).vm!;
    assert.equal(info.state, VmState.FAILED);
    assert.match(info.failureReason, /kernel panic[\s\S]*console tail:[\s\S]*Kernel panic/);
  });

  it('Delete leaves no process, tap, rule or file', async () => {
    const taps = await Promise.all(['q1', 'q2', 'q3'].map(async (id) => (await admin.getVmInfo({ vmId: id })).vm!.networkStatus[0]!.hostDevice));
    for (const id of ['q1', 'q2', 'q3']) await client(env, TOKENS.a).deleteVm({ vmId: id });
    for (const t of taps) assert.equal(await linkExists(env.dp, t), false, `tap ${t}`);
    // The guard table stays (other VMs may come), but no element, counter or rule names a deleted
    // port. Exception: the packet path's meters — rate limits (`lim_*`) and log sampling (`ls_*`,
    // decision 0028), sets with a 60 s timeout — keep the port's entry until it expires (<= 60 s);
    // the firewall plane does not flush them on delete (nft 1.0.6 cannot delete an element that may be absent).
    const objs = await nftList(env.dp, ['table', 'bridge', `${env.inst}_guard`]);
    assert.ok(objs.length > 10, 'the guard table is still listed');
    const meter = (o: Record<string, unknown>) => {
      const set = o['set'] as { name?: string; flags?: string[] } | undefined;
      return /^(lim|ls)_/.test(set?.name ?? '') && set!.flags?.includes('timeout') === true;
    };
    const named = (t: string) => objs.filter((o) => !meter(o)).map((o) => JSON.stringify(o)).filter((o) => o.includes(`"${t}"`));
    for (const t of taps) assert.deepEqual(named(t), [], `guard objects naming ${t}`);
    assert.deepEqual(await pidsMentioning(stateDir), []);
    for (const id of ['q1', 'q2', 'q3']) assert.equal(await stat(path.join(stateDir, id)).then(() => true, () => false), false);
    // The daemon's own helpers (its long-lived `ip -batch` session, radvd) carry the tag too: look for VMMs.
    const qemus = [];
    for (const pid of taggedPids(env)) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (pid !== daemon.proc.pid && /qemu/.test(comm) && (await alive(pid))) qemus.push(pid);
    }
    assert.deepEqual(qemus, [], 'no qemu left');
  });
});
