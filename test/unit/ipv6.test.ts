import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  IPV6_MAX,
  addressScope,
  formatInterface,
  formatIpv6,
  formatPrefix,
  interfacePrefix,
  isIpv6,
  parseInterface,
  parseIpv6,
  parsePrefix,
  prefixContains,
  prefixContainsPrefix,
  prefixLast,
  prefixesOverlap,
} from '../../src/core/net/ipv6.js';

test('parseIpv6 accepts the textual forms of RFC 4291', () => {
  const cases: [string, bigint][] = [
    ['::', 0n],
    ['::1', 1n],
    ['1::', 1n << 112n],
    ['2600:BEEF:1000::1', (0x2600beef1000n << 80n) | 1n],
    ['2600:beef:1000:0:0:0:0:1', (0x2600beef1000n << 80n) | 1n],
    ['0000:0000:0000:0000:0000:0000:0000:0001', 1n],
    ['::ffff:192.0.2.1', (0xffffn << 32n) | 0xc0000201n],
    ['64:ff9b::10.0.0.1', (0x64ff9bn << 96n) | 0x0a000001n],
    ['1:2:3:4:5:6:1.2.3.4', 0x0001000200030004000500060102_0304n],
    ['1:2:3:4:5:6:7::', 0x0001000200030004000500060007_0000n],
    ['::2:3:4:5:6:7:8', 0x0000000200030004000500060007_0008n],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', IPV6_MAX],
  ];
  for (const [text, value] of cases) assert.equal(parseIpv6(text), value, text);
});

test('parseIpv6 refuses what is not IPv6', () => {
  const bad = [
    '',
    ':',
    ':::',
    '1::2::3',
    ':1::',
    '1::2:',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8',
    '12345::',
    'g::1',
    '2600:beef:1000:mgmt::',
    'fe80::1%eth0',
    '::ffff:1.2.3',
    '::ffff:1.2.3.256',
    '::ffff:01.2.3.4',
    '1.2.3.4',
    '1.2.3.4::',
    '::1.2.3.4:5',
    ' ::1',
    '::1/128',
    '0'.repeat(50),
  ];
  for (const s of bad) {
    assert.throws(() => parseIpv6(s), { message: `${JSON.stringify(s)} is not an IPv6 address` }, s);
    assert.equal(isIpv6(s), false);
  }
});

test('formatIpv6 follows RFC 5952', () => {
  const cases: [string, string][] = [
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'], // longest run, not the first
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['0:0:0:0:0:0:0:0', '::'],
    ['::ffff:c000:0201', '::ffff:192.0.2.1'],
    ['2600:BEEF:1000::', '2600:beef:1000::'],
  ];
  for (const [input, want] of cases) assert.equal(formatIpv6(parseIpv6(input)), want, input);
  assert.throws(() => formatIpv6(-1n), RangeError);
  assert.throws(() => formatIpv6(IPV6_MAX + 1n), RangeError);
});

test('parsePrefix validates length and host bits', () => {
  assert.deepEqual(parsePrefix('2600:BEEF:1000::/44'), { network: 0x2600beef1000n << 80n, length: 44 });
  assert.deepEqual(parsePrefix('::/0'), { network: 0n, length: 0 });
  assert.deepEqual(parsePrefix('::1/128'), { network: 1n, length: 128 });
  for (const s of ['2600:BEEF:1001::/480', '2600::/129', '2600::', '2600::/', '2600::/064', '2600::/+4', 'x/64', '2600::/64/1']) {
    assert.throws(() => parsePrefix(s), { message: `${JSON.stringify(s)} is not an IPv6 prefix` }, s);
  }
  assert.throws(() => parsePrefix('2600:beef:1000::1/48'), {
    message: '"2600:beef:1000::1/48" has host bits set, did you mean 2600:beef:1000::/48?',
  });
});

test('parseInterface keeps host bits', () => {
  const i = parseInterface('2600:BEEF:1000::1/64');
  assert.deepEqual(i, { address: (0x2600beef1000n << 80n) | 1n, length: 64 });
  assert.equal(formatInterface(i), '2600:beef:1000::1/64');
  assert.equal(formatPrefix(interfacePrefix(i)), '2600:beef:1000::/64');
  assert.throws(() => parseInterface('2600::1'), /is not an IPv6 address with prefix length/);
});

test('containment and overlap', () => {
  const p44 = parsePrefix('2600:beef:1000::/44');
  const p48 = parsePrefix('2600:beef:1001::/48');
  const other = parsePrefix('2600:beef:1010::/48');
  assert.equal(prefixContains(p44, parseIpv6('2600:beef:100f:ffff::1')), true);
  assert.equal(prefixContains(p44, parseIpv6('2600:beef:1010::')), false);
  assert.equal(prefixContainsPrefix(p44, p48), true);
  assert.equal(prefixContainsPrefix(p48, p44), false);
  assert.equal(prefixesOverlap(p44, p48), true);
  assert.equal(prefixesOverlap(p48, p44), true);
  assert.equal(prefixesOverlap(p44, other), false);
  assert.equal(formatIpv6(prefixLast(p48)), '2600:beef:1001:ffff:ffff:ffff:ffff:ffff');
  assert.equal(prefixesOverlap(parsePrefix('::/0'), other), true);
});

test('addressScope', () => {
  const cases: [string, ReturnType<typeof addressScope>][] = [
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['ff02::1', 'multicast'],
    ['fe80::1', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fec0::1', 'global'],
    ['fd00:6d74::1', 'ula'],
    ['fc00::1', 'ula'],
    ['2001:db8::1', 'documentation'],
    ['3fff:fff::1', 'documentation'],
    ['3fff:1000::1', 'global'],
    ['::ffff:10.0.0.1', 'ipv4-mapped'],
    ['2600:beef::1', 'global'],
  ];
  for (const [text, scope] of cases) assert.equal(addressScope(parseIpv6(text)), scope, text);
});

// Uniform 128-bit values almost never contain a zero group, so half the draws
// are built from groups that are often zero: that is where "::" rules live.
const groupy = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
  .map((gs) => gs.reduce((n, g) => (n << 16n) | BigInt(g), 0n));
const addr = fc.oneof(fc.bigInt({ min: 0n, max: IPV6_MAX }), groupy);

/** Any legal spelling of n: random case, leading zeros, any zero run compressed, maybe an IPv4 tail. */
const spelling = addr.chain((n) => {
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt((7 - i) * 16)) & 0xffffn));
  return fc
    .record({
      pad: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 8, maxLength: 8 }),
      upper: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
      compress: fc.nat(),
      v4: fc.boolean(),
    })
    .map(({ pad, upper, compress, v4 }) => {
      let parts = groups.map((g, i) => {
        const h = g.toString(16);
        const t = '0'.repeat(Math.min(pad[i]!, 4 - h.length)) + h;
        return upper[i] ? t.toUpperCase() : t;
      });
      if (v4) {
        const tail = `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
        parts = [...parts.slice(0, 6), tail];
      }
      const zeroRuns: [number, number][] = [];
      const last = v4 ? 6 : 8;
      for (let i = 0; i < last; i++) for (let j = i + 1; j <= last && groups[j - 1] === 0; j++) zeroRuns.push([i, j]);
      if (zeroRuns.length === 0 || compress % 3 === 0) return { n, text: parts.join(':') };
      const [i, j] = zeroRuns[compress % zeroRuns.length]!;
      return { n, text: `${parts.slice(0, i).join(':')}::${parts.slice(j).join(':')}` };
    });
});

test('property: parse(format(n)) === n', () => {
  fc.assert(fc.property(addr, (n) => parseIpv6(formatIpv6(n)) === n), { numRuns: 2000 });
});

test('property: every legal spelling parses to its value and formats canonically', () => {
  fc.assert(
    fc.property(spelling, ({ n, text }) => {
      assert.equal(parseIpv6(text), n, text);
      assert.equal(formatIpv6(parseIpv6(text)), formatIpv6(n));
    }),
    { numRuns: 3000 },
  );
});

test('property: format(parse(x)) is stable for fast-check IPv6 strings', () => {
  fc.assert(
    fc.property(fc.ipV6(), (text) => {
      const once = formatIpv6(parseIpv6(text));
      assert.equal(formatIpv6(parseIpv6(once)), once);
      assert.equal(parseIpv6(once), parseIpv6(text));
    }),
    { numRuns: 2000 },
  );
});

test('property: formatting matches the WHATWG URL serializer outside ::ffff:0:0/96', () => {
  fc.assert(
    fc.property(addr, (n) => {
      fc.pre(n >> 32n !== 0xffffn);
      const text = formatIpv6(n);
      assert.equal(new URL(`http://[${text}]/`).hostname, `[${text}]`);
    }),
    { numRuns: 2000 },
  );
});

test('property: a prefix contains exactly its range', () => {
  fc.assert(
    fc.property(addr, fc.integer({ min: 0, max: 128 }), addr, (n, len, probe) => {
      const net = parsePrefix(`${formatIpv6(n)}/128`).network;
      const pfx = { network: net & (len === 0 ? 0n : (IPV6_MAX >> BigInt(128 - len)) << BigInt(128 - len)), length: len };
      assert.deepEqual(parsePrefix(formatPrefix(pfx)), pfx);
      const inside = probe >= pfx.network && probe <= prefixLast(pfx);
      assert.equal(prefixContains(pfx, probe), inside);
    }),
    { numRuns: 2000 },
  );
});
