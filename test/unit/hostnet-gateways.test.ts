import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bridgeMac, desiredHostNetwork, parseKernelView, type KernelView } from '../../src/network/desired.js';
import { GATEWAY_PROTO, ndPortOk, parseGatewayView, planGateways } from '../../src/network/gateways.js';
import { planShardedHostNetwork, PRIMARY_VM_PORTS, ShardNaming } from '../../src/network/shards.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';

// Gateways of VM subnets without an interface address each (decision 0030).

const br = bridge('br-prod', { addresses: ['fd00:1::1/64'] });
const MAC = '02:aa:bb:cc:dd:ee';
const vm = (id: string, net: string, dev = `t-${id}`) => vmRecord(id, [{ hostDevice: dev, bridge: 'br-prod', address: `${net}::10/64`, gateway: `${net}::1` }]);
const want = (...vms: ReturnType<typeof vm>[]) => desiredHostNetwork({ bridges: [br], vms }).bridges;
const naming = new ShardNaming('metald');
const ND = naming.ndPort('br-prod');

describe('parseGatewayView', () => {
  it('keeps our permanent neighbours and routes on the configured bridges, nothing else', () => {
    const neighs = [
      { dst: 'FD00:2::1', dev: 'br-prod', lladdr: '02:AA:BB:CC:DD:EE', router: null, state: ['PERMANENT'], protocol: String(GATEWAY_PROTO) },
      { dst: 'fd00:3::1', dev: 'br-prod', lladdr: MAC, state: ['PERMANENT'], protocol: String(GATEWAY_PROTO) },
      { dst: 'fd00:4::1', dev: 'br-prod', lladdr: MAC, router: null, state: ['PERMANENT'] },
      { dst: 'fd00:5::1', dev: 'br-other', lladdr: MAC, router: null, state: ['PERMANENT'], protocol: String(GATEWAY_PROTO) },
    ];
    const routes = [
      { type: 'local', dst: 'fd00:2::1', dev: 'br-prod', table: 'local', metric: 1024 },
      { dst: 'fd00:2::/64', dev: 'br-prod', metric: 256 },
      { dst: 'fd00:6::/64', dev: 'br-prod', metric: 1024 },
      { dst: 'fd00:7::/64', dev: 'br-other', metric: 256 },
    ];
    const v = parseGatewayView(neighs, routes, new Set(['br-prod']));
    assert.deepEqual([...v.keys()], ['br-prod']);
    const g = v.get('br-prod')!;
    assert.deepEqual([...g.neigh], [['fd00:2::1', { lladdr: MAC, router: true }], ['fd00:3::1', { lladdr: MAC, router: false }]]);
    assert.deepEqual([...g.local], ['fd00:2::1']);
    assert.deepEqual([...g.subnets], ['fd00:2::/64']);
  });
});

describe('planGateways', () => {
  const macOf = () => MAC;

  it('golden: a neighbour answered by the bridge MAC as a router, a local route, an on-link route', () => {
    assert.deepEqual(planGateways(want(vm('a', 'fd00:2'), vm('b', 'fd00:2')), new Map(), macOf, false), [
      `neigh replace fd00:2::1 lladdr ${MAC} dev br-prod nud permanent router protocol 110`,
      'route replace local fd00:2::1/128 dev br-prod table local proto 110',
      'route replace fd00:2::/64 dev br-prod proto 110 metric 256',
    ]);
  });

  it('writes nothing when the kernel matches, repairs a wrong lladdr or a missing router flag, prunes only with prune', () => {
    const have = parseGatewayView(
      [
        { dst: 'fd00:2::1', dev: 'br-prod', lladdr: MAC, router: null, protocol: '110' },
        { dst: 'fd00:3::1', dev: 'br-prod', lladdr: '02:00:00:00:00:01', router: null, protocol: '110' },
        { dst: 'fd00:9::1', dev: 'br-prod', lladdr: MAC, router: null, protocol: '110' },
      ],
      [
        { type: 'local', dst: 'fd00:2::1', dev: 'br-prod', table: 'local', metric: 1024 },
        { type: 'local', dst: 'fd00:3::1', dev: 'br-prod', table: 'local', metric: 1024 },
        { type: 'local', dst: 'fd00:9::1', dev: 'br-prod', table: 'local', metric: 1024 },
        { dst: 'fd00:2::/64', dev: 'br-prod', metric: 256 },
        { dst: 'fd00:3::/64', dev: 'br-prod', metric: 256 },
        { dst: 'fd00:9::/64', dev: 'br-prod', metric: 256 },
      ],
      new Set(['br-prod']),
    );
    assert.deepEqual(planGateways(want(vm('a', 'fd00:2')), have, macOf, false), []);
    assert.deepEqual(planGateways(want(vm('a', 'fd00:2'), vm('c', 'fd00:3')), have, macOf, true), [
      `neigh replace fd00:3::1 lladdr ${MAC} dev br-prod nud permanent router protocol 110`,
      'route del fd00:9::/64 dev br-prod proto 110 metric 256',
      'route del local fd00:9::1/128 dev br-prod table local proto 110',
      'neigh del fd00:9::1 dev br-prod',
    ]);
  });
});

describe('the ND port in the sharded plan', () => {
  const kBridge = { ifname: 'br-prod', ifindex: 1, mtu: 1500, flags: ['UP'], address: MAC,
    linkinfo: { info_kind: 'bridge', info_data: { stp_state: 0, forward_delay: 1500, mcast_snooping: 1, mcast_querier: 1, ageing_time: 3000, mcast_mld_version: 2 } },
    addr_info: [{ family: 'inet6', local: 'fd00:1::1', prefixlen: 64, scope: 'global', metric: 256 }] };
  const links = (...extra: Record<string, unknown>[]) => [{ ifname: 'br-prod', mtu: 1500, flags: ['UP'] }, { ifname: 't-a', mtu: 1500, flags: ['UP'], master: 'br-prod' }, ...extra];
  const settings = { neigh_suppress: true, learning: false, flood: false, mcast_flood: false, bcast_flood: false };

  it('golden: the first gateway makes the ND port (a tap, IPv6 off), attaches it with its settings, hands it the bridge MAC', () => {
    const plan = planShardedHostNetwork(want(vm('a', 'fd00:2')), parseKernelView([kBridge], links()), naming, false);
    assert.deepEqual(plan.create, [`tuntap add dev ${ND} mode tap`]);
    assert.deepEqual(plan.noIpv6, [ND]);
    assert.deepEqual(plan.lines, [
      `link set dev ${ND} master br-prod mtu 1500 up`,
      `link set dev ${ND} type bridge_slave neigh_suppress on learning off flood off mcast_flood off bcast_flood off`,
      `neigh replace fd00:2::1 lladdr ${MAC} dev br-prod nud permanent router protocol 110`,
      'route replace local fd00:2::1/128 dev br-prod table local proto 110',
      'route replace fd00:2::/64 dev br-prod proto 110 metric 256',
    ]);
    assert.deepEqual(plan.fdb, [`fdb replace ${MAC} dev ${ND} master permanent`]);
    assert.equal(plan.placement.get(ND), 'br-prod');
    // Not a VM port: it takes none of the primary's PRIMARY_VM_PORTS.
    assert.equal(plan.shards.get('br-prod')!.load.get(0), 1);
  });

  it('a bridge metald creates gets the neighbours of its fixed MAC', () => {
    const plan = planShardedHostNetwork(want(vm('a', 'fd00:2')), parseKernelView([], links()), naming, false);
    assert.ok(plan.lines.includes(`neigh replace fd00:2::1 lladdr ${bridgeMac('br-prod')} dev br-prod nud permanent router protocol 110`));
    assert.deepEqual(plan.fdb, [`fdb replace ${bridgeMac('br-prod')} dev ${ND} master permanent`]);
  });

  it('leaves a right ND port alone, repairs its settings and the MAC owner, removes it (pruning) with the last gateway', () => {
    const ok = (details: Record<string, unknown>, owner: string): KernelView => {
      const v = parseKernelView([kBridge], links({ ifname: ND, mtu: 1500, flags: ['UP'], master: 'br-prod' }));
      v.portDetails.set(ND, details);
      v.macOwner.set('br-prod', owner);
      v.gateways = parseGatewayView([{ dst: 'fd00:2::1', dev: 'br-prod', lladdr: MAC, router: null, protocol: '110' }],
        [{ type: 'local', dst: 'fd00:2::1', dev: 'br-prod', table: 'local' }, { dst: 'fd00:2::/64', dev: 'br-prod', metric: 256 }], new Set(['br-prod']));
      return v;
    };
    const right = planShardedHostNetwork(want(vm('a', 'fd00:2')), ok(settings, ND), naming, true);
    assert.deepEqual([right.create, right.lines, right.fdb], [[], [], []]);
    assert.ok(ndPortOk(settings) && !ndPortOk({ ...settings, flood: true }) && !ndPortOk(undefined));
    const drifted = planShardedHostNetwork(want(vm('a', 'fd00:2')), ok({ ...settings, neigh_suppress: false }, 'br-prod'), naming, true);
    assert.deepEqual(drifted.lines.length, 2);
    assert.equal(drifted.fdb.length, 1);
    // No gateway left: a reconcile removes the port and our objects; an ensure does not.
    const shared = vmRecord('s', [{ hostDevice: 't-a', bridge: 'br-prod', address: 'fd00:1::10/64', gateway: 'fd00:1::1' }]);
    const gone = planShardedHostNetwork(desiredHostNetwork({ bridges: [br], vms: [shared] }).bridges, ok(settings, ND), naming, true);
    assert.deepEqual(gone.create, [`link delete dev ${ND}`]);
    assert.equal(gone.placement.get(ND), undefined);
    assert.equal(gone.lines.filter((l) => l.includes(' del')).length, 3);
    assert.deepEqual(planShardedHostNetwork(desiredHostNetwork({ bridges: [br], vms: [shared] }).bridges, ok(settings, ND), naming, false).create, []);
    assert.equal(PRIMARY_VM_PORTS, 895);
  });
});
