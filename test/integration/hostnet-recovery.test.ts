// "kill -9 metald during a create, restart: the kernel matches the store" for
// the bridge plane: daemon-recovery.test.ts runs without bridges, so it checks
// namespaces and veths only. Here a bridge is configured and every VM has a /64
// of its own, so each create puts a port on the bridge and a gateway on it (a
// neighbour entry the bridge answers for and routes, decision 0030). Real
// daemon, sandbox backend; needs root. Everything (namespaces, guests, radvd
// in the data plane, /run/metald/<instance>) is removed in `after`.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ipJson } from '../../src/kernel/netns.js';
import { GATEWAY_PROTO } from '../../src/network/gateways.js';
import { ShardNaming } from '../../src/network/shards.js';
import {
  baseConfig, cleanupEnv, client, type Daemon, dpVeths, leftovers, newEnv, sleep, startDaemon, TOKENS, waitUntil, writeConfig,
} from '../helpers/daemon-harness.js';

describe('kill -9 during creates on a bridge: after restart the bridge matches the store', { timeout: 240_000 }, async () => {
  const env = await newEnv();
  const BR = `hr${env.inst.slice(-4)}`;
  let daemon: Daemon;
  const admin = () => client(env, TOKENS.admin);

  type Side = { ports: string[]; addrs: string[]; gateways: string[] };
  /** The kernel side that the store implies, and what the kernel has: VM ports on the bridge, metald's addresses and gateways on it. */
  async function kernelVsStore(): Promise<{ want: Side; have: Side }> {
    const vms = (await admin().listVms({ pageSize: 1000 })).vms;
    const want = {
      ports: vms.map((v) => v.networkStatus[0]!.hostDevice).sort(),
      addrs: ['fd00:77::1/64'],
      gateways: vms.map((v) => v.networkStatus[0]!.ipv6Gateway).sort(),
    };
    const ndPort = new ShardNaming(env.inst).ndPort(BR);
    const links = (await ipJson(env.dp, ['link', 'show', 'master', BR])).map((l) => String(l['ifname']).split('@')[0]!).filter((l) => l !== ndPort);
    const [b] = await ipJson(env.dp, ['-6', 'address', 'show', 'dev', BR]);
    const addrs = ((b?.['addr_info'] ?? []) as Record<string, unknown>[])
      .filter((a) => a['scope'] === 'global' && a['metric'] === 256).map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
    const neighs = (await ipJson(env.dp, ['-6', 'neigh', 'show', 'dev', BR, 'nud', 'permanent'])).filter((n) => n['protocol'] === String(GATEWAY_PROTO));
    return { want, have: { ports: links.sort(), addrs: addrs.sort(), gateways: neighs.map((n) => String(n['dst'])).sort() } };
  }

  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: { default_pool: { id: 'test', prefix: 'fd00:77::/48' }, bridge: { name: BR, ipv6_address: 'fd00:77::1/64' } },
    }));
    daemon = await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    rmSync(`/run/metald/${env.inst}`, { recursive: true, force: true });
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('SIGKILL with creates in flight; restart; ports and gateways equal the stored VMs', async (t) => {
    const c = admin();
    let answered = 0;
    let release!: () => void;
    const enough = new Promise<void>((r) => (release = r));
    const ops = Array.from({ length: 24 }, (_, i) => (async () => {
      await sleep(i * 15);
      const net = `fd00:77:0:${(0x100 + i).toString(16)}`;
      await c.createVm({ vmId: `k${i}`, config: { tenantId: 'tenant-a', network: [{ id: 'eth0', bridgeName: BR, ipv6: { address: `${net}::10/64`, gateway: `${net}::1` } }] } });
      if (++answered >= 8) release();
    })().catch(() => {}));
    await Promise.race([enough, Promise.allSettled(ops)]);
    await daemon.kill('SIGKILL');
    await Promise.allSettled(ops);
    t.diagnostic(`creates answered before the kill: ${answered} of 24`);
    assert.ok(answered < 24, 'the kill interrupted nothing');
    await sleep(300);
    daemon = await startDaemon(env);
    await waitUntil('the start-up reconcile', async () => daemon.logs().some((l) => l['msg'] === 'start-up reconcile done'), 30_000);

    const { want, have } = await kernelVsStore();
    assert.ok(want.ports.length >= answered, `${want.ports.length} VMs stored, ${answered} answered`);
    assert.deepEqual(have.ports, want.ports, 'ports on the bridge = host devices of stored VMs');
    assert.deepEqual(have.addrs, want.addrs, 'metald addresses on the bridge = its own');
    assert.deepEqual(have.gateways, want.gateways, 'gateways on the bridge = those of stored VMs');
    assert.deepEqual(await dpVeths(env), want.ports, 'no orphan host veth in the data plane');

    // And deleting them all leaves the bridge with its configured address only.
    for (const v of (await admin().listVms({ pageSize: 1000 })).vms) await admin().deleteVm({ vmId: v.vmId });
    const after = await kernelVsStore();
    assert.deepEqual(after.have, { ports: [], addrs: ['fd00:77::1/64'], gateways: [] });
  });
});
