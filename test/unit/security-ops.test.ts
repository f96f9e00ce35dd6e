// The pure and in-process parts of security operations (issue 7): NFLOG pcap
// parsing, which log records become events, escalation to critical, syslog
// formats and buffers, incident response decisions, hook tokens, the
// drift-message tap and the config keys.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Authenticator } from '../../src/api/auth.js';
import { parseConfig } from '../../src/config/load.js';
import { Escalation } from '../../src/events/incident/escalation.js';
import { curlrc, type HookRunner } from '../../src/events/incident/hook.js';
import { IncidentResponder } from '../../src/events/incident/responder.js';
import { DRIFT_MESSAGES, tapSecurityLog } from '../../src/events/log-tap.js';
import { classify, LogEventGate, type Attributed } from '../../src/events/nflog/log-events.js';
import { PcapNflogParser, summarise, type NflogRecord } from '../../src/events/nflog/pcap-nflog.js';
import { EventRing, type SecurityEvent } from '../../src/events/security-events.js';
import { BoundedQueue } from '../../src/events/syslog/bounded-queue.js';
import { eventText, octetCounted, pri, rfc5424 } from '../../src/events/syslog/format.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// `tcpdump -i nflog:1,2 -s 256 -w` in a namespace: an echo request logged as "metald-guard ra_guard-in "
// (group 2) and a UDP datagram to port 9 logged as "metald-ipv6-deny: " (group 1), both to ::1 on lo.
const PCAP = Buffer.from('1MOyoQIABAAAAAAAAAAAAAABAADvAAAA6iIIaxUMBgCAAAAAgAAAAAoAAAIIAAEAht0DAB4ACgBtZXRhbGQtZ3VhcmQgcmFfZ3VhcmQtaW4gAAAACAAFAAAAAAEIAAsAAAAAAAgADgAAAAAAPAAJAGAFmscAEDpAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAGAAG8PBJMAAQABAgMEBQYH6iIIa7BwCgB4AAAAeAAAAAoAAAEIAAEAht0DABcACgBtZXRhbGQtaXB2Ni1kZW55OiAAAAgABQAAAAABCAALAAAAAAAIAA4AAAAAADkACQBgCUmdAA0RQAAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAABqSsACQANACBoZWxsbwAAAA==', 'base64');

test('a pcap stream of NFLOG records parses whatever the chunk boundaries', () => {
  for (const step of [PCAP.length, 1, 7, 50]) {
    const p = new PcapNflogParser();
    const out: NflogRecord[] = [];
    for (let i = 0; i < PCAP.length; i += step) p.feed(PCAP.subarray(i, i + step), (r) => out.push(r));
    assert.equal(out.length, 2, `chunks of ${step}`);
    const [a, b] = out as [NflogRecord, NflogRecord];
    assert.deepEqual([a.group, a.family, a.prefix, a.hwProtocol, a.outdev, a.indev], [2, 10, 'metald-guard ra_guard-in ', 0x86dd, 1, undefined]);
    assert.deepEqual([b.group, b.prefix], [1, 'metald-ipv6-deny: ']);
    assert.ok(a.timeMs > 1.6e12 && b.timeMs >= a.timeMs);
    assert.deepEqual(summarise(a), { length: 56, proto: 'ipv6', src: '::1', dst: '::1', next: 'icmpv6', icmp_type: 128 });
    assert.deepEqual(summarise(b), { length: 53, proto: 'ipv6', src: '::1', dst: '::1', next: 'udp', sport: 43307, dport: 9 });
  }
  assert.throws(() => new PcapNflogParser().feed(Buffer.alloc(24, 7), () => {}), /not a pcap stream/);
  const ether = Buffer.from(PCAP.subarray(0, 24));
  ether.writeUInt32LE(1, 20);
  assert.throws(() => new PcapNflogParser().feed(ether, () => {}), /link type 1, expected NFLOG/);
});

test('extension headers are walked (bounded) and non-IPv6 frames keep their ethertype', () => {
  const v6 = Buffer.alloc(40 + 8 + 8);
  v6[0] = 0x60;
  v6[6] = 0; // hop-by-hop
  v6[40] = 43; // -> routing
  v6[48] = 58; // -> icmpv6
  v6[49] = 0;
  const s = summarise({ payload: Buffer.concat([v6, Buffer.from([134, 0])]), hwProtocol: 0x86dd, hwaddr: '02:00:00:00:00:01' });
  assert.deepEqual([s.ext, s.next, s.icmp_type, s.src_mac], [['hbh', 'rt'], 'icmpv6', 134, '02:00:00:00:00:01']);
  assert.equal(summarise({ payload: Buffer.alloc(28), hwProtocol: 0x0806 }).proto, '0x0806');
});

test('log prefixes name the reason and direction; anything else is not ours', () => {
  assert.deepEqual(classify('metald-guard ra_guard '), { kind: 'guard', reason: 'ra_guard', inbound: false });
  assert.deepEqual(classify('metald-guard rate_limit-in '), { kind: 'guard', reason: 'rate_limit', inbound: true });
  assert.deepEqual(classify('metald-ipv6-deny: '), { kind: 'host_deny' });
  assert.equal(classify('metald-guard bogus '), undefined);
  assert.equal(classify('other-tool '), undefined);
});

const rec = (port: string, tenant = 't', reason: 'ra_guard' | 'host' = 'ra_guard'): Attributed => ({
  cls: reason === 'host' ? { kind: 'host_deny' } : { kind: 'guard', reason, inbound: false },
  timeMs: 0, port, vmId: `vm-${port}`, tenantId: tenant, nic: 'eth0', packet: { proto: 'ipv6', length: 80 },
});

test('the log gate: first record at once, the rest carried per port and interval, a global budget, enhanced tenants in full', () => {
  const enhanced = new Set<string>();
  const g = new LogEventGate({ perKeyIntervalMs: 1000, maxPerSecond: 2, enhanced: (t) => enhanced.has(t) });
  const first = g.offer(rec('p1'), 0)!;
  assert.deepEqual([first.type, first.severity, first.reason, first.count, first.logged, first.vm_id], ['guard_sample', 'high', 'ra_guard', 0, 1, 'vm-p1']);
  assert.equal(g.offer(rec('p1'), 100), undefined);
  assert.equal(g.offer(rec('p1'), 200), undefined);
  assert.deepEqual(g.flush(500), [], 'interval not over');
  const carried = g.flush(1000);
  assert.deepEqual(carried.map((e) => e.logged), [2]);
  const host = g.offer(rec('p2', 't', 'host'), 1000)!;
  assert.deepEqual([host.type, host.severity, host.count], ['host_deny', 'medium', 1]);
  // The budget (2/s) is spent: a new port waits, its record carried.
  assert.equal(g.offer(rec('p3'), 1001), undefined);
  assert.equal(g.flush(2100).length, 1);
  enhanced.add('hot');
  const all = [0, 1, 2].map((i) => g.offer(rec('p9', 'hot'), 5000 + i * 400));
  assert.equal(all.filter(Boolean).length, 3, 'enhanced tenant: every record an event (within the budget)');
});

const ev = (over: Partial<SecurityEvent>): SecurityEvent => ({
  seq: 1, time: new Date(0).toISOString(), type: 'guard_drop', severity: 'high', vm_id: 'v1', tenant_id: 't1', nic: 'eth0', port: 'p', reason: 'ra_guard', count: 1, ...over,
});

test('escalation: high-severity drops of one VM reaching the threshold within the window make one critical event', () => {
  const e = new Escalation({ packets: 100, windowMs: 10_000 });
  assert.equal(e.observe(ev({ count: 60 }), 0), undefined);
  assert.equal(e.observe(ev({ count: 500, severity: 'medium', reason: 'ext_header' }), 1), undefined, 'medium does not count');
  assert.equal(e.observe(ev({ count: 30, vm_id: 'v2' }), 2), undefined, 'another VM');
  const c = e.observe(ev({ count: 50, reason: 'source_guard' }), 3000)!;
  assert.deepEqual([c.type, c.severity, c.vm_id, c.tenant_id, c.count, c.reason], ['attack_detected', 'critical', 'v1', 't1', 110, 'ra_guard']);
  assert.match(c.detail!, /ra_guard=60, source_guard=50/);
  assert.equal(e.observe(ev({ count: 500 }), 4000), undefined, 'once per window');
  assert.equal(e.observe(ev({ count: 10 }), 25_000), undefined, 'the old drops left the window');
  assert.ok(e.observe(ev({ count: 100 }), 26_000));
});

test('syslog: PRI from facility and severity, RFC 5424 lines with structured data, octet counting in bytes', () => {
  assert.equal(pri('local0', 'critical'), 130);
  assert.equal(pri('local0', 'low'), 133);
  assert.equal(pri('daemon', 'high'), 27);
  const e = ev({ seq: 7, time: '2024-05-01T10:00:00.123Z', tenant_id: 'acme corp', detail: 'x"y]' });
  const line = rfc5424(e, { facility: 'local0', hostname: 'host a', appName: 'metald', procId: '42' });
  assert.match(line, /^<131>1 2024-05-01T10:00:00\.123Z host_a metald 42 guard_drop \[metald@32473 seq="7" type="guard_drop" severity="high" vm_id="v1" tenant_id="acme corp" nic="eth0" port="p" reason="ra_guard" count="1"\] security_event /);
  assert.match(eventText(e), /tenant_id="acme corp" .*detail="x\\"y]"$/);
  assert.equal(octetCounted('é'), '2 é');
});

test('a full syslog buffer drops the oldest and counts it', () => {
  const q = new BoundedQueue(2);
  for (const m of ['a', 'b', 'c']) q.push(m);
  assert.deepEqual([q.dropped, q.shift(), q.shift(), q.shift()], [1, 'b', 'c', undefined]);
  q.push('d');
  q.unshift(q.shift()!);
  assert.equal(q.shift(), 'd');
});

function responder(actions = { critical: 'isolate', high: 'enhanced_monitoring', medium: 'log', low: 'none' } as const) {
  const ring = new EventRing(100, 60_000);
  const calls: string[] = [];
  const hook = { run: async (args: string[]) => { calls.push(`hook ${args.join(' ')}`); return 'ok'; } } as unknown as HookRunner;
  let t = 0;
  const logs: string[] = [];
  const r = new IncidentResponder({
    actions, enhancedMs: 60_000, cooldownMs: 10_000, hook, hookSeverities: ['critical', 'high'], ring, now: () => t,
    isolate: async (vm, reason) => { calls.push(`isolate ${vm} ${reason}`); },
    log: { info: () => {}, warn: (_o, m) => logs.push(m ?? ''), error: (_o, m) => logs.push(m ?? '') },
  });
  r.start();
  return { r, ring, calls, logs, at: (ms: number) => (t = ms) };
}

test('incident response: critical isolates then runs the hook, once per cooldown; high watches the tenant; own steps are ignored', async () => {
  const { r, ring, calls, logs, at } = responder();
  const crit = { type: 'attack_detected', severity: 'critical', vm_id: 'v1', tenant_id: 't1', nic: '', port: '', reason: 'ra_guard', count: 2000 } as const;
  ring.add(crit);
  ring.add(crit);
  await r.idle;
  assert.deepEqual(calls, ['isolate v1 incident response: critical attack_detected (ra_guard), event 1', 'hook critical attack_detected v1 t1']);
  ring.add({ ...crit, type: 'vm_isolated', severity: 'high' });
  await r.idle;
  assert.equal(calls.length, 2, 'vm_isolated is a response, not a detection');
  assert.equal(r.isEnhanced('t1'), false);
  ring.add({ ...crit, type: 'guard_sample', severity: 'high', vm_id: 'v2', count: 0 });
  await r.idle;
  assert.equal(r.isEnhanced('t1'), true);
  assert.deepEqual(ring.query({ limit: 10, types: ['monitoring_enhanced'] }).events.map((e) => [e.tenant_id, e.severity]), [['t1', 'low']]);
  assert.equal(calls.at(-1), 'hook high guard_sample v2 t1');
  ring.add({ ...crit, type: 'auth_failure', severity: 'medium', vm_id: '', tenant_id: '' });
  await r.idle;
  assert.deepEqual(logs, ['security incident'], 'medium: logged, the hook only runs for critical and high here');
  at(11_000);
  ring.add(crit);
  await r.idle;
  assert.equal(calls.filter((c) => c.startsWith('isolate')).length, 2, 'after the cooldown it acts again');
  at(80_000);
  assert.equal(r.isEnhanced('t1'), false, 'enhanced monitoring ends');
});

test('a hook token works only for its methods and until revoked', () => {
  const failures: string[] = [];
  const a = new Authenticator('tokens', [{ token: 'x'.repeat(20), role: 'admin' }], (f) => failures.push(f.reason));
  const { token, revoke } = a.grant({ kind: 'tenant', tenantId: 't1', name: 'incident-hook' }, ['IsolateVm'], 60_000);
  assert.deepEqual(a.authenticate(`Bearer ${token}`, 'IsolateVm'), { kind: 'tenant', tenantId: 't1', name: 'incident-hook' });
  assert.throws(() => a.authenticate(`Bearer ${token}`, 'DeleteVm'), /may only call IsolateVm/);
  revoke();
  assert.throws(() => a.authenticate(`Bearer ${token}`, 'IsolateVm'), /invalid bearer token/);
  assert.deepEqual(failures, ['incident hook token used for DeleteVm', 'unknown token']);
  const expired = a.grant({ kind: 'admin', name: 'x' }, ['IsolateVm'], -1);
  assert.throws(() => a.authenticate(`Bearer ${expired.token}`, 'IsolateVm'), /invalid bearer token/);
});

test("the hook's .curlrc makes the guide's curl call reach this instance as JSON with the run's token", () => {
  assert.equal(curlrc({ host: '127.0.0.1', port: 18080 }, 'tok'), [
    '# Written by metald for one incident hook run; removed when it ends.',
    'header = "Content-Type: application/json"',
    'header = "Authorization: Bearer tok"',
    'connect-to = "localhost:8080:127.0.0.1:18080"',
    'connect-to = "127.0.0.1:8080:127.0.0.1:18080"',
    '',
  ].join('\n'));
  assert.match(curlrc({ host: '::', port: 8081 }, undefined), /connect-to = "localhost:8080:\[::1\]:8081"/);
});

test('drift repairs logged by the firewall plane and the reconciler become events', () => {
  for (const [file, msgs] of [['src/firewall/firewall-plane.ts', ['nftables drift repaired: table replaced', 'nftables drift repaired: elements']], ['src/lifecycle/reconciler.ts', ['reconcile repaired drift']]] as const) {
    const src = readFileSync(path.join(ROOT, file), 'utf8');
    for (const m of msgs) {
      assert.ok(src.includes(`'${m}'`), `${file} no longer logs "${m}"`);
      assert.ok(DRIFT_MESSAGES[m]);
    }
  }
  const ring = new EventRing(10, 60_000);
  const lines: string[] = [];
  const log = tapSecurityLog({ info: () => {}, warn: (_o: object, m?: string) => lines.push(m ?? ''), error: () => {}, level: 'info' }, ring);
  log.warn({ guard_table: true, host_table: false }, 'nftables drift repaired: table replaced');
  log.warn({ checked: 3, recreated: ['v1'], deleted: [] }, 'reconcile repaired drift');
  log.warn({ vm_id: 'v1', tenant_id: 't', reason: 'r', security_event: 'vm_isolated' }, 'vm isolated');
  assert.equal(log.level, 'info', 'other properties pass through');
  assert.deepEqual(ring.query({ limit: 10 }).events.map((e) => [e.type, e.severity, e.reason, e.detail ?? '']), [
    ['drift_repaired', 'high', 'nft_table', 'replaced: guard table'],
    ['drift_repaired', 'low', 'vm_state', 'recreated: v1'],
    ['vm_isolated', 'high', 'r', ''],
  ]);
  assert.equal(lines.length, 3);
});

test('config: security_events and incident_response defaults, and errors naming the key', () => {
  const { config } = parseConfig('backend: sandbox\nauth: { mode: none }\n', 't.yaml');
  assert.deepEqual(config.security_events.escalation, { packets: 1000, window: 10_000 });
  assert.equal(config.security_events.syslog.socket, '/dev/log');
  assert.deepEqual(config.incident_response.actions, { critical: 'isolate', high: 'enhanced_monitoring', medium: 'log', low: 'none' });
  const { config: c2 } = parseConfig('backend: sandbox\nauth: { mode: none }\nsecurity_events:\n  syslog:\n    remote: { address: "siem.example.com:6514", protocol: udp }\n', 't.yaml');
  assert.deepEqual(c2.security_events.syslog.remote, { address: { host: 'siem.example.com', port: 6514 }, protocol: 'udp', max_buffered: 10_000 });
  assert.throws(() => parseConfig('backend: sandbox\nauth: { mode: none }\nsecurity_events:\n  syslog:\n    remote: { address: "siem" }\n', 't.yaml'),
    /security_events\.syslog\.remote\.address \(line 5\): "siem" is not host:port/);
  assert.throws(() => parseConfig('backend: sandbox\nauth: { mode: none }\nincident_response:\n  hook: incident.sh\n', 't.yaml'), /incident_response\.hook \(line 4\): must be an absolute path/);
  assert.throws(() => parseConfig('backend: sandbox\nauth: { mode: none }\nincident_response:\n  actions: { critical: reboot }\n', 't.yaml'), /incident_response\.actions\.critical/);
});
