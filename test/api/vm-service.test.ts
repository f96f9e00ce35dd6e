import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { equals, fromJson, type JsonValue } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { VmConfigSchema, VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { startHarness, TOKENS, type Harness } from '../helpers/api-harness.js';

const guideBody = readFileSync(new URL('../fixtures/guide-create-vm.json', import.meta.url), 'utf8');

async function rpc(h: Harness, method: string, body: unknown, token?: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${h.url}/vmprovisioner.v1.VmService/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function rejectsWith(p: Promise<unknown>, code: Code, msg?: RegExp | string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, String(e));
    assert.equal(e.code, code, `code ${Code[e.code]}: ${e.rawMessage}`);
    if (typeof msg === 'string') assert.equal(e.rawMessage, msg);
    else if (msg) assert.match(e.rawMessage, msg);
    return true;
  });
}

describe('VmService over real HTTP', () => {
  let h: Harness;
  before(async () => { h = await startHarness(); });
  after(async () => { await h.close(); });

  it("accepts the guide's step 3.2 curl body as written and returns every field", async () => {
    const created = await rpc(h, 'CreateVm', guideBody, TOKENS.customer);
    assert.equal(created.status, 200, JSON.stringify(created.json));
    const id = created.json.vmId;
    assert.match(id, /^vm-[a-z2-7]{16}$/);
    assert.equal(created.json.state, 'VM_STATE_CREATED');

    const got = await rpc(h, 'GetVmInfo', { vm_id: id }, TOKENS.customer);
    assert.equal(got.status, 200);
    const sent = fromJson(VmConfigSchema, JSON.parse(guideBody).config as JsonValue);
    const back = fromJson(VmConfigSchema, got.json.vm.config as JsonValue);
    assert.ok(equals(VmConfigSchema, sent, back), 'stored config equals the request');
    const nic = got.json.vm.config.network[0];
    assert.equal(nic.vlanId, '100');
    assert.equal(nic.ipv6.security.ndRateLimit, 100);
    assert.deepEqual(nic.securityPolicy.ingressRules, ['allow icmpv6 from any to any', 'allow tcp from any to any port 80,443', 'deny all from any to any']);
    assert.equal(got.json.vm.config.securityProfile.enableNetworkMicrosegmentation, true);
    assert.equal(got.json.vm.tenantId, 'test-customer');
    assert.equal(got.json.vm.networkStatus[0].ipv6Address, '2600:beef:1000:100::10/64');
    assert.equal(got.json.vm.networkStatus[0].ipv6Gateway, '2600:beef:1000:100::1');
  });

  it('accepts a rule list that cannot do all it says, and says so in warnings', async () => {
    const body = JSON.parse(guideBody);
    body.vm_id = 'warned';
    body.config.network[0].ipv6.address = '2600:beef:1000:101::11/64';
    body.config.network[0].ipv6.gateway = '2600:beef:1000:101::1';
    body.config.network[0].security_policy.egress_rules = ['deny all from any to any'];
    const res = await rpc(h, 'CreateVm', body, TOKENS.customer);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const warnings = res.json.warnings as string[];
    assert.ok(warnings.some((w) => w.startsWith('config.network[0].security_policy.egress_rules[0]: ') && /ICMPv6/.test(w)), JSON.stringify(warnings));
    assert.ok(warnings.some((w) => /only denies/.test(w)), JSON.stringify(warnings));
    await rpc(h, 'DeleteVm', { vm_id: 'warned' }, TOKENS.customer);
  });

  it('reports bad input with the field path and invalid_argument', async () => {
    const body = JSON.parse(guideBody);
    body.config.network[0].ipv6.address = '2600:beef::g/64';
    const res = await rpc(h, 'CreateVm', body, TOKENS.customer);
    assert.equal(res.status, 400);
    assert.equal(res.json.code, 'invalid_argument');
    assert.equal(res.json.message, 'config.network[0].ipv6.address: "2600:beef::g/64" is not an IPv6 address with prefix length (addr/len)');
  });

  const cases: [string, (b: any) => void, string][] = [
    ['unknown bridge', (b) => (b.config.network[0].bridge_name = 'br-nope'), 'config.network[0].bridge_name: "br-nope" is not a configured bridge (configured: br-prod, br-shared)'],
    ['management vlan', (b) => (b.config.network[0].vlan_id = '1'), 'config.network[0].vlan_id: VLAN 1 is the management VLAN and is reserved for the host'],
    ['vlan out of range', (b) => (b.config.network[0].vlan_id = '4095'), 'config.network[0].vlan_id: 4095 is out of range 1-4094'],
    ['gateway off-subnet', (b) => (b.config.network[0].ipv6.gateway = '2600:beef:1000::1'), 'config.network[0].ipv6.gateway: "2600:beef:1000::1" is not in the VM\'s subnet 2600:beef:1000:100::/64'],
    ['link-local address', (b) => (b.config.network[0].ipv6.address = 'fe80::5/64'), 'config.network[0].ipv6.address: "fe80::5/64" is a link-local address; a VM needs a global one'],
    ['documentation prefix', (b) => { b.config.network[0].ipv6.address = '2001:db8::5/64'; b.config.network[0].ipv6.gateway = ''; }, 'config.network[0].ipv6.address: "2001:db8::5/64" is a documentation address and no configured pool contains it'],
    ['memory not MiB', (b) => (b.config.memory.size_bytes = 1000), 'config.memory.size_bytes: 1000 is not a whole number of MiB (VMMs size memory in MiB)'],
    ['relative kernel path', (b) => (b.config.boot.kernel_path = 'vmlinux'), 'config.boot.kernel_path: "vmlinux" must be an absolute path'],
    ['bad isolation level', (b) => (b.config.network[0].security_policy.tenant_isolation_level = 'paranoid'), 'config.network[0].security_policy.tenant_isolation_level: "paranoid" is not one of strict, moderate, none'],
    ['bad profile', (b) => (b.config.security_profile.profile_name = 'ultra'), 'config.security_profile.profile_name: "ultra" is not one of high, medium, low'],
    ['bad RA source', (b) => (b.config.network[0].ipv6.security.allowed_ra_sources = ['nope']), 'config.network[0].ipv6.security.allowed_ra_sources[0]: "nope" is not an IPv6 address'],
    ['a /0 prefix (would make the host route everything to the bridge)', (b) => { b.config.network[0].ipv6.address = '2600:beef:1000:200::10/0'; b.config.network[0].ipv6.gateway = '2a00:1450:4001::1'; },
      'config.network[0].ipv6.address: prefix length must be /64 (a VM subnet), got /0'],
    ['a gateway that is not the bridge\'s (would make the host claim another VM\'s address)', (b) => { b.config.network[0].ipv6.address = '2600:beef:1000:200::10/64'; b.config.network[0].ipv6.gateway = '2600:beef:1000:200::20'; },
      'config.network[0].ipv6.gateway: must be 2600:beef:1000:200::1, the address metald gives the bridge for this subnet'],
    ['bad MAC', (b) => (b.config.network[0].mac_address = '01:00:5e:00:00:01'), 'config.network[0].mac_address: 01:00:5e:00:00:01 is a multicast MAC; a NIC needs a unicast one'],
  ];
  for (const [name, mutate, message] of cases) {
    it(`invalid_argument: ${name}`, async () => {
      const body = JSON.parse(guideBody);
      mutate(body);
      const res = await rpc(h, 'CreateVm', body, TOKENS.customer);
      assert.equal(res.json.code, 'invalid_argument', JSON.stringify(res.json));
      assert.equal(res.json.message, message);
    });
  }

  it('a malformed JSON body is invalid_argument', async () => {
    const res = await rpc(h, 'CreateVm', '{"config": {"cpu": {"vcpu_count": "many"}}}', TOKENS.customer);
    assert.equal(res.json.code, 'invalid_argument');
  });

  it('validates caller-chosen ids and refuses duplicates', async () => {
    const c = h.client(TOKENS.customer);
    await rejectsWith(c.createVm({ vmId: 'Bad_ID', config: { tenantId: 'test-customer' } }), Code.InvalidArgument,
      'vm_id: "Bad_ID" is not a valid VM id: 1-63 characters of a-z, 0-9 and \'-\', starting with a letter or digit');
    await rejectsWith(c.createVm({ vmId: 'x'.repeat(64), config: { tenantId: 'test-customer' } }), Code.InvalidArgument, /vm_id/);
    await c.createVm({ vmId: 'dup-1', config: { tenantId: 'test-customer' } });
    await rejectsWith(c.createVm({ vmId: 'dup-1', config: { tenantId: 'test-customer' } }), Code.AlreadyExists, 'vm_id: VM dup-1 already exists');
  });

  it('drives every lifecycle RPC over each protocol', async () => {
    for (const kind of ['connect', 'connect-binary', 'grpc', 'grpc-web'] as const) {
      const c = h.client(TOKENS.admin, kind);
      const id = `life-${kind}`;
      const res = await c.createVm({ vmId: id, config: { tenantId: 'test-customer', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
      assert.equal(res.state, VmState.CREATED);
      assert.equal((await c.bootVm({ vmId: id })).state, VmState.RUNNING);
      assert.equal((await c.pauseVm({ vmId: id })).state, VmState.PAUSED);
      await rejectsWith(c.pauseVm({ vmId: id }), Code.FailedPrecondition, `cannot pause VM ${id}: it is paused (pause needs running)`);
      assert.equal((await c.resumeVm({ vmId: id })).state, VmState.RUNNING);
      assert.equal((await c.rebootVm({ vmId: id })).state, VmState.RUNNING);
      const iso = await c.isolateVm({ vmId: id, reason: 'suspected scan' });
      assert.equal(iso.isolated, true);
      let info = (await c.getVmInfo({ vmId: id })).vm!;
      assert.equal(info.isolated, true);
      assert.equal(info.isolationReason, 'suspected scan');
      assert.ok(info.isolatedAt);
      assert.equal(info.state, VmState.RUNNING, 'isolation is a flag, the VM keeps running');
      assert.equal((await c.unisolateVm({ vmId: id })).isolated, false);
      assert.equal((await c.shutdownVm({ vmId: id, timeoutSeconds: 1 })).state, VmState.SHUTDOWN);
      assert.equal((await c.bootVm({ vmId: id })).state, VmState.RUNNING);
      assert.equal((await c.shutdownVm({ vmId: id, force: true })).state, VmState.SHUTDOWN);
      info = (await c.getVmInfo({ vmId: id })).vm!;
      assert.equal(info.networkStatus[0]!.hostDevice.length, 15);
      assert.match(info.networkStatus[0]!.macAddress, /^02(:[0-9a-f]{2}){5}$/);
      assert.equal((await c.deleteVm({ vmId: id })).success, true);
      await rejectsWith(c.getVmInfo({ vmId: id }), Code.NotFound, `VM ${id} not found`);
    }
  });

  it("the guide's incident script body (IsolateVm with only vm_id) works", async () => {
    const c = h.client(TOKENS.admin);
    await c.createVm({ vmId: 'incident-1', config: { tenantId: 'test-customer' } });
    const res = await rpc(h, 'IsolateVm', { vm_id: 'incident-1' }, TOKENS.admin);
    assert.equal(res.status, 200);
    assert.equal(res.json.isolated, true);
    assert.equal((await c.getVmInfo({ vmId: 'incident-1' })).vm!.isolationReason, 'unspecified');
  });

  it('a failed backend step marks the VM failed with the reason; a failed create leaves no row', async () => {
    const c = h.client(TOKENS.admin);
    await c.createVm({ vmId: 'fails-boot', config: { tenantId: 't1' } });
    h.backend.failNext.set('boot', new Error('kernel not found'));
    await rejectsWith(c.bootVm({ vmId: 'fails-boot' }), Code.Internal, /kernel not found/);
    const info = (await c.getVmInfo({ vmId: 'fails-boot' })).vm!;
    assert.equal(info.state, VmState.FAILED);
    assert.equal(info.failureReason, 'kernel not found');

    h.backend.failNext.set('create', new Error('no space'));
    await rejectsWith(c.createVm({ vmId: 'fails-create', config: { tenantId: 't1' } }), Code.Internal);
    await rejectsWith(c.getVmInfo({ vmId: 'fails-create' }), Code.NotFound);
    assert.ok(h.backend.calls.includes('delete:fails-create'), 'backend cleanup ran');
    assert.equal(h.backend.vms.has('fails-create'), false);
  });
});

describe('auth and tenant scoping', () => {
  let h: Harness;
  before(async () => { h = await startHarness(); });
  after(async () => { await h.close(); });

  it('missing, malformed or wrong tokens are unauthenticated', async () => {
    await rejectsWith(h.client().listVms({}), Code.Unauthenticated, 'missing or malformed bearer token (Authorization: Bearer <token>)');
    await rejectsWith(h.client('wrong-token-0000000000000').listVms({}), Code.Unauthenticated, 'invalid bearer token');
    const raw = await fetch(`${h.url}/vmprovisioner.v1.VmService/ListVms`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Basic abc' }, body: '{}' });
    assert.equal(raw.status, 401);
    assert.deepEqual(h.authFailures, ['missing bearer token', 'unknown token', 'malformed authorization header']);
  });

  it('a tenant cannot lift an isolation an administrator set, nor copy another VM\'s MAC', async () => {
    const a = h.client(TOKENS.customer);
    await a.createVm({ vmId: 'iso-1', config: { network: [{ id: 'eth0', macAddress: '02:aa:bb:cc:dd:01' }] } });
    await h.client(TOKENS.admin).isolateVm({ vmId: 'iso-1', reason: 'scanning' });
    await rejectsWith(a.unisolateVm({ vmId: 'iso-1' }), Code.PermissionDenied, 'VM iso-1 was isolated by an administrator; only an administrator can lift it');
    assert.equal((await h.client(TOKENS.admin).unisolateVm({ vmId: 'iso-1' })).isolated, false);
    await a.isolateVm({ vmId: 'iso-1', reason: 'self' });
    assert.equal((await a.unisolateVm({ vmId: 'iso-1' })).isolated, false, 'its own isolation a tenant may lift');
    await rejectsWith(h.client(TOKENS.other).createVm({ vmId: 'iso-2', config: { network: [{ id: 'eth0', macAddress: '02:AA:BB:CC:DD:01' }] } }), Code.AlreadyExists,
      'config.network[0].mac_address: 02:aa:bb:cc:dd:01 is already in use');
    await a.deleteVm({ vmId: 'iso-1' });
    await h.client(TOKENS.other).createVm({ vmId: 'iso-2', config: { network: [{ id: 'eth0', macAddress: '02:aa:bb:cc:dd:01' }] } });
    await h.client(TOKENS.other).deleteVm({ vmId: 'iso-2' });
  });

  it('a tenant sees and acts only on its own VMs', async () => {
    const a = h.client(TOKENS.customer);
    const b = h.client(TOKENS.other);
    await a.createVm({ vmId: 'a-1', config: {} });
    assert.equal((await a.getVmInfo({ vmId: 'a-1' })).vm!.tenantId, 'test-customer', 'tenant filled from the token');
    await rejectsWith(a.createVm({ vmId: 'a-2', config: { tenantId: 'other-tenant' } }), Code.PermissionDenied,
      'config.tenant_id: tenant test-customer may not create VMs for tenant other-tenant');
    await b.createVm({ vmId: 'b-1', config: { tenantId: 'other-tenant' } });
    await rejectsWith(b.getVmInfo({ vmId: 'a-1' }), Code.NotFound, 'VM a-1 not found');
    await rejectsWith(b.deleteVm({ vmId: 'a-1' }), Code.NotFound);
    await rejectsWith(b.isolateVm({ vmId: 'a-1' }), Code.NotFound);
    assert.deepEqual((await b.listVms({})).vms.map((v) => v.vmId), ['b-1']);
    await rejectsWith(b.listVms({ tenantId: 'test-customer' }), Code.PermissionDenied);
    const all = await h.client(TOKENS.admin).listVms({});
    assert.deepEqual(all.vms.map((v) => v.vmId), ['a-1', 'b-1']);
    assert.deepEqual((await h.client(TOKENS.admin).listVms({ tenantId: 'other-tenant' })).vms.map((v) => v.vmId), ['b-1']);
  });
});

describe('ListVms pagination and filters', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
    const c = h.client(TOKENS.admin);
    for (let i = 0; i < 250; i++) {
      const id = `p-${String(i).padStart(3, '0')}`;
      await c.createVm({ vmId: id, config: { tenantId: i % 2 ? 'odd' : 'even' } });
      if (i % 5 === 0) await c.bootVm({ vmId: id });
    }
  });
  after(async () => { await h.close(); });

  it('pages of 100 with a total count and a token', async () => {
    const c = h.client(TOKENS.admin);
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const res = await c.listVms({ pageSize: 100, pageToken: token });
      assert.equal(res.totalCount, 250);
      seen.push(...res.vms.map((v) => v.vmId));
      token = res.nextPageToken;
      pages++;
    } while (token);
    assert.equal(pages, 3);
    assert.equal(seen.length, 250);
    assert.equal(new Set(seen).size, 250);
    assert.deepEqual(seen, [...seen].sort());
  });

  it('state filter, tenant filter and default page size', async () => {
    const c = h.client(TOKENS.admin);
    const running = await c.listVms({ stateFilter: [VmState.RUNNING] });
    assert.equal(running.totalCount, 50);
    assert.ok(running.vms.every((v) => v.state === VmState.RUNNING));
    const both = await c.listVms({ stateFilter: [VmState.RUNNING, VmState.CREATED], tenantId: 'odd' });
    assert.equal(both.totalCount, 125);
    assert.equal(both.vms.length, 100, 'default page size 100');
  });

  it('rejects a forged token and an oversized page', async () => {
    const c = h.client(TOKENS.admin);
    await rejectsWith(c.listVms({ pageToken: 'not-a-token' }), Code.InvalidArgument, 'page_token: is not a token returned by ListVms');
    await rejectsWith(c.listVms({ pageSize: 5000 }), Code.InvalidArgument, 'page_size: at most 1000');
  });
});

describe('limits and concurrency', () => {
  it('max_vms is resource_exhausted, including under concurrent creates', async () => {
    const h = await startHarness({ maxVms: 5 });
    try {
      h.backend.delayMs = 20;
      const c = h.client(TOKENS.admin);
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => c.createVm({ vmId: `cap-${i}`, config: { tenantId: 't' } })));
      const ok = results.filter((r) => r.status === 'fulfilled').length;
      assert.equal(ok, 5);
      for (const r of results) {
        if (r.status === 'rejected') {
          assert.equal((r.reason as ConnectError).code, Code.ResourceExhausted);
          assert.equal((r.reason as ConnectError).rawMessage, 'max_vms (5) reached');
        }
      }
    } finally {
      await h.close();
    }
  });

  it('a configured bridge takes past the kernel\'s 1023 ports (sharded by the plane); its own cap is resource_exhausted, naming the field', async () => {
    const h = await startHarness({ maxVms: 5000 });
    try {
      const c = h.client(TOKENS.admin);
      for (let i = 0; i < 1030; i += 1) await c.createVm({ vmId: `port-${i}`, config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-shared' }] } });
    } finally {
      await h.close();
    }
    const small = await startHarness({ maxVms: 50, maxBridgePorts: 3 });
    try {
      const c = small.client(TOKENS.admin);
      for (let i = 0; i < 3; i += 1) await c.createVm({ vmId: `port-${i}`, config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-shared' }] } });
      await rejectsWith(c.createVm({ vmId: 'port-3', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-shared' }] } }), Code.ResourceExhausted,
        'config.network[0].bridge_name: bridge br-shared has 3 VM ports, the most one configured bridge takes with all its shards; attach the NIC to another bridge');
      await c.createVm({ vmId: 'other-bridge', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-prod' }] } });
      await c.deleteVm({ vmId: 'port-0' });
      await c.createVm({ vmId: 'port-3', config: { tenantId: 't', network: [{ id: 'eth0', bridgeName: 'br-shared' }] } });
    } finally {
      await small.close();
    }
  });

  it('calls on one VM are serialised; calls on different VMs overlap', async () => {
    const h = await startHarness();
    try {
      const c = h.client(TOKENS.admin);
      await c.createVm({ vmId: 'ser-a', config: { tenantId: 't' } });
      await c.createVm({ vmId: 'ser-b', config: { tenantId: 't' } });
      h.backend.delayMs = 100;
      // boot then pause on the same VM: pause must see the boot's result.
      const [boot, pause, other] = await Promise.all([
        c.bootVm({ vmId: 'ser-a' }),
        c.pauseVm({ vmId: 'ser-a' }),
        c.bootVm({ vmId: 'ser-b' }),
      ]);
      assert.equal(boot.state, VmState.RUNNING);
      assert.equal(pause.state, VmState.PAUSED);
      assert.equal(other.state, VmState.RUNNING);
      const [bootA, pauseA, bootB] = ['boot:ser-a', 'pause:ser-a', 'boot:ser-b'].map((k) => h.backend.spans.get(k)!);
      assert.ok(pauseA![0] >= bootA![1], 'same-VM calls ran one after the other');
      assert.ok(bootB![0] < bootA![1] && bootA![0] < bootB![1], 'calls on different VMs overlapped');
    } finally {
      await h.close();
    }
  });

  it('auth.mode none lets an anonymous caller act as admin', async () => {
    const h = await startHarness({ authMode: 'none' });
    try {
      const res = await rpc(h, 'CreateVm', guideBody);
      assert.equal(res.status, 200, JSON.stringify(res.json));
    } finally {
      await h.close();
    }
  });
});

describe('JSON fast path answers exactly like the Connect adapter', () => {
  it('same status and body for reads, pages and errors', async () => {
    const fast = await startHarness();
    const slow = await startHarness({ store: fast.store, fastPath: false });
    try {
      const c = fast.client(TOKENS.admin);
      for (let i = 0; i < 30; i++) {
        await c.createVm({ vmId: `eq-${i}`, config: { tenantId: i % 2 ? 'test-customer' : 'x', network: [{ id: 'eth0', ipv6: { address: `2600:beef:1000:100::${i + 16}/64` } }] } });
      }
      await c.bootVm({ vmId: 'eq-3' });
      await c.isolateVm({ vmId: 'eq-3', reason: 'why "quoted"' });
      const first = await rpc(fast, 'ListVms', { page_size: 7 }, TOKENS.admin);
      const cases: [string, unknown, string | undefined][] = [
        ['GetVmInfo', { vm_id: 'eq-3' }, TOKENS.admin],
        ['GetVmInfo', { vmId: 'eq-4' }, TOKENS.customer],
        ['GetVmInfo', { vm_id: 'eq-5' }, TOKENS.customer],
        ['GetVmInfo', { vm_id: 'nope' }, TOKENS.admin],
        ['GetVmInfo', { vm_id: 'BAD ID' }, TOKENS.admin],
        ['GetVmInfo', { vm_id: 'eq-3' }, undefined],
        ['GetVmInfo', { vm_id: 'eq-3', unknown_field: 1 }, TOKENS.admin],
        ['ListVms', {}, TOKENS.admin],
        ['ListVms', { page_size: 7 }, TOKENS.admin],
        ['ListVms', { page_size: 7, page_token: first.json.nextPageToken }, TOKENS.admin],
        ['ListVms', { state_filter: ['VM_STATE_RUNNING'] }, TOKENS.admin],
        ['ListVms', { stateFilter: [4, 2], pageSize: '5' }, TOKENS.customer],
        ['ListVms', { tenant_id: 'x' }, TOKENS.customer],
        ['ListVms', { state_filter: ['VM_STATE_DELETING'] }, TOKENS.admin],
        ['ListVms', { page_token: 'garbage' }, TOKENS.admin],
        ['ListVms', { page_size: 100000 }, TOKENS.admin],
      ];
      for (const [method, body, token] of cases) {
        const a = await rpc(fast, method, body, token);
        const b = await rpc(slow, method, body, token);
        assert.equal(a.status, b.status, `${method} ${JSON.stringify(body)} status`);
        if (a.status === 200) assert.deepEqual(a.json, b.json, `${method} ${JSON.stringify(body)}`);
        else assert.equal(a.json.code, b.json.code, `${method} ${JSON.stringify(body)} code`);
      }
    } finally {
      await fast.close();
      await slow.close();
    }
  });
});
