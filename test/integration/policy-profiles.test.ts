// Security profiles with real packets (issue 6, decisions 0024 and 0027): the
// guide's section-2 policy "strict-isolation" attached to profile `high`, in a
// pool of profile `low`, with the global extension-header filtering OFF. All
// VMs are tenant a's, on one bridge and VLAN, so only the profile and the
// per-VM settings differ:
//   p1  profile high (the policy applies), NIC icmpv6_rate_limit 500 (looser than the policy's 100)
//   p2  the pool's profile low, no policy      r  the receiver (low)
//   m1  enable_network_microsegmentation, no ingress rules
//   m2  enable_network_microsegmentation, ingress rules that name r only
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { nftList } from '../../src/kernel/nft.js';
import {
  baseConfig, cleanupEnv, client, leftovers, newEnv, sleep, startDaemon, TOKENS, vmNetns, waitUntil, writeConfig, type Env,
} from '../helpers/daemon-harness.js';
import { capture, counterDelta, dropCounters } from '../helpers/guard-counters.js';
import { PROBE, serveProbe, waitForDad } from '../helpers/probe-server.js';

const DIR = path.dirname(fileURLToPath(import.meta.url));
const PACKETS = path.join(DIR, 'guards', 'packets.py');
const HEADERS = path.join(DIR, 'isolation', 'headers.py');
const sh = promisify(execFile);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 60_000 });
const py = (ns: string, args: string[]) => inNs(ns, ['/usr/bin/python3', ...args]);
const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
const GW = 'fd00:a4::1';
const PORT = 7777;

interface Vm { id: string; ns: string; dev: string; mac: string; ip: string; got: string[]; server?: ChildProcess }

const drops = (env: Env, dev: string) => dropCounters(env.dp, `${env.inst}_guard`, dev);

describe('security profiles with real packets: a section-2 policy\'s headers and rates, microsegmentation', { timeout: 540_000 }, async () => {
  const env = await newEnv();
  const br = `${env.inst}br`;
  const vms = new Map<string, Vm>();
  const vm = (id: string) => vms.get(id)!;

  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: {
        default_pool: { id: 'main', prefix: 'fd00:a4::/48', reserved: [GW], security_profile: 'low' },
        pools: [{ id: 'shared-services', prefix: 'fd00:a5::/48' }],
        bridge: { name: br, ipv6_address: `${GW}/64` },
        // Off: no NIC blocks hop-by-hop or routing headers unless a policy (or the NIC) says so.
        security: { enable_extension_header_filtering: false, global_icmpv6_rate_limit: 300, global_nd_rate_limit: 200 },
        security_policies: [{
          id: 'strict-isolation', profiles: ['high'], rules: [ // the guide's section 2, as written
            'DENY ipv6 between vlans except same-tenant', 'ALLOW ipv6 to shared-services vlan 999',
            'DENY ipv6 extension-headers hop-by-hop,routing,fragment', 'RATE-LIMIT icmpv6 100pps per-vm', 'RATE-LIMIT nd 50pps per-vm'],
        }],
      },
    }));
    await startDaemon(env);
    const specs = [
      { id: 'p1', ip: 'fd00:a4::11', profile: { profileName: 'high' }, nic: { ipv6: { address: 'fd00:a4::11/64', security: { icmpv6RateLimit: 500 } } } },
      { id: 'p2', ip: 'fd00:a4::12', profile: undefined, nic: {} },
      { id: 'r', ip: 'fd00:a4::13', profile: undefined, nic: {} },
      { id: 'm1', ip: 'fd00:a4::14', profile: { enableNetworkMicrosegmentation: true }, nic: {} },
      { id: 'm2', ip: 'fd00:a4::15', profile: { enableNetworkMicrosegmentation: true },
        nic: { securityPolicy: { ingressRules: ['allow all from fd00:a4::13 to any'] } } },
    ];
    const c = client(env, TOKENS.a);
    for (const s of specs) {
      const res = await c.createVm({ vmId: s.id, config: { tenantId: 'tenant-a', securityProfile: s.profile,
        network: [{ id: 'eth0', ipv6: { address: `${s.ip}/64` }, ...s.nic }] } });
      assert.equal((await c.bootVm({ vmId: s.id })).state, VmState.RUNNING);
      const nic = res.vm!.networkStatus[0]!;
      const v: Vm = { id: s.id, ns: vmNetns(env, s.id), dev: nic.hostDevice, mac: nic.macAddress, ip: s.ip, got: [] };
      vms.set(s.id, v);
      await waitForDad(v.ns, s.id);
      v.server = serveProbe(v.ns, v.ip, PORT, v.got);
    }
    for (const v of vms.values()) await waitUntil(`the echo server of ${v.id}`, async () => v.got.includes('ready'), 20_000);
    // Every pair knows every MAC: a cut pair must not fail at neighbour discovery instead of at the guard.
    for (const a of vms.values()) {
      for (const b of vms.values()) if (a !== b) await inNs(a.ns, ['ip', '-6', 'neigh', 'replace', b.ip, 'lladdr', b.mac, 'dev', 'eth0', 'nud', 'permanent']);
    }
  });

  after(async () => {
    for (const v of vms.values()) v.server?.kill('SIGKILL');
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  /** UDP to PORT and one echo from -> to: did each arrive (the server's report, the echo's reply)? */
  async function reach(from: string, to: string): Promise<{ udp: boolean; echo: boolean }> {
    const [s, r] = [vm(from), vm(to)];
    const n = r.got.length;
    await py(s.ns, [PROBE, 'ask', s.ip, r.ip, 'udp', String(PORT)]);
    const arrived = () => r.got.slice(n).includes(`got udp ${s.ip}`);
    for (let i = 0; i < 30 && !arrived(); i++) await sleep(100);
    const echo = await ok(inNs(s.ns, ['ping', '-6', '-c', '1', '-W', '2', '-I', s.ip, r.ip]));
    return { udp: arrived(), echo };
  }

  /** Sends each kind from -> r (flow label = its number), sniffs at r: delivered?, the sender's counter deltas. */
  async function headers(from: Vm, kinds: string[]): Promise<Map<string, { delivered: boolean; counters: string }>> {
    const r = vm('r');
    const ready = path.join(env.dir, `sniff-${from.id}`);
    let sniffed: string | undefined;
    const sniffer = py(r.ns, [PACKETS, 'sniff', '120', ready]).then((x) => (sniffed = x.stdout));
    await waitUntil('the sniffer to capture', async () => existsSync(ready), 30_000);
    const counted = new Map<string, string>();
    for (const [i, kind] of kinds.entries()) {
      const before = await drops(env, from.dev);
      await py(from.ns, [HEADERS, 'send', kind, String(i + 1), from.mac, from.ip, r.mac, r.ip]);
      await sleep(150);
      counted.set(kind, counterDelta(before, await drops(env, from.dev)));
    }
    for (let i = 0; i < 20 && sniffed === undefined; i++) { // the end marker, until the sniffer stops
      await py(from.ns, [HEADERS, 'send', 'echo', String(0xfffff), from.mac, from.ip, r.mac, r.ip]);
      await Promise.race([sniffer, sleep(500)]);
    }
    await sniffer;
    const seen = new Set(JSON.parse(sniffed!) as number[]);
    return new Map(kinds.map((k, i) => [k, { delivered: seen.has(i + 1), counters: counted.get(k)! }]));
  }

  it('DENY ipv6 extension-headers: hop-by-hop, routing (types 2, 4) and fragments from a VM under the policy are dropped and counted; another profile\'s pass (global filtering off)', async () => {
    const kinds = ['echo', 'hbh', 'rt2', 'rt4', 'frag', 'rt0'];
    const [p1, p2] = [await headers(vm('p1'), kinds), await headers(vm('p2'), kinds)];
    const rows = kinds.map((k) => `${k.padEnd(6)} p1 ${p1.get(k)!.delivered ? 'delivered' : 'dropped  '} ${p1.get(k)!.counters.padEnd(14)} p2 ${p2.get(k)!.delivered ? 'delivered' : 'dropped  '} ${p2.get(k)!.counters}`);
    console.log(rows.join('\n'));
    const want = (k: string, policy: boolean) => k === 'rt0' || (policy && k !== 'echo')
      ? { delivered: false, counters: k === 'frag' ? 'ext_header+3' : 'ext_header+1' } : { delivered: true, counters: '-' };
    assert.deepEqual(Object.fromEntries(p1), Object.fromEntries(kinds.map((k) => [k, want(k, true)])), 'p1 (profile high, policy)');
    assert.deepEqual(Object.fromEntries(p2), Object.fromEntries(kinds.map((k) => [k, want(k, false)])), 'p2 (profile low, no policy)');
  });

  it('RATE-LIMIT icmpv6 100pps / nd 50pps per-vm: a VM under the policy flooding at 4x passes the policy\'s rate (lower than its NIC\'s 500), another VM the global default', async () => {
    const r = vm('r');
    const within = (rate: number, limit: number, secs: number) => Math.abs(rate - limit) <= limit * 0.1 + 5 / secs;
    const report: string[] = [];
    // [sender, attack, expected pps: min(NIC or global, policy)]
    const cases: [string, string, number][] = [['p1', 'icmp-flood', 100], ['p1', 'nd-flood', 50], ['p2', 'icmp-flood', 300]];
    for (const [id, attack, limit] of cases) {
      const s = vm(id);
      await sleep(1500); // the token buckets refill between floods
      const before = await drops(env, s.dev);
      const arrived = attack === 'icmp-flood' ? capture(r.ns, `icmp6 and ip6[40] == 128 and src host ${s.ip}`, 7) : undefined;
      await sleep(800);
      const res = JSON.parse((await py(s.ns, [PACKETS, 'flood', attack, String(limit * 4), '4', s.mac, s.ip, r.mac, r.ip])).stdout) as { sent: number; seconds: number };
      const after = await drops(env, s.dev);
      const dropped = after.get('rate_limit')! - before.get('rate_limit')!;
      const rate = (res.sent - dropped) / res.seconds;
      report.push(`${id} ${attack}: limit ${limit}/s, sent ${res.sent} in ${res.seconds.toFixed(2)} s, rate_limit +${dropped}, passed ${rate.toFixed(1)}/s (other counters: ${counterDelta(new Map([...before].filter(([k]) => k !== 'rate_limit')), new Map([...after].filter(([k]) => k !== 'rate_limit')))})`);
      assert.ok(within(rate, limit, res.seconds), report.at(-1));
      if (arrived) {
        const got = await arrived;
        report.push(`  echo requests from ${id} seen at r: ${got} = ${(got / res.seconds).toFixed(1)}/s (sent - dropped = ${res.sent - dropped})`);
        assert.ok(within(got / res.seconds, limit, res.seconds), report.at(-1));
        assert.ok(Math.abs(got - (res.sent - dropped)) <= 3 + 0.02 * res.sent, report.at(-1));
      }
    }
    console.log(report.join('\n'));
  });

  it('enable_network_microsegmentation: without ingress rules no VM reaches it, not even its own tenant\'s (counted); a named source is admitted; the gateway and non-segmented VMs are reachable', async () => {
    const [m1, m2, r, p2] = [vm('m1'), vm('m2'), vm('r'), vm('p2')];
    const rows: string[] = [];
    const check = async (from: string, to: string, want: boolean, echo = want) => {
      const got = await reach(from, to);
      rows.push(`${from} -> ${to}: ${JSON.stringify(got)}`);
      assert.deepEqual(got, { udp: want, echo }, `${from} -> ${to}`);
    };
    const before = { m1: await drops(env, m1.dev), r: await drops(env, r.dev), m2: await drops(env, m2.dev) };
    await check('r', 'm1', false);
    await check('p2', 'm1', false);
    const m1In = counterDelta(before.m1, await drops(env, m1.dev));
    const rOut = counterDelta(before.r, await drops(env, r.dev));
    rows.push(`m1 counters: ${m1In}; r (sender) counters: ${rOut}`);
    // Control: the same sender reaches a VM of its tenant without microsegmentation.
    await check('r', 'p2', true);
    // m1's own connections get their replies (UDP, TCP, echo): with no egress rules it records its
    // flows as an allow-all egress list would (decision 0027); r has no rules to record them.
    const m1Before = await drops(env, m1.dev);
    await check('m1', 'r', true, true);
    for (const proto of ['udp', 'tcp']) {
      const answer = (await py(m1.ns, [PROBE, 'ask', m1.ip, r.ip, proto, String(PORT)])).stdout.trim();
      rows.push(`m1 -> r ${proto} reply: ${answer}`);
      assert.equal(answer, 'ok', `m1 gets r's ${proto} reply`);
    }
    rows.push(`m1 counters while it talks to r: ${counterDelta(m1Before, await drops(env, m1.dev))}`);
    // The gateway (not a VM) is unaffected.
    const gw = await ok(inNs(env.dp, ['ping', '-6', '-c', '1', '-W', '2', m1.ip]));
    // m2's ingress rules name r: r is admitted, p2 (same tenant, not named) is not.
    await check('r', 'm2', true);
    await check('p2', 'm2', false);
    const m2In = counterDelta(before.m2, await drops(env, m2.dev));
    rows.push(`gateway -> m1 echo: ${gw}; m2 counters: ${m2In}`);
    console.log(rows.join('\n'));
    assert.equal(gw, true, 'gateway echo to m1');
    const count = (d: string, k: string) => Number(d.split(' ').find((x) => x.startsWith(`${k}+`))?.slice(k.length + 1) ?? 0);
    assert.ok(count(m1In, 'tenant_isolation_in') >= 4, `m1 counts the cut UDP and echo as tenant_isolation_in: ${m1In}`);
    assert.ok(count(rOut, 'tenant_isolation') >= 2, `the sender r counts them too: ${rOut}`);
    assert.ok(count(m2In, 'policy_deny_in') >= 2, `m2 counts p2's as policy_deny_in: ${m2In}`);
  });
});
