// Three promises of the policy language (issue 6, decisions 0024 and 0027) with
// real packets between namespaces: the real daemon, sandbox VMs of two tenants
// on one bridge in a pool whose profile is `low` (isolation none, denies logged
// only where a NIC asks), so the per-NIC settings decide.
//   1. log_security_events logs the denies of that NIC only (nflog group 2); both are counted.
//   2. `deny all` in both directions leaves ND and packet-too-big working; the rest is dropped and counted.
//   3. tenant_isolation_level none lets two tenants talk; strict (the default of `high`) cuts them.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { nftList } from '../../src/kernel/nft.js';
import {
  baseConfig, cleanupEnv, client, leftovers, newEnv, sleep, startDaemon, TOKENS, vmNetns, waitUntil, writeConfig, type Env,
} from '../helpers/daemon-harness.js';
import { portCounter } from '../helpers/guard-counters.js';
import { PROBE, serveProbe, waitForDad } from '../helpers/probe-server.js';

const sh = promisify(execFile);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 60_000 });
const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
const PORT = 7777;
const GW = 'fd00:a3::1';

interface Vm { id: string; ns: string; dev: string; mac: string; ip: string; warnings: string[]; got: string[]; server?: ChildProcess }

/** Records of a pcap of linktype NFLOG: each record's prefix (TLV 10) and payload (TLV 9, the IPv6 packet). */
function nflogRecords(file: string): { prefix: string; payload: Buffer }[] {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  assert.equal(b.readUInt32LE(0), 0xa1b2c3d4, 'little-endian pcap');
  assert.equal(b.readUInt32LE(20), 239, 'linktype NFLOG');
  const out: { prefix: string; payload: Buffer }[] = [];
  for (let off = 24; off + 16 <= b.length;) {
    const len = b.readUInt32LE(off + 8);
    const rec = b.subarray(off + 16, off + 16 + len);
    off += 16 + len;
    let prefix = '';
    let payload = Buffer.alloc(0);
    for (let t = 4; t + 4 <= rec.length;) { // after the 4-byte nflog header: TLVs in host order, padded to 4
      const tl = rec.readUInt16LE(t);
      const type = rec.readUInt16LE(t + 2);
      if (tl < 4) break;
      const v = rec.subarray(t + 4, t + tl);
      if (type === 10) prefix = v.toString('latin1').replace(/\0.*$/s, '');
      if (type === 9) payload = Buffer.from(v);
      t += (tl + 3) & ~3;
    }
    out.push({ prefix, payload });
  }
  return out;
}

/** The 16 bytes of an IPv6 address (no "::" at both ends needed: it is expanded here). */
function addrBytes(ip: string): Buffer {
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return Buffer.from(groups.flatMap((g) => { const n = parseInt(g, 16); return [n >> 8, n & 0xff]; }));
}

const counter = (env: Env, set: string, dev: string) => portCounter(env.dp, `${env.inst}_guard`, set, dev);

describe('policy semantics with real packets: logging per NIC, essential ICMPv6, isolation levels', { timeout: 300_000 }, async () => {
  const env = await newEnv();
  const br = `${env.inst}br`;
  const vms = new Map<string, Vm>();
  const vm = (id: string) => vms.get(id)!;

  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: {
        // Profile low: isolation none by default and denies logged only with log_security_events (decision 0027).
        default_pool: { id: 'low', prefix: 'fd00:a3::/48', reserved: [GW], security_profile: 'low' },
        bridge: { name: br, ipv6_address: `${GW}/64` },
      },
      // This test reads nflog group 2 itself (a group has one reader).
      security_events: { nflog: { enabled: false } },
    }));
    await startDaemon(env);
    const logRules = ['allow tcp from any to any port 7777', 'deny all from any to any'];
    const specs = [
      { id: 'n1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:a3::11', policy: { tenantIsolationLevel: 'none' } },
      { id: 'n2', token: TOKENS.b, tenant: 'tenant-b', ip: 'fd00:a3::21', policy: undefined }, // low profile: none
      { id: 't1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:a3::12', policy: { tenantIsolationLevel: 'strict' } },
      { id: 't2', token: TOKENS.b, tenant: 'tenant-b', ip: 'fd00:a3::22', policy: { tenantIsolationLevel: 'strict' } },
      { id: 'l1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:a3::13', policy: { ingressRules: logRules, logSecurityEvents: true } },
      { id: 'l2', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:a3::14', policy: { ingressRules: logRules, logSecurityEvents: false } },
      { id: 'e1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:a3::15', policy: { ingressRules: ['deny all from any to any'], egressRules: ['deny all from any to any'] } },
    ];
    for (const s of specs) {
      const c = client(env, s.token);
      const res = await c.createVm({ vmId: s.id, config: { tenantId: s.tenant, network: [{ id: 'eth0', ipv6: { address: `${s.ip}/64` }, securityPolicy: s.policy }] } });
      assert.equal((await c.bootVm({ vmId: s.id })).state, VmState.RUNNING);
      const nic = res.vm!.networkStatus[0]!;
      const v: Vm = { id: s.id, ns: vmNetns(env, s.id), dev: nic.hostDevice, mac: nic.macAddress, ip: s.ip, warnings: res.warnings, got: [] };
      vms.set(s.id, v);
      await waitForDad(v.ns, s.id);
      // A TCP and UDP echo on PORT that reports who reached it.
      v.server = serveProbe(v.ns, v.ip, PORT, v.got);
    }
    for (const v of vms.values()) await waitUntil(`the echo server of ${v.id}`, async () => v.got.includes('ready'), 20_000);
  });

  after(async () => {
    for (const v of vms.values()) v.server?.kill('SIGKILL');
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  /** One request from -> to: did it arrive at the server, did the answer come back. */
  async function probe(from: string, to: string, proto: 'tcp' | 'udp' | 'icmpv6'): Promise<{ delivered: boolean; replied: boolean }> {
    const [s, r] = [vm(from), vm(to)];
    if (proto === 'icmpv6') {
      const got = await ok(inNs(s.ns, ['ping', '-6', '-c', '1', '-W', '2', '-I', s.ip, r.ip]));
      return { delivered: got, replied: got };
    }
    const n = r.got.length;
    const out = (await inNs(s.ns, ['/usr/bin/python3', PROBE, 'ask', s.ip, r.ip, proto, String(PORT)])).stdout.trim();
    const arrived = () => r.got.slice(n).includes(`got ${proto} ${s.ip}`);
    for (let i = 0; i < 30 && !arrived(); i++) await sleep(100); // the server reports from its own process
    return { delivered: arrived(), replied: out === 'ok' };
  }

  it('log_security_events logs the denies of that NIC only (nflog group 2); both NICs count theirs', async () => {
    const [l1, l2] = [vm('l1'), vm('l2')];
    const pcap = path.join(env.dir, 'policy.pcap');
    const dump = spawn('ip', ['netns', 'exec', env.dp, 'tcpdump', '-i', 'nflog:2', '-U', '-w', pcap], { stdio: 'ignore' });
    try {
      await waitUntil('tcpdump to open the capture', async () => existsSync(pcap), 20_000);
      await sleep(1000);
      const before = [await counter(env, 'd_policy_deny_in', l1.dev), await counter(env, 'd_policy_deny_in', l2.dev)];
      // The allowed rule works on both (the NICs differ only in the flag) and UDP falls to the deny;
      // both receivers at once, as a non-delivery costs its timeout.
      await Promise.all(['l1', 'l2'].map(async (to) => {
        assert.deepEqual(await probe('n1', to, 'tcp'), { delivered: true, replied: true }, `tcp ${PORT} to ${to}`);
        for (let i = 0; i < 3; i++) assert.deepEqual(await probe('n1', to, 'udp'), { delivered: false, replied: false }, `udp to ${to}`);
      }));
      const hits = (ip: string) => nflogRecords(pcap).filter((r) => r.payload.length >= 40 && r.payload.subarray(24, 40).equals(addrBytes(ip)));
      await waitUntil('a sample of l1\'s deny in the capture', async () => hits(l1.ip).length > 0, 15_000);
      await sleep(1500); // l2's would have arrived by now too
      const [mine, other] = [hits(l1.ip), hits(l2.ip)];
      console.log(`nflog group 2: ${mine.length} samples for l1 (${[...new Set(mine.map((r) => r.prefix))].join(', ')}), ${other.length} for l2`);
      assert.ok(mine.length >= 1 && mine.every((r) => r.prefix.startsWith('metald-guard policy_deny')), 'l1\'s denies are logged as policy_deny');
      assert.ok(mine.some((r) => r.payload[6] === 17), 'the logged packet is the denied UDP');
      assert.deepEqual(other.map((r) => r.prefix), [], 'l2 (log_security_events false) logs nothing');
      const after = [await counter(env, 'd_policy_deny_in', l1.dev), await counter(env, 'd_policy_deny_in', l2.dev)];
      assert.ok(after[0]! - before[0]! >= 3 && after[1]! - before[1]! >= 3, `both count their denies: l1 +${after[0]! - before[0]!}, l2 +${after[1]! - before[1]!}`);
    } finally {
      dump.kill('SIGINT');
    }
  });

  it('`deny all` both ways keeps the essential ICMPv6 (ND, packet-too-big) and drops and counts the rest, echo included', async () => {
    const [e1, n1] = [vm('e1'), vm('n1')];
    // Accepted with a warning (decision 0024), for both lists.
    for (const f of ['ingress_rules[0]', 'egress_rules[0]']) {
      assert.ok(e1.warnings.some((w) => w.includes(f) && w.includes('does not apply to the ICMPv6')), `warning for ${f}: ${e1.warnings.join(' | ')}`);
    }
    const inBefore = await counter(env, 'd_policy_deny_in', e1.dev);
    const outBefore = await counter(env, 'd_policy_deny', e1.dev);
    // Neighbour discovery, both ways, with the gateway and with another VM.
    await inNs(e1.ns, ['ip', '-6', 'neigh', 'flush', 'dev', 'eth0']);
    for (const [ns, target, dev] of [[e1.ns, GW, 'eth0'], [e1.ns, n1.ip, 'eth0'], [env.dp, e1.ip, br], [n1.ns, e1.ip, 'eth0']] as const) {
      const r = await inNs(ns, ['ndisc6', '-1', '-r', '5', '-w', '1000', target, dev]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
      assert.match(r.stdout, /Target link-layer address/i, `ND ${ns === e1.ns ? 'from e1' : 'to e1'} for ${target}: ${r.stdout}`);
    }
    // Packet too big from n1 about a packet e1 sent to fd00:a3::99: e1's kernel lowers that path's MTU.
    const route = async () => (await inNs(e1.ns, ['ip', '-6', 'route', 'get', 'fd00:a3::99'])).stdout;
    assert.doesNotMatch(await route(), /mtu 1400/);
    const ptb = [
      'import socket,struct,sys',
      'src,dst=sys.argv[1],sys.argv[2]',
      'inner=struct.pack("!IHBB",6<<28,8,58,64)+socket.inet_pton(socket.AF_INET6,dst)+socket.inet_pton(socket.AF_INET6,"fd00:a3::99")+bytes([128,0,0,0,0,1,0,1])',
      's=socket.socket(socket.AF_INET6,socket.SOCK_RAW,socket.IPPROTO_ICMPV6);s.bind((src,0))',
      's.sendto(struct.pack("!BBHI",2,0,0,1400)+inner,(dst,0))',
    ].join('\n');
    await waitUntil('e1 to take the packet-too-big', async () => {
      await inNs(n1.ns, ['/usr/bin/python3', '-c', ptb, n1.ip, e1.ip]);
      await sleep(300);
      return /mtu 1400/.test(await route());
    }, 15_000);
    // Ordinary traffic both ways is dropped, echo too (not essential), and counted on e1's port.
    const cases: [string, string, 'tcp' | 'udp' | 'icmpv6'][] = [['n1', 'e1', 'udp'], ['n1', 'e1', 'tcp'], ['n1', 'e1', 'icmpv6'], ['e1', 'n1', 'udp'], ['e1', 'n1', 'icmpv6']];
    await Promise.all(cases.map(async ([f, t, p]) => assert.deepEqual(await probe(f, t, p), { delivered: false, replied: false }, `${f} -> ${t} ${p}`)));
    // The gateway's echo is no exception: ingress rules filter all the NIC receives.
    assert.equal(await ok(inNs(env.dp, ['ping', '-6', '-c', '1', '-W', '2', e1.ip])), false, 'gateway echo to e1 is dropped');
    const [inDrops, outDrops] = [(await counter(env, 'd_policy_deny_in', e1.dev)) - inBefore, (await counter(env, 'd_policy_deny', e1.dev)) - outBefore];
    console.log(`e1 under deny all: ${inDrops} ingress and ${outDrops} egress denies counted`);
    assert.ok(inDrops >= 4, `ingress denies counted: ${inDrops}`);
    assert.ok(outDrops >= 2, `egress denies counted: ${outDrops}`);
    // The control: the same echo to a VM without rules arrives.
    assert.deepEqual(await probe('n1', 't1', 'icmpv6'), { delivered: true, replied: true });
  });

  it('tenant_isolation_level none: two tenants talk both ways; strict: cut both ways and counted', async () => {
    const rows: string[] = [];
    for (const [f, t] of [['n1', 'n2'], ['n2', 'n1']]) {
      for (const p of ['udp', 'tcp', 'icmpv6'] as const) {
        const got = await probe(f!, t!, p);
        rows.push(`${f} -> ${t} ${p}: ${JSON.stringify(got)}`);
        assert.deepEqual(got, { delivered: true, replied: true }, `none: ${f} -> ${t} ${p}`);
      }
    }
    // Strict pairs never resolve each other (decision 0027): give them each other's MAC so the unicast is sent and cut.
    const [t1, t2] = [vm('t1'), vm('t2')];
    for (const [a, b] of [[t1, t2], [t2, t1]] as const) await inNs(a.ns, ['ip', '-6', 'neigh', 'replace', b.ip, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
    const before = [await counter(env, 'd_tenant_isolation_in', t1.dev), await counter(env, 'd_tenant_isolation_in', t2.dev)];
    await Promise.all([['t1', 't2'], ['t2', 't1']].map(async ([f, t]) => {
      for (const p of ['udp', 'tcp', 'icmpv6'] as const) {
        const got = await probe(f!, t!, p);
        rows.push(`${f} -> ${t} ${p}: ${JSON.stringify(got)}`);
        assert.deepEqual(got, { delivered: false, replied: false }, `strict: ${f} -> ${t} ${p}`);
      }
    }));
    const after = [await counter(env, 'd_tenant_isolation_in', t1.dev), await counter(env, 'd_tenant_isolation_in', t2.dev)];
    console.log([...rows, `tenant_isolation drops counted: t1 +${after[0]! - before[0]!}, t2 +${after[1]! - before[1]!}`].join('\n'));
    assert.ok(after[0]! - before[0]! >= 3 && after[1]! - before[1]! >= 3, 'both receivers count the cut packets');
    // The same strict VMs still reach their own tenant (the cut is the tenant boundary, not the VM).
    assert.deepEqual(await probe('t1', 'n1', 'udp'), { delivered: true, replied: true });
  });
});
