// The firewall's pure parts: the PortGuard model from a stored VM, the guard
// and host tables as golden files, per-port element updates of constant size,
// and the kernel-view diff. UPDATE_GOLDEN=1 rewrites test/fixtures/nft/*.nft.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import type { VmRecord } from '../../src/core/vm/record.js';
import { elementDelta, portElements } from '../../src/firewall/guard-elements.js';
import { rateClasses, renderGuardTable } from '../../src/firewall/guard-table.js';
import { renderHostTable } from '../../src/firewall/host-table.js';
import { elementDiff, ruleCounts, textKey } from '../../src/firewall/kernel-view.js';
import { eui64, portGuard, raSources, type GuardDefaults } from '../../src/firewall/port-guard.js';

const fixture = (name: string) => new URL(`../fixtures/nft/${name}`, import.meta.url).pathname;
function golden(name: string, text: string): void {
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(fixture(name), text);
  assert.equal(text, readFileSync(fixture(name), 'utf8'), `${name} differs from the golden file`);
}

const DEFAULTS: GuardDefaults = {
  raGuard: true,
  sourceGuard: true,
  extensionHeaderFiltering: true,
  rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
  bridges: new Map([['br-prod', { raGuard: true, allowedRaSources: ['2600:beef:1000::1', 'fe80::1'], mldSnooping: true }]]),
};

function vm(id: string, dev: string, mac: string, address: string, allocation: string, security: Record<string, unknown> = {}): VmRecord {
  return {
    id, tenantId: 'test-customer', state: 'running', isolated: false, isolationReason: '', isolatedAt: null,
    config: { network: [{ id: 'eth0', ipv6: { security } }] } as VmRecord['config'],
    backend: 'sandbox', backendState: {}, failureReason: '', createdAt: '', updatedAt: '', revision: 1,
    nics: [{ id: 'eth0', hostDevice: dev, mac, bridge: 'br-prod', vlanId: 100, ipv6Address: address, ipv6Gateway: '', ipv6Allocation: allocation }],
  };
}

// The guide's step 3.2 VM: privacy extensions under strict validation, so it owns its /64.
const GUIDE_VM = vm('guide', 'mtvguide0', '02:00:00:00:00:10', '2600:beef:1000:100::10/64', '2600:beef:1000:100::/64', {
  enable_ra_guard: true, allowed_ra_sources: ['2600:BEEF:1000:100::1'], enable_source_guard: true, strict_source_validation: true,
  block_hop_by_hop: true, block_routing_header: true, block_fragment_header: true, nd_rate_limit: 100, icmpv6_rate_limit: 100, multicast_rate_limit: 50,
});
const PLAIN_VM = vm('plain', 'mtvplain0', '02:00:00:00:00:20', '2600:beef:1000::20/64', '2600:beef:1000::20/128', { strict_source_validation: false });

test('EUI-64 interface identifiers follow RFC 4291 (U/L bit flipped, ff:fe inserted)', () => {
  assert.equal(eui64('52:54:00:12:34:56').toString(16), '505400fffe123456');
  assert.equal(eui64('02:00:00:00:00:10').toString(16), 'fffe000010');
});

test('the guide VM: whole /64, strict link-local, every block from its security block, its rates', () => {
  const g = portGuard(GUIDE_VM, GUIDE_VM.nics[0]!, DEFAULTS);
  assert.deepEqual(g.sources64.map((v) => v.toString(16)), ['2600beef10000100']);
  assert.deepEqual(g.sources128, [0x2600_beef_1000_0100_0000_0000_0000_0010n, 0xfe80_0000_0000_0000_0000_00ff_fe00_0010n]);
  assert.equal(g.blockFragment, true);
  assert.equal(g.blockDestinationOptions, false);
  assert.deepEqual(g.rates, { nd: 100, icmp: 100, mcast: 50, ra: 10 });
  // 2600:beef:1000:100::1 is the bridge's own (the host sends those RAs); fe80::1 is another router.
  assert.deepEqual(g.raSources.map((v) => v.toString(16)), ['fe800000000000000000000000000001']);
});

test('a /128 VM: its address and its SLAAC address exact, any link-local when not strict; fragments allowed by default', () => {
  const g = portGuard(PLAIN_VM, PLAIN_VM.nics[0]!, DEFAULTS);
  assert.deepEqual(g.sources64.map((v) => v.toString(16)), ['fe80000000000000']);
  assert.equal(g.sources128.length, 3);
  assert.deepEqual(g.sources128, [0x2600_beef_1000_0000_0000_0000_0000_0020n, 0x2600_beef_1000_0000_0000_00ff_fe00_0020n, 0xfe80_0000_0000_0000_0000_00ff_fe00_0020n]);
  assert.equal(g.blockFragment, false);
  assert.equal(g.blockHopByHop, true);
});

test('allowed RA sources that are not link-local (and not the bridge) cannot be matched and are left out', () => {
  assert.deepEqual(raSources({ raGuard: true, allowedRaSources: ['2001:db8::1'], mldSnooping: true }, ['fe80::99']).map((v) => v.toString(16)), ['fe800000000000000000000000000099']);
});

test('guard table and host table render to their golden files', () => {
  const ports = [GUIDE_VM, PLAIN_VM].map((v) => portGuard(v, v.nics[0]!, DEFAULTS));
  golden('guard-table.nft', renderGuardTable({ family: 'bridge', table: 'metald_guard', ports, trustedPorts: ['mtup0'], defaultRates: DEFAULTS.rates, logGroup: 2 }));
  golden('guard-table-routed.nft', renderGuardTable({ family: 'ip6', table: 'metald_routed', ports, trustedPorts: [], defaultRates: DEFAULTS.rates, logGroup: 2 }));
  golden('host-table.nft', renderHostTable({
    table: 'metald_security', vmBridges: ['br-prod'], vmRanges: ['2600:beef:1000::/44'], managementPrefixes: ['2600:beef:1000:ffff::/64'],
    managementPorts: [22, 8080], allowedRaSources: ['fe80::1'], ndRate: 1000, icmpRate: 1000, icmpErrorRate: 100, logGroup: 1,
  }));
});

test('without a management prefix the host table never drops management traffic (no lock-out)', () => {
  const t = renderHostTable({ table: 't', vmBridges: ['br0'], vmRanges: [], managementPrefixes: [], managementPorts: [22], allowedRaSources: [], ndRate: 1, icmpRate: 1, icmpErrorRate: 1, logGroup: 1 });
  const input = t.slice(t.indexOf('chain input'), t.indexOf('chain forward'));
  assert.match(input, /policy accept/);
  assert.doesNotMatch(input, /^\t\tcounter log .* drop$/m);
});

test('guards come before any accept in the host forward chain (SPEC-NOTES 5)', () => {
  const t = renderHostTable({ table: 't', vmBridges: ['br0'], vmRanges: ['fd00::/48'], managementPrefixes: [], managementPorts: [22], allowedRaSources: [], ndRate: 1, icmpRate: 1, icmpErrorRate: 1, logGroup: 1 });
  const fwd = t.slice(t.indexOf('chain forward')).split('\n');
  const at = (needle: string) => fwd.findIndex((l) => l.includes(needle));
  const guards = [at('rt type 0'), at('!= @vm_ranges')];
  assert.ok(guards.every((g) => g > 0), 'both guards are in the chain');
  // Only replies of tracked connections may come first: conntrack matched their whole tuple, source included.
  assert.ok(at('rt type 0') < at('established'), 'RH0 is dropped before anything is accepted');
  const accepts = fwd.flatMap((l, i) => (/ accept$/.test(l) && !l.includes('established') ? [i] : []));
  assert.ok(accepts.length >= 2);
  for (const i of accepts) assert.ok(guards.every((g) => g < i), `"${fwd[i]!.trim()}" comes before a guard`);
});

test('adding a VM is element adds only, a constant number; isolating it touches only the fast paths and the isolated set', () => {
  const g = portGuard(PLAIN_VM, PLAIN_VM.nics[0]!, DEFAULTS);
  const add = elementDelta('bridge t', new Map(), portElements(g));
  assert.ok(add.every((l) => l.startsWith('add element bridge t ')), 'elements only: no rule, chain, set or verdict-map jump');
  assert.ok(add.length <= 40);
  const iso = elementDelta('bridge t', portElements(g), portElements({ ...g, isolated: true }));
  assert.deepEqual(iso.map((l) => l.split(' ').slice(0, 5).join(' ')).sort(),
    ['add element bridge t isolated', 'delete element bridge t fast', 'delete element bridge t rx_fast', 'delete element bridge t rx_zone']);
  const del = elementDelta('bridge t', portElements(g), new Map());
  assert.equal(del.length, add.length);
  assert.ok(del.every((l) => l.startsWith('delete element bridge t ')));
});

test('rate classes: the defaults plus each distinct (kind, rate) once', () => {
  const ports = [GUIDE_VM, PLAIN_VM, GUIDE_VM].map((v) => portGuard(v, v.nics[0]!, DEFAULTS));
  assert.deepEqual(rateClasses(ports, DEFAULTS.rates).map(([k, r]) => `${k}/${r}`), ['icmp/100', 'icmp/1000', 'mcast/50', 'mcast/500', 'nd/100', 'nd/1000', 'ra/10']);
});

test('kernel view: elements compared by meaning (address text, integer width), map verdicts included', () => {
  const have = [{ set: { elem: [{ concat: ['p1', 'fd00::0:1'] }, { concat: ['p2', '2001:db8::1'] }] } }];
  const diff = elementDiff(have, ['"p1" . fd00::1', '"p3" . fd00::3']);
  assert.deepEqual(diff, { add: ['"p3" . fd00::3'], remove: ['"p2" . 2001:db8::1'] });
  assert.equal(textKey('"p" . 0x00ab'), textKey('"p" . 0xab'));
  const map = [{ map: { elem: [['p1', { jump: { target: 'rl_nd_1000' } }]] } }];
  assert.deepEqual(elementDiff(map, ['"p1" : jump rl_nd_100']), { add: ['"p1" : jump rl_nd_100'], remove: ['"p1"'] });
  assert.deepEqual(elementDiff([{ set: { elem: [{ concat: ['p', '12345678901234567890'] }] } }], ['"p" . 0xab54a98ceb1f0ad2']).add, []);
  assert.deepEqual([...ruleCounts([{ chain: { name: 'a' } }, { rule: { chain: 'a' } }, { chain: { name: 'b' } }])], [['a', 1], ['b', 0]]);
});
