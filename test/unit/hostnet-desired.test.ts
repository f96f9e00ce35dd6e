import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  addrsAfter, bridgeAttrs, bridgeMac, desiredHostNetwork, parseKernelView, planHostNetwork, type KernelView,
} from '../../src/network/desired.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';

// The guide's br-prod (section 1, step 1.2) and the VM of step 3.2.
const brProd = bridge('br-prod', { addresses: ['2600:BEEF:1000::1/64'], stp: true, forwardDelaySec: 10 });
const brJumbo = bridge('br-jumbo', { mtu: 9000, addresses: ['fd00:98::1/64'], mldSnooping: false });

describe('desiredHostNetwork', () => {
  it('golden: the guide example, a VM subnet gateway and its route, shared gateways, ports with the bridge MTU', () => {
    const vms = [
      vmRecord('vm-b', [{ hostDevice: 'tap-b', bridge: 'br-prod', address: '2600:beef:1000:100::11/64', gateway: '2600:beef:1000:100::1' }]),
      vmRecord('vm-a', [{ hostDevice: 'tap-a', bridge: 'br-prod', address: '2600:BEEF:1000:100::10/64', gateway: '2600:BEEF:1000:100::1' }]),
      vmRecord('vm-c', [{ hostDevice: 'tap-c', bridge: 'br-prod', address: '2600:beef:1000::c/64', gateway: '2600:beef:1000::1' }]),
      vmRecord('vm-j', [{ hostDevice: 'tap-j', bridge: 'br-jumbo', address: 'fd00:98::5/64', gateway: 'fd00:98::1' }]),
      vmRecord('vm-n', [{ hostDevice: 'tap-n', bridge: 'br-jumbo' }]),
    ];
    assert.deepEqual(desiredHostNetwork({ bridges: [brProd, brJumbo], vms }), {
      bridges: [
        {
          name: 'br-prod',
          mtu: 1500,
          attrs: { stp_state: 1, forward_delay: 1000, mcast_snooping: 1, mcast_querier: 1, ageing_time: 3000, mcast_mld_version: 2 },
          addresses: [{ address: '2600:beef:1000::1', length: 64 }],
          // vm-c is in the bridge's own subnet: the configured address is its gateway.
          gateways: [{ address: '2600:beef:1000:100::1', vms: ['vm-a', 'vm-b'] }],
          subnets: [{ prefix: '2600:beef:1000:100::/64', vms: ['vm-a', 'vm-b'] }],
          ports: [
            { device: 'tap-a', mtu: 1500, vmId: 'vm-a', nicId: 'eth0' },
            { device: 'tap-b', mtu: 1500, vmId: 'vm-b', nicId: 'eth0' },
            { device: 'tap-c', mtu: 1500, vmId: 'vm-c', nicId: 'eth0' },
          ],
        },
        {
          name: 'br-jumbo',
          mtu: 9000,
          attrs: { stp_state: 0, forward_delay: 1500, mcast_snooping: 0, mcast_querier: 0, ageing_time: 3000, mcast_mld_version: 2 },
          addresses: [{ address: 'fd00:98::1', length: 64 }],
          gateways: [],
          subnets: [],
          ports: [
            { device: 'tap-j', mtu: 9000, vmId: 'vm-j', nicId: 'eth0' },
            { device: 'tap-n', mtu: 9000, vmId: 'vm-n', nicId: 'eth0' },
          ],
        },
      ],
      skipped: [],
    });
  });

  it('does not depend on the order of VMs', () => {
    const vms = Array.from({ length: 20 }, (_, i) => vmRecord(`vm-${i}`, [{
      hostDevice: `tap${i}`, bridge: 'br-prod', address: `2600:beef:1000:${100 + (i % 3)}::${i + 10}/64`, gateway: `2600:beef:1000:${100 + (i % 3)}::1`,
    }]));
    const a = desiredHostNetwork({ bridges: [brProd], vms });
    const b = desiredHostNetwork({ bridges: [brProd], vms: [...vms].reverse() });
    assert.deepEqual(a, b);
    assert.deepEqual(a.bridges[0]!.gateways.map((x) => x.address), ['2600:beef:1000:100::1', '2600:beef:1000:101::1', '2600:beef:1000:102::1']);
    assert.deepEqual(a.bridges[0]!.subnets.map((x) => x.prefix), ['2600:beef:1000:100::/64', '2600:beef:1000:101::/64', '2600:beef:1000:102::/64']);
  });

  it('skips NICs on unknown bridges, duplicate host devices and deleting VMs; ignores link-local and own-subnet gateways', () => {
    const vms = [
      vmRecord('vm-1', [{ hostDevice: 'tap1', bridge: 'br-other', address: 'fd00:1::2/64', gateway: 'fd00:1::1' }]),
      vmRecord('vm-2', [{ hostDevice: 'tap2', bridge: 'br-prod', address: 'fd00:2::2/64', gateway: 'fd00:2::1' }]),
      vmRecord('vm-3', [{ hostDevice: 'tap2', bridge: 'br-prod', address: 'fd00:3::2/64', gateway: 'fd00:3::1' }]),
      vmRecord('vm-4', [{ hostDevice: 'tap4', bridge: 'br-prod', address: 'fd00:4::2/64', gateway: 'fd00:4::1' }], 'deleting'),
      vmRecord('vm-5', [{ hostDevice: 'tap5', bridge: 'br-prod', address: 'fd00:5::2/64', gateway: 'fe80::1' }]),
      // In the bridge's own subnet but not the bridge's address: another router's, not ours to add.
      vmRecord('vm-6', [{ hostDevice: 'tap6', bridge: 'br-prod', address: '2600:beef:1000::6/64', gateway: '2600:beef:1000::fe' }]),
      vmRecord('vm-7', [{ hostDevice: 'tap7', bridge: 'br-prod', address: 'fd00:7::2/64', gateway: 'fd00:8::1' }]),
    ];
    const d = desiredHostNetwork({ bridges: [brProd], vms });
    assert.deepEqual(d.bridges[0]!.addresses.map((a) => `${a.address}/${a.length}`), ['2600:beef:1000::1/64']);
    assert.deepEqual(d.bridges[0]!.gateways.map((g) => g.address), ['fd00:2::1']);
    // Nothing for vm-5: a link-local gateway is the bridge's own fe80 address, as before.
    assert.deepEqual(d.bridges[0]!.subnets.map((n) => n.prefix), ['fd00:2::/64']);
    assert.deepEqual(d.bridges[0]!.ports.map((p) => p.device), ['tap2', 'tap5', 'tap6', 'tap7']);
    assert.deepEqual(d.skipped, [
      { vmId: 'vm-1', nicId: 'eth0', reason: 'bridge br-other is not configured' },
      { vmId: 'vm-3', nicId: 'eth0', reason: 'host device tap2 already belongs to vm-2/eth0' },
      { vmId: 'vm-7', nicId: 'eth0', reason: 'gateway fd00:8::1 is outside fd00:7::2/64' },
    ]);
  });

  it('one gateway named by subnets of two lengths: one gateway, a route for each subnet', () => {
    const vms = [
      vmRecord('vm-1', [{ hostDevice: 't1', bridge: 'br-prod', address: 'fd00:9::2/64', gateway: 'fd00:9::1' }]),
      vmRecord('vm-2', [{ hostDevice: 't2', bridge: 'br-prod', address: 'fd00:9::3/56', gateway: 'fd00:9::1' }]),
    ];
    const b = desiredHostNetwork({ bridges: [brProd], vms }).bridges[0]!;
    assert.deepEqual(b.gateways, [{ address: 'fd00:9::1', vms: ['vm-1', 'vm-2'] }]);
    assert.deepEqual(b.subnets, [{ prefix: 'fd00:9::/56', vms: ['vm-2'] }, { prefix: 'fd00:9::/64', vms: ['vm-1'] }]);
  });

  it('converts seconds to the kernel centiseconds and drops the querier without snooping', () => {
    assert.deepEqual(bridgeAttrs(bridge('b', { forwardDelaySec: 2, ageingTimeSec: 300, mldSnooping: false, querier: true })),
      { stp_state: 0, forward_delay: 200, mcast_snooping: 0, mcast_querier: 0, ageing_time: 30000, mcast_mld_version: 2 });
  });

  it('refuses a bridge listed twice and an unparsable address', () => {
    assert.throws(() => desiredHostNetwork({ bridges: [brProd, brProd], vms: [] }), /listed twice/);
    assert.throws(() => desiredHostNetwork({ bridges: [bridge('b', { addresses: ['fd00::1'] })], vms: [] }));
  });
});

describe('planHostNetwork', () => {
  const want = desiredHostNetwork({
    bridges: [brProd],
    vms: [vmRecord('vm-a', [{ hostDevice: 'tap-a', bridge: 'br-prod', address: '2600:beef:1000:100::10/64', gateway: '2600:beef:1000:100::1' }])],
  }).bridges;
  const okBridge = {
    ifname: 'br-prod', ifindex: 7, mtu: 1500, flags: ['BROADCAST', 'MULTICAST', 'UP'],
    linkinfo: { info_kind: 'bridge', info_data: { stp_state: 1, forward_delay: 1000, mcast_snooping: 1, mcast_querier: 1, ageing_time: 3000, mcast_mld_version: 2 } },
    addr_info: [
      { family: 'inet6', local: '2600:beef:1000::1', prefixlen: 64, scope: 'global', metric: 256 },
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    ],
  };
  const okLinks = [
    { ifname: 'br-prod', mtu: 1500, flags: ['UP'] },
    { ifname: 'tap-a', mtu: 1500, flags: ['UP'], master: 'br-prod' },
  ];

  it('plans nothing when the kernel already matches', () => {
    const plan = planHostNetwork(want, parseKernelView([okBridge], okLinks), true);
    assert.deepEqual(plan, { create: [], created: [], lines: [], problems: [], warnings: [] });
  });

  it('golden: creates a missing bridge down, then brings it up with addresses and ports', () => {
    const plan = planHostNetwork(want, parseKernelView([], [{ ifname: 'tap-a', mtu: 1500, flags: [] }]), true);
    assert.deepEqual(plan.create, [
      `link add name br-prod address ${bridgeMac('br-prod')} mtu 1500 type bridge stp_state 1 forward_delay 1000 mcast_snooping 1 mcast_querier 1 ageing_time 3000 mcast_mld_version 2`,
    ]);
    // Gateways are not addresses (decision 0030): src/network/gateways.ts plans them.
    assert.deepEqual(plan.lines, [
      'link set dev br-prod up',
      'address add 2600:beef:1000::1/64 dev br-prod nodad metric 256',
      'link set dev tap-a master br-prod mtu 1500 up',
    ]);
  });

  it('golden: repairs drift and prunes only stale addresses metald added (gateway addresses of old included)', () => {
    const drifted = {
      ...okBridge,
      mtu: 1400,
      linkinfo: { info_kind: 'bridge', info_data: { ...okBridge.linkinfo.info_data, mcast_querier: 0 } },
      addr_info: [
        { family: 'inet6', local: '2600:beef:1000:100::1', prefixlen: 64, scope: 'global', metric: 256 },
        { family: 'inet6', local: 'fd00:dead::1', prefixlen: 64, scope: 'global', metric: 256 },
        { family: 'inet6', local: 'fd00:beef::1', prefixlen: 64, scope: 'global' },
      ],
    };
    const links = [{ ifname: 'br-prod', mtu: 1400, flags: ['UP'] }, { ifname: 'tap-a', mtu: 9000, flags: ['UP'] }];
    const view: KernelView = parseKernelView([drifted], links);
    const plan = planHostNetwork(want, view, true);
    assert.deepEqual(plan.lines, [
      'link set dev br-prod mtu 1500 type bridge mcast_querier 1',
      'address add 2600:beef:1000::1/64 dev br-prod nodad metric 256',
      'address del 2600:beef:1000:100::1/64 dev br-prod',
      'address del fd00:dead::1/64 dev br-prod',
      'link set dev tap-a master br-prod mtu 1500 up',
    ]);
    // An ensure (no prune) leaves the stale one for the next reconcile.
    assert.ok(!planHostNetwork(want, view, false).lines.some((l) => l.includes('fd00:dead')));
    const after = addrsAfter(want[0]!, view.bridges.get('br-prod')!.addrs, true);
    assert.deepEqual([...after.keys()].sort(), ['2600:beef:1000::1', 'fd00:beef::1']);
  });

  it('leaves a non-bridge link of the same name and someone else\'s differently sized address alone', () => {
    const clash = planHostNetwork(want, parseKernelView([], [{ ifname: 'br-prod', mtu: 1500, flags: [] }]), true);
    assert.deepEqual(clash.create, []);
    assert.match(clash.problems[0]!, /not a bridge/);
    const foreign = { ...okBridge, addr_info: [{ family: 'inet6', local: '2600:beef:1000::1', prefixlen: 48, scope: 'global' }] };
    const plan = planHostNetwork(want, parseKernelView([foreign], okLinks), true);
    assert.deepEqual(plan.lines, []);
    assert.match(plan.warnings[0]!, /not added by metald/);
  });
});

describe('bridge MAC', () => {
  it('is fixed per bridge name, locally administered and unicast, so the router link-local never moves', () => {
    assert.equal(bridgeMac('br-prod'), bridgeMac('br-prod'));
    assert.notEqual(bridgeMac('br-prod'), bridgeMac('br-shared'));
    assert.match(bridgeMac('br-prod'), /^02(:[0-9a-f]{2}){5}$/);
  });
});
