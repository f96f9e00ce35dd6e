// The two rule languages: the guide's examples parse to the intended AST,
// malformed rules fail with a ParseError at the right column and a clear
// "expected ..." message, and (property tests) nothing but a ParseError is
// ever thrown, and the printers round-trip.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ParseError, tokenize } from '../../src/core/policy/lexer.js';
import { parseNicRule, printNicRule, type NicRule } from '../../src/core/policy/nic-rules.js';
import { parseHostRule, printHostRule, EXT_HEADERS, RATE_TRAFFIC, type HostRule } from '../../src/core/policy/host-rules.js';
import { parsePrefix } from '../../src/core/net/ipv6.js';

const ANY = { addresses: 'any' as const, ports: null };

test('guide step 3.2 rules parse to their AST', () => {
  assert.deepEqual(parseNicRule('allow tcp from any to any port 80,443'), {
    action: 'allow', protocol: 'tcp', from: ANY, to: { addresses: 'any', ports: [{ from: 80, to: 80 }, { from: 443, to: 443 }] },
  });
  assert.deepEqual(parseNicRule('allow tcp from 2600:beef:1000::/64 to any port 22'), {
    action: 'allow', protocol: 'tcp', from: { addresses: [parsePrefix('2600:beef:1000::/64')], ports: null }, to: { addresses: 'any', ports: [{ from: 22, to: 22 }] },
  });
  assert.deepEqual(parseNicRule('allow icmpv6 from any to any'), { action: 'allow', protocol: 'icmpv6', from: ANY, to: ANY });
  assert.deepEqual(parseNicRule('deny all from any to any'), { action: 'deny', protocol: 'all', from: ANY, to: ANY });
  assert.deepEqual(parseNicRule('allow tcp from any to any port 53,80,443').to.ports?.length, 3);
});

test('per-NIC rule forms: case, spacing, addresses, source ports, ranges, ipv6 = all', () => {
  const r = parseNicRule('  ALLOW  UDP from 2600:BEEF::1 , 2600:beef:1::/48 port 53 to any port 1000-2000, 3000 ');
  assert.equal(printNicRule(r), 'allow udp from 2600:beef::1,2600:beef:1::/48 port 53 to any port 1000-2000,3000');
  assert.equal(parseNicRule('deny ipv6 from any to fe80::/10').protocol, 'all');
  assert.deepEqual(parseNicRule('deny ipv6 from any to 2600::1').to.addresses, [{ network: parsePrefix('2600::1/128').network, length: 128 }]);
});

// [rule, column, message]
const NIC_ERRORS: [string, number, string][] = [
  ['', 1, 'expected "allow" or "deny", got the end of the rule'],
  ['permit tcp from any to any', 1, 'expected "allow" or "deny", got "permit"'],
  ['allow sctp from any to any', 7, 'expected a protocol: "tcp", "udp", "icmpv6" or "all", got "sctp"'],
  ['allow tcp any to any', 11, 'expected "from" (rules read like: allow tcp from any to any port 443), got "any"'],
  ['allow tcp from any', 19, 'expected "port" or "to", got the end of the rule'],
  ['allow icmpv6 from any any', 23, 'expected "to", got "any"'],
  ['allow tcp from any to any port', 31, 'expected a port like 443 or a range like 8000-8080, got the end of the rule'],
  ['allow tcp from any to any port 80,', 35, 'expected a port like 443 or a range like 8000-8080, got the end of the rule'],
  ['allow tcp from any to any port 0', 32, 'ports are 1-65535, got 0'],
  ['allow tcp from any to any port 70000', 32, 'ports are 1-65535, got 70000'],
  ['allow tcp from any to any port 90-80', 32, 'the range 90-80 ends before it starts'],
  ['allow tcp from any to any port http', 32, 'expected a port like 443 or a range like 8000-8080, got "http"'],
  ['allow icmpv6 from any to any port 80', 30, 'ports need tcp or udp (this rule is for icmpv6)'],
  ['allow all from any port 53 to any', 20, 'ports need tcp or udp (this rule is for all)'],
  ['allow tcp from 10.0.0.0/8 to any', 16, '10.0.0.0/8 is IPv4: metald\'s VM networks are IPv6 only'],
  ['allow tcp from 2600:beef:1000:mgmt::/64 to any', 16, 'expected "any", an IPv6 address or a prefix like 2600:beef::/64, got "2600:beef:1000:mgmt::/64"'],
  ['allow tcp from 2600:beef::1/64 to any', 16, '"2600:beef::1/64" has host bits set, did you mean 2600:beef::/64?'],
  ['allow tcp from 2600::/129 to any', 16, '"2600::/129" is not an IPv6 prefix'],
  ['allow tcp from 2600::1,any to any', 24, 'expected an IPv6 address or prefix, got "any"'],
  ['allow tcp from any to any port 22 log', 35, 'expected the end of the rule, got "log"'],
  ['allow tcp from any to any extra', 27, 'expected "port" or the end of the rule, got "extra"'],
  ['allow udp from any to any, port 53', 26, 'expected "port" or the end of the rule, got a comma'],
  ['allow tcp from any to any port 22\u00a0', 34, 'unexpected character "\u00a0" (rules are plain ASCII)'],
];

for (const [rule, column, message] of NIC_ERRORS) {
  test(`per-NIC rule error: ${JSON.stringify(rule)}`, () => {
    assert.throws(() => parseNicRule(rule), (e: unknown) => {
      assert.ok(e instanceof ParseError, `not a ParseError: ${e}`);
      assert.equal(e.message, message);
      assert.equal(e.column, column);
      return true;
    });
  });
}

test('guide section 2 rules parse to their AST', () => {
  const cases: [string, HostRule][] = [
    ['DENY ipv6 between vlans except same-tenant', { kind: 'between-vlans', action: 'deny', exception: 'same-tenant' }],
    ['ALLOW ipv6 to shared-services vlan 999', { kind: 'to', action: 'allow', segment: 'shared-services', vlan: 999 }],
    ['DENY ipv6 extension-headers hop-by-hop,routing,fragment', { kind: 'extension-headers', action: 'deny', headers: ['hop-by-hop', 'routing', 'fragment'] }],
    ['RATE-LIMIT icmpv6 100pps per-vm', { kind: 'rate-limit', traffic: 'icmpv6', pps: 100, scope: 'per-vm' }],
    ['RATE-LIMIT nd 50pps per-vm', { kind: 'rate-limit', traffic: 'nd', pps: 50, scope: 'per-vm' }],
    ['ALLOW ipv6 between vlans with explicit policy', { kind: 'between-vlans', action: 'allow', exception: 'explicit-policy' }],
    ['DENY ipv6 extension-headers hop-by-hop,routing', { kind: 'extension-headers', action: 'deny', headers: ['hop-by-hop', 'routing'] }],
    ['RATE-LIMIT icmpv6 200pps per-vm', { kind: 'rate-limit', traffic: 'icmpv6', pps: 200, scope: 'per-vm' }],
    ['allow ipv6 to vlan 999', { kind: 'to', action: 'allow', segment: null, vlan: 999 }],
    ['DENY ipv6 to tier2-customers', { kind: 'to', action: 'deny', segment: 'tier2-customers', vlan: null }],
    ['DENY ipv6 between vlans', { kind: 'between-vlans', action: 'deny', exception: 'none' }],
  ];
  for (const [text, ast] of cases) {
    assert.deepEqual(parseHostRule(text), ast, text);
    assert.deepEqual(parseHostRule(printHostRule(ast)), ast, `round trip of ${text}`);
  }
  assert.equal(printHostRule(parseHostRule('rate-limit ND 50PPS PER-VM')), 'RATE-LIMIT nd 50pps per-vm');
});

const HOST_ERRORS: [string, number, string][] = [
  ['RATE-LIMIT nd 50 per-vm', 15, 'expected a rate like 50pps, got "50"'],
  ['RATE-LIMIT nd fast per-vm', 15, 'expected a rate like 50pps, got "fast"'],
  ['RATE-LIMIT nd', 14, 'expected a rate like 50pps, got the end of the rule'],
  ['RATE-LIMIT nd 0pps per-vm', 15, 'a rate is 1 to 1000000pps, got 0pps'],
  ['RATE-LIMIT nd 50pps', 20, 'expected "per-vm", got the end of the rule'],
  ['RATE-LIMIT nd 50pps per-host', 21, 'expected "per-vm", got "per-host"'],
  ['RATE-LIMIT tcp 50pps per-vm', 12, 'expected the traffic to limit: "icmpv6", "nd" or "multicast", got "tcp"'],
  ['PERMIT ipv6 between vlans', 1, 'expected "ALLOW", "DENY" or "RATE-LIMIT", got "PERMIT"'],
  ['DENY ip between vlans', 6, 'expected "ipv6", got "ip"'],
  ['DENY ipv6 across vlans', 11, 'expected "between", "to" or "extension-headers", got "across"'],
  ['DENY ipv6 between tenants', 19, 'expected "vlans", got "tenants"'],
  ['ALLOW ipv6 between vlans except same-tenant', 26, '"except same-tenant" only qualifies DENY'],
  ['DENY ipv6 between vlans with explicit policy', 25, '"with explicit policy" only qualifies ALLOW'],
  ['DENY ipv6 between vlans except', 31, 'expected "same-tenant", got the end of the rule'],
  ['DENY ipv6 between vlans please', 25, 'expected "except same-tenant" or the end of the rule, got "please"'],
  ['ALLOW ipv6 between vlans with explicit', 39, 'expected "policy", got the end of the rule'],
  ['ALLOW ipv6 to shared-services vlan 5000', 36, 'VLAN ids are 1-4094, got 5000'],
  ['ALLOW ipv6 to shared-services vlan', 35, 'expected a VLAN id (1-4094), got the end of the rule'],
  ['ALLOW ipv6 to', 14, 'expected a pool id (like shared-services) or "vlan", got the end of the rule'],
  ['ALLOW ipv6 to shared-services vlan 999 now', 40, 'expected the end of the rule, got "now"'],
  ['ALLOW ipv6 extension-headers fragment', 1, 'extension headers are allowed unless denied: only DENY ipv6 extension-headers is a rule'],
  ['DENY ipv6 extension-headers hop-by-hop,', 40, 'expected an extension header: "hop-by-hop", "routing", "fragment" or "destination-options", got the end of the rule'],
  ['DENY ipv6 extension-headers hbh', 29, 'expected an extension header: "hop-by-hop", "routing", "fragment" or "destination-options", got "hbh"'],
  ['DENY ipv6 extension-headers routing fragment', 37, 'expected a comma or the end of the rule, got "fragment"'],
];

for (const [rule, column, message] of HOST_ERRORS) {
  test(`section-2 rule error: ${JSON.stringify(rule)}`, () => {
    assert.throws(() => parseHostRule(rule), (e: unknown) => {
      assert.ok(e instanceof ParseError, `not a ParseError: ${e}`);
      assert.equal(e.message, message);
      assert.equal(e.column, column);
      return true;
    });
  });
}

test('lexer: columns, commas, length bound', () => {
  assert.deepEqual(tokenize(' a,b  c'), [
    { text: 'a', column: 2, kind: 'word' }, { text: ',', column: 3, kind: 'comma' }, { text: 'b', column: 4, kind: 'word' }, { text: 'c', column: 7, kind: 'word' },
  ]);
  assert.throws(() => tokenize('a'.repeat(513)), (e: unknown) => e instanceof ParseError && e.column === 513);
});

// ---- property tests ----

const onlyParseErrors = (parse: (s: string) => unknown) => (s: string) => {
  try {
    parse(s);
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
    // A column points into the rule or just past its end.
    if (!(e.column >= 1 && e.column <= s.length + 1)) throw new Error(`column ${e.column} outside ${JSON.stringify(s)}`);
  }
};

const WORDS = ['allow', 'deny', 'tcp', 'udp', 'icmpv6', 'all', 'ipv6', 'from', 'to', 'any', 'port', ',', '80', '1-65535', '0', '2600::/64', '2600::1', '::', 'fe80::/10', '1.2.3.4',
  'ALLOW', 'DENY', 'RATE-LIMIT', 'between', 'vlans', 'except', 'same-tenant', 'with', 'explicit', 'policy', 'vlan', '999', 'nd', 'multicast', '50pps', 'per-vm',
  'extension-headers', 'hop-by-hop', 'routing', 'fragment', 'shared-services', '', ' ', '\t', 'x'];
const wordSoup = fc.array(fc.constantFrom(...WORDS), { maxLength: 14 }).map((ws) => ws.join(' '));
const anyText = fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 40 }), wordSoup);

test('property: the parsers throw nothing but a ParseError, with a column inside the rule', () => {
  fc.assert(fc.property(anyText, (s) => { onlyParseErrors(parseNicRule)(s); onlyParseErrors(parseHostRule)(s); }), { numRuns: 3000 });
});

const port = fc.integer({ min: 1, max: 65535 });
const portRange = fc.oneof(port.map((p) => ({ from: p, to: p })), fc.tuple(port, port).map(([a, b]) => ({ from: Math.min(a, b), to: Math.max(a, b) })));
const prefix = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 128 })).map(([n, len]) => ({
  network: len === 0 ? 0n : (n >> BigInt(128 - len)) << BigInt(128 - len), length: len,
}));
const addresses = fc.oneof(fc.constant('any' as const), fc.array(prefix, { minLength: 1, maxLength: 4 }));
const nicRule: fc.Arbitrary<NicRule> = fc.constantFrom('tcp', 'udp', 'icmpv6', 'all').chain((protocol) => {
  const ports = protocol === 'tcp' || protocol === 'udp' ? fc.option(fc.array(portRange, { minLength: 1, maxLength: 4 }), { nil: null }) : fc.constant(null);
  const ep = fc.record({ addresses, ports }, { noNullPrototype: true });
  return fc.record({ action: fc.constantFrom('allow', 'deny'), protocol: fc.constant(protocol), from: ep, to: ep }, { noNullPrototype: true }) as fc.Arbitrary<NicRule>;
});

test('property: parseNicRule(printNicRule(r)) is r', () => {
  fc.assert(fc.property(nicRule, (r) => assert.deepEqual(parseNicRule(printNicRule(r)), r)), { numRuns: 1000 });
});

const hostRule: fc.Arbitrary<HostRule> = fc.oneof(
  fc.constantFrom<HostRule>(
    { kind: 'between-vlans', action: 'deny', exception: 'none' },
    { kind: 'between-vlans', action: 'deny', exception: 'same-tenant' },
    { kind: 'between-vlans', action: 'allow', exception: 'none' },
    { kind: 'between-vlans', action: 'allow', exception: 'explicit-policy' },
  ),
  fc.record({
    kind: fc.constant('to' as const), action: fc.constantFrom('allow' as const, 'deny' as const),
    segment: fc.option(fc.stringMatching(/^[a-z0-9][a-z0-9_.-]{0,20}$/).filter((s) => s !== 'vlan'), { nil: null }),
    vlan: fc.integer({ min: 1, max: 4094 }),
  }, { noNullPrototype: true }).chain((r) => (r.segment === null ? fc.constant(r) : fc.constantFrom(r, { ...r, vlan: null }))) as fc.Arbitrary<HostRule>,
  fc.uniqueArray(fc.constantFrom(...EXT_HEADERS), { minLength: 1 }).map((headers) => ({ kind: 'extension-headers' as const, action: 'deny' as const, headers })),
  fc.record({ kind: fc.constant('rate-limit' as const), traffic: fc.constantFrom(...RATE_TRAFFIC), pps: fc.integer({ min: 1, max: 1_000_000 }), scope: fc.constant('per-vm' as const) }, { noNullPrototype: true }),
);

test('property: parseHostRule(printHostRule(r)) is r', () => {
  fc.assert(fc.property(hostRule, (r) => assert.deepEqual(parseHostRule(printHostRule(r)), r)), { numRuns: 1000 });
});
