// Real namespaces, veths and processes: needs root. Everything lives in
// namespaces made here (data plane `mtdtest-dp-*`, VMs `mtdtest<hex>-vm*`),
// removed in `after` even when a test fails.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { BackendHandle, BackendNicSpec, BackendVmSpec } from '../../src/backends/backend.js';
import { SandboxBackend } from '../../src/backends/sandbox/sandbox-backend.js';
import { run } from '../../src/kernel/exec.js';
import { ipIn, linkExists, netnsAdd, netnsDelete, netnsExists, netnsList, netnsPids } from '../../src/kernel/netns.js';

const tag = randomBytes(2).toString('hex');
const INST = `mtdtest${tag}`;
const DP = `mtdtest-dp-${randomBytes(3).toString('hex')}`;
const TERM_IGNORING = ['sh', '-c', 'trap "" TERM; while :; do sleep 1; done'];

function nic(n: number, overrides: Partial<BackendNicSpec> = {}): BackendNicSpec {
  const hex = n.toString(16).padStart(2, '0');
  return {
    id: 'eth0', hostDevice: `mt${tag}v${hex}`, mac: `52:54:00:99:00:${hex}`, mtu: 1500,
    ipv6Address: '', ipv6Gateway: '', ...overrides,
  };
}

function spec(id: string, nics: BackendNicSpec[]): BackendVmSpec {
  return {
    id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs: '', initrdPath: '', drives: [], nics,
  };
}

async function procStat(pid: number): Promise<{ state: string; start: number } | undefined> {
  try {
    const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(')').pop()!.trim().split(' ');
    return { state: f[0]!, start: Number(f[19]) };
  } catch {
    return undefined;
  }
}

async function alive(h: BackendHandle): Promise<boolean> {
  const st = typeof h['pid'] === 'number' ? await procStat(h['pid']) : undefined;
  return st !== undefined && st.start === h['startTime'] && st.state !== 'Z';
}

async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let hasPing: boolean | undefined;
/** One ICMPv6 echo from inside `ns`; scapy stands in where iputils ping is not installed. */
async function ping6(ns: string, dst: string): Promise<void> {
  hasPing ??= await run('sh', ['-c', 'command -v ping']).then(() => true, () => false);
  if (hasPing) {
    await run('ip', ['netns', 'exec', ns, 'ping', '-6', '-c1', '-W2', dst]);
    return;
  }
  const py = 'import sys\nfrom scapy.all import IPv6, ICMPv6EchoRequest, ICMPv6EchoReply, sr1, conf\nconf.verb = 0\n'
    + 'r = sr1(IPv6(dst=sys.argv[1])/ICMPv6EchoRequest(id=0x4d54), timeout=2)\n'
    + 'sys.exit(0 if r is not None and r.haslayer(ICMPv6EchoReply) else 1)\n';
  await run('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-c', py, dst]);
}

async function ours(): Promise<string[]> {
  return (await netnsList()).filter((n) => n === DP || n.startsWith(INST));
}

const booted: BackendHandle[] = [];

async function cleanup(): Promise<void> {
  for (const h of booted) {
    // Only if it is still the very process we started (start time matches).
    if (await alive(h)) process.kill(-(h['pid'] as number), 'SIGKILL');
  }
  for (const ns of await ours()) {
    for (const pid of await netnsPids(ns)) if (pid > 1 && pid !== process.pid) process.kill(pid, 'SIGKILL');
    await netnsDelete(ns);
  }
}

describe('SandboxBackend', { timeout: 120_000 }, () => {
  const backend = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP });
  const specA = spec('a', [nic(1, { ipv6Address: 'fd00:99::11/64', ipv6Gateway: 'fd00:99::1' })]);
  const specB = spec('b', [nic(2, { ipv6Address: 'fd00:99::12/64', ipv6Gateway: 'fd00:99::1' })]);
  let hA: BackendHandle;
  let hB: BackendHandle;

  async function createBoot(b: SandboxBackend, s: BackendVmSpec): Promise<{ h: BackendHandle; ms: number }> {
    const t0 = performance.now();
    const h = await b.boot(s, await b.create(s));
    const ms = performance.now() - t0;
    booted.push(h);
    return { h, ms };
  }

  before(async () => {
    assert.deepEqual(await ours(), [], 'random test names already in use');
    await backend.start();
    await backend.start();
  });

  after(async () => {
    await cleanup();
    assert.deepEqual(await ours(), [], 'namespaces left behind');
  });

  it('start() made the data-plane namespace with lo up', async () => {
    assert.ok(await netnsExists(DP));
    assert.match(await ipIn(DP, ['link', 'show', 'dev', 'lo']), /UP/);
  });

  it('creates and boots VMs that talk IPv6 over a bridge', async (t) => {
    const a = await createBoot(backend, specA);
    const b = await createBoot(backend, specB);
    t.diagnostic(`create+boot: a ${a.ms.toFixed(1)} ms, b ${b.ms.toFixed(1)} ms`);
    hA = a.h;
    hB = b.h;
    assert.equal(hA['netns'], `${INST}-vm-a`);
    assert.deepEqual(hA['nics'], [nic(1).hostDevice]);
    assert.equal(hA['hostNetns'], DP);
    assert.equal(await backend.status(hA), 'running');

    const guest = await ipIn(`${INST}-vm-a`, ['-d', 'link', 'show', 'dev', 'eth0']);
    assert.match(guest, /mtu 1500 .*state UP/);
    assert.match(guest, /52:54:00:99:00:01/);
    assert.match(await ipIn(DP, ['link', 'show', 'dev', nic(1).hostDevice]), /mtu 1500 .*state UP/);
    assert.match(await ipIn(`${INST}-vm-a`, ['-6', 'route', 'show', 'default']), /via fd00:99::1 dev eth0 .*onlink/);

    await ipIn(DP, ['link', 'add', 'br0', 'type', 'bridge']);
    await run('ip', ['netns', 'exec', DP, 'sysctl', '-qw', 'net.ipv6.conf.br0.accept_dad=0']);
    await ipIn(DP, ['addr', 'add', 'fd00:99::1/64', 'dev', 'br0', 'nodad']);
    await ipIn(DP, ['link', 'set', 'br0', 'up']);
    for (const n of [nic(1), nic(2)]) await ipIn(DP, ['link', 'set', n.hostDevice, 'master', 'br0']);
    // The backend leaves DAD on, as a real guest would; wait for it rather than disable it.
    for (const vm of ['a', 'b']) {
      await waitUntil(`DAD in vm ${vm}`, async () =>
        (await ipIn(`${INST}-vm-${vm}`, ['-6', 'addr', 'show', 'dev', 'eth0', 'tentative'])).trim() === '');
    }
    await Promise.all([
      ping6(`${INST}-vm-a`, 'fd00:99::1'), ping6(`${INST}-vm-b`, 'fd00:99::1'),
      ping6(`${INST}-vm-a`, 'fd00:99::12'), ping6(`${INST}-vm-b`, 'fd00:99::11'),
      // Keeps the checks honest: an address nobody has must not answer.
      assert.rejects(ping6(`${INST}-vm-a`, 'fd00:99::99')),
    ]);
  });

  it('boot is idempotent and the guest really sits in the VM namespace', async () => {
    assert.deepEqual(await backend.boot(specA, hA), hA);
    assert.ok((await netnsPids(`${INST}-vm-a`)).includes(hA['pid'] as number));
  });

  it('pauses and resumes', async () => {
    await backend.pause(hA);
    assert.equal(await backend.status(hA), 'paused');
    assert.equal((await procStat(hA['pid'] as number))?.state, 'T');
    await backend.pause(hA);
    await backend.resume(hA);
    assert.equal(await backend.status(hA), 'running');
    await backend.resume(hA);
  });

  it('a restarted metald sees the same guests and finds residues of its own instance only', async () => {
    await netnsAdd(`${INST}2-vm-other`);
    const longId = `x${'0123456789'.repeat(6)}yz`; // 63 chars: needs a hashed namespace name
    const restarted = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP });
    assert.equal(await restarted.status(hA), 'running');
    assert.equal(await restarted.status(hB), 'running');
    // Same pid, different start time: a recycled pid must not pass for the guest.
    assert.equal(await restarted.status({ ...hA, startTime: (hA['startTime'] as number) + 1 }), 'stopped');

    const sLong = spec(longId, [nic(3)]);
    await restarted.create(sLong);
    const hLong = await restarted.create(sLong); // retry after a "crash" starts over cleanly
    assert.ok((hLong['netns'] as string).length <= 63);
    assert.deepEqual((await restarted.listResidues()).sort(), ['a', 'b', longId].sort());
    assert.deepEqual(await new SandboxBackend({ instanceName: `${INST}2`, dataplaneNetns: DP }).listResidues(), ['other']);
    await restarted.delete(longId, undefined);
    assert.equal(await linkExists(DP, nic(3).hostDevice), false);
    assert.deepEqual((await restarted.listResidues()).sort(), ['a', 'b']);
    await netnsDelete(`${INST}2-vm-other`);
  });

  it('graceful shutdown of a guest ignoring SIGTERM kills it after the timeout', async () => {
    const stubborn = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP, guestCommand: TERM_IGNORING });
    const sC = spec('c', [nic(4)]);
    const { h } = await createBoot(stubborn, sC);
    // A `sleep` child means the shell got past `trap`: only now is SIGTERM ignored.
    await waitUntil('the trap', async () => (await netnsPids(`${INST}-vm-c`)).length >= 2);
    const timeoutMs = 1_000;
    const t0 = performance.now();
    const down = await stubborn.shutdown(h, { force: false, timeoutMs });
    assert.ok(performance.now() - t0 >= timeoutMs, 'killed before the timeout');
    assert.equal(await alive(h), false);
    assert.equal(down['pid'], null);
    assert.equal(await stubborn.status(down), 'stopped');
    // The shell's `sleep` children got the signal too (they share its process group).
    assert.deepEqual(await netnsPids(`${INST}-vm-c`), []);

    const again = await stubborn.boot(sC, down);
    booted.push(again);
    const t1 = performance.now();
    await stubborn.shutdown(again, { force: true, timeoutMs: 10_000 });
    assert.ok(performance.now() - t1 < 2_000, 'force shutdown waited');
    assert.equal(await alive(again), false);
    await stubborn.delete('c', again);
  });

  it('graceful shutdown of a paused guest that obeys SIGTERM is quick', async () => {
    await backend.pause(hA);
    const t0 = performance.now();
    const down = await backend.shutdown(hA, { force: false, timeoutMs: 10_000 });
    assert.ok(performance.now() - t0 < 5_000);
    assert.equal(await alive(hA), false);
    assert.equal(await backend.status(down), 'stopped');
    assert.deepEqual(await backend.shutdown(down, { force: false, timeoutMs: 10 }), down);
    hA = await backend.boot(specA, down);
    booted.push(hA);
    assert.equal(await backend.status(hA), 'running');
  });

  it('reboot gives a new guest process', async () => {
    const old = hB['pid'];
    hB = await backend.reboot(specB, hB, { force: false, timeoutMs: 5_000 });
    booted.push(hB);
    assert.notEqual(hB['pid'], old);
    assert.equal(await backend.status(hB), 'running');
  });

  it('delete leaves nothing and can be repeated, with or without a handle', async () => {
    const pidA = hA['pid'];
    await backend.delete('a', hA);
    assert.equal(await netnsExists(`${INST}-vm-a`), false);
    assert.equal(await linkExists(DP, nic(1).hostDevice), false);
    assert.equal(await alive(hA), false, `guest ${String(pidA)} survived`);
    assert.equal(await backend.status(hA), 'absent');
    await backend.delete('a', hA);
    await backend.delete('a', undefined);

    await backend.delete('b', undefined);
    assert.equal(await netnsExists(`${INST}-vm-b`), false);
    assert.equal(await linkExists(DP, nic(2).hostDevice), false);
    assert.equal(await alive(hB), false);
    assert.deepEqual(await backend.listResidues(), []);
  });

  it('a create failing halfway (bad MTU on the 2nd NIC) leaves nothing behind', async () => {
    const bad = spec('half', [nic(5), nic(6, { id: 'eth1', mtu: 100_000 })]);
    await assert.rejects(backend.create(bad), /mtu|Invalid argument/i);
    assert.equal(await netnsExists(`${INST}-vm-half`), false);
    assert.equal(await linkExists(DP, nic(5).hostDevice), false);
    assert.equal(await linkExists(DP, nic(6).hostDevice), false);
    await backend.delete('half', undefined);
  });

  it('a create failing on a host device name clash removes its own devices only', async () => {
    const clash = nic(8).hostDevice;
    await ipIn(DP, ['link', 'add', clash, 'type', 'veth', 'peer', 'name', `${clash}p`]);
    const bad = spec('clash', [nic(7), nic(8, { id: 'eth1' })]);
    await assert.rejects(backend.create(bad), /File exists/);
    assert.equal(await netnsExists(`${INST}-vm-clash`), false);
    assert.equal(await linkExists(DP, nic(7).hostDevice), false);
    assert.equal(await linkExists(DP, clash), true, 'deleted a device it did not create');
    await ipIn(DP, ['link', 'delete', 'dev', clash]);
  });

  it('boot fails, leaving nothing running, when the guest cannot start', async () => {
    const broken = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP, guestCommand: ['/nonexistent/mtd-guest'] });
    const s = spec('noguest', []);
    const h = await broken.create(s);
    await assert.rejects(broken.boot(s, h), /exited/);
    assert.equal(await broken.status(h), 'stopped');
    assert.deepEqual(await netnsPids(`${INST}-vm-noguest`), []);
    await broken.delete('noguest', h);
  });

  it('rejects hostile names before running anything', async () => {
    await assert.rejects(backend.create(spec('-x', [])), /invalid VM id/);
    await assert.rejects(backend.create(spec('ok', [nic(9, { id: 'eth0 up' })])), /invalid interface name/);
    await assert.rejects(backend.create(spec('ok', [nic(9, { ipv6Address: 'fd00::1/64 dev lo' })])), /invalid IPv6/);
    await assert.rejects(backend.create(spec('ok', [nic(9, { mac: '52:54:00:99:00:0G' })])), /invalid MAC/);
    assert.throws(() => new SandboxBackend({ instanceName: 'x-vm-y', dataplaneNetns: DP }), /instance name/);
    assert.equal(await netnsExists(`${INST}-vm-ok`), false);
  });

  it('creates and boots 20 VMs, then deletes them (timing)', async (t) => {
    const specs = Array.from({ length: 20 }, (_, i) =>
      spec(`s${i}`, [nic(0x20 + i, { ipv6Address: `fd00:99::1:${i}/64`, ipv6Gateway: 'fd00:99::1' })]));
    const t0 = performance.now();
    const handles: BackendHandle[] = [];
    for (const s of specs) handles.push((await createBoot(backend, s)).h);
    const t1 = performance.now();
    for (const [i, s] of specs.entries()) await backend.delete(s.id, handles[i]);
    const t2 = performance.now();
    t.diagnostic(`per VM: create+boot ${((t1 - t0) / specs.length).toFixed(1)} ms, delete ${((t2 - t1) / specs.length).toFixed(1)} ms`);
    assert.deepEqual(await backend.listResidues(), []);
  });
});
