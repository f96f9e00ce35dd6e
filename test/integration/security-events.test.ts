// Security events and metrics from the port guards (issue 7), with real
// packets: the real daemon with sandbox VMs on a bridge in its own data-plane
// namespace; vm e1 (tenant a) attacks, e2 (tenant b) is the victim. Each
// attack must show up within 1 s at GET /debug/security/events with the right
// VM, tenant, NIC and reason, and the matching Prometheus metric (scraped
// over HTTP) must rise by exactly the kernel counter's delta.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { nftList } from '../../src/kernel/nft.js';
import { baseConfig, cleanupEnv, client, freePort, leftovers, newEnv, startDaemon, TOKENS, waitUntil, writeConfig, bootedVm } from '../helpers/daemon-harness.js';

const PY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'guards', 'packets.py');
const sh = promisify(execFile);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 60_000 });

interface Vm { id: string; tenant: string; ns: string; dev: string; mac: string; ip: string }
interface Ev { seq: number; time: string; type: string; severity: string; vm_id: string; tenant_id: string; nic: string; port: string; reason: string; count: number }

describe('guard drops become security events and metrics equal to the kernel counters', { timeout: 180_000 }, async () => {
  const env = await newEnv();
  const metricsPort = await freePort();
  const guard = `${env.inst}_guard`;
  const vms: Vm[] = [];

  /** The kernel's counter of one d_<reason> set for one port. */
  const kernel = async (reason: string, dev: string): Promise<number> => {
    const [o] = await nftList(env.dp, ['set', 'bridge', guard, `d_${reason}`]);
    const els = ((o?.['set'] as { elem?: { elem: { val: string; counter?: { packets: number } } }[] }).elem ?? []);
    return els.find((e) => e.elem?.val === dev)?.elem.counter?.packets ?? 0;
  };
  /** One sample of a metric from GET /metrics (0 when the series is absent). */
  const metric = async (name: string, labels: Record<string, string>): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      if (want.every((w) => line.includes(w))) return Number(line.split(' ').at(-1));
    }
    return 0;
  };
  const events = async (query: string, token: string = TOKENS.admin) => {
    const res = await fetch(`${env.url}/debug/security/events?${query}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, body: (await res.json()) as { events: Ev[]; next_page_token: string; code?: string; message?: string } };
  };

  before(async () => {
    writeConfig(env, baseConfig(env, {
      metrics_address: `127.0.0.1:${metricsPort}`,
      metrics_collection_interval: '100ms',
      ipv6: {
        default_pool: { id: 'test', prefix: 'fd00:77::/48', reserved: ['fd00:77::1'] },
        bridge: { name: `${env.inst}br`, ipv6_address: 'fd00:77::1/64' },
      },
    }));
    await startDaemon(env);
    for (const s of [{ id: 'e1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77::21' }, { id: 'e2', token: TOKENS.b, tenant: 'tenant-b', ip: 'fd00:77::22' }]) {
      vms.push(await bootedVm(env, s));
    }
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  const cases: [attack: string, how: 'send' | 'flood', reason: string, metricName: string, severity: string][] = [
    ['ra', 'send', 'ra_guard', 'metald_ipv6_ra_guard_blocks_total', 'high'],
    ['spoof-random', 'flood', 'source_guard', 'metald_ipv6_source_guard_violations_total', 'high'],
    ['rh0', 'send', 'ext_header', 'metald_ipv6_extension_header_blocks_total', 'medium'],
  ];
  for (const [attack, how, reason, metricName, severity] of cases) {
    it(`${attack}: an event within 1 s and ${metricName} rises by the kernel's delta`, async () => {
      const [v1, v2] = vms as [Vm, Vm];
      const labels = { vm_id: v1.id, tenant_id: v1.tenant };
      // The collector has caught up with the kernel before the attack.
      const k0 = await kernel(reason, v1.dev);
      await waitUntil('metric = kernel counter before the attack', async () => (await metric(metricName, labels)) === k0, 3000);
      const m0 = await metric(metricName, labels);
      const { body: b0 } = await events('type=guard_drop');
      const lastSeq = b0.events.at(-1)?.seq ?? 0;

      if (how === 'send') await inNs(v1.ns, ['/usr/bin/python3', PY, 'send', attack, '7', v1.mac, v1.ip, v2.mac, v2.ip, 'fd00:77::1', v2.ip]);
      else await inNs(v1.ns, ['/usr/bin/python3', PY, 'flood', attack, '200', '0.5', v1.mac, v1.ip, v2.mac, v2.ip]);
      const sent = Date.now();
      let found: Ev[] = [];
      await waitUntil(`a ${reason} event for ${v1.id}`, async () => {
        found = (await events(`vm_id=${v1.id}&type=guard_drop&page_token=${lastSeq}`)).body.events.filter((e) => e.reason === reason);
        return found.length > 0;
      }, 1000);
      const latency = Date.now() - sent;
      const e = found[0]!;
      assert.deepEqual([e.type, e.vm_id, e.tenant_id, e.nic, e.port, e.severity], ['guard_drop', v1.id, v1.tenant, 'eth0', v1.dev, severity]);

      const k1 = await kernel(reason, v1.dev);
      assert.ok(k1 > k0, `kernel counter d_${reason} did not move (${k0} -> ${k1})`);
      await waitUntil('the metric to reach the kernel counter', async () => (await metric(metricName, labels)) >= k1, 3000);
      const m1 = await metric(metricName, labels);
      assert.equal(m1 - m0, k1 - k0, `metric delta ${m1 - m0}, kernel delta ${k1 - k0}`);
      assert.equal(m1, k1, 'metric equals the kernel counter');
      assert.equal(await metric('metald_network_security_events_total', { reason, ...labels }), k1);
      // Counter events carry the exact counts: they add up to the kernel's delta (nflog samples count 0, decision 0028).
      await waitUntil('events to add up', async () => {
        const all = (await events(`vm_id=${v1.id}&page_token=${lastSeq}&limit=1000`)).body.events.filter((x) => x.reason === reason);
        return all.reduce((s, x) => s + x.count, 0) === k1 - k0;
      }, 2000);
      console.log(`${attack}: event after ${latency} ms, kernel +${k1 - k0}, metric +${m1 - m0}`);
    });
  }

  it('the victim is not blamed; tenants see only their own events; bad tokens are events too', async () => {
    const [v1, v2] = vms as [Vm, Vm];
    assert.equal((await events(`vm_id=${v2.id}&type=guard_drop`)).body.events.length, 0);
    const mine = await events('', TOKENS.a);
    assert.equal(mine.status, 200);
    assert.ok(mine.body.events.length > 0 && mine.body.events.every((e) => e.tenant_id === 'tenant-a'));
    assert.equal((await events('', TOKENS.b)).body.events.filter((e) => e.vm_id === v1.id).length, 0);
    const denied = await events('tenant_id=tenant-a', TOKENS.b);
    assert.equal(denied.status, 403);
    const anon = await fetch(`${env.url}/debug/security/events`);
    assert.equal(anon.status, 401);
    await waitUntil('the auth failure event', async () => (await events('type=auth_failure')).body.events.some((e) => e.reason === 'missing bearer token'), 1000);
    const bad = await events('severity=urgent');
    assert.equal(bad.status, 400);
    assert.match(bad.body.message ?? '', /severity/);
    // Pagination: one event per page, in order, no repeats.
    const p1 = await events('limit=1');
    const p2 = await events(`limit=1&page_token=${p1.body.next_page_token}`);
    assert.ok(p2.body.events[0]!.seq > p1.body.events[0]!.seq);
  });

  it('isolation on and off are events; VMs by state, pools and RPC latency are metrics', async () => {
    const [v1] = vms as [Vm];
    const admin = client(env, TOKENS.admin);
    await admin.isolateVm({ vmId: v1.id, reason: 'events test' });
    await admin.unisolateVm({ vmId: v1.id });
    const types = (await events(`vm_id=${v1.id}&type=vm_isolated,vm_unisolated`)).body.events.map((e) => `${e.type}:${e.tenant_id}`);
    assert.deepEqual(types, ['vm_isolated:tenant-a', 'vm_unisolated:tenant-a']);
    await waitUntil('VMs by state', async () => (await metric('metald_vms', { state: 'running' })) === 2, 10_000);
    assert.equal(await metric('metald_ip_pool_used', { pool: 'test' }), 2);
    assert.ok((await metric('metald_rpc_duration_seconds_count', { method: 'IsolateVm', code: 'ok' })) >= 1);
    await waitUntil('per-VM packets from link statistics', async () => (await metric('metald_vm_network_packets_total', { direction: 'tx', vm_id: v1.id })) > 0, 10_000);
  });
});
