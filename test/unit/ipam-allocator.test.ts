import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MetaldError } from '../../src/core/errors.js';
import { Ipam, gatewayOf } from '../../src/core/ipam/allocator.js';
import type { Allocation, AllocationRequest, BridgeSubnet, PoolSpec } from '../../src/core/ipam/types.js';
import { parseIpv6 } from '../../src/core/net/ipv6.js';

const P = parseIpv6;
const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms);
const MIN = 60_000;
const FIELD = 'config.network[0].ipv6';

function pool(id: string, prefix: string, over: Partial<PoolSpec> = {}): PoolSpec {
  const [net, len] = prefix.split('/') as [string, string];
  return { id, network: P(net), length: Number(len), mode: 'address', autoAssign: true, reserved: [], tenants: [], description: '', ...over };
}

function bridge(name: string, cidr: string): BridgeSubnet {
  const [addr, len] = cidr.split('/') as [string, string];
  const length = Number(len);
  const a = P(addr);
  const host = 128 - length;
  return { name, network: (a >> BigInt(host)) << BigInt(host), length, hostAddresses: [a] };
}

let seq = 0;
function req(over: Partial<AllocationRequest> = {}): AllocationRequest {
  seq++;
  return { tenantId: 'test-customer', vmId: `vm-${seq}`, nicId: 'eth0', field: FIELD, ...over };
}

function statik(addr: string, over: Partial<AllocationRequest> = {}): AllocationRequest {
  const [a, len] = addr.split('/') as [string, string | undefined];
  return req({ address: { address: P(a), length: len ? Number(len) : 128 }, ...over });
}

function refusal(fn: () => unknown): MetaldError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MetaldError, `expected a MetaldError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a refusal');
}

// Guide, configuration section 1.
const production = () =>
  pool('production', '2600:beef:1000::/44', {
    description: 'Production IPv6 pool from ARIN allocation',
    reserved: ['2600:BEEF:1000::1', '2600:BEEF:1000::2', '2600:BEEF:1000::10', '2600:BEEF:1000::11', '2600:BEEF:1000::100'].map(P),
  });
const brProd = () => bridge('br-prod', '2600:BEEF:1000::1/64');
const section1 = (quarantineMs = 10 * MIN) => new Ipam([production()], { quarantineMs, bridges: [brProd()] });

// Guide, configuration section 2.
const section2 = () =>
  new Ipam(
    [
      pool('tier1-customers', '2600:BEEF:1000::/48', { reserved: [P('2600:BEEF:1000::1')], rateLimit: 1000 }),
      pool('tier2-customers', '2600:BEEF:1001::/48', { reserved: [P('2600:BEEF:1001::1')], rateLimit: 500 }),
      pool('shared-services', '2600:BEEF:1010::/48', { autoAssign: false }),
    ],
    { quarantineMs: 10 * MIN, bridges: [bridge('br-tier1', '2600:BEEF:1000::1/64'), bridge('br-tier2', '2600:BEEF:1001::1/64'), bridge('br-shared', '2600:BEEF:1010::1/64')] },
  );

describe('address mode: the guide section 1 pool', () => {
  it('hands out the lowest free address on the bridge subnet, skipping anycast, reserved and bridge addresses', () => {
    const ipam = section1();
    const got = Array.from({ length: 16 }, () => ipam.allocate(req({ bridge: 'br-prod' }), at(0)).address);
    assert.deepEqual(got, [
      '2600:beef:1000::3', '2600:beef:1000::4', '2600:beef:1000::5', '2600:beef:1000::6', '2600:beef:1000::7', '2600:beef:1000::8',
      '2600:beef:1000::9', '2600:beef:1000::a', '2600:beef:1000::b', '2600:beef:1000::c', '2600:beef:1000::d', '2600:beef:1000::e',
      '2600:beef:1000::f', '2600:beef:1000::12', '2600:beef:1000::13', '2600:beef:1000::14',
    ]);
    // ... and ::100 too.
    let last = '';
    while (last !== '2600:beef:1000::ff') last = ipam.allocate(req({ bridge: 'br-prod' }), at(0)).address;
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(0)).address, '2600:beef:1000::101');
  });

  it('returns canonical keys and ISO times', () => {
    const ipam = section1();
    const r = req({ bridge: 'br-prod', vmId: 'vm-a', nicId: 'eth0' });
    const a = ipam.allocate(r, at(1234));
    assert.deepEqual(a, {
      key: '2600:beef:1000::3/128', poolId: 'production', kind: 'address', prefix: '2600:beef:1000::3/128', address: '2600:beef:1000::3',
      vmId: 'vm-a', nicId: 'eth0', tenantId: 'test-customer', owner: '', allocatedAt: '2026-03-01T12:00:01.234Z', releasedAt: null,
    });
    assert.equal(gatewayOf(a), '');
    assert.deepEqual(ipam.get('2600:BEEF:1000::3/128'), a, 'get() accepts any spelling of the key');
    assert.deepEqual(ipam.ofVm('vm-a'), [a]);
  });

  it('grants the step 3.2 static request, then refuses it to anyone else', () => {
    const ipam = section1();
    const a = ipam.allocate(statik('2600:BEEF:1000:100::10/64', { vmId: 'vm-web', bridge: 'br-prod' }), at(0));
    assert.equal(a.key, '2600:beef:1000:100::10/128');
    assert.equal(a.address, '2600:beef:1000:100::10');
    assert.equal(a.kind, 'address');

    const same = refusal(() => ipam.allocate(statik('2600:BEEF:1000:100::10/64'), at(0)));
    assert.equal(same.kind, 'already_exists');
    assert.equal(same.field, `${FIELD}.address`);
    assert.match(same.message, /2600:beef:1000:100::10 is already allocated to VM vm-web/);

    const other = refusal(() => ipam.allocate(statik('2600:BEEF:1000:100::10/64', { tenantId: 'someone-else' }), at(0)));
    assert.equal(other.kind, 'already_exists');
    assert.doesNotMatch(other.message, /vm-web/, "another tenant's VM id is never revealed");
    assert.match(other.message, /is already allocated$/);
  });

  it('refuses reserved, anycast and bridge addresses as static requests', () => {
    const ipam = section1();
    for (const [addr, why] of [
      ['2600:beef:1000::10', /reserved in pool production/],
      ['2600:beef:1000:7::', /subnet-router anycast/],
      ['2600:beef:1000::1', /reserved|bridge br-prod/],
    ] as const) {
      const e = refusal(() => ipam.allocate(statik(addr), at(0)));
      assert.equal(e.kind, 'already_exists', addr);
      assert.equal(e.field, `${FIELD}.address`);
      assert.match(e.message, why);
    }
    const host = new Ipam([production()], { quarantineMs: 0, bridges: [{ ...brProd(), hostAddresses: [P('2600:beef:1000::1'), P('2600:beef:1000:100::1')] }] });
    assert.match(refusal(() => host.allocate(statik('2600:beef:1000:100::1'), at(0))).message, /address of bridge br-prod/);
  });

  it('privacy extensions: the NIC gets the whole /64 around its address', () => {
    const ipam = section1();
    const a = ipam.allocate(statik('2600:BEEF:1000:100::10/64', { wholePrefix: true, bridge: 'br-prod' }), at(0));
    assert.equal(a.key, '2600:beef:1000:100::/64');
    assert.equal(a.prefix, '2600:beef:1000:100::/64');
    assert.equal(a.kind, 'prefix');
    assert.equal(a.address, '2600:beef:1000:100::10');
    assert.equal(gatewayOf(a), '2600:beef:1000:100::1');
    // Nothing else fits in it now.
    const inside = refusal(() => ipam.allocate(statik('2600:beef:1000:100::99', { tenantId: 'other' }), at(0)));
    assert.equal(inside.kind, 'already_exists');
    assert.equal(inside.message, `${FIELD}.address: 2600:beef:1000:100::99 lies in 2600:beef:1000:100::/64, which is already allocated`);
    const again = refusal(() => ipam.allocate(statik('2600:beef:1000:100::10/64', { wholePrefix: true }), at(0)));
    assert.match(again.message, /^\S+ 2600:beef:1000:100::\/64 is already allocated to VM vm-\d+$/);
    // Auto: a free /64 of its own (the first /64 holds the bridge, reserved addresses and the single-address space),
    // also once the last single address in that first /64 is gone again.
    ipam.unreserve(ipam.allocate(req({ bridge: 'br-prod' }), at(0)).key);
    const auto = ipam.allocate(req({ wholePrefix: true, bridge: 'br-prod' }), at(0));
    assert.equal(auto.key, '2600:beef:1000:1::/64');
    assert.equal(auto.address, '2600:beef:1000:1::10');
  });

  it('privacy extensions on the bridge subnet or a shared /64: a clear refusal that says what to do', () => {
    const ipam = section1();
    const onBridge = refusal(() => ipam.allocate(statik('2600:beef:1000::50/64', { wholePrefix: true, bridge: 'br-prod' }), at(0)));
    assert.equal(onBridge.kind, 'invalid_argument');
    assert.equal(onBridge.field, `${FIELD}.enable_privacy_extensions`);
    assert.match(onBridge.message, /on-link subnet of bridge br-prod/);
    assert.match(onBridge.message, /\/64 of its own/);
    assert.match(onBridge.message, /prefix-mode pool/);

    ipam.allocate(statik('2600:beef:1000:200::5'), at(0));
    const shared = refusal(() => ipam.allocate(statik('2600:beef:1000:200::10/64', { wholePrefix: true }), at(0)));
    assert.equal(shared.field, `${FIELD}.enable_privacy_extensions`);
    assert.match(shared.message, /already holds 1 other address allocation/);

    const small = new Ipam([pool('lab', 'fd00:1::/112')], { quarantineMs: 0, bridges: [] });
    const tooSmall = refusal(() => small.allocate(req({ wholePrefix: true }), at(0)));
    assert.equal(tooSmall.field, `${FIELD}.enable_privacy_extensions`);
    assert.match(tooSmall.message, /smaller than a \/64/);
  });

  it('without a bridge inside the pool, addresses come from the pool first /64; a /112 pool is used whole', () => {
    const ipam = new Ipam([pool('p', '2600:beef:2000::/48', { reserved: [P('2600:beef:2000::1')] }), pool('lab', 'fd00:9::100:0/112')], {
      quarantineMs: 0,
      bridges: [bridge('br-other', '2600:ffff::1/64')],
    });
    assert.equal(ipam.allocate(req({ bridge: 'br-other' }), at(0)).address, '2600:beef:2000::2');
    assert.equal(ipam.allocate(req({ poolId: 'lab' }), at(0)).address, 'fd00:9::100:0');
  });
});

describe('several pools: the guide section 2', () => {
  it('auto-assigns from the first pool the tenant may use, on the NIC bridge subnet', () => {
    const ipam = section2();
    assert.equal(ipam.allocate(req({ bridge: 'br-tier1' }), at(0)).address, '2600:beef:1000::2');
    assert.equal(ipam.allocate(req({ bridge: 'br-tier2', poolId: 'tier2-customers' }), at(0)).address, '2600:beef:1001::2');
    assert.deepEqual(ipam.pools().map((p) => p.id), ['tier1-customers', 'tier2-customers', 'shared-services']);
  });

  it('a manual pool hands out only on explicit request', () => {
    const ipam = section2();
    const e = refusal(() => ipam.allocate(req({ poolId: 'shared-services' }), at(0)));
    assert.equal(e.kind, 'invalid_argument');
    assert.match(e.message, /only on explicit request/);
    assert.match(e.message, /2600:beef:1010::\/48/);
    // A static address, or a manual allocation (owner set, no VM), is explicit.
    assert.equal(ipam.allocate(statik('2600:beef:1010::53'), at(0)).poolId, 'shared-services');
    const manual = ipam.allocate(req({ poolId: 'shared-services', vmId: '', owner: 'ops: dns', bridge: 'br-shared' }), at(0));
    assert.equal(manual.address, '2600:beef:1010::2');
    assert.equal(manual.owner, 'ops: dns');
  });

  it('an address in no pool is refused with the pools this tenant could use', () => {
    const ipam = section2();
    const e = refusal(() => ipam.allocate(statik('2600:beef:2000::5/64'), at(0)));
    assert.equal(e.kind, 'invalid_argument');
    assert.equal(e.field, `${FIELD}.address`);
    assert.match(e.message, /2600:beef:2000::5 is not in any address pool/);
    assert.match(e.message, /tier1-customers 2600:beef:1000::\/48, tier2-customers 2600:beef:1001::\/48, shared-services 2600:beef:1010::\/48/);
    const wrongPool = refusal(() => ipam.allocate(statik('2600:beef:1001::5', { poolId: 'tier1-customers' }), at(0)));
    assert.match(wrongPool.message, /not in pool tier1-customers/);
    const unknown = refusal(() => ipam.allocate(req({ poolId: 'nope' }), at(0)));
    assert.equal(unknown.field, `${FIELD}.pool_id`);
  });
});

describe('tenants restriction', () => {
  const ipam = () =>
    new Ipam([pool('acme-only', '2600:beef:3000::/48', { tenants: ['acme'] }), pool('public', '2600:beef:4000::/48')], { quarantineMs: 0, bridges: [] });

  it('a restricted pool refuses other tenants and auto-assignment skips it for them', () => {
    const i = ipam();
    const e = refusal(() => i.allocate(statik('2600:beef:3000::5', { tenantId: 'globex' }), at(0)));
    assert.equal(e.kind, 'invalid_argument');
    assert.match(e.message, /pool acme-only \(2600:beef:3000::\/48\) is not available to tenant globex/);
    assert.match(e.message, /tenant globex may use: public 2600:beef:4000::\/48/);
    assert.equal(refusal(() => i.allocate(req({ tenantId: 'globex', poolId: 'acme-only' }), at(0))).field, `${FIELD}.pool_id`);
    assert.equal(i.allocate(req({ tenantId: 'globex' }), at(0)).poolId, 'public');
    assert.equal(i.allocate(req({ tenantId: 'acme' }), at(0)).poolId, 'acme-only');
    assert.deepEqual(i.poolsFor('globex').map((p) => p.id), ['public']);
    assert.deepEqual(i.poolsFor('acme', P('2600:beef:3000::9')).map((p) => p.id), ['acme-only']);
  });
});

describe('quarantine', () => {
  it('keeps a released address from everyone until it expires; then it is the lowest free again', () => {
    const ipam = section1(10 * MIN);
    const a = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    assert.equal(a.address, '2600:beef:1000::3');
    const released = ipam.release(a.key, at(MIN));
    assert.equal(released.releasedAt, new Date(T0 + MIN).toISOString());
    assert.equal(ipam.release(a.key, at(2 * MIN)), released, 'release is idempotent');
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(2 * MIN)).address, '2600:beef:1000::4');
    const e = refusal(() => ipam.allocate(statik('2600:beef:1000::3'), at(5 * MIN)));
    assert.equal(e.kind, 'already_exists');
    assert.match(e.message, new RegExp(`in quarantine until ${new Date(T0 + 11 * MIN).toISOString()}`));
    assert.deepEqual(ipam.list({}).map((x) => x.address), ['2600:beef:1000::4']);
    assert.equal(ipam.list({ includeQuarantined: true }).length, 2);
    assert.deepEqual(ipam.expire(at(11 * MIN - 1)), []);
    assert.deepEqual(ipam.expire(at(11 * MIN)), ['2600:beef:1000::3/128']);
    assert.equal(ipam.get(a.key), undefined);
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(11 * MIN)).address, '2600:beef:1000::3');
  });

  it('allocate() expires due quarantines itself and expire() reports those keys too', () => {
    const ipam = section1(MIN);
    const a = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.release(a.key, at(0));
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(MIN)).address, '2600:beef:1000::3');
    assert.deepEqual(ipam.expire(at(MIN)), ['2600:beef:1000::3/128']);
    assert.deepEqual(ipam.expire(at(MIN)), []);
  });

  it('a clock that goes back never shortens a quarantine', () => {
    const ipam = section1(10 * MIN);
    const a = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    const b = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.release(a.key, at(30 * MIN));
    ipam.release(b.key, at(20 * MIN)); // the clock stepped back
    assert.deepEqual(ipam.expire(at(29 * MIN)), []);
    assert.deepEqual(ipam.expire(at(30 * MIN)), [b.key]);
    assert.deepEqual(ipam.expire(at(39 * MIN)), []);
    assert.deepEqual(ipam.expire(at(40 * MIN)), [a.key]);
  });

  it('unreserve forgets a never-persisted allocation without quarantine', () => {
    const ipam = section1();
    const a = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.unreserve(a.key);
    ipam.unreserve(a.key); // unknown now: no-op
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(0)).address, '2600:beef:1000::3');
    const b = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.release(b.key, at(0));
    ipam.unreserve(b.key); // already released: it stays in quarantine
    assert.equal(ipam.get(b.key)?.releasedAt, new Date(T0).toISOString());
    assert.equal(ipam.allocate(req({ bridge: 'br-prod' }), at(0)).address, '2600:beef:1000::5');
    assert.equal(refusal(() => ipam.release('2600:beef:1000::9999/128', at(0))).kind, 'not_found');
  });

  it('one NIC holds one allocation in use', () => {
    const ipam = section1();
    ipam.allocate(req({ vmId: 'vm-x', nicId: 'eth0', bridge: 'br-prod' }), at(0));
    const e = refusal(() => ipam.allocate(req({ vmId: 'vm-x', nicId: 'eth0', bridge: 'br-prod' }), at(0)));
    assert.equal(e.kind, 'already_exists');
    assert.equal(ipam.allocate(req({ vmId: 'vm-x', nicId: 'eth1', bridge: 'br-prod' }), at(0)).address, '2600:beef:1000::4');
    assert.deepEqual(ipam.ofVm('vm-x').map((a) => a.nicId), ['eth0', 'eth1']);
    const eth2 = ipam.allocate(req({ vmId: 'vm-x', nicId: 'eth2', bridge: 'br-prod' }), at(0));
    ipam.unreserve(ipam.ofVm('vm-x')[1]!.key);
    assert.deepEqual(ipam.ofVm('vm-x').map((a) => a.nicId), ['eth0', 'eth2']);
    ipam.unreserve(ipam.ofVm('vm-x')[0]!.key);
    assert.deepEqual(ipam.ofVm('vm-x'), [eth2]);
    assert.deepEqual(ipam.list({ vmId: 'vm-x' }), [eth2]);
    const released = ipam.release(eth2.key, at(0));
    assert.deepEqual(ipam.ofVm('vm-x'), [released], 'quarantined allocations stay listed under their VM');
    assert.deepEqual(ipam.list({ vmId: 'vm-x' }), []);
    ipam.expire(at(60 * MIN));
    assert.deepEqual(ipam.ofVm('vm-x'), []);
    assert.equal(ipam.allocate(req({ vmId: 'vm-x', nicId: 'eth0', bridge: 'br-prod' }), at(60 * MIN)).nicId, 'eth0');
  });
});

describe('rate limits', () => {
  it('refuses over rate_limit per rolling hour with retryAfterSeconds; unreserve gives the slot back', () => {
    const ipam = new Ipam([pool('p', '2600:beef:5000::/48', { rateLimit: 3 })], { quarantineMs: 0, bridges: [] });
    const a = ipam.allocate(req(), at(0));
    ipam.allocate(statik('2600:beef:5000::99'), at(10_000)); // static requests count too
    ipam.allocate(req(), at(20_000));
    const e = refusal(() => ipam.allocate(req(), at(30_000)));
    assert.equal(e.kind, 'resource_exhausted');
    // The first allocation (at 0) stops counting an hour later: 3570 s after 30 s.
    assert.deepEqual(e.detail, { retryAfterSeconds: 3570 });
    assert.match(e.message, /limited to 3 allocations per rolling hour/);
    assert.match(e.message, /try again in 3570 s \(after 2026-03-01T13:00:00\.000Z\)/);
    assert.equal(ipam.stats('p', at(30_000)).allocationsLastHour, 3);
    ipam.unreserve(a.key);
    assert.equal(ipam.allocate(req(), at(30_000)).address, '2600:beef:5000::2');
    assert.equal(refusal(() => ipam.allocate(req(), at(40_000))).kind, 'resource_exhausted');
    // An hour later the oldest ones have left the window.
    assert.equal(refusal(() => ipam.allocate(req(), at(3_609_999))).kind, 'resource_exhausted');
    assert.equal(ipam.allocate(req(), at(3_610_000)).address, '2600:beef:5000::4');
  });

  it('tenant_rate_limit limits each tenant on its own; rate_limit 0 drains the pool', () => {
    const ipam = new Ipam([pool('p', '2600:beef:5000::/48', { tenantRateLimit: 1 }), pool('drain', '2600:beef:6000::/48', { rateLimit: 0 })], {
      quarantineMs: 0,
      bridges: [],
    });
    ipam.allocate(req({ tenantId: 'a' }), at(0));
    const e = refusal(() => ipam.allocate(req({ tenantId: 'a' }), at(1000)));
    assert.match(e.message, /tenant a in pool p is limited to 1 allocations/);
    assert.equal(e.detail?.retryAfterSeconds, 3599);
    ipam.allocate(req({ tenantId: 'b' }), at(1000));
    const d = refusal(() => ipam.allocate(req({ poolId: 'drain' }), at(0)));
    assert.equal(d.kind, 'resource_exhausted');
    assert.match(d.message, /draining/);
    assert.ok(Number(d.detail?.retryAfterSeconds) >= 1);
  });

  it('load() rebuilds the window from allocatedAt', () => {
    const spec = pool('p', '2600:beef:5000::/48', { rateLimit: 2 });
    const ipam = new Ipam([spec], { quarantineMs: 0, bridges: [] });
    ipam.allocate(req(), at(0));
    ipam.allocate(req(), at(1000));
    const again = new Ipam([spec], { quarantineMs: 0, bridges: [] });
    again.load(ipam.list({ includeQuarantined: true }));
    assert.equal(refusal(() => again.allocate(req(), at(2000))).detail?.retryAfterSeconds, 3598);
  });
});

describe('prefix mode', () => {
  it('hands out /64s lowest first, skipping /64s with reserved or bridge addresses', () => {
    const ipam = new Ipam(
      [pool('per-vm', '2600:beef:1000::/44', { mode: 'prefix', reserved: [P('2600:beef:1000::1'), P('2600:beef:1000:1::53')] })],
      { quarantineMs: 0, bridges: [brProd(), { name: 'br-x', network: P('2600:beef:1000:3::'), length: 64, hostAddresses: [P('2600:beef:1000:3::1')] }] },
    );
    const got = Array.from({ length: 3 }, () => ipam.allocate(req({ bridge: 'br-prod' }), at(0)));
    assert.deepEqual(got.map((a) => a.key), ['2600:beef:1000:2::/64', '2600:beef:1000:4::/64', '2600:beef:1000:5::/64']);
    assert.deepEqual(got.map((a) => a.address), ['2600:beef:1000:2::10', '2600:beef:1000:4::10', '2600:beef:1000:5::10']);
    assert.deepEqual(got.map(gatewayOf), ['2600:beef:1000:2::1', '2600:beef:1000:4::1', '2600:beef:1000:5::1']);
    assert.ok(got.every((a) => a.kind === 'prefix'));
    // A static request gets the /64 around its address, keeping the address asked for.
    const s = ipam.allocate(statik('2600:beef:1000:100::10/64'), at(0));
    assert.equal(s.key, '2600:beef:1000:100::/64');
    assert.equal(s.address, '2600:beef:1000:100::10');
    assert.equal(refusal(() => ipam.allocate(statik('2600:beef:1000:100::20/64'), at(0))).kind, 'already_exists');
    assert.match(refusal(() => ipam.allocate(statik('2600:beef:1000:1::20/64'), at(0))).message, /reserved address 2600:beef:1000:1::53/);
    const st = ipam.stats('per-vm', at(0));
    assert.equal(st.size, 1n << 20n);
    assert.equal(st.used, 4n);
    assert.equal(st.free, (1n << 20n) - 4n - 3n);
  });

  it('a bridge subnet shorter than /64 takes its whole range out, without per-/64 cost', () => {
    const ipam = new Ipam([pool('pp', '2600:beef::/32', { mode: 'prefix' })], {
      quarantineMs: 0,
      bridges: [{ name: 'br-wide', network: P('2600:beef::'), length: 40, hostAddresses: [P('2600:beef::1')] }],
    });
    assert.equal(ipam.allocate(req(), at(0)).key, '2600:beef:100::/64');
    assert.equal(ipam.stats('pp', at(0)).free, (1n << 32n) - (1n << 24n) - 1n);
  });
});

describe('exhaustion and stats', () => {
  it('a /120 pool is full after 254 addresses (::0 is the subnet-router anycast, ::1 the implied gateway)', () => {
    const ipam = new Ipam([pool('tiny', '2600:beef:7000::/120')], { quarantineMs: 0, bridges: [] });
    assert.equal(ipam.stats('tiny', at(0)).free, 254n);
    const keys = new Set<string>();
    for (let i = 0; i < 254; i++) keys.add(ipam.allocate(req(), at(0)).key);
    assert.equal(keys.size, 254);
    assert.ok(!keys.has('2600:beef:7000::/128') && !keys.has('2600:beef:7000::1/128'));
    const e = refusal(() => ipam.allocate(req(), at(0)));
    assert.equal(e.kind, 'resource_exhausted');
    assert.match(e.message, /pool tiny is full/);
    const st = ipam.stats('tiny', at(0));
    assert.deepEqual([st.size, st.used, st.free, st.utilisation], [256n, 254n, 0n, 254 / 256]);
    // A static request may still take ::1 (with a gateway of its own); it is not counted twice.
    assert.equal(ipam.allocate(statik('2600:beef:7000::1'), at(0)).key, '2600:beef:7000::1/128');
    assert.deepEqual([ipam.stats('tiny', at(0)).used, ipam.stats('tiny', at(0)).free], [255n, 0n]);
  });

  it('never auto-assigns <subnet>::1 of a /64 without a bridge, where NICs find their gateway', () => {
    const ipam = new Ipam([pool('plain', '2600:beef:3000::/48')], { quarantineMs: 0, bridges: [bridge('br-elsewhere', 'fd00:99::1/64')] });
    assert.equal(ipam.allocate(req({ bridge: 'br-elsewhere' }), at(0)).address, '2600:beef:3000::2');
  });

  it('stats of the guide section 1 pool', () => {
    const ipam = section1();
    const a = ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.allocate(req({ bridge: 'br-prod' }), at(0));
    ipam.allocate(statik('2600:beef:1000:100::10/64', { wholePrefix: true }), at(0));
    ipam.release(a.key, at(MIN));
    const st = ipam.stats('production', at(2 * MIN));
    const size = 1n << 84n;
    const used = 1n + (1n << 64n);
    // Never auto-assigned: per /64 the anycast ::0 and gateway ::1 (except in the whole /64, counted as used),
    // plus the reserved ::2 ::10 ::11 ::100 (::1 is already counted).
    const blocked = 2n * ((1n << 20n) - 1n) + 4n;
    assert.deepEqual(st, {
      id: 'production', prefix: '2600:beef:1000::/44', mode: 'address', autoAssign: true,
      size, used, quarantined: 1n, free: size - used - 1n - blocked, utilisation: Number(used) / Number(size), allocationsLastHour: 3,
    });
    assert.equal(ipam.stats('production', at(60 * MIN - 1)).allocationsLastHour, 3);
    assert.equal(ipam.stats('production', at(60 * MIN)).allocationsLastHour, 0);
    assert.equal(refusal(() => ipam.stats('nope', at(0))).kind, 'not_found');
  });
});

describe('load()', () => {
  function scenario(ipam: Ipam): void {
    const held: Allocation[] = [];
    for (let i = 0; i < 40; i++) held.push(ipam.allocate(req({ bridge: 'br-prod' }), at(i * 1000)));
    for (let i = 0; i < 40; i += 3) ipam.release(held[i]!.key, at(60_000 + i));
    ipam.allocate(statik('2600:beef:1000:100::10/64', { wholePrefix: true }), at(70_000));
    ipam.allocate(statik('2600:beef:1000:200::10'), at(70_000));
  }

  it('rebuilds the same state: the next allocations are the same as without a restart', () => {
    const before = section1(10 * MIN);
    scenario(before);
    const after = section1(10 * MIN);
    after.load(before.list({ includeQuarantined: true }));
    assert.deepEqual(after.list({ includeQuarantined: true }), before.list({ includeQuarantined: true }));
    for (const t of [2 * MIN, 10 * MIN + 60_000 + 20, 12 * MIN]) {
      for (let i = 0; i < 5; i++) {
        const r = req({ bridge: 'br-prod' });
        assert.deepEqual(after.allocate(r, at(t)), before.allocate(r, at(t)));
      }
      const w = req({ wholePrefix: true });
      assert.deepEqual(after.allocate(w, at(t)), before.allocate(w, at(t)));
      assert.deepEqual(after.expire(at(t)).sort(), before.expire(at(t)).sort());
      assert.deepEqual(after.stats('production', at(t)), before.stats('production', at(t)));
    }
  });

  it('refuses overlapping or malformed rows', () => {
    const ipam = section1();
    const whole = ipam.allocate(statik('2600:beef:1000:100::10/64', { wholePrefix: true }), at(0));
    const inside: Allocation = { ...whole, key: '2600:beef:1000:100::20/128', prefix: '2600:beef:1000:100::20/128', address: '2600:beef:1000:100::20', kind: 'address' };
    assert.throws(() => section1().load([whole, inside]), /overlap/);
    assert.throws(() => section1().load([inside, whole]), /overlap/);
    assert.throws(() => section1().load([inside, inside]), /overlap/);
    assert.throws(() => section1().load([{ ...inside, key: '2600:BEEF:1000:100::20/128' }]), /canonical/);
    assert.throws(() => section1().load([{ ...inside, allocatedAt: 'yesterday' }]), /not a time/);
  });

  it('keeps rows that no configured pool holds any more, and still refuses what they cover', () => {
    const old = new Ipam([pool('old', '2600:beef:9000::/48')], { quarantineMs: 0, bridges: [] });
    const gone = old.allocate(req(), at(0));
    const ipam = section1();
    ipam.load([gone]);
    assert.deepEqual(ipam.list({}), [gone]);
    ipam.release(gone.key, at(0));
    assert.deepEqual(ipam.expire(at(10 * MIN)), [gone.key]);

    // A /64 from an old prefix-mode pool now covers a /112 pool: nothing in it is handed out.
    const was = new Ipam([pool('per-vm', 'fd00:9::/48', { mode: 'prefix' })], { quarantineMs: 0, bridges: [] });
    const slash64 = was.allocate(req(), at(0));
    assert.equal(slash64.key, 'fd00:9::/64');
    const now = new Ipam([pool('lab', 'fd00:9::100:0/112')], { quarantineMs: 0, bridges: [] });
    now.load([slash64]);
    assert.match(refusal(() => now.allocate(req(), at(0))).message, /allocated as a whole/);
    assert.equal(refusal(() => now.allocate(statik('fd00:9::100:5'), at(0))).kind, 'already_exists');
    const inLab = new Ipam([pool('lab', 'fd00:9::100:0/112')], { quarantineMs: 0, bridges: [] }).allocate(req(), at(0));
    assert.throws(() => now.load([inLab, slash64]), /overlap/);
  });
});
