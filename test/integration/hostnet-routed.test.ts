// The routed attachment (decision 0021) on a real kernel: needs root. No bridge;
// each VM NIC is a point-to-point veth whose host end carries fe80::1 with the
// VM's /128 (or /64) routed to it. Part 1 drives the plane and the sandbox
// backend directly, part 2 the real daemon with `mode: routed` in its config.
// Everything lives in namespaces made here and is removed in `after`.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { BackendVmSpec } from '../../src/backends/backend.js';
import { SandboxBackend } from '../../src/backends/sandbox/sandbox-backend.js';
import type { VmRecord } from '../../src/core/vm/record.js';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { run } from '../../src/kernel/exec.js';
import { ipIn, linkExists, netnsExists, netnsList, sysctlWrite } from '../../src/kernel/netns.js';
import { nftList } from '../../src/kernel/nft.js';
import { RoutedNetworkPlane } from '../../src/network/routed-plane.js';
import {
  baseConfig, cleanupEnv, client, type Daemon, dpVeths, type Env, leftovers, newEnv, startDaemon, TOKENS, vmNetns, writeConfig,
} from '../helpers/daemon-harness.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';
import { freshDataPlane, memoryLog, ping6, removeNamespaces, waitAddressesReady } from '../helpers/hostnet-kernel.js';

const tag = randomBytes(2).toString('hex');
const INST = `mtdrt${tag}`;
const DP = `mtdtest-rt-${randomBytes(3).toString('hex')}`;
const mine = (ns: string) => ns === DP || ns.startsWith(`${INST}-`);
const dev = (n: number) => `rt${tag}v${n}`;
const backend = new SandboxBackend({ instanceName: INST, dataplaneNetns: DP });
const plane = new RoutedNetworkPlane({ netns: DP, attachments: [{ name: 'rt0', mtu: 1500 }], log: memoryLog().log });
const vms = new Map<string, VmRecord>();

async function makeVm(id: string, n: number, address: string, allocation: string): Promise<VmRecord> {
  const mac = `52:54:00:78:00:${n.toString(16).padStart(2, '0')}`;
  const vm = vmRecord(id, [{ hostDevice: dev(n), bridge: 'rt0', address, gateway: 'fe80::1', mac }]);
  vm.nics[0]!.ipv6Allocation = allocation;
  const spec: BackendVmSpec = {
    id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs: '', initrdPath: '', drives: [],
    nics: [{ id: 'eth0', hostDevice: dev(n), mac, mtu: 1500, ipv6Address: address, ipv6Gateway: 'fe80::1' }],
  };
  vm.backendState = await backend.create(spec);
  await plane.ensureVm(vm);
  vms.set(id, vm);
  return vm;
}

const ourRoutes = async () => (await ipIn(DP, ['-6', 'route', 'show', 'proto', '109'])).trim().split('\n').filter(Boolean);

describe('routed attachment: plane and sandbox backend', { timeout: 120_000 }, () => {
  before(async () => {
    await freshDataPlane(DP, mine);
    // As the daemon's data plane: ports get no IPv6 unless a plane turns it on.
    await sysctlWrite(DP, ['net/ipv6/conf/default/disable_ipv6=1']);
  });

  after(async () => {
    for (const [id, vm] of vms) await backend.delete(id, vm.backendState).catch(() => {});
    await removeNamespaces(mine);
    assert.deepEqual((await netnsList()).filter(mine), [], 'namespaces left behind');
  });

  it('a /128 VM and a /64 (prefix mode) VM reach their gateway fe80::1 and each other through the host', async () => {
    await makeVm('r1', 1, 'fd00:c1::10/128', 'fd00:c1::10/128');
    await makeVm('r2', 2, 'fd00:c2:0:5::10/64', 'fd00:c2:0:5::/64');
    assert.deepEqual((await ourRoutes()).map((r) => r.split(' ').slice(0, 3).join(' ')).sort(),
      [`fd00:c1::10 dev ${dev(1)}`, `fd00:c2:0:5::/64 dev ${dev(2)}`]);
    for (const id of ['r1', 'r2']) await waitAddressesReady(backend.vmNetns(id));
    await ping6(backend.vmNetns('r1'), 'fe80::1%eth0');
    await ping6(backend.vmNetns('r2'), 'fe80::1%eth0');
    await ping6(backend.vmNetns('r1'), 'fd00:c2:0:5::10');
    await ping6(backend.vmNetns('r2'), 'fd00:c1::10');
    // Nothing else is on-link: no bridge, no shared segment.
    assert.equal((await ipIn(DP, ['link', 'show', 'type', 'bridge'])).trim(), '');
  });

  it('reconcile writes nothing when right, repairs a lost route and address, prunes a stale route', async () => {
    const all = () => [...vms.values()];
    await plane.reconcile(all());
    assert.deepEqual(plane.lastApplied, []);
    await ipIn(DP, ['-6', 'route', 'del', 'fd00:c1::10/128', 'dev', dev(1)]);
    await ipIn(DP, ['-6', 'address', 'del', 'fe80::1/64', 'dev', dev(2)]);
    await ipIn(DP, ['-6', 'route', 'add', 'fd00:dead::/64', 'dev', dev(1), 'proto', '109']);
    await plane.reconcile(all());
    assert.deepEqual((plane.lastApplied as string[]).filter((l) => !l.startsWith('sysctl')), [
      `route replace fd00:c1::10/128 dev ${dev(1)} proto 109`,
      `address replace fe80::1/64 dev ${dev(2)} nodad`,
      `route del fd00:dead::/64 dev ${dev(1)} proto 109`,
    ]);
    await ping6(backend.vmNetns('r1'), 'fd00:c2:0:5::10');
  });

  it('delete leaves no link, route or namespace', async () => {
    for (const id of ['r1', 'r2']) {
      const vm = vms.get(id)!;
      await plane.removeVm(vm);
      await backend.delete(id, vm.backendState);
      vms.delete(id);
    }
    assert.deepEqual(await ourRoutes(), []);
    for (const n of [1, 2]) assert.ok(!(await linkExists(DP, dev(n))));
    for (const id of ['r1', 'r2']) assert.ok(!(await netnsExists(backend.vmNetns(id))));
    await plane.reconcile([]);
    assert.deepEqual(plane.lastApplied, []);
  });
});

describe('routed attachment through the daemon (mode: routed)', { timeout: 120_000 }, async () => {
  const env = await newEnv();
  let daemon: Daemon;
  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: {
        pools: [{ id: 'hosts', prefix: 'fd00:77::/64' }, { id: 'nets', prefix: 'fd00:78::/48', mode: 'prefix' }],
        bridges: [{ name: 'rt0', mode: 'routed', mtu: 1500 }],
      },
    }));
    daemon = await startDaemon(env);
  });
  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('CreateVm on a routed attachment: /128 with gateway fe80::1, reaches it; delete leaves nothing', async () => {
    const c = client(env, TOKENS.a);
    const res = await c.createVm({ vmId: 'rt-1', config: { tenantId: 'tenant-a', network: [{ id: 'eth0', bridgeName: 'rt0', ipv6: { poolId: 'hosts' } }] } });
    assert.equal(res.state, VmState.CREATED);
    const nic = res.vm!.networkStatus[0]!;
    assert.match(nic.ipv6Address, /^fd00:77::[0-9a-f:]+\/128$/);
    assert.equal(nic.ipv6Gateway, 'fe80::1');
    const p = await c.createVm({ vmId: 'rt-2', config: { tenantId: 'tenant-a', network: [{ id: 'eth0', bridgeName: 'rt0', ipv6: { poolId: 'nets' } }] } });
    assert.match(p.vm!.networkStatus[0]!.ipv6Address, /^fd00:78:[0-9a-f:]+\/64$/);
    for (const id of ['rt-1', 'rt-2']) await waitAddressesReady(vmNetns(env, id));
    await ping6(vmNetns(env, 'rt-1'), 'fe80::1%eth0');
    await ping6(vmNetns(env, 'rt-1'), p.vm!.networkStatus[0]!.ipv6Address.split('/')[0]!);
    await routedGuards(env, nic, p.vm!.networkStatus[0]!.ipv6Address.split('/')[0]!);
    for (const id of ['rt-1', 'rt-2']) await c.deleteVm({ vmId: id });
    assert.equal((await ipIn(env.dp, ['-6', 'route', 'show', 'proto', '109'])).trim(), '');
    assert.deepEqual(await dpVeths(env), []);
    const errors = daemon.logs().filter((l) => l['level'] === 'error' || String(l['msg']).includes('without host-side plumbing'));
    assert.deepEqual(errors, []);
  });
});

/**
 * Routed NICs are guarded too (an ip6 table, `<instance>_routed`): TCP between two routed VMs passes
 * (and its replies), a spoofed source is dropped and counted against the sender, the host's ssh port
 * is not reachable from a VM.
 */
async function routedGuards(env: Env, nic: { hostDevice: string; ipv6Address: string }, peer: string): Promise<void> {
  const exec = (ns: string, args: string[]) => run('ip', ['netns', 'exec', ns, ...args]);
  const server = exec(vmNetns(env, 'rt-2'), ['/usr/bin/python3', '-c',
    'import socket;s=socket.socket(socket.AF_INET6);s.bind(("::",7777));s.listen();c,_=s.accept();c.sendall(c.recv(100).upper());c.close()']);
  await new Promise((r) => setTimeout(r, 500));
  const reply = await exec(vmNetns(env, 'rt-1'), ['/usr/bin/python3', '-c',
    `import socket;s=socket.create_connection(("${peer}",7777),timeout=3);s.sendall(b"hi");print(s.recv(100).decode())`]);
  await server;
  assert.equal(reply.trim(), 'HI');
  await exec(vmNetns(env, 'rt-1'), ['/usr/bin/python3', '-c',
    `from scapy.all import IPv6,ICMPv6EchoRequest,send,conf;conf.verb=0;send(IPv6(src="fd00:77::dead",dst="${peer}")/ICMPv6EchoRequest(),count=3)`]);
  const [set] = await nftList(env.dp, ['set', 'ip6', `${env.inst}_routed`, 'd_source_guard']);
  const elems = ((set?.['set'] as { elem?: { elem: { val: string; counter: { packets: number } } }[] })?.elem ?? []);
  assert.ok((elems.find((e) => e.elem.val === nic.hostDevice)?.elem.counter.packets ?? 0) >= 3, `spoofed packets counted: ${JSON.stringify(elems)}`);
  const ssh = await exec(vmNetns(env, 'rt-1'), ['/usr/bin/python3', '-c',
    'import socket\ntry: socket.create_connection(("fe80::1%eth0",22),timeout=1); print("open")\nexcept Exception as e: print(type(e).__name__)']);
  assert.equal(ssh.trim(), 'TimeoutError', 'the host drops a routed VM\'s ssh attempt');
}
