import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { startHarness, TOKENS, type Harness } from '../helpers/api-harness.js';

const guideBody = readFileSync(new URL('../fixtures/guide-create-vm.json', import.meta.url), 'utf8');
const section1 = readFileSync(new URL('../fixtures/config/guide-section1.yaml', import.meta.url), 'utf8');
const section2 = readFileSync(new URL('../fixtures/config/guide-section2.yaml', import.meta.url), 'utf8');

async function post(h: Harness, method: string, body: unknown, token = TOKENS.admin, service = 'VmService') {
  const res = await fetch(`${h.url}/vmprovisioner.v1.${service}/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, json: await res.json() as any };
}

describe("guide section 1: the step 3.2 VM's address", () => {
  let h: Harness;
  before(async () => { h = await startHarness({ configYaml: section1 }); });
  after(async () => { await h.close(); });

  it('gets 2600:beef:1000:100::10 (its own /64, since it asks for privacy extensions under strict source validation)', async () => {
    const res = await post(h, 'CreateVm', guideBody, TOKENS.customer);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const nic = res.json.vm.networkStatus[0];
    assert.equal(nic.ipv6Address, '2600:beef:1000:100::10/64');
    assert.equal(nic.ipv6Gateway, '2600:beef:1000:100::1');
    const allocs = await h.pools(TOKENS.customer).listAllocations({ vmId: res.json.vmId });
    assert.deepEqual(allocs.allocations.map((a) => [a.prefix, a.address, a.kind, a.poolId]), [['2600:beef:1000:100::/64', '2600:beef:1000:100::10', 'prefix', 'production']]);
  });

  it('a second VM asking for the same address is refused with already_exists', async () => {
    const res = await post(h, 'CreateVm', guideBody, TOKENS.customer);
    assert.equal(res.status, 409, JSON.stringify(res.json));
    assert.equal(res.json.code, 'already_exists');
    assert.match(res.json.message, /^config\.network\[0\]\.ipv6\.address: /);
  });

  it('another /128 inside that /64 is refused too, and a failed create leaves no VM', async () => {
    const body = JSON.parse(guideBody);
    body.vm_id = 'inside-64';
    body.config.network[0].ipv6.address = '2600:beef:1000:100::20/64';
    body.config.network[0].ipv6.enable_privacy_extensions = false;
    const res = await post(h, 'CreateVm', body, TOKENS.customer);
    assert.equal(res.json.code, 'already_exists', JSON.stringify(res.json));
    const got = await post(h, 'GetVmInfo', { vm_id: 'inside-64' });
    assert.equal(got.json.code, 'not_found');
  });

  it('auto-assignment on br-prod is deterministic and skips ::0, the bridge and reserved addresses', async () => {
    const c = h.client(TOKENS.admin);
    const got: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await c.createVm({ vmId: `auto-${i}`, config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
      got.push(r.vm!.networkStatus[0]!.ipv6Address);
      assert.equal(r.vm!.networkStatus[0]!.ipv6Gateway, '2600:beef:1000::1');
    }
    assert.deepEqual(got, ['3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c'].map((x) => `2600:beef:1000::${x}/64`));
    const r = await c.createVm({ vmId: 'auto-x', config: { tenantId: 't', network: [{ id: 'eth0' }, { id: 'eth1' }] } });
    assert.deepEqual(r.vm!.networkStatus.map((n) => n.ipv6Address), ['2600:beef:1000::d/64', '2600:beef:1000::e/64']);
  });

  it('an address outside every pool, or of a non-global scope, is invalid_argument naming the field', async () => {
    const body = JSON.parse(guideBody);
    body.vm_id = 'outside';
    body.config.network[0].ipv6.address = '2a00:1::10/64';
    body.config.network[0].ipv6.gateway = '2a00:1::1';
    const res = await post(h, 'CreateVm', body, TOKENS.customer);
    assert.equal(res.json.code, 'invalid_argument');
    assert.match(res.json.message, /^config\.network\[0\]\.ipv6\.address: .*2600:beef:1000::\/44/);
    const detail = res.json.details?.find((d: any) => d.type === 'google.rpc.BadRequest');
    assert.ok(detail, 'BadRequest detail carries the field path');
  });
});

describe('quarantine and pools', () => {
  let h: Harness;
  let clock = Date.parse('2026-11-26T08:00:00Z');
  before(async () => { h = await startHarness({ now: () => new Date(clock) }); });
  after(async () => { await h.close(); });

  it('a deleted VM\'s address stays in quarantine for 10 minutes, then is handed out again', async () => {
    const c = h.client(TOKENS.admin);
    const a = await c.createVm({ vmId: 'q-a', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
    const addr = a.vm!.networkStatus[0]!.ipv6Address;
    await c.deleteVm({ vmId: 'q-a' });
    const q = await h.pools(TOKENS.admin).listAllocations({ includeQuarantined: true, poolId: 'production' });
    assert.equal(q.allocations.length, 1);
    assert.ok(q.allocations[0]!.releasedAt && q.allocations[0]!.quarantinedUntil);
    const b = await c.createVm({ vmId: 'q-b', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
    assert.notEqual(b.vm!.networkStatus[0]!.ipv6Address, addr, 'not re-used while quarantined');
    const static1 = await c.createVm({ vmId: 'q-c', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod', ipv6: { address: addr } }] } }).catch((e) => e);
    assert.ok(static1 instanceof ConnectError && static1.code === Code.AlreadyExists && /quarantine/.test(static1.rawMessage), String(static1));
    clock += 10 * 60_000 + 1;
    // No periodic expiry has run yet: the create itself must clear the old row.
    const d = await c.createVm({ vmId: 'q-d', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
    assert.equal(d.vm!.networkStatus[0]!.ipv6Address, addr, 'lowest free again after quarantine');
  });

  it('GetPool and ListPools report size, used, free, quarantined and utilisation', async () => {
    const p = (await h.pools(TOKENS.customer).getPool({ poolId: 'production' })).pool!;
    assert.equal(p.prefix, '2600:beef:1000::/44');
    assert.equal(p.size, (2n ** 84n).toString());
    assert.equal(p.used, '2');
    assert.equal(p.unit, '/128');
    const list = await h.pools(TOKENS.admin).listPools({});
    assert.deepEqual(list.pools.map((x) => x.id), ['production', 'lab', 'manual']);
  });

  it('manual pools: AllocateAddress / ReleaseAddress are admin only; a VM cannot auto-assign from them', async () => {
    const pools = h.pools(TOKENS.admin);
    await assert.rejects(h.pools(TOKENS.customer).allocateAddress({ poolId: 'manual', owner: 'dns' }), (e: ConnectError) => e.code === Code.PermissionDenied);
    const a = await pools.allocateAddress({ poolId: 'manual', owner: 'dns-resolver' });
    assert.equal(a.allocation!.poolId, 'manual');
    assert.equal(a.allocation!.owner, 'dns-resolver');
    const s = await pools.allocateAddress({ poolId: 'manual', owner: 'ntp', address: '2600:beef:2000::123' });
    assert.equal(s.allocation!.address, '2600:beef:2000::123');
    await assert.rejects(pools.allocateAddress({ poolId: 'manual', owner: 'dup', address: '2600:beef:2000::123' }), (e: ConnectError) => e.code === Code.AlreadyExists && /^address: /.test(e.rawMessage));
    const r = await pools.releaseAddress({ prefix: '2600:beef:2000::123' });
    assert.ok(r.allocation!.releasedAt);
    await assert.rejects(pools.releaseAddress({ prefix: '2600:beef:2000::123' }), (e: ConnectError) => e.code === Code.FailedPrecondition);
    const vmAlloc = (await pools.listAllocations({ poolId: 'production' })).allocations[0]!;
    await assert.rejects(pools.releaseAddress({ prefix: vmAlloc.prefix }), (e: ConnectError) => e.code === Code.FailedPrecondition && /belongs to VM/.test(e.rawMessage));
    const c = h.client(TOKENS.admin);
    await assert.rejects(c.createVm({ vmId: 'from-manual', config: { tenantId: 't', network: [{ id: 'eth0', ipv6: { poolId: 'manual' } }] } }), (e: ConnectError) => e.code === Code.InvalidArgument);
  });

  it('tenants see only their own allocations', async () => {
    await h.client(TOKENS.customer).createVm({ vmId: 'mine', config: { network: [{ id: 'eth0', bridgeName: 'br-shared' }] } });
    const mine = await h.pools(TOKENS.customer).listAllocations({});
    assert.ok(mine.allocations.length > 0);
    assert.ok(mine.allocations.every((a) => a.tenantId === 'test-customer'));
    await assert.rejects(h.pools(TOKENS.customer).listAllocations({ tenantId: 't' }), (e: ConnectError) => e.code === Code.PermissionDenied);
  });
});

describe('rate limits', () => {
  it('over rate_limit per hour: resource_exhausted with Retry-After and RetryInfo', async () => {
    let clock = Date.parse('2026-11-26T08:00:00Z');
    const h = await startHarness({
      now: () => new Date(clock),
      configYaml: 'ipv6:\n  default_pool:\n    id: small\n    prefix: "2600:beef:3000::/48"\n    rate_limit: 3\n',
    });
    try {
      const c = h.client(TOKENS.admin);
      for (let i = 0; i < 3; i++) {
        await c.createVm({ vmId: `rl-${i}`, config: { tenantId: 't', network: [{ id: 'eth0' }] } });
        clock += 60_000;
      }
      const res = await post(h, 'CreateVm', { vm_id: 'rl-3', config: { tenant_id: 't', network: [{ id: 'eth0' }] } });
      assert.equal(res.json.code, 'resource_exhausted', JSON.stringify(res.json));
      assert.equal(res.headers.get('retry-after'), String(57 * 60));
      assert.ok(res.json.details?.some((d: any) => d.type === 'google.rpc.RetryInfo'));
      const gone = await post(h, 'GetVmInfo', { vm_id: 'rl-3' });
      assert.equal(gone.json.code, 'not_found', 'a refused create leaves no VM');
      clock += 57 * 60_000;
      await c.createVm({ vmId: 'rl-4', config: { tenantId: 't', network: [{ id: 'eth0' }] } });
    } finally {
      await h.close();
    }
  });
});

describe('guide section 2 and concurrency', () => {
  it('1000 concurrent CreateVm calls against one pool get 1000 distinct addresses', async () => {
    const h = await startHarness({ configYaml: section2, maxVms: 5000 });
    try {
      const c = h.client(TOKENS.admin);
      const results = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
        c.createVm({ vmId: `c-${i}`, config: { tenantId: `t${i % 7}`, network: [{ id: 'eth0', bridgeName: 'br-tier1' }] } })));
      const addrs = results.map((r) => r.vm!.networkStatus[0]!.ipv6Address);
      assert.equal(new Set(addrs).size, 1000);
      assert.ok(addrs.every((a) => a.startsWith('2600:beef:1000::')), addrs[0]);
      const allocs = await h.pools(TOKENS.admin).listAllocations({ poolId: 'tier1-customers' });
      assert.equal(allocs.allocations.length, 1000);
      assert.equal(new Set(allocs.allocations.map((a) => a.prefix)).size, 1000);
    } finally {
      await h.close();
    }
  });
});

describe('prefix mode (RFC 8273)', () => {
  it('each NIC gets a /64 of its own, lowest first, with ::10 as its address and ::1 as gateway', async () => {
    const h = await startHarness({
      configYaml: 'ipv6:\n  default_pool:\n    id: per-vm\n    prefix: "2600:beef:4000::/56"\n    mode: prefix\n    reserved: ["2600:beef:4000::1"]\n',
    });
    try {
      const c = h.client(TOKENS.admin);
      const a = (await c.createVm({ vmId: 'p-a', config: { tenantId: 't', network: [{ id: 'eth0' }] } })).vm!.networkStatus[0]!;
      const b = (await c.createVm({ vmId: 'p-b', config: { tenantId: 't', network: [{ id: 'eth0', ipv6: { enablePrivacyExtensions: true } }] } })).vm!.networkStatus[0]!;
      // The first /64 holds a reserved address, so it is never given away whole.
      assert.deepEqual([a.ipv6Address, a.ipv6Gateway], ['2600:beef:4000:1::10/64', '2600:beef:4000:1::1']);
      assert.deepEqual([b.ipv6Address, b.ipv6Gateway], ['2600:beef:4000:2::10/64', '2600:beef:4000:2::1']);
      const allocs = await h.pools(TOKENS.admin).listAllocations({ poolId: 'per-vm' });
      assert.deepEqual(allocs.allocations.map((x) => [x.prefix, x.kind]), [['2600:beef:4000:1::/64', 'prefix'], ['2600:beef:4000:2::/64', 'prefix']]);
      const pool = (await h.pools(TOKENS.admin).getPool({ poolId: 'per-vm' })).pool!;
      assert.deepEqual([pool.size, pool.used, pool.unit], ['256', '2', '/64']);
    } finally {
      await h.close();
    }
  });
});
