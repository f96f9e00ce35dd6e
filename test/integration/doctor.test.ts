// `metald doctor` against the real kernel. Needs root. The sysctls checked and
// fixed are those of namespaces made here (`mtdtest-doc-<hex>`); the feature
// probes run in the doctor's own scratch namespaces (`<instance>-doctor-<hex>`).
// The root namespace is only read: every baseline key is compared before and
// after. All namespaces are removed in `after`, even when a test fails.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { SYSCTL_BASELINE, type CheckResult } from '../../src/doctor/checks.js';
import { doctorCommand, mustHaveFailures, runDoctor, startupCheck } from '../../src/doctor/doctor.js';
import { observeKvm, readRootSysctl } from '../../src/doctor/probe.js';
import { run } from '../../src/kernel/exec.js';
import { ipIn, netnsAdd, netnsDelete, netnsExists, netnsList } from '../../src/kernel/netns.js';

const hex = () => randomBytes(3).toString('hex');
const INST = `mtdd${randomBytes(2).toString('hex')}`;
const NS = `mtdtest-doc-${hex()}`;
const NS2 = `mtdtest-doc-${hex()}`;
const MISSING = `mtdtest-doc-${hex()}`;
const NS_KEYS = SYSCTL_BASELINE.filter((s) => !s.hostWide).map((s) => s.key);
const HOST_WIDE = SYSCTL_BASELINE.filter((s) => s.hostWide).map((s) => s.key);

const YAML = (extra = '') => `instance_name: ${INST}
backend: sandbox
auth: {mode: none}
${extra}ipv6:
  enabled: true
  default_pool: {id: d, prefix: "fd00:6d74::/48"}
  bridge: {name: br0, ipv6_address: "fd00:6d74::1/64"}
`;
const config = parseConfig(YAML(), 'doctor test').config;

async function nsSysctl(ns: string, key: string): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, 'sysctl', '-n', key])).trim();
}

async function rootSnapshot(): Promise<(string | undefined)[]> {
  return Promise.all(SYSCTL_BASELINE.map((s) => readRootSysctl(s.key)));
}

async function ours(): Promise<string[]> {
  return (await netnsList()).filter((n) => n.startsWith(`${INST}-`) || [NS, NS2, MISSING].includes(n));
}

function get(results: CheckResult[], id: string): CheckResult {
  const r = results.find((x) => x.id === id);
  assert.ok(r, `no result ${id}`);
  return r;
}

describe('metald doctor on this host', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mtd-doctor-'));
  let rootBefore: (string | undefined)[] = [];

  before(async () => {
    rootBefore = await rootSnapshot();
    for (const ns of [NS, NS2]) {
      await netnsAdd(ns);
      await ipIn(ns, ['link', 'set', 'lo', 'up']);
    }
  });

  after(async () => {
    for (const ns of await ours()) await netnsDelete(ns);
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(await ours(), [], 'namespaces left behind');
  });

  it('fails the sysctl baseline in a new namespace (its defaults: accept_ra=1, forwarding=0, ...)', async () => {
    const r = await runDoctor({ config, netns: NS });
    assert.deepEqual(r.target, { kind: 'netns', name: NS });
    assert.equal(r.ok, false);
    for (const [key, found] of [
      ['net.ipv6.conf.all.accept_ra', '1'], ['net.ipv6.conf.default.accept_ra', '1'],
      ['net.ipv6.conf.all.forwarding', '0'], ['net.ipv6.conf.default.forwarding', '0'],
      ['net.ipv6.conf.all.accept_redirects', '1'], ['net.ipv6.conf.default.accept_redirects', '1'],
    ] as const) {
      assert.deepEqual([get(r.results, key).status, get(r.results, key).found], ['fail', found], key);
    }
    const failing = mustHaveFailures(r.results).map((f) => f.id);
    assert.ok(failing.includes('net.ipv6.conf.all.accept_ra'));
    assert.match(get(r.results, 'net.ipv6.conf.all.accept_ra').fix, new RegExp(`^ip netns exec ${NS} sysctl -w `));
    // The neighbour-table keys are global: n-a here, read (not written) in the root namespace.
    for (const key of HOST_WIDE) {
      const g = get(r.results, key);
      assert.equal(g.status, 'n-a', key);
      assert.equal(g.found, `root ns: ${await readRootSysctl(key)}`);
      assert.match(g.note ?? '', /n\/a in this namespace \(host-wide: checked in the root namespace read-only\)/);
    }
    assert.deepEqual(await ours().then((l) => l.filter((n) => n.startsWith(`${INST}-doctor-`))), [], 'scratch namespace left');
  });

  it('reports the kernel features this machine really has', async () => {
    const r = await runDoctor({ config, netns: NS });
    const status = (id: string) => get(r.results, id).status;
    for (const fam of ['bridge', 'inet', 'ip6', 'netdev']) assert.equal(status(`nft.family.${fam}`), 'pass', fam);
    assert.equal(status('nft.bridge.exthdr'), 'pass');
    assert.equal(status('link.bridge'), 'pass');
    assert.equal(status('link.tun'), 'pass');
    assert.equal(status('bin.ip'), 'pass');
    assert.equal(status('bin.bridge'), 'pass');
    assert.equal(status('bin.nft'), 'pass');
    assert.equal(status('bin.tcpdump'), 'pass');
    assert.equal(status('bin.logger'), 'pass');
    // Missing here (no CONFIG_NF_CONNTRACK_BRIDGE, no CONFIG_VLAN_8021Q, no vlan_filtering): advice only.
    assert.deepEqual([status('nft.bridge.ct'), get(r.results, 'nft.bridge.ct').level], ['warn', 'advice']);
    assert.match(get(r.results, 'nft.bridge.ct').found, /^not supported \(.*Protocol error/);
    assert.deepEqual([status('link.vlan'), get(r.results, 'link.vlan').level], ['warn', 'advice']);
    assert.deepEqual([status('link.vlan_filtering'), get(r.results, 'link.vlan_filtering').level], ['warn', 'advice']);
    // /dev/kvm exists but the host KVM is PVM-only.
    assert.equal(get(r.results, 'kvm').found, 'KVM present but no hardware module: QEMU will use TCG');
    assert.equal(status('kvm'), 'warn', 'sandbox backend: KVM is advice');
    assert.equal((await ours()).filter((n) => n.startsWith(`${INST}-doctor-`)).length, 0);
  });

  it('warns about another table that sets packet marks (decision 0027), not about metald\'s own', async () => {
    const nft = (text: string) => run('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], { input: text });
    const check = async () => get((await runDoctor({ config, netns: NS })).results, 'nft.foreign-marks');
    try {
      await nft(`table bridge ${config.instance_name}_guard {\n  chain c {\n    meta mark set 0x1001\n  }\n}\n`);
      const own = await check();
      assert.deepEqual([own.status, own.found], ['pass', 'none']);
      await nft('table inet marker {\n  chain pre {\n    type filter hook prerouting priority -150; policy accept;\n    meta mark set 0x4000\n  }\n}\n');
      const r = await check();
      assert.deepEqual([r.status, r.level, r.found], ['warn', 'advice', 'set by inet marker/pre']);
      assert.match(r.fix, /decision 0027/);
    } finally {
      await run('ip', ['netns', 'exec', NS, 'nft', 'delete', 'table', 'inet', 'marker']).catch(() => undefined);
      await run('ip', ['netns', 'exec', NS, 'nft', 'delete', 'table', 'bridge', `${config.instance_name}_guard`]).catch(() => undefined);
    }
  });

  it('detects KVM from /dev/kvm plus kvm_intel or kvm_amd', async () => {
    const sys = path.join(dir, 'sys');
    mkdirSync(path.join(sys, 'kvm_pvm'), { recursive: true });
    const dev = path.join(dir, 'kvm');
    assert.match((await observeKvm(sys, dev)).found, /missing/);
    writeFileSync(dev, '');
    assert.deepEqual(await observeKvm(sys, dev), { ok: false, found: 'KVM present but no hardware module: QEMU will use TCG' });
    mkdirSync(path.join(sys, 'kvm_amd'));
    assert.equal((await observeKvm(sys, dev)).ok, true);
  });

  it('--fix applies the baseline in the namespace; a second run passes; the root namespace is untouched', async () => {
    const fixed = await runDoctor({ config, netns: NS, fix: true });
    assert.ok(fixed.before, 'the results before the fix are kept');
    assert.ok(fixed.applied.includes('net.ipv6.conf.all.accept_ra=0'));
    assert.ok(fixed.applied.includes('net.ipv6.conf.all.forwarding=1'));
    assert.equal(fixed.applied.some((a) => HOST_WIDE.some((k) => a.startsWith(`${k}=`))), false, 'host-wide keys never written from a namespace');
    for (const key of NS_KEYS) assert.equal(get(fixed.results, key).status, 'pass', key);
    assert.equal(await nsSysctl(NS, 'net.ipv6.conf.all.accept_ra'), '0');
    assert.equal(await nsSysctl(NS, 'net.ipv6.conf.default.forwarding'), '1');

    const again = await runDoctor({ config, netns: NS });
    for (const key of NS_KEYS) assert.equal(get(again.results, key).status, 'pass', key);
    assert.deepEqual(mustHaveFailures(again.results), []);
    assert.equal(again.ok, true);
    assert.deepEqual(await rootSnapshot(), rootBefore, 'root namespace sysctls changed');
  });

  it('CLI entry: -o json, exit codes, usage errors, a missing namespace is not created', async () => {
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, YAML(`dataplane: {netns: ${NS2}}\n`));
    const call = async (o: Parameters<typeof doctorCommand>[0]) => {
      let out = '';
      let err = '';
      const code = await doctorCommand({ configPath: file, ...o }, { out: (s) => (out += s), err: (s) => (err += s) });
      return { code, out, err };
    };
    const before = await call({ json: true });
    assert.equal(before.code, 1, before.err);
    const j = JSON.parse(before.out) as { ok: boolean; target: unknown; results: CheckResult[]; must_have_failures: string[] };
    assert.deepEqual([j.ok, j.target], [false, { kind: 'netns', name: NS2 }], 'dataplane.netns is the default target');
    assert.ok(j.must_have_failures.includes('net.ipv6.conf.all.accept_ra'));

    const fix = await call({ fix: true });
    assert.equal(fix.code, 0, fix.out + fix.err);
    assert.match(fix.out, /NOT ready/);
    assert.match(fix.out, /fix: applied in network namespace mtdtest-doc-\w+: net\.ipv6\.conf\.all\.forwarding=1/);
    assert.match(fix.out, /after the fix:\ntarget: network namespace mtdtest-doc-\w+\nCHECK +STATUS +FOUND +EXPECTED +FIX\n/);
    assert.match(fix.out, /ready: all \d+ must-have checks pass/);
    assert.equal((await call({})).code, 0);

    const both = await call({ netns: NS2, root: true });
    assert.deepEqual([both.code, both.out], [2, '']);
    assert.match(both.err, /--netns and --root exclude each other/);
    const bad = await call({ netns: '../etc' });
    assert.equal(bad.code, 2);

    const gone = await call({ netns: MISSING, fix: true });
    assert.equal(gone.code, 1);
    assert.match(gone.out, new RegExp(`no namespace ${MISSING}`));
    assert.match(gone.err, /does not exist; nothing fixed\. Start metald/);
    assert.equal(await netnsExists(MISSING), false, 'doctor must not create the namespace');

    const noDp = path.join(dir, 'no-dp.yaml');
    writeFileSync(noDp, YAML());
    const noTarget = await doctorCommand({ configPath: noDp }, { out: () => {}, err: () => {} });
    assert.equal(noTarget, 2, 'no dataplane.netns and no --root: the root namespace is never chosen implicitly');
  });

  it('start-up: applies the baseline to its own data-plane namespace, only reads the root namespace', async () => {
    const ns3 = `${INST}-dp`;
    await netnsAdd(ns3);
    const dpCfg = parseConfig(YAML(`dataplane: {netns: ${ns3}}\n`), 'doctor test').config;
    const r = await startupCheck(dpCfg);
    assert.ok(r.applied.includes('net.ipv6.conf.all.accept_ra=0'));
    assert.equal(await nsSysctl(ns3, 'net.ipv6.conf.all.accept_ra'), '0');
    await netnsDelete(ns3);

    const rootOk = (await runDoctor({ config, root: true })).ok;
    const start = startupCheck(config);
    if (rootOk) await start;
    else await assert.rejects(start, /^Error: host not ready for metald \(the root network namespace\): \d+ must-have checks? failed:/);
    assert.deepEqual(await rootSnapshot(), rootBefore, 'root namespace sysctls changed');
  });
});
