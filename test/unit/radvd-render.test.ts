// Golden files for the radvd.conf renderer, the guide's step 1.3 compared by
// meaning (not bytes), and the refusals that keep the text uninjectable.
// UPDATE_GOLDEN=1 rewrites test/fixtures/radvd/*.conf from the renderer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { formatIpv6, formatPrefix, parseIpv6, parsePrefix } from '../../src/core/net/ipv6.js';
import { RADVD_HEADER, radvdInputIsEmpty, renderRadvdConf, type RadvdInput, type RadvdInterface } from '../../src/network/radvd/render.js';

const fixture = (name: string) => new URL(`../fixtures/radvd/${name}`, import.meta.url).pathname;

function golden(name: string, text: string): void {
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(fixture(name), text);
  assert.equal(text, readFileSync(fixture(name), 'utf8'), `${name} differs from the golden file`);
}

// --- a small reader for radvd.conf, enough to compare files by meaning ---
interface Block { words: string[]; options: Map<string, string> }
interface ParsedIface {
  options: Map<string, string>;
  prefixes: Map<string, Map<string, string>>;
  rdnss: Block[];
  dnssl: Block[];
  clients: string[];
}

function parseRadvdConf(text: string): Map<string, ParsedIface> {
  const tokens = text.replace(/#.*$/gm, '').match(/[{};]|[^\s{};]+/g) ?? [];
  let i = 0;
  const next = () => {
    const t = tokens[i++];
    if (t === undefined) throw new Error('unexpected end of file');
    return t;
  };
  const expect = (t: string) => assert.equal(next(), t);
  const canonAddr = (a: string) => formatIpv6(parseIpv6(a));
  const optionsUntilClose = (): Map<string, string> => {
    const m = new Map<string, string>();
    for (let t = next(); t !== '}'; t = next()) {
      const v = next();
      expect(';');
      m.set(t.toLowerCase(), v.toLowerCase());
    }
    expect(';');
    return m;
  };
  const out = new Map<string, ParsedIface>();
  while (i < tokens.length) {
    expect('interface');
    const name = next();
    expect('{');
    const iface: ParsedIface = { options: new Map(), prefixes: new Map(), rdnss: [], dnssl: [], clients: [] };
    for (let t = next(); t !== '}'; t = next()) {
      const key = t.toLowerCase();
      if (key === 'prefix') {
        const p = formatPrefix(parsePrefix(next()));
        expect('{');
        iface.prefixes.set(p, optionsUntilClose());
      } else if (key === 'rdnss' || key === 'dnssl') {
        const words: string[] = [];
        for (let w = next(); w !== '{'; w = next()) words.push(key === 'rdnss' ? canonAddr(w) : w.toLowerCase());
        iface[key].push({ words, options: optionsUntilClose() });
      } else if (key === 'clients') {
        expect('{');
        for (let w = next(); w !== '}'; w = next()) {
          iface.clients.push(canonAddr(w));
          expect(';');
        }
        expect(';');
      } else {
        iface.options.set(key, next().toLowerCase());
        expect(';');
      }
    }
    expect(';');
    assert.ok(!out.has(name), `interface ${name} twice`);
    out.set(name, iface);
  }
  return out;
}

const guideBrProd: RadvdInput = {
  interfaces: [{
    name: 'br-prod',
    prefixes: [{ prefix: '2600:BEEF:1000::/64' }],
    rdnss: ['2001:4860:4860::8888', '2001:4860:4860::8844'],
    rdnssLifetime: 60,
  }],
};

test('the guide bridge renders to the golden file', () => {
  golden('br-prod.conf', renderRadvdConf(guideBrProd));
});

test('br-prod means what the guide step 1.3 radvd.conf means', () => {
  const guide = parseRadvdConf(readFileSync(fixture('guide-step-1.3.conf'), 'utf8'));
  const ours = parseRadvdConf(renderRadvdConf(guideBrProd));
  assert.deepEqual([...ours.keys()], [...guide.keys()]);
  const g = guide.get('br-prod')!;
  const o = ours.get('br-prod')!;
  // Every setting the guide writes has the same value in ours ...
  for (const [k, v] of g.options) assert.equal(o.options.get(k), v, `interface option ${k}`);
  assert.deepEqual(o.prefixes, g.prefixes);
  assert.deepEqual(o.rdnss, g.rdnss);
  assert.deepEqual(o.dnssl, g.dnssl);
  assert.deepEqual(o.clients, g.clients);
  // ... and what we add is either radvd's own default or required by how metald runs radvd.
  const extra = [...o.options.keys()].filter((k) => !g.options.has(k)).sort();
  assert.deepEqual(extra, ['advdefaultlifetime', 'ignoreifmissing']);
  assert.equal(o.options.get('advdefaultlifetime'), '180'); // radvd's default: 3 * MaxRtrAdvInterval
  assert.equal(o.options.get('ignoreifmissing'), 'on'); // radvd's default too, written out because bridges come and go
});

const twoBridges: RadvdInterface[] = [
  {
    name: 'br-tenant',
    prefixes: [{ prefix: 'fd00:6d74:2::/64', validLifetime: 7200, preferredLifetime: 3600 }, { prefix: 'fd00:6d74:1::/64' }],
    minRtrAdvInterval: 10,
    maxRtrAdvInterval: 40,
    mtu: 9000,
    rdnss: ['fd00:6d74::53', 'FD00:6D74::0:54', 'fd00:6d74::55', '2001:db8::53'],
    dnssl: ['Tenant.Example.', 'example'],
  },
  { name: 'br-mgmt', prefixes: [{ prefix: 'fd00:6d74::/64' }] },
];

test('several bridges: sorted by name, prefixes by address, RDNSS split by 3 in order', () => {
  const text = renderRadvdConf({ interfaces: twoBridges });
  golden('two-bridges.conf', text);
  // Same set in another order: same bytes (the supervisor reloads only on a byte change).
  const shuffled = [...twoBridges].reverse().map((b) => ({ ...b, prefixes: [...b.prefixes].reverse() }));
  assert.equal(renderRadvdConf({ interfaces: shuffled }), text);
  const tenant = parseRadvdConf(text).get('br-tenant')!;
  assert.deepEqual(tenant.rdnss.map((b) => b.words), [['fd00:6d74::53', 'fd00:6d74::54', 'fd00:6d74::55'], ['2001:db8::53']]);
  assert.deepEqual(tenant.dnssl[0]!.words, ['tenant.example', 'example']);
  assert.equal(tenant.rdnss[0]!.options.get('advrdnsslifetime'), '80'); // 2 * MaxRtrAdvInterval (radvd's default and bound)
});

test('prefix mode on a shared bridge: router-only bridge stanza plus one stanza per VM port', () => {
  const port = (name: string, prefix: string): RadvdInterface => ({
    name, prefixes: [{ prefix, onLink: false, routerAddr: false }], defaultLifetime: 0, minRtrAdvInterval: 3, maxRtrAdvInterval: 4,
  });
  golden('per-vm-ports.conf', renderRadvdConf({
    interfaces: [
      port('mtvm2', 'fd00:6d74:100:2::/64'),
      { name: 'br-prod', prefixes: [], rdnss: ['fd00:6d74::53'], dnssl: ['vm.example'] },
      port('mtvm1', 'fd00:6d74:100:1::/64'),
    ],
  }));
});

test('clients: unicast RAs to listed link-local addresses, sorted', () => {
  golden('clients.conf', renderRadvdConf({
    interfaces: [{ name: 'br-lab', prefixes: [{ prefix: 'fd00:ab::/64' }], clients: ['fe80::5054:ff:fe00:2', 'FE80::5054:ff:fe00:1'] }],
  }));
});

test('the header says metald owns the file', () => {
  assert.ok(renderRadvdConf(guideBrProd).startsWith(`${RADVD_HEADER.join('\n')}\n`));
  assert.match(RADVD_HEADER.join(' '), /metald owns this file/);
});

test('an empty input is not rendered: the caller stops radvd instead', () => {
  assert.equal(radvdInputIsEmpty({ interfaces: [] }), true);
  assert.throws(() => renderRadvdConf({ interfaces: [] }), /stop radvd instead/);
});

test('refuses what would break or inject into radvd.conf', () => {
  const base: RadvdInterface = { name: 'br0', prefixes: [{ prefix: 'fd00:ab::/64' }] };
  const bad: [Partial<RadvdInterface>, RegExp][] = [
    [{ name: 'br0 { }; interface eth0' }, /invalid interface name/],
    [{ name: 'br0;' }, /invalid interface name/],
    [{ name: '-br0' }, /invalid interface name/],
    [{ name: 'prefix' }, /keyword or number/],
    [{ name: 'On' }, /keyword or number/],
    [{ name: '1234' }, /keyword or number/],
    [{ name: '1.5' }, /keyword or number/],
    [{ rdnss: ['fd00::1; }; interface eth0 { AdvSendAdvert on'] }, /not an IPv6 address/],
    [{ rdnss: ['ff02::1'] }, /not a unicast address/],
    [{ rdnss: ['fd00::1', 'fd00:0::1'] }, /listed twice/],
    [{ dnssl: ['a.example { }; interface x'] }, /not a DNS name/],
    [{ dnssl: ['on'] }, /keyword or number/],
    [{ dnssl: ['10.20'] }, /keyword or number/],
    [{ clients: ['fd00:ab::5'] }, /not a link-local address/],
    [{ clients: ['fe80::1%br0'] }, /not an IPv6 address/],
    [{ prefixes: [{ prefix: 'fd00:ab::1/64' }] }, /host bits/],
    [{ prefixes: [{ prefix: 'fd00:ab::/48' }] }, /needs a \/64/],
    [{ prefixes: [{ prefix: 'fe80::/64' }] }, /cannot be advertised/],
    [{ prefixes: [{ prefix: 'fd00:ab::/64' }, { prefix: 'FD00:AB::/64' }] }, /listed twice/],
    [{ prefixes: [{ prefix: 'fd00:ab::/64', validLifetime: 100, preferredLifetime: 200 }] }, /must not exceed/],
    [{ prefixes: [{ prefix: 'fd00:ab::/64', validLifetime: 1.5 }] }, /integer/],
    [{ maxRtrAdvInterval: 3 }, /maxRtrAdvInterval/],
    [{ maxRtrAdvInterval: 60, minRtrAdvInterval: 50 }, /minRtrAdvInterval/],
    [{ maxRtrAdvInterval: 60, defaultLifetime: 30 }, /defaultLifetime must be 0 or at least/],
    [{ defaultLifetime: 9001 }, /defaultLifetime/],
    [{ rdnss: ['fd00::53'], rdnssLifetime: 10 }, /rdnssLifetime must be 0 or at least/],
    [{ mtu: 1000 }, /mtu/],
  ];
  for (const [patch, re] of bad) {
    assert.throws(() => renderRadvdConf({ interfaces: [{ ...base, ...patch }] }), re, JSON.stringify(patch));
  }
  assert.throws(() => renderRadvdConf({ interfaces: [base, { ...base }] }), /listed twice/);
  // Not SLAAC: any length is fine.
  assert.doesNotThrow(() => renderRadvdConf({ interfaces: [{ ...base, prefixes: [{ prefix: 'fd00:ab::/48', autonomous: false }] }] }));
});

test('property: any input either throws or renders exactly the stanza it describes', () => {
  // Mostly near-misses: valid values, radvd keywords, and radvd's own punctuation.
  const word = fc.oneof(
    fc.constantFrom('br0', 'br-ra', 'fd00::53', '2001:db8::1', 'fe80::1', 'fe80::2', 'vm.test', 'a.b', 'on', '1.5', '::'),
    fc.stringMatching(/^[a-z0-9.:;{}# -]{1,16}$/),
    fc.string({ maxLength: 20 }),
  );
  fc.assert(
    fc.property(word, fc.array(word, { maxLength: 3 }), fc.array(word, { maxLength: 3 }), fc.array(word, { maxLength: 2 }), (name, rdnss, dnssl, clients) => {
      let text: string;
      try {
        text = renderRadvdConf({ interfaces: [{ name, prefixes: [{ prefix: 'fd00:ab::/64' }], rdnss, dnssl, clients }] });
      } catch {
        return;
      }
      const parsed = parseRadvdConf(text);
      assert.deepEqual([...parsed.keys()], [name]);
      const i = parsed.get(name)!;
      assert.deepEqual([...i.prefixes.keys()], ['fd00:ab::/64']);
      assert.deepEqual(i.rdnss.flatMap((b) => b.words), rdnss.map((a) => formatIpv6(parseIpv6(a))));
      assert.equal(i.dnssl.flatMap((b) => b.words).length, dnssl.length);
      assert.equal(i.clients.length, clients.length);
    }),
    { numRuns: 2000 },
  );
});
