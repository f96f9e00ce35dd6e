// 1100 VMs on one configured bridge (the kernel takes 1023 ports per bridge):
// the plane shards it transparently (decision 0020). Needs root. Driven at the
// plane + backend level like bench/netsetup: most VMs are made in bulk (their
// namespace and veth pair by `ip -batch`, ports by one reconcile), the ones
// that ping are made by the sandbox backend and ensureVm. Everything lives in
// namespaces made here (`mtdtest-sh-<hex>`, `mtdsh<hex>-vm-*`) and is removed
// in `after`, data plane first (the fast order, see bench/netsetup).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { SandboxBackend } from '../../src/backends/sandbox/sandbox-backend.js';
import type { VmRecord } from '../../src/core/vm/record.js';
import { ipBatch, ipIn, ipJson, netnsList } from '../../src/kernel/netns.js';
import { BridgeNetworkPlane } from '../../src/network/bridge-plane.js';
import { SHARD_FILL } from '../../src/network/shards.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';
import { bulkDelete, memoryLog, freshDataPlane, ping6, waitAddressesReady } from '../helpers/hostnet-kernel.js';

const tag = randomBytes(2).toString('hex');
const INST = `mtdsh${tag}`;
const DP = `mtdtest-sh-${randomBytes(3).toString('hex')}`;
const BR = `sh${tag}br`;
const mine = (ns: string) => ns === DP || ns.startsWith(`${INST}-`);
const TOTAL = 1100;

const backend = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP });
const { log, lines: logLines } = memoryLog();
const plane = new BridgeNetworkPlane({ netns: DP, bridges: [bridge(BR, { addresses: ['fd00:a1::1/64'] })], log, instanceName: INST });
const records: VmRecord[] = [];

const addr = (i: number) => `fd00:a1::${(0x1000 + i).toString(16)}`;
const vmOf = (i: number) => vmRecord(`v${i}`, [{
  hostDevice: `hs${tag}${i.toString(36)}`, bridge: BR, address: `${addr(i)}/64`, gateway: 'fd00:a1::1',
  mac: `52:54:01:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`,
}]);

/** VM i with a /64 of its own (prefix mode): its gateway is answered by the primary (decision 0030). */
const ownNet = (i: number) => `fd00:a2:0:${i.toString(16)}`;
const vmOwn = (i: number) => vmRecord(`v${i}`, [{
  hostDevice: `hs${tag}${i.toString(36)}`, bridge: BR, address: `${ownNet(i)}::10/64`, gateway: `${ownNet(i)}::1`, mac: '52:54:01:ff:00:01',
}]);

/** A VM made as the lifecycle makes it: backend create, then the plane. */
async function makeVm(i: number, vm = vmOf(i)): Promise<VmRecord> {
  const n = vm.nics[0]!;
  const spec: BackendVmSpec = {
    id: vm.id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs: '', initrdPath: '', drives: [],
    nics: [{ id: 'eth0', hostDevice: n.hostDevice, mac: n.mac, mtu: 1500, ipv6Address: n.ipv6Address, ipv6Gateway: n.ipv6Gateway }],
  };
  vm.backendState = await backend.create(spec);
  await plane.ensureVm(vm);
  records.push(vm);
  return vm;
}

/** VMs from..to-1 in bulk: namespaces and veth pairs by `ip -batch`, ports by one reconcile. */
async function fill(from: number, to: number): Promise<void> {
  const vms = Array.from({ length: to - from }, (_, j) => vmOf(from + j));
  for (let i = 0; i < vms.length; i += 500) {
    const chunk = vms.slice(i, i + 500);
    await ipBatch(undefined, chunk.map((v) => `netns add ${backend.vmNetns(v.id)}`));
    await ipBatch(DP, chunk.map((v) => `link add ${v.nics[0]!.hostDevice} mtu 1500 up type veth peer name eth0 netns ${backend.vmNetns(v.id)}`));
  }
  records.push(...vms);
  await plane.reconcile(records);
}

async function mastersByBridge(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const l of await ipJson(DP, ['link', 'show'])) {
    const m = l['master'];
    if (typeof m === 'string') out.set(m, [...(out.get(m) ?? []), String(l['ifname']).split('@')[0]!]);
  }
  return out;
}

describe(`one configured bridge with ${TOTAL} VMs (sharded past 1023 ports)`, { timeout: 300_000 }, () => {
  before(async () => {
    await freshDataPlane(DP, mine);
    await plane.reconcile([]);
  });

  after(async () => {
    await bulkDelete(DP, mine);
    assert.deepEqual((await netnsList()).filter(mine), [], 'namespaces left behind');
  });

  it(`the ${TOTAL}th VM is on a shard and reaches the gateway and a VM on the primary`, async (t) => {
    const t0 = performance.now();
    await makeVm(0);
    await fill(1, SHARD_FILL);
    // The primary holds SHARD_FILL VM ports (more shards can still be made): the next VM makes shard 1 (slow path).
    await makeVm(SHARD_FILL);
    assert.equal(plane.shardBridges(BR).length, 2, plane.shardBridges(BR).join(' '));
    await fill(SHARD_FILL + 1, TOTAL - 1);
    const shards = plane.shardBridges(BR);
    const nShards = Math.ceil(TOTAL / SHARD_FILL) - 1;
    assert.equal(shards.length, 1 + nShards, shards.join(' '));
    assert.ok(shards.slice(1).every((s) => s.length <= 15 && s.startsWith('s')), shards.join(' '));
    // The 1100th goes to the last shard on the fast path: one `ip` process, no read.
    const before = { ...plane.stats };
    const last = await makeVm(TOTAL - 1);
    assert.deepEqual(plane.stats, { reads: before.reads, writes: before.writes + 1 });
    t.diagnostic(`${TOTAL} VMs set up in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const masters = await mastersByBridge();
    const uplinks = plane.uplinkPorts();
    assert.equal(uplinks.length, 2 * nShards);
    assert.ok(uplinks.every((u) => u.startsWith(plane.naming.uplinkPrefix) && u.length <= 15), uplinks.join(' '));
    const vmPorts = (b: string) => masters.get(b)!.filter((d) => !uplinks.includes(d));
    assert.equal(vmPorts(BR).length, SHARD_FILL);
    for (const s of shards.slice(1, -1)) assert.equal(vmPorts(s).length, SHARD_FILL, s);
    assert.equal(vmPorts(shards.at(-1)!).length, TOTAL - nShards * SHARD_FILL);
    assert.ok(masters.get(shards.at(-1)!)!.includes(last.nics[0]!.hostDevice));
    assert.ok(masters.get(BR)!.includes(records[0]!.nics[0]!.hostDevice));
    // Shards are plain L2: no IPv6 of their own, never a second host on the VMs' link.
    assert.equal((await ipIn(DP, ['-6', 'addr', 'show', 'dev', shards[1]!])).trim(), '');
    // Every configured address and port agree: a reconcile now writes nothing.
    await plane.reconcile(records);
    assert.deepEqual(plane.lastApplied, []);

    const lastNs = backend.vmNetns(last.id);
    for (const ns of [lastNs, backend.vmNetns('v0'), backend.vmNetns(`v${SHARD_FILL}`)]) await waitAddressesReady(ns);
    await ping6(lastNs, 'fd00:a1::1');
    await ping6(lastNs, addr(0));
    await ping6(backend.vmNetns('v0'), addr(TOTAL - 1));
    await ping6(lastNs, addr(SHARD_FILL));
    assert.deepEqual(logLines.filter((l) => l.startsWith('error')), []);
  });

  it('reconcile repairs a deleted uplink and a deleted shard', async () => {
    const shard = plane.shardBridges(BR).at(-1)!;
    const { upper } = plane.naming.names(BR, plane.naming.shardIndex(BR, shard)!);
    const onShard = (await mastersByBridge()).get(shard)!.length;
    await ipIn(DP, ['link', 'delete', 'dev', upper]);
    await assert.rejects(ping6(backend.vmNetns(`v${TOTAL - 1}`), addr(0)));
    await plane.reconcile(records);
    // The failed ping above left the guest's neighbour entry for addr(0) mid-resolution (INCOMPLETE,
    // then FAILED): the first echo after the repair can fall between its probes (CI saw it once).
    // Connectivity must be back within three tries (~6 s), not on the first packet.
    const pingAfterRepair = async (dst: string) => {
      for (let i = 0; ; i++) {
        try {
          return await ping6(backend.vmNetns(`v${TOTAL - 1}`), dst);
        } catch (err) {
          if (i === 2) throw err;
        }
      }
    };
    await pingAfterRepair(addr(0));
    await ipIn(DP, ['link', 'delete', 'dev', shard]);
    await plane.reconcile(records);
    assert.equal((await mastersByBridge()).get(shard)!.length, onShard);
    await pingAfterRepair('fd00:a1::1');
  });

  it('a VM with a /64 of its own on a shard resolves and reaches its gateway across the uplink', async () => {
    const vm = await makeVm(TOTAL, vmOwn(TOTAL));
    const shard = plane.shardBridges(BR).at(-1)!;
    assert.equal((await mastersByBridge()).get(shard)!.includes(vm.nics[0]!.hostDevice), true);
    const ns = backend.vmNetns(vm.id);
    await waitAddressesReady(ns);
    await ping6(ns, `${ownNet(TOTAL)}::1`);
    const [n] = await ipJson(ns, ['-6', 'neigh', 'show', `${ownNet(TOTAL)}::1`, 'dev', 'eth0']);
    assert.ok(n && 'router' in n, JSON.stringify(n));
    await ping6(ns, addr(0));
  });

  it('shards whose VMs are all gone are removed with their uplinks; the primary stays', async () => {
    const shards = plane.shardBridges(BR).slice(1);
    const onShard = records.slice(SHARD_FILL);
    for (const vm of onShard) await plane.removeVm(vm);
    await ipBatch(DP, onShard.map((v) => `link delete dev ${v.nics[0]!.hostDevice}`));
    records.splice(SHARD_FILL);
    await plane.reconcile(records);
    const links = new Set((await ipJson(DP, ['link', 'show'])).map((l) => String(l['ifname']).split('@')[0]!));
    for (const shard of shards) assert.ok(!links.has(shard), `${shard} still there`);
    assert.deepEqual([...links].filter((l) => plane.naming.isUplink(l)), []);
    // No VM has a gateway of its own any more: the ND port went too.
    assert.ok(!links.has(plane.naming.ndPort(BR)));
    assert.deepEqual(plane.shardBridges(BR), [BR]);
    assert.ok(links.has(BR));
    await ping6(backend.vmNetns('v0'), 'fd00:a1::1');
  });
});
