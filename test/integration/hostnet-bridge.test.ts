// The bridge plane on a real kernel: needs root. Everything lives in namespaces
// made here — data plane `mtdtest-hn-<hex>`, VMs `mtdhn<hex>-vm-<id>` (sandbox
// backend, not booted: a VM's network needs no guest process) — and is
// removed in `after` even when a test fails. No traffic leaves them.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { SandboxBackend } from '../../src/backends/sandbox/sandbox-backend.js';
import type { VmRecord } from '../../src/core/vm/record.js';
import { ipIn, ipJson, linkExists, netnsExists, netnsList } from '../../src/kernel/netns.js';
import { BridgeNetworkPlane } from '../../src/network/bridge-plane.js';
import { GATEWAY_PROTO } from '../../src/network/gateways.js';
import { detectVlanFiltering } from '../../src/network/kernel-features.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';
import {
  hostDump, infoData, memoryLog, freshDataPlane, ping6, removeNamespaces, sysctlIn, waitAddressesReady,
} from '../helpers/hostnet-kernel.js';

const tag = randomBytes(2).toString('hex');
const INST = `mtdhn${tag}`;
const DP = `mtdtest-hn-${randomBytes(3).toString('hex')}`;
const BR_A = `hn${tag}a`;
const BR_J = `hn${tag}j`;
const BR_S = `hn${tag}s`;
const dev = (n: number) => `hn${tag}v${n}`;
const mine = (ns: string) => ns === DP || ns.startsWith(`${INST}-`);

const bridges = [
  bridge(BR_A, { addresses: ['fd00:99::1/64'], mldSnooping: true, querier: true, ageingTimeSec: 30 }),
  bridge(BR_J, { mtu: 9000, addresses: ['fd00:98::1/64'] }),
  bridge(BR_S, { stp: true, forwardDelaySec: 4, mldSnooping: false, querier: false, ageingTimeSec: 45 }),
];
const backend = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP });
const { log, lines: logLines } = memoryLog();
const plane = new BridgeNetworkPlane({ netns: DP, bridges, log });
const vms = new Map<string, VmRecord>();

async function makeVm(id: string, n: number, br: string, address: string, gateway: string, mtu = 1500): Promise<VmRecord> {
  const mac = `52:54:00:77:00:${n.toString(16).padStart(2, '0')}`;
  const vm = vmRecord(id, [{ hostDevice: dev(n), bridge: br, address, gateway, mac }]);
  const spec: BackendVmSpec = {
    id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs: '', initrdPath: '', drives: [],
    nics: [{ id: 'eth0', hostDevice: dev(n), mac, mtu, ipv6Address: address, ipv6Gateway: gateway }],
  };
  vm.backendState = await backend.create(spec);
  vms.set(id, vm);
  await plane.ensureVm(vm);
  return vm;
}

/** As the lifecycle deletes: network first, then the backend. */
async function deleteVm(id: string): Promise<void> {
  const vm = vms.get(id)!;
  await plane.removeVm(vm);
  await backend.delete(id, vm.backendState);
  vms.delete(id);
}

const vmns = (id: string) => backend.vmNetns(id);
const bridgeAddrs = async (br: string) => ((await ipJson(DP, ['-6', 'address', 'show', 'dev', br]))[0]?.['addr_info'] as Record<string, unknown>[] ?? [])
  .filter((a) => a['scope'] === 'global').map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
const link = async (name: string) => (await ipJson(DP, ['-d', 'link', 'show', 'dev', name]))[0];
/** The gateway side of a bridge as `<what> <address or prefix>` lines (decision 0030): metald's neighbours and routes on it. */
async function gatewayState(br: string): Promise<string[]> {
  const neighs = await ipJson(DP, ['-6', 'neigh', 'show', 'dev', br, 'nud', 'permanent']);
  const routes = await ipJson(DP, ['-6', 'route', 'show', 'table', 'all', 'proto', String(GATEWAY_PROTO), 'dev', br]);
  return [
    ...neighs.filter((n) => n['protocol'] === String(GATEWAY_PROTO)).map((n) => `neigh ${String(n['dst'])} ${String(n['lladdr'])}${'router' in n ? ' router' : ''}`),
    ...routes.map((r) => `${r['type'] === 'local' ? 'local' : 'subnet'} ${String(r['dst'])}`),
  ].sort();
}
const gatewayOf = async (br: string, gw: string, subnet: string) => {
  const mac = String((await link(br))?.['address']);
  return [`local ${gw}`, `neigh ${gw} ${mac} router`, `subnet ${subnet}`];
};
const ndPort = (br: string) => plane.naming.ndPort(br);

describe('BridgeNetworkPlane on a real kernel', { timeout: 180_000 }, () => {
  before(async () => {
    await freshDataPlane(DP, mine);
    await plane.reconcile([]);
  });

  after(async () => {
    for (const [id, vm] of vms) await backend.delete(id, vm.backendState).catch(() => {});
    await removeNamespaces(mine);
    assert.deepEqual((await netnsList()).filter(mine), [], 'namespaces left behind');
  });

  it('made the bridges and pinned the namespace sysctls; probes vlan_filtering', async (t) => {
    for (const b of bridges) assert.ok(await linkExists(DP, b.name), b.name);
    assert.equal(await sysctlIn(DP, 'net.bridge.bridge-nf-call-ip6tables'), '0');
    assert.equal(await sysctlIn(DP, 'net.bridge.bridge-nf-call-iptables'), '0');
    assert.equal(await sysctlIn(DP, 'net.ipv6.conf.all.forwarding'), '1');
    for (const b of bridges) {
      assert.equal(await sysctlIn(DP, `net.ipv6.conf.${b.name}.forwarding`), '1');
      assert.equal(await sysctlIn(DP, `net.ipv6.conf.${b.name}.accept_ra`), '0');
      assert.equal(await sysctlIn(DP, `net.ipv6.conf.${b.name}.accept_redirects`), '0');
    }
    const vf = await detectVlanFiltering(DP);
    assert.equal(typeof vf.supported, 'boolean');
    assert.deepEqual(plane.vlanFiltering, vf);
    t.diagnostic(`vlan_filtering supported=${vf.supported}: ${vf.detail}`);
    assert.ok(logLines.some((l) => l.includes(`STP is on for ${BR_S}`) && l.includes('8 s')), 'SPEC-NOTES 9 warning');
  });

  it('(1) two VMs on one bridge reach each other and the gateway', async () => {
    await makeVm('a1', 1, BR_A, 'fd00:99::11/64', 'fd00:99::1');
    const before = { ...plane.stats };
    await makeVm('a2', 2, BR_A, 'fd00:99::12/64', 'fd00:99::1');
    // The fast path: one `ip -batch`, no reads.
    assert.deepEqual(plane.stats, { reads: before.reads, writes: before.writes + 1 });
    for (const id of ['a1', 'a2']) await waitAddressesReady(vmns(id));
    await ping6(vmns('a1'), 'fd00:99::12');
    await ping6(vmns('a2'), 'fd00:99::11');
    await ping6(vmns('a1'), 'fd00:99::1');
    await ping6(vmns('a2'), 'fd00:99::1');
    assert.equal((await link(dev(1)))?.['master'], BR_A);
    // Ports carry no IPv6 of their own in the data plane (decision 0014); the bridge does.
    assert.equal(await sysctlIn(DP, `net.ipv6.conf.${dev(1)}.disable_ipv6`), '1');
    assert.equal(await sysctlIn(DP, `net.ipv6.conf.${BR_A}.disable_ipv6`), '0');
  });

  it('(2) a VM in another /64 reaches its gateway, which the bridge answers for without an address of it', async () => {
    assert.deepEqual(await gatewayState(BR_A), []);
    await makeVm('a3', 3, BR_A, 'fd00:99:0:100::10/64', 'fd00:99:0:100::1');
    // Decision 0030: a neighbour entry, a local route and the subnet's route; no interface address.
    assert.deepEqual(await gatewayState(BR_A), await gatewayOf(BR_A, 'fd00:99:0:100::1', 'fd00:99:0:100::/64'));
    assert.deepEqual(await bridgeAddrs(BR_A), ['fd00:99::1/64']);
    const port = (await link(ndPort(BR_A)))!;
    assert.equal(port['master'], BR_A);
    const slave = (port['linkinfo'] as Record<string, unknown>)['info_slave_data'] as Record<string, unknown>;
    assert.deepEqual([slave['neigh_suppress'], slave['learning'], slave['flood'], slave['mcast_flood'], slave['bcast_flood']], [true, false, false, false, false]);
    await waitAddressesReady(vmns('a3'));
    await ping6(vmns('a3'), 'fd00:99:0:100::1');
    // The guest resolved its gateway to the bridge's MAC, flagged as a router, and routes through it.
    const [n] = await ipJson(vmns('a3'), ['-6', 'neigh', 'show', 'fd00:99:0:100::1', 'dev', 'eth0']);
    assert.equal(n?.['lladdr'], (await link(BR_A))?.['address']);
    assert.ok(n && 'router' in n, JSON.stringify(n));
    await ping6(vmns('a3'), 'fd00:99::11');
  });

  it('(3) MTU 9000: an 8000-byte ping with -M do passes unfragmented', async () => {
    await makeVm('j4', 4, BR_J, 'fd00:98::4/64', 'fd00:98::1', 9000);
    await makeVm('j5', 5, BR_J, 'fd00:98::5/64', 'fd00:98::1', 9000);
    assert.equal((await link(BR_J))?.['mtu'], 9000);
    for (const n of [4, 5]) assert.equal((await link(dev(n)))?.['mtu'], 9000);
    for (const id of ['j4', 'j5']) await waitAddressesReady(vmns(id));
    const out = await ping6(vmns('j4'), 'fd00:98::5', ['-M', 'do', '-s', '8000']);
    assert.match(out, /8008 bytes from fd00:98::5/);
    await ping6(vmns('j5'), 'fd00:98::1', ['-M', 'do', '-s', '8000']);
  });

  it('(4) delete leaves no link, address, neighbour or route; a shared gateway goes with its last VM', async () => {
    await makeVm('a6', 6, BR_A, 'fd00:99:0:200::20/64', 'fd00:99:0:200::1');
    await makeVm('a7', 7, BR_A, 'fd00:99:0:200::21/64', 'fd00:99:0:200::1');
    const routes = async () => (await ipIn(DP, ['-6', 'route', 'show', 'table', 'all'])).split('\n');
    await deleteVm('a6');
    assert.deepEqual(await gatewayState(BR_A), [
      ...await gatewayOf(BR_A, 'fd00:99:0:100::1', 'fd00:99:0:100::/64'), ...await gatewayOf(BR_A, 'fd00:99:0:200::1', 'fd00:99:0:200::/64'),
    ].sort(), 'still used by a7');
    await deleteVm('a7');
    await deleteVm('a3');
    assert.deepEqual(await gatewayState(BR_A), []);
    assert.deepEqual(await bridgeAddrs(BR_A), ['fd00:99::1/64'], 'the configured address stays');
    const r = await routes();
    assert.ok(!r.some((l) => /fd00:99:0:[12]00::/.test(l)), r.join('\n'));
    for (const n of [3, 6, 7]) assert.ok(!(await linkExists(DP, dev(n))), dev(n));
    for (const id of ['a3', 'a6', 'a7']) assert.ok(!(await netnsExists(vmns(id))), id);
  });

  it('(5) reconcile repairs drift, and a second reconcile applies nothing', async () => {
    const all = () => [...vms.values()];
    const names = bridges.map((b) => b.name);
    const ports = [1, 2, 4, 5].map(dev);
    await plane.reconcile(all());
    const good = await hostDump(DP, names, ports);

    await ipIn(DP, ['address', 'del', 'fd00:99::1/64', 'dev', BR_A]);
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, [`address add fd00:99::1/64 dev ${BR_A} nodad metric 256`]);

    await ipIn(DP, ['link', 'set', 'dev', dev(1), 'nomaster']);
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, [`link set dev ${dev(1)} master ${BR_A} mtu 1500 up`]);

    await ipIn(DP, ['link', 'set', 'dev', dev(4), 'mtu', '1500']);
    await ipIn(DP, ['link', 'set', 'dev', BR_J, 'mtu', '1500']);
    await plane.reconcile(all());
    assert.deepEqual((await link(BR_J))?.['mtu'], 9000);
    assert.deepEqual((await link(dev(4)))?.['mtu'], 9000);

    // Stale metald address (marked) goes; someone else's stays.
    await ipIn(DP, ['address', 'add', 'fd00:dead::1/64', 'dev', BR_A, 'nodad', 'metric', '256']);
    await ipIn(DP, ['address', 'add', 'fd00:beef::1/64', 'dev', BR_A, 'nodad']);
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, [`address del fd00:dead::1/64 dev ${BR_A}`]);
    assert.ok((await bridgeAddrs(BR_A)).includes('fd00:beef::1/64'));
    await ipIn(DP, ['address', 'del', 'fd00:beef::1/64', 'dev', BR_A]);

    await ipIn(DP, ['link', 'delete', 'dev', BR_A]);
    await plane.reconcile(all());
    assert.ok(plane.lastApplied.includes(`sysctl net/ipv6/conf/${BR_A}/accept_ra=0`));
    assert.equal(await sysctlIn(DP, `net.ipv6.conf.${BR_A}.accept_ra`), '0');
    assert.deepEqual(await hostDump(DP, names, ports), good);
    await ping6(vmns('a1'), 'fd00:99::12');
    await ping6(vmns('a2'), 'fd00:99::1');

    const writes = plane.stats.writes;
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, []);
    assert.equal(plane.stats.writes, writes, 'no process spawned to write');
    assert.deepEqual(await hostDump(DP, names, ports), good);
  });

  it('a reconcile with a stale VM list neither undoes a newer create nor revives a removed VM', async () => {
    // No device behind this NIC (a tap backend before boot): the fast path fails, the
    // read-and-diff path adds the gateway and leaves the port for later.
    const x = vmRecord('x8', [{ hostDevice: dev(8), bridge: BR_A, address: 'fd00:99:0:300::10/64', gateway: 'fd00:99:0:300::1' }]);
    const stale = [...vms.values()];
    const gw = await gatewayOf(BR_A, 'fd00:99:0:300::1', 'fd00:99:0:300::/64');
    await plane.ensureVm(x);
    assert.deepEqual(await gatewayState(BR_A), gw);
    await plane.reconcile(stale);
    assert.deepEqual(await gatewayState(BR_A), gw, 'kept: ensured after the list was read');
    await plane.removeVm(x);
    assert.deepEqual(await gatewayState(BR_A), []);
    await plane.reconcile([...stale, x]);
    assert.deepEqual(await gatewayState(BR_A), [], 'not revived: removed after the list was read');
    // No gateway left on the bridge: that reconcile also removed the ND port.
    assert.ok(!(await linkExists(DP, ndPort(BR_A))));
  });

  it('(6) bridge attributes read back as configured', async () => {
    const s = infoData(await link(BR_S));
    assert.deepEqual([s['stp_state'], s['forward_delay'], s['mcast_snooping'], s['mcast_querier'], s['ageing_time'], s['vlan_filtering']],
      [1, 400, 0, 0, 4500, 0]);
    const a = infoData(await link(BR_A));
    assert.deepEqual([a['stp_state'], a['forward_delay'], a['mcast_snooping'], a['mcast_querier'], a['ageing_time'], a['mcast_mld_version']],
      [0, 1500, 1, 1, 3000, 2]);
    // Someone flips them: the next reconcile flips them back, in one step.
    await ipIn(DP, ['link', 'set', 'dev', BR_A, 'type', 'bridge', 'mcast_snooping', '0', 'ageing_time', '100']);
    await plane.reconcile([...vms.values()]);
    assert.deepEqual(plane.lastApplied, [`link set dev ${BR_A} type bridge mcast_snooping 1 ageing_time 3000`]);
    const a2 = infoData(await link(BR_A));
    assert.deepEqual([a2['mcast_snooping'], a2['mcast_querier'], a2['ageing_time']], [1, 1, 3000]);
  });

  it('(7) gateways: a reconcile repairs each lost part, and an old metald\'s gateway address makes way', async () => {
    await makeVm('a9', 9, BR_A, 'fd00:99:0:400::10/64', 'fd00:99:0:400::1');
    const gw = await gatewayOf(BR_A, 'fd00:99:0:400::1', 'fd00:99:0:400::/64');
    const mac = String((await link(BR_A))?.['address']);
    const all = () => [...vms.values()];
    const port = ndPort(BR_A);
    await waitAddressesReady(vmns('a9'));
    const breakages: [string[], string[]][] = [
      [['-6', 'neigh', 'del', 'fd00:99:0:400::1', 'dev', BR_A], [`neigh replace fd00:99:0:400::1 lladdr ${mac} dev ${BR_A} nud permanent router protocol 110`]],
      [['-6', 'route', 'del', 'local', 'fd00:99:0:400::1/128', 'dev', BR_A, 'table', 'local'], [`route replace local fd00:99:0:400::1/128 dev ${BR_A} table local proto 110`]],
      [['-6', 'route', 'del', 'fd00:99:0:400::/64', 'dev', BR_A], [`route replace fd00:99:0:400::/64 dev ${BR_A} proto 110 metric 256`]],
      [['link', 'set', 'dev', port, 'type', 'bridge_slave', 'neigh_suppress', 'off'],
        [`link set dev ${port} master ${BR_A} mtu 1500 up`, `link set dev ${port} type bridge_slave neigh_suppress on learning off flood off mcast_flood off bcast_flood off`]],
      [['link', 'set', 'dev', port, 'nomaster'], [
        `link set dev ${port} master ${BR_A} mtu 1500 up`, `link set dev ${port} type bridge_slave neigh_suppress on learning off flood off mcast_flood off bcast_flood off`,
        `bridge fdb replace ${mac} dev ${port} master permanent`]],
    ];
    for (const [breakIt, repair] of breakages) {
      await ipIn(DP, breakIt);
      await plane.reconcile(all());
      assert.deepEqual(plane.lastApplied, repair, breakIt.join(' '));
      assert.deepEqual(await gatewayState(BR_A), gw);
      // The neighbour cache of the guest may still hold the gateway: ask afresh each time.
      await ipIn(vmns('a9'), ['-6', 'neigh', 'flush', 'dev', 'eth0']);
      await ping6(vmns('a9'), 'fd00:99:0:400::1');
    }
    // Before decision 0030 the gateway was an address on the bridge (marked metric 256): a reconcile
    // replaces it, leaving the routes ours (the address's own prefix route goes with it).
    await ipIn(DP, ['-6', 'route', 'del', 'fd00:99:0:400::/64', 'dev', BR_A]);
    await ipIn(DP, ['-6', 'route', 'del', 'local', 'fd00:99:0:400::1/128', 'dev', BR_A, 'table', 'local']);
    await ipIn(DP, ['address', 'add', 'fd00:99:0:400::1/64', 'dev', BR_A, 'nodad', 'metric', '256']);
    await plane.reconcile(all());
    assert.deepEqual(await bridgeAddrs(BR_A), ['fd00:99::1/64']);
    assert.deepEqual(await gatewayState(BR_A), gw);
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, []);
    await ipIn(vmns('a9'), ['-6', 'neigh', 'flush', 'dev', 'eth0']);
    await ping6(vmns('a9'), 'fd00:99:0:400::1');
    await deleteVm('a9');
  });
});
