// `metald doctor` without the host: which checks are must-have for which
// config, how an observation becomes a status, and the exact text and JSON.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import {
  buildChecks, doctorContext, HOST_WIDE_NOTE, judge, SYSCTL_BASELINE, type Check, type CheckResult, type Target,
} from '../../src/doctor/checks.js';
import { mustHaveFailures, mustHaveMessage, renderJson, renderTable, renderText, summaryLine } from '../../src/doctor/report.js';

const DP: Target = { kind: 'netns', name: 'metald-dp' };

function cfg(yaml: string) {
  return parseConfig(`auth: {mode: none}\n${yaml}`, 'test').config;
}

const WITH_BRIDGE = `backend: sandbox
ipv6:
  enabled: true
  default_pool: {id: d, prefix: "fd00:6d74::/48"}
  bridge: {name: br0, ipv6_address: "fd00:6d74::1/64"}
`;

const RESULTS: CheckResult[] = [
  { id: 'net.ipv6.conf.all.accept_ra', title: 'ignore RAs', level: 'must', status: 'fail', found: '1', expected: '0',
    fix: 'ip netns exec metald-dp sysctl -w net.ipv6.conf.all.accept_ra=0' },
  { id: 'net.ipv6.icmp.ratelimit', title: 'ICMPv6 rate limit', level: 'must', status: 'pass', found: '100', expected: '100', fix: '' },
  { id: 'net.ipv6.neigh.default.gc_thresh3', title: 'gc_thresh3', level: 'must', status: 'n-a', found: 'root ns: 1024',
    expected: '4096', fix: 'host-wide: metald doctor --root --fix', note: HOST_WIDE_NOTE },
  { id: 'link.vlan', title: '802.1Q', level: 'advice', status: 'warn', found: 'not supported (Unknown device type)',
    expected: 'supported', fix: 'kernel with CONFIG_VLAN_8021Q (modprobe 8021q)' },
  { id: 'bin.nft', title: 'nft', level: 'must', status: 'pass', found: 'v1.0.6', expected: 'installed', fix: '' },
];

const GOLDEN = `target: network namespace metald-dp
CHECK                              STATUS  FOUND                                EXPECTED   FIX
net.ipv6.conf.all.accept_ra        fail    1                                    0          ip netns exec metald-dp sysctl -w net.ipv6.conf.all.accept_ra=0
net.ipv6.icmp.ratelimit            pass    100                                  100
net.ipv6.neigh.default.gc_thresh3  n-a     root ns: 1024                        4096       host-wide: metald doctor --root --fix
link.vlan                          warn    not supported (Unknown device type)  supported  kernel with CONFIG_VLAN_8021Q (modprobe 8021q)
bin.nft                            pass    v1.0.6                               installed

n-a: n/a in this namespace (host-wide: checked in the root namespace read-only)
NOT ready: 1 of 3 must-have checks fail: net.ipv6.conf.all.accept_ra (1 advice warning)
`;

describe('doctor report', () => {
  it('renders the aligned table with a footnote for n-a and a verdict (golden)', () => {
    assert.equal(renderTable(RESULTS, DP), GOLDEN);
  });

  it('says ready when every must-have passes, counting advice warnings', () => {
    const fine = RESULTS.filter((r) => r.status !== 'fail');
    assert.equal(summaryLine(fine), 'ready: all 2 must-have checks pass (1 advice warning)');
    assert.equal(renderTable(fine, { kind: 'root' }).split('\n')[0], 'target: the root network namespace');
    assert.deepEqual(mustHaveFailures(fine), []);
  });

  it('only failed must-haves count: n-a and warn do not', () => {
    assert.deepEqual(mustHaveFailures(RESULTS).map((r) => r.id), ['net.ipv6.conf.all.accept_ra']);
  });

  it('renders the start-up refusal with found, expected and fix', () => {
    assert.equal(mustHaveMessage(mustHaveFailures(RESULTS), DP), [
      'host not ready for metald (network namespace metald-dp): 1 must-have check failed:',
      '  net.ipv6.conf.all.accept_ra: found 1, expected 0; fix: ip netns exec metald-dp sysctl -w net.ipv6.conf.all.accept_ra=0',
      'run `metald doctor` for the full report',
    ].join('\n'));
  });

  it('renders JSON for scripts', () => {
    const j = JSON.parse(renderJson({ ok: false, target: DP, applied: [], results: RESULTS })) as Record<string, unknown>;
    assert.equal(j['ok'], false);
    assert.deepEqual(j['target'], { kind: 'netns', name: 'metald-dp' });
    assert.deepEqual(j['must_have_failures'], ['net.ipv6.conf.all.accept_ra']);
    assert.deepEqual(j['results'], RESULTS);
    assert.equal('before' in j, false);
  });

  it('with --fix prints the table before, what was applied, and the table after', () => {
    const after = RESULTS.map((r) => (r.status === 'fail' ? { ...r, status: 'pass' as const, found: '0', fix: '' } : r));
    const text = renderText({ ok: true, target: DP, applied: ['net.ipv6.conf.all.accept_ra=0'], results: after, before: RESULTS });
    const parts = text.split('\nafter the fix:\n');
    assert.equal(parts.length, 2);
    assert.ok(parts[0]!.startsWith(GOLDEN));
    assert.match(parts[0]!, /fix: applied in network namespace metald-dp: net\.ipv6\.conf\.all\.accept_ra=0\n/);
    assert.match(parts[1]!, /^target: network namespace metald-dp\n/);
    assert.match(parts[1]!, /ready: all 3 must-have checks pass/);
  });
});

describe('doctor checks', () => {
  const byId = (checks: Check[]) => new Map(checks.map((c) => [c.id, c]));

  it('covers the whole sysctl baseline of the guide, with the expected values', () => {
    const checks = byId(buildChecks(doctorContext(cfg(WITH_BRIDGE), DP)));
    assert.equal(SYSCTL_BASELINE.length, 15);
    for (const s of SYSCTL_BASELINE) assert.equal(checks.get(s.key)?.expected, s.value, s.key);
    assert.equal(checks.get('net.ipv6.neigh.default.gc_thresh3')?.expected, '4096');
    assert.deepEqual(SYSCTL_BASELINE.filter((s) => s.hostWide).map((s) => s.key.split('.').pop()),
      ['gc_thresh1', 'gc_thresh2', 'gc_thresh3', 'gc_interval']);
  });

  it('fix commands target the namespace, or the root namespace only when it is the target', () => {
    const inNs = byId(buildChecks(doctorContext(cfg(WITH_BRIDGE), DP)));
    assert.equal(inNs.get('net.ipv6.conf.all.forwarding')?.fix, 'ip netns exec metald-dp sysctl -w net.ipv6.conf.all.forwarding=1');
    const root = byId(buildChecks(doctorContext(cfg(WITH_BRIDGE), { kind: 'root' })));
    assert.equal(root.get('net.ipv6.conf.all.forwarding')?.fix, 'sysctl -w net.ipv6.conf.all.forwarding=1');
  });

  it('derives must-have from the config', () => {
    const levels = (yaml: string) => new Map(buildChecks(doctorContext(cfg(yaml), DP)).map((c) => [c.id, c.level]));
    const sandbox = levels('backend: sandbox\n');
    assert.equal(sandbox.get('bin.ip'), 'must');
    assert.equal(sandbox.get('bin.nft'), 'must');
    assert.equal(sandbox.get('bin.radvd'), 'advice');
    assert.equal(sandbox.get('bin.bridge'), 'advice');
    assert.equal(sandbox.get('link.tun'), 'advice');
    assert.equal(sandbox.get('bin.qemu'), 'advice');
    assert.equal(sandbox.get('kvm'), 'advice');
    assert.equal(sandbox.get('net.ipv6.conf.all.accept_ra'), 'advice', 'no IPv6: metald touches no host networking');

    const bridged = levels(WITH_BRIDGE);
    assert.equal(bridged.get('bin.radvd'), 'must');
    assert.equal(bridged.get('bin.bridge'), 'must');
    assert.equal(bridged.get('link.bridge'), 'must');
    assert.equal(bridged.get('nft.bridge.exthdr'), 'must');
    assert.equal(bridged.get('net.ipv6.conf.all.accept_ra'), 'must');
    for (const advice of ['nft.bridge.ct', 'link.vlan', 'link.vlan_filtering']) assert.equal(bridged.get(advice), 'advice', advice);

    const qemu = levels('backend: qemu\n');
    assert.equal(qemu.get('bin.qemu'), 'must');
    assert.equal(qemu.get('link.tun'), 'must');
    assert.equal(qemu.get('kvm'), 'advice', 'QEMU falls back to TCG');
    const fc = levels('backend: firecracker\n');
    assert.equal(fc.get('link.tun'), 'must');
    assert.equal(fc.get('kvm'), 'must');
  });

  it('judges observations: must → fail, advice → warn, n-a keeps its fix only when the root value is off', () => {
    const checks = byId(buildChecks(doctorContext(cfg(WITH_BRIDGE), DP)));
    const ra = checks.get('net.ipv6.conf.all.accept_ra')!;
    assert.equal(judge(ra, { ok: false, found: '1' }).status, 'fail');
    assert.equal(judge(ra, { ok: true, found: '0' }).fix, '');
    assert.equal(judge(checks.get('link.vlan')!, { ok: false, found: 'x' }).status, 'warn');
    const gc = checks.get('net.ipv6.neigh.default.gc_thresh1')!;
    const bad = judge(gc, { ok: false, na: true, found: 'root ns: 128', fix: 'host-wide', note: HOST_WIDE_NOTE });
    assert.deepEqual([bad.status, bad.fix, bad.note], ['n-a', 'host-wide', HOST_WIDE_NOTE]);
    assert.equal(judge(gc, { ok: true, na: true, found: 'root ns: 1024', fix: 'host-wide' }).fix, '');
  });
});
