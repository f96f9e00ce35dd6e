// The pure parts of metrics and security events: dump parsing, monotonic
// totals with counter restarts, deltas to events, the event ring, the
// events query, the per-VM label switch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MonotonicCounters } from '../../src/observability/counters.js';
import { CounterSetParser, parseProcNetDev, scanProcNetDev } from '../../src/observability/kernel-dumps.js';
import { parseHostPort, usePerVmLabels } from '../../src/observability/metrics.js';
import { EventRing, GUARD_SEVERITY } from '../../src/events/security-events.js';
import { eventQuery } from '../../src/events/events-route.js';
import { MetaldError } from '../../src/core/errors.js';
import { DROP_REASONS } from '../../src/firewall/guard-names.js';

// `nft -j list set bridge t d_ra_guard` as nft 1.0.6 prints it (one line).
const SET_JSON = '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, '
  + '{"set": {"family": "bridge", "name": "d_ra_guard", "table": "t", "type": "ifname", "handle": 42, "size": 262144, "flags": ["dynamic"], '
  + '"elem": [{"elem": {"val": "mtdva1", "counter": {"packets": 3, "bytes": 270}}}, {"elem": {"val": "mtdvb2", "counter": {"packets": 12345678901, "bytes": 0}}}]}}]}\n';

function parseChunks(chunks: readonly string[]): { handle?: number; elements: [string, number][] } {
  const out: { handle?: number; elements: [string, number][] } = { elements: [] };
  const p = new CounterSetParser({ handle: (h) => (out.handle = h), element: (port, n) => out.elements.push([port, n]) });
  for (const c of chunks) p.push(c);
  p.finish();
  return out;
}

test('a counter set listing parses to port -> packets with the set handle, however nft splits it into chunks', () => {
  const want = { handle: 42, elements: [['mtdva1', 3], ['mtdvb2', 12345678901]] };
  assert.deepEqual(parseChunks([SET_JSON]), want);
  for (let i = 1; i < SET_JSON.length; i++) {
    assert.deepEqual(parseChunks([SET_JSON.slice(0, i), SET_JSON.slice(i)]), want, `split at ${i}`);
  }
  assert.deepEqual(parseChunks([...SET_JSON]), want, 'one character at a time');
  assert.deepEqual(parseChunks(['{"nftables": [{"metainfo": {}}, {"set": {"name": "d_x", "handle": 7}}]}\n']), { handle: 7, elements: [] }, 'empty set');
  // An element without a counter (never in d_<reason>, which counts every element) reads as 0, not as its neighbour's count.
  assert.deepEqual(parseChunks(['{"nftables": [{"set": {"handle": 1, "elem": [{"elem": {"val": "a"}}, {"elem": {"val": "b", "counter": {"packets": 4, "bytes": 0}}}]}}]}\n']),
    { handle: 1, elements: [['a', 0], ['b', 4]] });
});

test('/proc/net/dev parses to rx/tx bytes and packets per link', () => {
  const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
mtdva1:    1296      12    0    0    0     0          0         0      906       9    0    0    0     0       0          0
`;
  const m = parseProcNetDev(text);
  assert.deepEqual(m.get('mtdva1'), { rxBytes: 1296, rxPackets: 12, txBytes: 906, txPackets: 9 });
  assert.equal(m.size, 2);
  const only: string[] = [];
  scanProcNetDev(text, (name) => name === 'mtdva1', (name, rb, rp, tb, tp) => only.push(`${name} ${rb} ${rp} ${tb} ${tp}`));
  assert.deepEqual(only, ['mtdva1 1296 12 906 9']);
});

test('totals equal the kernel counters; the first dump is a baseline, later new keys count from 0', () => {
  const c = new MonotonicCounters();
  assert.deepEqual(c.apply(new Map([['a', 5]])), []);
  assert.equal(c.total('a'), 5);
  assert.deepEqual(c.apply(new Map([['a', 8], ['b', 2]])), [{ key: 'a', count: 3 }, { key: 'b', count: 2 }]);
  assert.equal(c.total('a'), 8);
  assert.equal(c.sum(), 10);
});

test('a counter restart (lower value, or a new set handle) counts the new value; a gone key keeps the sum', () => {
  const c = new MonotonicCounters();
  c.apply(new Map([['a', 10], ['b', 4]]));
  assert.deepEqual(c.apply(new Map([['a', 3], ['b', 4]])), [{ key: 'a', count: 3 }]);
  assert.equal(c.total('a'), 13);
  // Replaced table: b restarted and reached its old value again; only the handle tells.
  assert.deepEqual(c.apply(new Map([['a', 3], ['b', 4]]), true), [{ key: 'a', count: 3 }, { key: 'b', count: 4 }]);
  assert.equal(c.sum(), 24);
  c.apply(new Map([['a', 3]]));
  assert.equal(c.sum(), 24, 'b deleted: its total stays in the sum');
  assert.equal(c.total('b'), 0);
  assert.deepEqual([...c.keys()], ['a']);
});

test('the ring keeps the newest events within capacity and retention, filters and pages', () => {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const ring = new EventRing(3, 60_000, () => now);
  const seen: number[] = [];
  ring.onEvent((e) => seen.push(e.seq));
  const add = (vm: string, tenant: string, severity: 'low' | 'high') =>
    ring.add({ type: 'guard_drop', severity, vm_id: vm, tenant_id: tenant, nic: 'eth0', port: `p${vm}`, reason: 'ra_guard', count: 1 });
  add('v1', 'a', 'high');
  now += 30_000;
  add('v2', 'b', 'low');
  add('v1', 'a', 'low');
  add('v3', 'a', 'high');
  assert.equal(ring.size, 3);
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.deepEqual(ring.query({ limit: 10 }).events.map((e) => e.seq), [2, 3, 4]);
  assert.deepEqual(ring.query({ limit: 10, tenantId: 'a', severities: ['high'] }).events.map((e) => e.seq), [4]);
  const p1 = ring.query({ limit: 2 });
  assert.deepEqual([p1.events.map((e) => e.seq), p1.next], [[2, 3], 3]);
  assert.deepEqual(ring.query({ limit: 2, afterSeq: p1.next }), { events: [ring.query({ limit: 10 }).events[2]!] });
  now += 45_000; // the three kept events are 45 s old: within the 60 s retention
  assert.equal(ring.query({ limit: 10 }).events.length, 3);
  now += 20_000;
  assert.equal(ring.query({ limit: 10 }).events.length, 0, 'all older than the retention');
  assert.equal(ring.size, 0);
});

test('every drop reason has a severity', () => {
  for (const r of DROP_REASONS) assert.ok(GUARD_SEVERITY[r]);
});

test('event query: filters, tenant scoping and errors naming the parameter', () => {
  const admin = { kind: 'admin', name: 'ops' } as const;
  const tenant = { kind: 'tenant', tenantId: 'a', name: 'a' } as const;
  const q = (s: string, p: typeof admin | typeof tenant = admin) => eventQuery(new URLSearchParams(s), p, Date.parse('2026-01-01T01:00:00Z'));
  assert.deepEqual(q('vm_id=v1&type=guard_drop,auth_failure&severity=high&limit=5&page_token=9'),
    { limit: 5, vmId: 'v1', types: ['guard_drop', 'auth_failure'], severities: ['high'], afterSeq: 9 });
  assert.equal(q('since=10m').sinceMs, Date.parse('2026-01-01T00:50:00Z'));
  assert.equal(q('since=2026-01-01T00:30:00Z').sinceMs, Date.parse('2026-01-01T00:30:00Z'));
  assert.equal(q('', tenant).tenantId, 'a');
  assert.equal(q('tenant_id=b').tenantId, 'b');
  const err = (s: string, p: typeof admin | typeof tenant, kind: string, field: string) => assert.throws(() => q(s, p), (e: unknown) =>
    e instanceof MetaldError && e.kind === kind && e.field === field);
  err('tenant_id=b', tenant, 'permission_denied', 'tenant_id');
  err('severity=urgent', admin, 'invalid_argument', 'severity');
  err('type=x', admin, 'invalid_argument', 'type');
  err('limit=0', admin, 'invalid_argument', 'limit');
  err('since=yesterday', admin, 'invalid_argument', 'since');
  err('page_token=abc', admin, 'invalid_argument', 'page_token');
  err('vmid=v1', admin, 'invalid_argument', 'vmid');
});

test('per-VM labels below the limit only; 0 turns them off', () => {
  assert.equal(usePerVmLabels(1000, 1000), true);
  assert.equal(usePerVmLabels(1001, 1000), false);
  assert.equal(usePerVmLabels(1, 0), false);
  assert.deepEqual(parseHostPort('[::1]:9464'), { host: '::1', port: 9464 });
  assert.deepEqual(parseHostPort('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
});

// ---- the collector and the registry against a fake kernel ----

import { CounterCollector, type CounterReader } from '../../src/observability/collector.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { CounterSink } from '../../src/observability/kernel-dumps.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';

/** Serves counter sets from `kernel` (reason -> port -> packets); each read "costs" `costMs` of fake time (and CPU). */
function fakeKernel(clock: { t: number }, costMs: number) {
  const kernel = new Map<string, Map<string, number>>();
  const handles = new Map<string, number>();
  const reads: string[] = [];
  const session: CounterReader = {
    async readSet(_f, _t, set, sink) {
      reads.push(set);
      clock.t += costMs;
      sink.handle(handles.get(set) ?? 1);
      for (const [port, n] of kernel.get(set) ?? []) sink.element(port, n);
    },
    async netDev() {
      return 'Inter-|\n face |\n';
    },
    async cpuNs() {
      return 0;
    },
  };
  return { kernel, handles, reads, session };
}

function setup(vms: ReturnType<typeof vmRecord>[], costMs: number, perVmLabelLimit = 1000) {
  const clock = { t: 0 };
  const k = fakeKernel(clock, costMs);
  const events = new EventRing(1000, 3_600_000);
  let list = vms;
  const collector = new CounterCollector({
    session: k.session, tables: [{ family: 'bridge', table: 't' }], listVms: async () => list, events, intervalMs: 100,
    log: { warn: () => {} }, now: () => clock.t, cpuNs: async () => clock.t * 1e6, budget: 0.1,
  });
  const metrics = new Metrics({ collector, ipam: () => undefined, events, perVmLabelLimit });
  return { clock, k, events, collector, metrics, setVms: (v: typeof vms) => (list = v) };
}

const vmA = vmRecord('va', [{ hostDevice: 'pa', bridge: 'br', mac: '52:54:00:00:00:01', address: 'fd00::1/64' }]);
const vmB = { ...vmRecord('vb', [{ hostDevice: 'pb', bridge: 'br', mac: '52:54:00:00:00:02', address: 'fd00::2/64' }]), tenantId: 't2' };

test('deltas become one event per VM, NIC and reason with the exact count; metrics equal the kernel', async () => {
  const s = setup([vmA, vmB], 0);
  s.k.kernel.set('d_ra_guard', new Map([['pa', 2], ['pb', 0]]));
  await s.collector.tick();
  assert.equal(s.events.size, 0, 'counts before metald started are a baseline, not events');
  s.k.kernel.set('d_ra_guard', new Map([['pa', 7], ['pb', 0]]));
  s.clock.t += 100;
  await s.collector.tick();
  const [e] = s.events.query({ limit: 10 }).events;
  assert.deepEqual([e!.vm_id, e!.tenant_id, e!.nic, e!.port, e!.reason, e!.severity, e!.count], ['va', 't1', 'eth0', 'pa', 'ra_guard', 'high', 5]);
  const text = await s.metrics.registry.metrics();
  assert.match(text, /metald_ipv6_ra_guard_blocks_total\{vm_id="va",tenant_id="t1"\} 7/);
  assert.match(text, /metald_ipv6_ra_guard_blocks_total\{vm_id="vb",tenant_id="t2"\} 0/);
  assert.match(text, /metald_network_security_events_total\{reason="ra_guard",vm_id="va",tenant_id="t1"\} 7/);
  assert.match(text, /metald_vms\{state="running"\} 2/);
});

test('above the label limit the metrics are sums without VM labels, and a deleted VM keeps the sum', async () => {
  const vmC = vmRecord('vc', [{ hostDevice: 'pc', bridge: 'br', mac: '52:54:00:00:00:03', address: 'fd00::3/64' }]);
  const s = setup([vmA, vmB, vmC], 0, 2);
  s.k.kernel.set('d_source_guard', new Map([['pa', 4], ['pb', 6], ['pc', 0]]));
  await s.collector.tick();
  let text = await s.metrics.registry.metrics();
  assert.match(text, /^metald_ipv6_source_guard_violations_total 10$/m);
  assert.doesNotMatch(text, /vm_id=/);
  s.setVms([vmA, vmC, { ...vmC, id: 'vd', nics: [{ ...vmC.nics[0]!, hostDevice: 'pd' }] }]);
  s.k.kernel.set('d_source_guard', new Map([['pa', 5], ['pc', 0], ['pd', 0]]));
  s.clock.t += 1000;
  await s.collector.tick();
  text = await s.metrics.registry.metrics();
  assert.match(text, /^metald_ipv6_source_guard_violations_total 11$/m, 'vb deleted: its 6 stay in the sum');
  s.setVms([vmA]);
  s.clock.t += 5000; // the VM map's refresh period
  await s.collector.tick();
  assert.match(await s.metrics.registry.metrics(), /vm_id="va"/, 'one VM left: per-VM labels again');
});

test('a dump that does not fit the budget is spaced out; reasons that moved stay on the fast tier', async () => {
  // One set per reason at 2 ms of CPU each; with 8 % of a core for full dumps, one every `every` ms.
  const full = 2 * DROP_REASONS.length;
  const every = full / 0.08;
  const s = setup([vmA, vmB], 2);
  s.k.kernel.set('d_nd_spoof', new Map([['pa', 0], ['pb', 0]]));
  await s.collector.tick();
  assert.equal(Math.round(s.collector.stats.fullEveryMs), every);
  s.k.reads.length = 0;
  s.clock.t = 100;
  await s.collector.tick();
  assert.deepEqual(s.k.reads, [], 'nothing moved: no dump before the next full one');
  s.clock.t = every + 10;
  s.k.kernel.set('d_nd_spoof', new Map([['pa', 3], ['pb', 0]]));
  await s.collector.tick();
  assert.equal(s.k.reads.length, DROP_REASONS.length);
  s.k.reads.length = 0;
  s.clock.t = every + 110;
  s.k.kernel.set('d_nd_spoof', new Map([['pa', 5], ['pb', 0]]));
  await s.collector.tick();
  assert.deepEqual(s.k.reads, ['d_nd_spoof'], 'the moved reason is read on the fast tier');
  assert.deepEqual(s.events.query({ limit: 10 }).events.map((e) => e.count), [3, 2], 'each packet counted once');
  assert.equal(Math.round(s.collector.stats.fullEveryMs), every, 'that full dump ran before the reason was hot');
  // The fast read cost 2 ms, within 4 % of a core at one read per interval: the next one is one interval later.
  s.k.reads.length = 0;
  s.clock.t = every + 150;
  await s.collector.tick();
  assert.deepEqual(s.k.reads, []);
  s.clock.t = every + 210;
  s.k.kernel.set('d_nd_spoof', new Map([['pa', 9], ['pb', 0]]));
  await s.collector.tick();
  assert.deepEqual(s.k.reads, ['d_nd_spoof'], 'the fast tier again; the full dump repays its CPU at half the rate now');
  assert.deepEqual(s.events.query({ limit: 10 }).events.map((e) => e.count), [3, 2, 4]);
  for (const t of [310, 410, 510, 610]) {
    s.k.reads.length = 0;
    s.clock.t = every + t;
    await s.collector.tick();
  }
  assert.equal(s.k.reads.length, DROP_REASONS.length, 'the next full dump, twice as far from the last');
  assert.equal(Math.round(s.collector.stats.fullEveryMs), 2 * every, 'while a reason is hot the full dump has half the share');
  assert.equal(s.collector.drops.get('nd_spoof')!.total('pa'), 9, 'the total equals the kernel counter');
  assert.ok(s.collector.stats.cpuMs <= 0.1 * (every + 610) + full, 'within the budget plus one read');
});

test('markHot puts a reason on the fast tier before its counters are seen to move', async () => {
  const s = setup([vmA], 2);
  s.k.kernel.set('d_vlan_tag', new Map([['pa', 0]]));
  await s.collector.tick();
  s.k.reads.length = 0;
  s.collector.markHot('vlan_tag');
  s.k.kernel.set('d_vlan_tag', new Map([['pa', 6]]));
  s.clock.t = 100;
  await s.collector.tick();
  assert.deepEqual(s.k.reads, ['d_vlan_tag']);
  assert.deepEqual(s.events.query({ limit: 10 }).events.map((e) => [e.reason, e.count]), [['vlan_tag', 6]]);
});

test('a restarted set (new handle) counts the new value, even when it is not lower', async () => {
  const s = setup([vmA], 0);
  s.k.kernel.set('d_ra_guard', new Map([['pa', 10]]));
  await s.collector.tick();
  s.k.kernel.set('d_ra_guard', new Map([['pa', 12]]));
  s.clock.t = 100;
  await s.collector.tick();
  // The table is replaced (drift repair): counters restart; by the next read this one is at 15 again.
  s.k.handles.set('d_ra_guard', 2);
  s.k.kernel.set('d_ra_guard', new Map([['pa', 15]]));
  s.clock.t = 200;
  await s.collector.tick();
  assert.deepEqual(s.events.query({ limit: 10 }).events.map((e) => e.count), [2, 15]);
  assert.equal(s.collector.drops.get('ra_guard')!.total('pa'), 27);
});

test('observe: partial reads retire nothing; a complete listing retires what it did not see; epochs restart', () => {
  const c = new MonotonicCounters();
  c.begin();
  assert.equal(c.observe('a', 5, 1), 0, 'first listing: baseline');
  assert.equal(c.observe('b', 1, 1), 0);
  c.end();
  assert.equal(c.observe('a', 7, 1), 2, 'a partial read');
  c.begin();
  assert.equal(c.observe('a', 7, 1), 0, 'already counted by the partial read');
  c.end();
  assert.deepEqual([...c.keys()], ['a'], 'b retired');
  assert.equal(c.sum(), 8);
  assert.equal(c.observe('a', 9, 2), 9, 'another epoch: the counter restarted');
  assert.equal(c.observe('c', 4, 2), 4, 'a key first seen after the baseline counts from 0');
  assert.equal(c.sum(), 8 + 9 + 4);
});

test('a reason stays hot until the fast tier can read it again, however long that takes', async () => {
  // One set costs 100 ms of CPU: the fast tier (4 % of a core here) reads it every 2.5 s, longer than HOT_MS.
  const s = setup([vmA], 100);
  s.k.kernel.set('d_ra_guard', new Map([['pa', 0]]));
  await s.collector.tick();
  s.collector.markHot('ra_guard');
  s.k.kernel.set('d_ra_guard', new Map([['pa', 3]]));
  s.clock.t = 1000;
  s.k.reads.length = 0;
  await s.collector.tick();
  assert.deepEqual(s.k.reads, ['d_ra_guard']);
  s.k.kernel.set('d_ra_guard', new Map([['pa', 9]]));
  s.k.reads.length = 0;
  s.clock.t = 3700;
  await s.collector.tick();
  assert.deepEqual(s.k.reads, ['d_ra_guard'], 'still hot 2.6 s later: read again');
  assert.deepEqual(s.events.query({ limit: 10 }).events.map((e) => e.count), [3, 6]);
});
