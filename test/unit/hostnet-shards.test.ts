import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bridgeMac, desiredHostNetwork, parseKernelView } from '../../src/network/desired.js';
import {
  MAX_SHARDS, pickShard, PRIMARY_VM_PORTS, planShardedHostNetwork, SHARD_FILL, SHARD_VM_PORTS, ShardNaming, VM_PORTS_PER_CONFIGURED_BRIDGE,
  type ShardState,
} from '../../src/network/shards.js';
import { bridge, vmRecord } from '../helpers/hostnet-fixtures.js';

const naming = new ShardNaming('metald');
const br = bridge('br-prod', { addresses: ['fd00:1::1/64'] });
const attrs = { stp_state: 0, forward_delay: 1500, mcast_snooping: 1, mcast_querier: 1, ageing_time: 3000, mcast_mld_version: 2 };
const kBridge = (name: string, a: Record<string, number> = attrs) =>
  ({ ifname: name, ifindex: 1, mtu: 1500, flags: ['UP'], linkinfo: { info_kind: 'bridge', info_data: a }, addr_info: [] });
const ports = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `t${from + i}`);
const want = (devs: string[]) => desiredHostNetwork({ bridges: [br], vms: devs.map((d) => vmRecord(d, [{ hostDevice: d, bridge: 'br-prod' }])) }).bridges;

describe('ShardNaming', () => {
  it('gives instance-scoped names of at most 15 chars; uplinks share one prefix; VM ports never look like one', () => {
    const n = naming.names('br-prod', 1);
    assert.match(n.shard, /^s[a-z2-7]{8}01$/);
    assert.equal(n.upper, `u${n.shard.slice(1)}p`);
    assert.equal(n.lower, `u${n.shard.slice(1)}s`);
    assert.ok(n.upper.startsWith(naming.uplinkPrefix) && naming.isUplink(n.lower));
    assert.equal(naming.names('br-prod', MAX_SHARDS).shard.length, 11);
    assert.equal(naming.names('br-prod', MAX_SHARDS).upper.length, 12);
    assert.notEqual(new ShardNaming('blue').names('br-prod', 1).shard, n.shard);
    assert.notEqual(naming.names('br-other', 1).shard, n.shard);
    assert.equal(naming.shardIndex('br-prod', naming.names('br-prod', 37).shard), 37);
    assert.equal(naming.shardIndex('br-other', n.shard), undefined);
    assert.ok(!naming.isUplink('mabcdefghijklmn'));
    // The ND port (decision 0030): 9 chars, per instance and bridge, infrastructure like the uplinks.
    assert.match(naming.ndPort('br-prod'), /^n[a-z2-7]{8}$/);
    assert.equal(naming.ndPort('br-prod').slice(1), n.shard.slice(1, 9));
    assert.notEqual(new ShardNaming('blue').ndPort('br-prod'), naming.ndPort('br-prod'));
    assert.ok(naming.isInfrastructure(naming.ndPort('br-prod')) && naming.isInfrastructure(n.upper));
    assert.ok(!naming.isInfrastructure(n.shard) && !naming.isInfrastructure('mabcdefghijklmn'));
    // 1023 ports of the primary: 895 VMs, the ND port, 127 uplinks.
    assert.equal(PRIMARY_VM_PORTS + 1 + MAX_SHARDS, 1023);
    assert.equal(VM_PORTS_PER_CONFIGURED_BRIDGE, 895 + 127 * 1022);
  });
});

describe('pickShard', () => {
  const state = (loads: number[]): ShardState => ({
    names: new Map(loads.map((_, k) => [k, k === 0 ? 'br-prod' : naming.names('br-prod', k).shard])),
    load: new Map(loads.map((l, k) => [k, l])),
  });

  it('keeps bridges at SHARD_FILL ports while shards can be made, then fills the least loaded up to capacity', () => {
    assert.equal(pickShard(state([0])), 0);
    assert.equal(pickShard(state([SHARD_FILL - 1])), 0);
    // The primary holds SHARD_FILL: make shard 1 (undefined), although it could take 895.
    assert.equal(pickShard(state([SHARD_FILL])), undefined);
    assert.equal(pickShard(state([SHARD_FILL, 3, SHARD_FILL, 0])), 1);
    const all = Array.from({ length: MAX_SHARDS + 1 }, () => SHARD_FILL);
    all[5] = SHARD_FILL + 10;
    all[9] = SHARD_FILL - 1;
    assert.equal(pickShard(state(all)), 9);
    all[9] = SHARD_FILL + 20;
    assert.equal(pickShard(state(all)), 0);
    assert.equal(pickShard(state(all.map((_, k) => (k === 0 ? PRIMARY_VM_PORTS : SHARD_VM_PORTS)))), undefined);
  });
});

describe('planShardedHostNetwork', () => {
  it('golden: a full primary grows shard 1, down and IPv6-less before it comes up, joined by a veth uplink', () => {
    const onPrimary = ports(PRIMARY_VM_PORTS);
    const links = [{ ifname: 'br-prod', mtu: 1500, flags: ['UP'] },
      ...onPrimary.map((d) => ({ ifname: d, mtu: 1500, flags: ['UP'], master: 'br-prod' })),
      { ifname: 'new', mtu: 1500, flags: ['UP'] }];
    const view = parseKernelView([{ ...kBridge('br-prod'), addr_info: [{ family: 'inet6', local: 'fd00:1::1', prefixlen: 64, scope: 'global', metric: 256 }] }], links);
    const n = naming.names('br-prod', 1);
    const plan = planShardedHostNetwork(want(['new']), view, naming, false);
    assert.deepEqual(plan.create, [
      `link add name ${n.shard} address ${bridgeMac(n.shard)} mtu 1500 type bridge stp_state 0 forward_delay 1500 mcast_snooping 1 mcast_querier 0 ageing_time 3000 mcast_mld_version 2`,
      `link add ${n.upper} mtu 1500 type veth peer name ${n.lower} mtu 1500`,
    ]);
    assert.deepEqual(plan.noIpv6, [n.upper, n.lower, n.shard]);
    assert.deepEqual(plan.lines, [
      `link set dev ${n.shard} up`,
      `link set dev new master ${n.shard} mtu 1500 up`,
      `link set dev ${n.upper} master br-prod mtu 1500 up`,
      `link set dev ${n.lower} master ${n.shard} mtu 1500 up`,
      `link set dev ${n.lower} type bridge_slave mcast_router 2`,
    ]);
    assert.deepEqual([...plan.shards.get('br-prod')!.load], [[0, PRIMARY_VM_PORTS], [1, 1]]);
    assert.equal(plan.placement.get('new'), n.shard);
    assert.deepEqual(plan.problems, []);
  });

  it('keeps ports where they are, fills the lowest shard with room, and prunes only empty shards', () => {
    const n1 = naming.names('br-prod', 1);
    const n2 = naming.names('br-prod', 2);
    const links = [
      { ifname: 'br-prod', mtu: 1500, flags: ['UP'] }, { ifname: n1.shard, mtu: 1500, flags: ['UP'] }, { ifname: n2.shard, mtu: 1500, flags: ['UP'] },
      { ifname: n1.upper, mtu: 1500, flags: ['UP'], master: 'br-prod' }, { ifname: n1.lower, mtu: 1500, flags: ['UP'], master: n1.shard },
      { ifname: n2.upper, mtu: 1500, flags: ['UP'], master: 'br-prod' }, { ifname: n2.lower, mtu: 1500, flags: ['UP'], master: n2.shard },
      { ifname: 'a', mtu: 1500, flags: ['UP'], master: n1.shard }, { ifname: 'b', mtu: 1500, flags: ['UP'] },
    ];
    const shardAttrs = { ...attrs, mcast_querier: 0 };
    const view = parseKernelView([kBridge('br-prod'), kBridge(n1.shard, shardAttrs), kBridge(n2.shard, shardAttrs)], links);
    const plan = planShardedHostNetwork(want(['a', 'b']), view, naming, true);
    assert.deepEqual(plan.create, [`link delete dev ${n2.upper}`, `link delete dev ${n2.shard}`]);
    // a stays on shard 1 although the primary has room; b goes to the primary.
    assert.deepEqual(plan.lines, ['address add fd00:1::1/64 dev br-prod nodad metric 256', 'link set dev b master br-prod mtu 1500 up']);
    // Without prune (an ensureVm) the empty shard stays.
    assert.ok(!planShardedHostNetwork(want(['a', 'b']), view, naming, false).create.some((l) => l.includes('delete')));
    assert.equal(SHARD_VM_PORTS, 1022);
  });
});
