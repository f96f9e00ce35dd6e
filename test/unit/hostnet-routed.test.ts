import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { desiredRoutes, parseRoutedView, planRouted, routedDst, routedLines } from '../../src/network/routed.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';

const vm = (id: string, dev: string, address: string, allocation: string, bridge = 'rt0') => {
  const v = vmRecord(id, [{ hostDevice: dev, bridge, address, gateway: 'fe80::1' }]);
  v.nics[0]!.ipv6Allocation = allocation;
  return v;
};

describe('routed attachment planning', () => {
  const want = desiredRoutes([{ name: 'rt0', mtu: 9000 }], [
    vm('b', 'tb', 'FD00:2:0:5::10/64', 'fd00:2:0:5::/64'),
    vm('a', 'ta', 'fd00:1::10/128', 'fd00:1::10/128'),
    vm('c', 'tc', 'fd00:3::1/64', '', 'br-prod'),
  ]);

  it('golden: one route per routed NIC (its allocation), links at the attachment MTU, bridged NICs ignored', () => {
    assert.deepEqual(want, [
      { device: 'ta', mtu: 9000, dst: 'fd00:1::10/128', vmId: 'a' },
      { device: 'tb', mtu: 9000, dst: 'fd00:2:0:5::/64', vmId: 'b' },
    ]);
    assert.deepEqual(routedLines(want[0]!), [
      'link set dev ta mtu 9000 up', 'address replace fe80::1/64 dev ta nodad', 'route replace fd00:1::10/128 dev ta proto 109',
    ]);
    assert.equal(routedDst('', 'fd00:9::9/64'), 'fd00:9::9/128');
    assert.equal(routedDst('', ''), '');
  });

  it('plans only the difference; prunes our stale routes; skips devices not there yet', () => {
    const view = parseRoutedView(
      [{ ifname: 'ta', mtu: 9000, flags: ['UP'] }, { ifname: 'tb@if2', mtu: 1500, flags: [] }],
      [{ ifname: 'ta' }],
      [{ dst: 'fd00:1::10', dev: 'ta' }, { dst: 'fd00:dead::/64', dev: 'ta' }],
    );
    assert.deepEqual(planRouted(want, view, true), {
      sysctlDevices: ['tb'],
      lines: [
        'link set dev tb mtu 9000 up', 'address replace fe80::1/64 dev tb nodad', 'route replace fd00:2:0:5::/64 dev tb proto 109',
        'route del fd00:dead::/64 dev ta proto 109',
      ],
    });
    assert.deepEqual(planRouted(want, parseRoutedView([], [], []), false), { sysctlDevices: [], lines: [] });
  });
});
