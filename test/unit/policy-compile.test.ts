// Policy classes: golden nft text for the guide's step 3.2 lists, classes
// shared by identical lists, stable mark ids, per-port elements of constant
// size, warnings (essential ICMPv6, unreachable rules, deny-only lists), the
// section-2 settings and how a VM gets them. UPDATE_GOLDEN=1 rewrites the
// files in test/fixtures/policy/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { classWarnings, compileClass, ruleLines } from '../../src/core/policy/compile.js';
import { classIdsFor, policyClasses } from '../../src/firewall/guard-table.js';
import { portElements } from '../../src/firewall/guard-elements.js';
import { portGuard, type GuardDefaults } from '../../src/firewall/port-guard.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';
import { parseNicRule } from '../../src/core/policy/nic-rules.js';
import { parseHostRule } from '../../src/core/policy/host-rules.js';
import { compileHostPolicy, refineGuard } from '../../src/core/policy/host-policy.js';
import { effectiveIsolation, effectiveProfile, policyForProfile } from '../../src/core/policy/attach.js';

const fixture = (name: string) => new URL(`../fixtures/policy/${name}`, import.meta.url).pathname;
function golden(name: string, text: string): void {
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(fixture(name), text);
  assert.equal(text, readFileSync(fixture(name), 'utf8'), `${name} differs from the golden file`);
}

const rules = (...r: string[]) => r.map(parseNicRule);
const GUIDE_IN = rules('allow icmpv6 from any to any', 'allow tcp from any to any port 80,443', 'deny all from any to any');
const GUIDE_OUT = rules('allow tcp from any to any port 53,80,443', 'allow icmpv6 from any to any', 'deny all from any to any');
const SSH_IN = rules('allow tcp from 2600:beef:1000::/64 to any port 22', 'allow udp from 2600:beef:1000::53 port 53 to any port 1024-65535', 'deny all from any to any');

const DEFAULTS: GuardDefaults = {
  raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
  bridges: new Map([['br0', { raGuard: true, allowedRaSources: [], mldSnooping: true }]]),
};
/** A port whose NIC carries these lists (as the API stores them). */
function port(dev: string, ingress: string[], egress: string[]) {
  const vm = { ...vmRecord(dev, [{ hostDevice: dev, bridge: 'br0', mac: '02:00:00:00:00:10', address: '2600:beef:1000::10/64' }]) };
  vm.config = { network: [{ id: 'eth0', security_policy: { ingress_rules: ingress, egress_rules: egress } }] };
  return portGuard(vm, vm.nics[0]!, DEFAULTS);
}
const G_IN = ['allow icmpv6 from any to any', 'allow tcp from any to any port 80,443', 'deny all from any to any'];
const G_OUT = ['allow tcp from any to any port 53,80,443', 'allow icmpv6 from any to any', 'deny all from any to any'];
const SSH = ['allow tcp from 2600:beef:1000::/64 to any port 22', 'allow udp from 2600:beef:1000::53 port 53 to any port 1024-65535', 'deny all from any to any'];

test('rules compile to bridge-family nft lines', () => {
  assert.deepEqual(ruleLines(parseNicRule('allow tcp from any to any port 80,443'), 'ingress'), [
    'tcp dport { 80, 443 } update @flows_tcp { ip6 saddr . th sport . ip6 daddr . th dport }'
    + ' update @flows_rx_tcp { oifname . ip6 saddr . th sport . ip6 daddr . th dport } accept',
  ]);
  assert.deepEqual(ruleLines(parseNicRule('allow tcp from 2600:beef:1000::/64 to any port 22'), 'egress'), [
    'ip6 saddr 2600:beef:1000::/64 tcp dport 22 update @flows_tcp { ip6 saddr . th sport . ip6 daddr . th dport } accept',
  ]);
  assert.deepEqual(ruleLines(parseNicRule('allow icmpv6 from any to any'), 'egress'), [
    'icmpv6 type echo-request update @flows_echo { ip6 saddr . ip6 daddr . icmpv6 id } accept', 'meta l4proto ipv6-icmp accept',
  ]);
  assert.deepEqual(ruleLines(parseNicRule('deny all from any to any'), 'egress'), ['jump drop_policy_deny']);
  assert.deepEqual(ruleLines(parseNicRule('deny udp from any to 2600::1,2600::/64'), 'ingress'), ['meta l4proto udp ip6 daddr { 2600::1, 2600::/64 } jump drop_policy_deny_out']);
  assert.deepEqual(ruleLines(parseNicRule('allow all from 2600::/48 to any'), 'egress'), [
    'meta l4proto tcp ip6 saddr 2600::/48 update @flows_tcp { ip6 saddr . th sport . ip6 daddr . th dport } accept',
    'meta l4proto udp ip6 saddr 2600::/48 update @flows_udp { ip6 saddr . th sport . ip6 daddr . th dport } accept',
    'ip6 saddr 2600::/48 icmpv6 type echo-request update @flows_echo { ip6 saddr . ip6 daddr . icmpv6 id } accept',
    'ip6 saddr 2600::/48 accept',
  ]);
});

test('a class chain: mark given back, essential ICMPv6 first, rules in order, default deny', () => {
  const c = compileClass('ingress', GUIDE_IN)!;
  assert.match(c.chain, /^pc_[0-9a-f]{16}$/);
  assert.equal(c.body[0], 'meta mark set 0');
  assert.equal(compileClass('egress', GUIDE_OUT)!.body[0], 'meta mark set iifname map @port_zone', 'what a VM sends keeps its sender mark');
  assert.match(c.body[1]!, /^icmpv6 type \{ destination-unreachable, packet-too-big, .*nd-neighbor-solicit, nd-neighbor-advert, .*mld2-listener-report \} accept$/);
  assert.equal(c.body.at(-1), 'jump drop_policy_deny_out');
  assert.equal(compileClass('egress', []), null, 'an empty list is no filtering, not deny-all');
  // Same rules, other spelling: same class. Other direction: another class.
  assert.equal(compileClass('ingress', rules('ALLOW ICMPV6 from any to any', 'allow tcp from any to any port 80, 443', 'deny ipv6 from any to any'))!.chain, c.chain);
  assert.notEqual(compileClass('egress', GUIDE_IN)!.chain, c.chain);
});

test('guide step 3.2 lists compile to their golden class chains; identical lists share a class', () => {
  const ports = [port('vm0001n0', G_IN, G_OUT), port('vm0002n0', G_IN, G_OUT), port('vm0003n0', SSH, [])];
  const classes = policyClasses(ports);
  assert.equal(classes.length, 4, 'two VMs with the guide lists share both classes; the third adds its own and its explicit one');
  golden('guide-step32.nft', classes.map((c) => `chain ${c.chain} {\n${c.body.map((l) => `\t${l}`).join('\n')}\n}\n`).join(''));
});

test('class ids: stable for classes that stay, smallest free id for new ones, never 0', () => {
  const a = port('vma', G_IN, []);
  const b = port('vmb', SSH, G_OUT);
  const ids = classIdsFor([a]);
  assert.deepEqual([...ids.values()], [1]);
  const next = classIdsFor([a, b], ids);
  assert.equal(next.get(a.policy.ingress!.chain), 1, 'kept');
  assert.deepEqual([...next.values()].sort(), [1, 2, 3, 4]);
});

test('a port binds to its classes with a constant number of elements', () => {
  const p = port('vm1n0', G_IN, G_OUT);
  const els = portElements(p, classIdsFor([p]));
  assert.equal(els.get('pol_in')!.length, 1);
  assert.equal(els.get('pol_out')!.length, 1);
  assert.equal(els.get('pol_in_x'), undefined, 'no rule names a source: nothing crosses a boundary');
  assert.equal(els.get('fast'), undefined, 'egress rules: no fast path out');
  assert.equal(els.get('rx_zone'), undefined, 'ingress rules: no fast path in');
});

test('warnings: denies that cannot touch essential ICMPv6, unreachable rules, deny-only lists', () => {
  assert.deepEqual(classWarnings(GUIDE_IN), [], 'the guide lists allow icmpv6 before deny all');
  const w = classWarnings(rules('allow tcp from any to any port 22', 'deny all from any to any', 'allow udp from any to any'));
  assert.deepEqual(w.map((x) => x.rule), [1, 2]);
  assert.match(w[0]!.message, /does not apply to the ICMPv6 that IPv6 needs \(neighbor discovery, MLD, packet-too-big/);
  assert.match(w[1]!.message, /is never reached: rule \[1\] matches every packet first/);
  const d = classWarnings(rules('deny tcp from any to any port 23'));
  assert.match(d.at(-1)!.message, /this list only denies/);
});

test('section-2 policies: settings, conflicts, and a guard refined but never loosened', () => {
  const strict = compileHostPolicy(['DENY ipv6 between vlans except same-tenant', 'ALLOW ipv6 to shared-services vlan 999',
    'DENY ipv6 extension-headers hop-by-hop,routing,fragment', 'RATE-LIMIT icmpv6 100pps per-vm', 'RATE-LIMIT nd 50pps per-vm'].map(parseHostRule));
  assert.deepEqual(strict, {
    policy: { betweenVlans: 'same-tenant', segments: [{ action: 'allow', pool: 'shared-services', vlan: 999 }], blockHeaders: ['hop-by-hop', 'routing', 'fragment'], rates: { icmpv6: 100, nd: 50 } },
    issues: [],
  });
  const moderate = compileHostPolicy(['ALLOW ipv6 between vlans with explicit policy', 'DENY ipv6 extension-headers hop-by-hop,routing', 'RATE-LIMIT icmpv6 200pps per-vm'].map(parseHostRule));
  assert.equal(moderate.policy.betweenVlans, 'explicit-policy');
  assert.equal(compileHostPolicy([]).policy.betweenVlans, 'deny', 'no rule: VLANs stay apart');
  assert.deepEqual(compileHostPolicy(['RATE-LIMIT nd 5pps per-vm', 'DENY ipv6 between vlans', 'RATE-LIMIT nd 9pps per-vm', 'ALLOW ipv6 between vlans'].map(parseHostRule)).issues, [
    { rule: 2, message: 'nd is already limited by rules[0]' },
    { rule: 3, message: 'a policy has one "between vlans" rule (rules[1] is the other)' },
  ]);
  const guard = { blockHopByHop: false, blockRouting: true, blockFragment: false, blockDestinationOptions: false, rates: { nd: 30, icmp: 1000, mcast: 500, ra: 10 }, device: 'vm1n0' };
  assert.deepEqual(refineGuard(guard, strict.policy), { ...guard, blockHopByHop: true, blockFragment: true, rates: { nd: 30, icmp: 100, mcast: 500, ra: 10 } });
  assert.equal(refineGuard(guard, undefined), guard);
});

test('attachment: profile is the stricter of VM and pool; isolation floor from the pool', () => {
  assert.equal(effectiveProfile('', 'medium'), 'medium');
  assert.equal(effectiveProfile('low', 'high'), 'high', 'a tenant cannot ask for less than its pool');
  assert.equal(effectiveProfile('high', 'low'), 'high');
  assert.equal(effectiveIsolation('', 'high', 'low'), 'strict');
  assert.equal(effectiveIsolation('none', 'high', 'low'), 'none', 'the VM\'s own profile is only a default');
  assert.equal(effectiveIsolation('none', 'high', 'medium'), 'moderate', 'the pool\'s profile is a floor');
  const policies = [{ id: 'strict-isolation', profiles: ['high' as const] }, { id: 'moderate-isolation', profiles: ['medium' as const] }];
  assert.equal(policyForProfile(policies, 'high')?.id, 'strict-isolation');
  assert.equal(policyForProfile(policies, 'low'), undefined);
});

test('a VM gets the policy of its profile: headers and rates refined, VLAN rule and segments in its zone', () => {
  const policy = compileHostPolicy([
    'DENY ipv6 between vlans except same-tenant', 'ALLOW ipv6 to shared-services vlan 999',
    'DENY ipv6 extension-headers hop-by-hop,routing,fragment', 'RATE-LIMIT icmpv6 100pps per-vm', 'RATE-LIMIT nd 50pps per-vm',
  ].map(parseHostRule)).policy;
  const d: GuardDefaults = {
    ...DEFAULTS,
    segmentation: {
      defaultProfile: 'high',
      vlans: true,
      pools: [{ id: 'tier2', network: 0x2600_beef_1001n << 80n, length: 48, profile: 'medium' }, { id: 'shared-services', network: 0x2600_beef_1010n << 80n, length: 48, profile: 'high' }],
      policies: [{ id: 'strict-isolation', profiles: ['high'], policy }],
    },
  };
  const vm = (id: string, address: string, vlan: number) => {
    const v = vmRecord(id, [{ hostDevice: id, bridge: 'br0', mac: '02:00:00:00:00:10', address }]);
    v.nics[0]!.vlanId = vlan;
    return v;
  };
  const high = vm('vmh', '2600:beef:1000::10/64', 100);
  const g = portGuard(high, high.nics[0]!, d, () => 7);
  assert.equal(g.blockFragment, true, 'the policy blocks fragments though the NIC did not ask');
  assert.deepEqual([g.rates.icmp, g.rates.nd], [100, 50]);
  assert.deepEqual(g.zone, { tenant: 7, vlan: 100, level: 'strict', between: 'same-tenant', policyProfile: 'high' });
  assert.equal(g.policy.log, true, 'high always logs its denies');
  const shared = vm('vms', '2600:beef:1010::10/64', 999);
  assert.deepEqual(portGuard(shared, shared.nics[0]!, d).reception.grantedBy, ['high'], 'the shared-services VM on VLAN 999 is granted to high VMs');
  const medium = vm('vmm', '2600:beef:1001::10/64', 100);
  const m = portGuard(medium, medium.nics[0]!, d);
  assert.deepEqual([m.zone.level, m.zone.between, m.zone.policyProfile, m.rates.icmp], ['moderate', 'deny', null, 1000], 'no policy for medium: VLANs separate, rates as configured');
});
