// `metald vm ...` and `metald config check` as a user runs them (node bin/metald.js),
// against a real daemon with the sandbox backend. Needs root. Names: instance
// `mtdt<hex>`, data plane `mtdtest-dp-<hex>`; all removed in `after`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { netnsList } from '../../src/kernel/netns.js';
import {
  addrsOf, alive, baseConfig, cleanupEnv, cli, type CliResult, type Env, freePort, type Json, leftovers, netnsPids,
  newEnv, procStat, REPO, startDaemon, TOKENS, vmNetns, writeConfig,
} from '../helpers/daemon-harness.js';

const CUSTOMER = 'daemon-test-customer-token-01234';
const OTHER = 'daemon-test-other-token-0123456';

function ok(r: CliResult): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function json(r: CliResult): Json {
  return JSON.parse(ok(r)) as Json;
}

describe('metald CLI against a running daemon', { timeout: 240_000 }, async () => {
  const env: Env = await newEnv();
  const vm = (args: string[], token: string | null = TOKENS.admin) => cli(env, ['vm', ...args], token);

  before(async () => {
    writeConfig(env, baseConfig(env, {
      auth: {
        tokens: [
          { name: 'ops', token: TOKENS.admin, role: 'admin' },
          { name: 'customer', token: CUSTOMER, tenant_id: 'test-customer' },
          { name: 'other', token: OTHER, tenant_id: 'other-tenant' },
        ],
      },
      // Fits the guide's CreateVm body (bridge br-prod, VLAN 100, 2600:beef:1000:100::10/64), plus a ULA pool.
      ipv6: {
        default_pool: { id: 'production', prefix: '2600:BEEF:1000::/44' },
        pools: [{ id: 'lab', prefix: 'fd00:77::/48' }],
        bridge: { name: 'br-prod' },
        enable_vlans: true,
      },
    }));
    await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('config check: a good file exits 0, a bad one exits 2 naming each YAML path and line', async () => {
    assert.equal(ok(await cli(undefined, ['config', 'check', env.configFile], null)).trim(), `${env.configFile}: OK`);
    const bad = path.join(env.dir, 'bad.yaml');
    writeFileSync(bad, [
      'instance_name: mtdtbad',
      'backend: sandbox',
      'ipv6:',
      '  default_pool:',
      '    id: p',
      '    prefix: "2600:BEEF:1001::/480"',
      '  security:',
      '    enable_ra_gaurd: false',
      '',
    ].join('\n'));
    const r = await cli(undefined, ['config', 'check', bad], null);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /ipv6\.default_pool\.prefix \(line 6\): .*not an IPv6 prefix/);
    assert.match(r.stderr, /ipv6\.security\.enable_ra_gaurd \(line 8\): .*did you mean "enable_ra_guard"/);
    // A malformed section-2 policy rule: its path, line and the column of the bad token in the file.
    const badPolicy = path.join(env.dir, 'bad-policy.yaml');
    writeFileSync(badPolicy, [
      'instance_name: mtdtbad',
      'backend: sandbox',
      'ipv6:',
      '  security_policies:',
      '    - name: strict',
      '      rules:',
      '        - "DENY ipv6 between vlans except same-tenant"',
      '        - "RATE-LIMIT nd 50 per-vm"',
      '',
    ].join('\n'));
    const p = await cli(undefined, ['config', 'check', badPolicy], null);
    assert.equal(p.code, 2, p.stderr);
    assert.match(p.stderr, /ipv6\.security_policies\[0\]\.rules\[1\] \(line 8, col 26\): expected a rate like 50pps, got "50"/);
    // The daemon refuses to start on it, with the same words, before it touches anything.
    const serve = await cli(undefined, ['serve', '-c', badPolicy], null);
    assert.notEqual(serve.code, 0);
    assert.match(serve.stderr, /ipv6\.security_policies\[0\]\.rules\[1\] \(line 8, col 26\): expected a rate like 50pps/);
    assert.doesNotMatch(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }), /mtdtbad/, 'no namespace of the refused instance');
    const missing = await cli(undefined, ['config', 'check', path.join(env.dir, 'nope.yaml')], null);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read config file .*nope\.yaml/);
  });

  it('vm create (flags), list, list -o json, get', async () => {
    const out = ok(await vm(['create', '--id', 'c1', '--tenant', 'test-customer', '--bridge', 'br-prod', '--ipv6', 'fd00:77::21/64', '--gateway', 'fd00:77::1']));
    assert.match(out, /^c1\s+test-customer\s+created\s+no\s+fd00:77::21\/64\s+m\S+$/m);
    assert.ok((await addrsOf(vmNetns(env, 'c1'), 'eth0')).addrs.includes('fd00:77::21/64'), 'eth0 lacks the address');

    const table = ok(await vm(['list']));
    assert.match(table, /^VM ID\s+TENANT\s+STATE/m);
    assert.match(table, /^c1\s+test-customer\s+created\b/m);
    assert.match(table, /\(1 of 1\)/);

    const list = json(await vm(['list', '-o', 'json']));
    assert.equal(list['total_count'], 1);
    const vms = list['vms'] as Json[];
    assert.deepEqual(vms.map((v) => [v['vm_id'], v['state'], v['tenant_id']]), [['c1', 'VM_STATE_CREATED', 'test-customer']]);

    assert.match(ok(await vm(['get', 'c1'])), /^state:\s+created$/m);
    const got = json(await cli(env, ['-o', 'json', 'vm', 'get', 'c1'], TOKENS.admin));
    const nic = (got['network_status'] as Json[])[0]!;
    assert.equal(nic['ipv6_address'], 'fd00:77::21/64');
    assert.equal(nic['ipv6_gateway'], 'fd00:77::1');
    assert.equal(got['backend'], 'sandbox');
  });

  // BUG (uncommitted IPAM work in the tree, src/lifecycle/addressing.ts addressOf() with the allocator):
  // auto-assign hands out <subnet>::1 (2600:beef:1000::1) and addressOf() then refuses it as "the
  // gateway address of its subnet", so the first VM created without --ipv6 always fails (exit 2).
  // Passes on commit 7ce9d9e (no IPAM yet).
  it('vm create with only --id and --tenant succeeds (any address it gets lies in a pool)', async () => {
    const created = json(await vm(['create', '--id', 'c0', '--tenant', 'test-customer', '-o', 'json']));
    const addr = String((created['network_status'] as Json[])[0]?.['ipv6_address'] ?? '');
    assert.ok(addr === '' || /^(2600:beef:100|fd00:77:)/.test(addr), `address ${addr} outside the pools`);
    assert.equal(ok(await vm(['delete', 'c0'])).trim(), 'c0 deleted');
  });

  it('vm boot, pause, resume, isolate, unisolate, shutdown --force, delete', async () => {
    const ns = vmNetns(env, 'c1');
    assert.equal(ok(await vm(['boot', 'c1'])).trim(), 'c1 running');
    const [pid] = await netnsPids(ns);
    assert.ok(pid !== undefined, 'no guest after boot');

    assert.equal(ok(await vm(['pause', 'c1'])).trim(), 'c1 paused');
    assert.equal((await procStat(pid))?.state, 'T');
    assert.equal(ok(await vm(['resume', 'c1'])).trim(), 'c1 running');
    assert.notEqual((await procStat(pid))?.state, 'T');

    assert.equal(ok(await vm(['isolate', 'c1', '--reason', 'x'])).trim(), 'c1 isolated');
    let got = json(await vm(['get', 'c1', '-o', 'json']));
    assert.equal(got['isolated'], true);
    assert.equal(got['isolation_reason'], 'x');
    assert.match(ok(await vm(['get', 'c1'])), /^isolated:\s+yes \(x\)$/m);
    assert.equal(ok(await vm(['unisolate', 'c1'])).trim(), 'c1 no longer isolated');
    got = json(await vm(['get', 'c1', '-o', 'json']));
    assert.notEqual(got['isolated'], true);

    assert.equal(ok(await vm(['shutdown', 'c1', '--force'])).trim(), 'c1 shutdown');
    assert.equal(await alive(pid), false, 'guest survived shutdown --force');
    assert.equal(ok(await vm(['delete', 'c1'])).trim(), 'c1 deleted');
    assert.equal((await netnsList()).includes(ns), false, 'namespace survived delete');
    assert.equal((await vm(['get', 'c1'])).code, 3);
  });

  it('vm create -f with the guide\'s CreateVm body', async () => {
    const file = path.join(REPO, 'test/fixtures/guide-create-vm.json');
    const created = json(await vm(['create', '-f', file, '--id', 'guide-1', '-o', 'json'], CUSTOMER));
    assert.equal(created['vm_id'], 'guide-1');
    assert.equal(created['tenant_id'], 'test-customer');
    assert.equal(created['state'], 'VM_STATE_CREATED');
    const nic = (created['network_status'] as Json[])[0]!;
    assert.equal(nic['ipv6_address'], '2600:beef:1000:100::10/64');
    assert.equal(nic['ipv6_gateway'], '2600:beef:1000:100::1');
    const cfgNic = ((created['config'] as Json)['network'] as Json[])[0]!;
    assert.equal(cfgNic['bridge_name'], 'br-prod');
    assert.equal(cfgNic['vlan_id'], '100');
    const eth0 = await addrsOf(vmNetns(env, 'guide-1'), 'eth0');
    assert.ok(eth0.addrs.includes('2600:beef:1000:100::10/64'), `eth0 has ${eth0.addrs.join(', ')}`);
    assert.equal(eth0.mac, nic['mac_address']);
    assert.equal((await vm(['get', 'guide-1'], OTHER)).code, 3, 'another tenant sees the VM');
    assert.equal(ok(await vm(['boot', 'guide-1'], CUSTOMER)).trim(), 'guide-1 running');
    assert.equal(ok(await vm(['delete', 'guide-1'], CUSTOMER)).trim(), 'guide-1 deleted');
    assert.equal((await netnsList()).includes(vmNetns(env, 'guide-1')), false);
  });

  it('exit codes: not found 3, failed precondition 4, bad token 5, unreachable 6, invalid argument 2', async () => {
    const nf = await vm(['get', 'nope']);
    assert.equal(nf.code, 3, nf.stderr);
    assert.match(nf.stderr, /not_found/);

    ok(await vm(['create', '--id', 'c2', '--tenant', 'test-customer', '--ipv6', 'fd00:77::22/64']));
    const pre = await vm(['pause', 'c2']);
    assert.equal(pre.code, 4, pre.stderr);
    assert.match(pre.stderr, /cannot pause VM c2: it is created/);
    assert.equal((await vm(['create', '--id', 'c2', '--tenant', 'test-customer'])).code, 4, 'already exists');

    const badToken = await vm(['list'], 'not-a-configured-token-0123');
    assert.equal(badToken.code, 5, badToken.stderr);
    assert.match(badToken.stderr, /unauthenticated/);
    assert.equal((await vm(['list'], null)).code, 5);
    const denied = await vm(['create', '--id', 'c3', '--tenant', 'test-customer'], OTHER);
    assert.equal(denied.code, 5, denied.stderr);
    assert.match(denied.stderr, /permission_denied/);

    const closed = await freePort();
    const down = await cli(undefined, ['--api', `http://127.0.0.1:${closed}`, '--token', TOKENS.admin, 'vm', 'list'], null);
    assert.equal(down.code, 6, `refused connection gave exit ${down.code}: ${down.stderr}`);
    assert.match(down.stderr, /ECONNREFUSED/);

    const badId = await vm(['create', '--id', 'Bad_Id', '--tenant', 'test-customer']);
    assert.equal(badId.code, 2, badId.stderr);
    assert.match(badId.stderr, /invalid_argument/);
    assert.equal((await vm(['create', '--id', 'c4', '--tenant', 'test-customer', '--ipv6', 'fd00:77::1'])).code, 2, 'address without /len');
    assert.equal((await vm(['create', '--id', 'c4', '--tenant', 'test-customer', '--bridge', 'br-nope'])).code, 2, 'unknown bridge');
    assert.equal((await vm(['get', 'Bad_Id'])).code, 2);
    assert.equal((await vm(['list', '--state', 'bogus'])).code, 2);
    assert.equal((await vm(['frobnicate'])).code, 2);
    assert.equal((await cli(env, ['-o', 'yaml', 'vm', 'list'])).code, 2);

    // The refused calls created nothing.
    const ids = (json(await vm(['list', '-o', 'json']))['vms'] as Json[]).map((v) => v['vm_id']);
    assert.deepEqual(ids.filter((id) => id !== 'c1'), ['c2']);
    ok(await vm(['delete', 'c2']));
    assert.equal((await netnsList()).includes(vmNetns(env, 'c2')), false);
    assert.equal((await netnsList()).includes(vmNetns(env, 'c3')), false);
  });

  // BUG (src/cli/vm-commands.ts): numeric flags go through Number()/BigInt() unchecked, so a typo
  // reaches protobuf serialisation and exits 1 with "serialize binary: ... invalid uint32: NaN
  // (internal)" (or "Cannot convert abc to a BigInt"), which reads like a server fault. A bad
  // `-f` file (invalid JSON, wrong field type) also exits 1. Both are usage errors: exit 2.
  it('bad flag values and a malformed -f file are usage errors (exit 2), not internal errors', async () => {
    const badJson = path.join(env.dir, 'bad-create.json');
    writeFileSync(badJson, '{"config": {"cpu": {"vcpu_count": "two"}}}');
    const cases: string[][] = [
      ['create', '--id', 'n1', '--tenant', 'test-customer', '--vcpus', 'abc'],
      ['create', '--id', 'n2', '--tenant', 'test-customer', '--vcpus', '-1'],
      ['create', '--id', 'n3', '--tenant', 'test-customer', '--memory-mib', 'abc'],
      ['list', '--page-size', 'abc'],
      ['shutdown', 'n1', '--timeout', 'abc'],
      ['create', '-f', badJson],
    ];
    const wrong: string[] = [];
    for (const args of cases) {
      const r = await vm(args);
      if (r.code !== 2 || /internal/.test(r.stderr)) wrong.push(`vm ${args.join(' ')} => exit ${r.code}: ${r.stderr.trim()}`);
    }
    assert.deepEqual(wrong, []);
  });
});
