// Real qemu guests (TCG where KVM does not work) on a real bridge: needs root,
// qemu-system-x86 and apt (for the guest image). Everything lives in a
// data-plane namespace made here (`mtdtest-qm-<hex>`) and a temp state dir,
// and is removed in `after` even when a test fails; no traffic leaves them.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BackendHandle, BackendVmSpec } from '../../src/backends/backend.js';
import { QemuBackend, type QemuBackendOptions } from '../../src/backends/qemu/qemu-backend.js';
import { readProcStat } from '../../src/backends/sandbox/guest-process.js';
import { ipIn, linkExists, netnsAdd, netnsList } from '../../src/kernel/netns.js';
import { BridgeNetworkPlane } from '../../src/network/bridge-plane.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';
import { memoryLog, pinBridgeNetfilterOff, ping6, removeNamespaces } from '../helpers/hostnet-kernel.js';
import { guestImage, guestRun, killMentioning, pidsMentioning, pingScript, type GuestImage } from '../helpers/qemu-guests.js';

const tag = randomBytes(3).toString('hex');
const DP = `mtdtest-qm-${tag}`;
const BR = `qm${tag}br`;
const PREFIX = `fd00:${parseInt(tag.slice(0, 4), 16).toString(16)}:${tag.slice(4)}`;
const GW = `${PREFIX}::1`;
const addr = (n: number) => `${PREFIX}::${10 + n}`;
const tap = (n: number) => `qm${tag}t${n}`;
const STATE = mkdtempSync(path.join(tmpdir(), 'mtdqemu-'));
const mine = (ns: string) => ns === DP;

const { log } = memoryLog();
const plane = new BridgeNetworkPlane({ netns: DP, bridges: [bridge(BR, { addresses: [`${GW}/64`] })], log });
let image: GuestImage;
let backend: QemuBackend;
const handles = new Map<string, BackendHandle>();

function options(over: Partial<QemuBackendOptions> = {}): QemuBackendOptions {
  return {
    dataplaneNetns: DP, binary: 'qemu-system-x86_64', machine: 'microvm', accel: 'auto',
    kernelPath: image.kernel, initrdPath: image.initrd, imageDirs: [image.dir], stateDir: STATE,
    bootTimeoutMs: 90_000, readiness: 'marker', ...over,
  };
}

function spec(id: string, n: number, kernelArgs = ''): BackendVmSpec {
  const mac = `52:54:00:6d:00:${n.toString(16).padStart(2, '0')}`;
  return {
    id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs, initrdPath: '', drives: [],
    nics: [{ id: 'eth0', hostDevice: tap(n), mac, mtu: 1500, ipv6Address: `${addr(n)}/64`, ipv6Gateway: GW }],
    guest: {
      latest: {
        'meta-data': {
          'instance-id': id, 'tenant-id': 't1',
          network: { interfaces: [{ 'interface-id': 'eth0', mac, 'device-number': 0, ipv6: `${addr(n)}/64`, 'ipv6-gateway': GW, 'privacy-extensions': false, slaac: false }] },
          dns: { servers: [`${PREFIX}::53`], search: [], dnssec: false, 'dns-over-tls': false },
        },
      },
    },
  };
}

async function createVm(id: string, n: number, kernelArgs = ''): Promise<BackendVmSpec> {
  const s = spec(id, n, kernelArgs);
  handles.set(id, await backend.create(s));
  await plane.ensureVm(vmRecord(id, [{ hostDevice: tap(n), bridge: BR, address: `${addr(n)}/64`, gateway: GW }]));
  return s;
}

const consoleOf = (id: string) => readFile(backend.files(id).console, 'utf8');
const count = (text: string, line: string) => text.split('\n').filter((l) => l.replace('\r', '') === line).length;
const pidOf = (id: string) => handles.get(id)!['pid'] as number;
// A zombie counts as gone: qemu daemonises, so reaping it is up to the host's init.
const alive = async (pid: number) => !['Z', 'X', undefined].includes((await readProcStat(pid))?.state);

describe('qemu backend with real guests', { timeout: 400_000 }, () => {
  before(async () => {
    assert.deepEqual((await netnsList()).filter(mine), [], 'random test names already in use');
    image = await guestImage();
    backend = new QemuBackend(options());
    await backend.start();
    await netnsAdd(DP);
    await ipIn(DP, ['link', 'set', 'lo', 'up']);
    await pinBridgeNetfilterOff(DP);
    await plane.reconcile([]);
  });

  after(async () => {
    for (const [id, h] of handles) await backend.delete(id, h).catch(() => {});
    await killMentioning(STATE);
    await removeNamespaces(mine);
    rmSync(STATE, { recursive: true, force: true });
    assert.deepEqual((await netnsList()).filter(mine), [], 'namespaces left behind');
  });

  it('boots two guests that configure IPv6 and ping their gateway and each other', async (t) => {
    const a = await createVm('qa', 1, guestRun(pingScript([GW, addr(2)])));
    const b = await createVm('qb', 2, guestRun(pingScript([GW, addr(1)])));
    assert.ok(await linkExists(DP, tap(1)));
    const t0 = Date.now();
    const [ha, hb] = await Promise.all([backend.boot(a, handles.get('qa')!), backend.boot(b, handles.get('qb')!)]);
    t.diagnostic(`both guests ready after ${Date.now() - t0} ms (accel ${String(ha['accel'])}: ${(await backend.accel()).detail})`);
    handles.set('qa', ha).set('qb', hb);
    assert.equal(await backend.status(ha), 'running');
    // Seen from the host: each guest answers at the address metald gave it.
    await ping6(DP, addr(1), ['-W5']);
    await ping6(DP, addr(2), ['-W5']);
    for (const [id, other] of [['qa', addr(2)], ['qb', addr(1)]] as const) {
      const n = id === 'qa' ? 1 : 2;
      let con = '';
      const end = Date.now() + 90_000;
      while (!/METALD-RUN-DONE/.test(con) && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 250));
        con = await consoleOf(id);
      }
      assert.match(con, new RegExp(`METALD-NET static ${addr(n)}/64 gw ${GW} dns=${PREFIX}::53`));
      assert.equal(count(con, 'METALD-READY'), 1, con);
      assert.match(con, new RegExp(`PING-OK ${GW}\\b`), con);
      assert.match(con, new RegExp(`PING-OK ${other}\\b`), con);
    }
  });

  it('reports status from a fresh backend instance (as after a metald restart)', async () => {
    const again = new QemuBackend(options());
    await again.start();
    assert.equal(await again.status(handles.get('qa')!), 'running');
    assert.deepEqual((await again.listResidues()).sort(), ['qa', 'qb']);
  });

  it('pause stops the guest answering, resume brings it back', async () => {
    const h = handles.get('qa')!;
    await backend.pause(h);
    assert.equal(await backend.status(h), 'paused');
    await assert.rejects(ping6(DP, addr(1)), 'a paused guest must not answer');
    await backend.resume(h);
    assert.equal(await backend.status(h), 'running');
    await ping6(DP, addr(1), ['-W5']);
  });

  it('reboot resets the guest, which comes up again with its address', async () => {
    const pid = pidOf('qa');
    await backend.reboot(spec('qa', 1), handles.get('qa')!, { force: false, timeoutMs: 10_000 });
    assert.equal(pidOf('qa'), pid, 'same qemu process');
    assert.equal(count(await consoleOf('qa'), 'METALD-READY'), 2);
    await ping6(DP, addr(1), ['-W5']);
  });

  it('shutdown powers the guest off through ACPI', async () => {
    const pid = pidOf('qb');
    const t0 = Date.now();
    const h = await backend.shutdown(handles.get('qb')!, { force: false, timeoutMs: 30_000 });
    handles.set('qb', h);
    assert.ok(Date.now() - t0 < 30_000, 'within the timeout, so not by quit/kill');
    assert.equal(await alive(pid), false);
    // Through guest init's ACPI handler, not qemu's quit: the guest said so and the kernel powered off.
    assert.match(await consoleOf('qb'), /METALD-POWERDOWN[\s\S]*reboot: Power down/);
    assert.equal(await backend.status(h), 'stopped');
    await assert.rejects(ping6(DP, addr(2)));
  });

  it('a boot that fails is an error with the console tail, and leaves no qemu', async () => {
    const s = await createVm('qc', 3, 'rdinit=/no/such/init');
    await assert.rejects(backend.boot(s, handles.get('qc')!), (err: Error) => {
      assert.match(err.message, /boot of qc failed .*kernel panic/);
      assert.match(err.message, /console tail:\n[\s\S]*Kernel panic/);
      return true;
    });
    assert.deepEqual(await pidsMentioning(backend.files('qc').qmp), []);
    const slow = new QemuBackend(options({ bootTimeoutMs: 3_000 }));
    await slow.start();
    await assert.rejects(slow.boot(spec('qc', 3, 'rdinit=/bin/cat'), handles.get('qc')!), /no METALD-READY on the console within 3000 ms/);
    assert.deepEqual(await pidsMentioning(backend.files('qc').qmp), []);
  });

  it('refuses images outside qemu.image_dirs and leaves nothing behind', async () => {
    await assert.rejects(backend.create({ ...spec('qd', 4), kernelPath: '/etc/passwd' }), /config\.boot\.kernel_path: .*outside qemu\.image_dirs/);
    await assert.rejects(backend.create({ ...spec('qd', 4), drives: [{ id: 'root', path: '/etc/shadow', readOnly: false, isRoot: true }] }), /config\.storage\[0\]\.path/);
    assert.equal(await linkExists(DP, tap(4)), false);
    assert.equal(await stat(backend.vmDir('qd')).then(() => true, () => false), false);
  });

  it('delete leaves no process, tap or file', async () => {
    const pid = pidOf('qa');
    for (const [id, n] of [['qa', 1], ['qb', 2], ['qc', 3]] as const) {
      await plane.removeVm(vmRecord(id, [{ hostDevice: tap(n), bridge: BR }]));
      await backend.delete(id, handles.get(id));
      handles.delete(id);
      assert.equal(await linkExists(DP, tap(n)), false, `tap of ${id}`);
      assert.equal(await stat(backend.vmDir(id)).then(() => true, () => false), false, `dir of ${id}`);
    }
    assert.equal(await alive(pid), false);
    assert.deepEqual(await pidsMentioning(STATE), []);
    assert.deepEqual(await backend.listResidues(), []);
  });
});
