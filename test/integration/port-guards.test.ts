// The port guards with real packets (issue 5): the real daemon with sandbox VMs
// on a bridge in its own data-plane namespace; vm1 (tenant a) attacks, vm2
// (tenant a) listens, vm3 (tenant b) floods. For each attack: did it reach vm2
// (a sniffer in vm2 records the IPv6 flow label every attack carries), and
// which per-port drop counter in the kernel moved. Prints the table.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VmState } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { nftList } from '../../src/kernel/nft.js';
import {
  baseConfig, cleanupEnv, client, leftovers, newEnv, startDaemon, TOKENS, vmNetns, waitUntil, writeConfig, type Env,
} from '../helpers/daemon-harness.js';
import { capture, counterDelta, dropCounters } from '../helpers/guard-counters.js';

const PY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'guards', 'packets.py');
const sh = promisify(execFile);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 60_000 });

interface Vm { id: string; ns: string; dev: string; mac: string; ip: string }

describe('port guards drop attacks from a VM port and count them (real packets)', { timeout: 240_000 }, async () => {
  const env = await newEnv();
  const guard = `${env.inst}_guard`;
  const host = `${env.inst}_security`;
  const bridge = `${env.inst}br`;
  const vms: Vm[] = [];

  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: {
        default_pool: { id: 'test', prefix: 'fd00:77::/48', reserved: ['fd00:77::1'] },
        bridge: { name: bridge, ipv6_address: 'fd00:77::1/64' },
        // The defaults a NIC without its own rates gets (vm3's, measured while it floods).
        security: { global_nd_rate_limit: 200, global_icmpv6_rate_limit: 300, global_multicast_rate_limit: 150 },
      },
      // This test reads the nflog group itself (a group has one reader); metald's reader is tested in security-ops.
      security_events: { nflog: { enabled: false } },
    }));
    await startDaemon(env);
    const specs = [
      // vm1: the guide's step 3.2 security block (plus destination options), low rates to measure.
      { id: 'g1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77::11', security: {
        enableRaGuard: true, enableSourceGuard: true, strictSourceValidation: true, blockHopByHop: true, blockRoutingHeader: true,
        blockFragmentHeader: true, blockDestinationOptions: true, ndRateLimit: 50, icmpv6RateLimit: 100, multicastRateLimit: 100, raRateLimit: 50 } },
      { id: 'g2', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77::12', security: {} },
      { id: 'g3', token: TOKENS.b, tenant: 'tenant-b', ip: 'fd00:77::13', security: {} },
      // vm4: every header block off (RH0 and RFC 7112 first fragments are dropped all the same).
      { id: 'g4', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77::14', security: {
        blockHopByHop: false, blockRoutingHeader: false, blockFragmentHeader: false, blockDestinationOptions: false } },
      // vm5: privacy extensions under strict validation: it owns its /64 (decision 0012).
      { id: 'g5', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77:0:5::10', security: { strictSourceValidation: true }, privacy: true },
    ];
    for (const s of specs) {
      const c = client(env, s.token);
      const res = await c.createVm({ vmId: s.id, config: { tenantId: s.tenant, network: [{ id: 'eth0', ipv6: {
        address: `${s.ip}/64`, security: s.security, ...('privacy' in s ? { enablePrivacyExtensions: true } : {}) } }] } });
      assert.equal((await c.bootVm({ vmId: s.id })).state, VmState.RUNNING);
      const nic = res.vm!.networkStatus[0]!;
      vms.push({ id: s.id, ns: vmNetns(env, s.id), dev: nic.hostDevice, mac: nic.macAddress, ip: s.ip });
    }
  });

  after(async () => {
    const radvd = `/run/metald/${env.inst}`;
    await cleanupEnv(env);
    rmSync(radvd, { recursive: true, force: true });
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  type Attack = [name: string, delivered: boolean, reason: string | null];
  let sniffs = 0;
  /** Sends each attack from `from` to `to` (flow label = its number), sniffs at `to`: delivered?, `from`'s counters. */
  async function runAttacks(from: Vm, to: Vm, other: Vm, attacks: Attack[]): Promise<{ rows: string[][]; failures: string[] }> {
    const END = 0xfffff;
    let sniffed: string | undefined;
    const ready = path.join(env.dir, `sniffer-ready-${++sniffs}`);
    const sniffer = inNs(to.ns, ['/usr/bin/python3', PY, 'sniff', '120', ready]).then((r) => (sniffed = r.stdout));
    await waitUntil('the sniffer to capture', async () => existsSync(ready), 30_000);
    const rows: string[][] = [];
    const counted = new Map<string, string>();
    for (const [i, [name]] of attacks.entries()) {
      const before = await dropCounters(env.dp, guard, from.dev);
      await inNs(from.ns, ['/usr/bin/python3', PY, 'send', name, String(i + 1), from.mac, from.ip, to.mac, to.ip, 'fd00:77::1', other.ip]);
      await new Promise((r) => setTimeout(r, 100));
      counted.set(name, counterDelta(before, await dropCounters(env.dp, guard, from.dev)));
    }
    // The end marker stops the sniffer (sent until it has: a slow machine must not cut the last attacks off).
    for (let i = 0; i < 20 && sniffed === undefined; i++) {
      await inNs(from.ns, ['/usr/bin/python3', PY, 'send', 'echo', String(END), from.mac, from.ip, to.mac, to.ip, 'fd00:77::1', other.ip]);
      await Promise.race([sniffer, new Promise((r) => setTimeout(r, 500))]);
    }
    await sniffer;
    const seen = new Set<number>(JSON.parse(sniffed!) as number[]);
    const failures: string[] = [];
    for (const [i, [name, wantDelivered, reason]] of attacks.entries()) {
      const got = seen.has(i + 1);
      const c = counted.get(name)!;
      rows.push([name, got ? 'yes' : 'no', c]);
      if (got !== wantDelivered) failures.push(`${name}: delivered=${got}, expected ${wantDelivered}`);
      if (reason === null ? c !== '-' : !c.split(' ').some((x) => x.startsWith(`${reason}+`))) failures.push(`${name}: counters ${c}, expected ${reason ?? 'none'}`);
    }
    return { rows, failures };
  }

  it('legitimate IPv6 works under the guards: ping, TCP with replies, gateway, packet-too-big', async () => {
    const [v1, v2] = vms as [Vm, Vm];
    const ping = await inNs(v1.ns, ['ping', '-6', '-c', '2', '-W', '2', v2.ip]);
    assert.match(ping.stdout, / 0% packet loss/);
    assert.match((await inNs(v1.ns, ['ping', '-6', '-c', '1', '-W', '2', 'fd00:77::1'])).stdout, / 0% packet loss/);
    // TCP both ways (the bridge family has no conntrack: replies must pass the guards on their own).
    const server = spawn('ip', ['netns', 'exec', v2.ns, '/usr/bin/python3', '-c',
      'import socket;s=socket.socket(socket.AF_INET6);s.bind(("::",7777));s.listen();c,_=s.accept();c.sendall(c.recv(100).upper());c.close()']);
    await new Promise((r) => setTimeout(r, 500));
    const tcp = await inNs(v1.ns, ['/usr/bin/python3', '-c',
      `import socket;s=socket.create_connection(("${v2.ip}",7777),timeout=3);s.sendall(b"hello");print(s.recv(100).decode())`]);
    server.kill();
    assert.equal(tcp.stdout.trim(), 'HELLO');
  });

  it('MLD works under the hop-by-hop block while the bridge snoops: a join reaches the bridge', async () => {
    const [, v2] = vms as [Vm, Vm];
    const before = await dropCounters(env.dp, guard, v2.dev);
    const join = inNs(v2.ns, ['/usr/bin/python3', '-c',
      'import socket,struct,time;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);' +
      's.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_JOIN_GROUP,socket.inet_pton(socket.AF_INET6,"ff12::1234")+struct.pack("@I",socket.if_nametoindex("eth0")));time.sleep(3)']);
    let mdb = '';
    await waitUntil('the bridge to learn the group from the MLD report', async () => {
      mdb = (await sh('bridge', ['-n', env.dp, 'mdb', 'show'], { encoding: 'utf8' })).stdout;
      return mdb.includes(`port ${v2.dev} grp ff12::1234`);
    }, 2500).catch(async (e) => {
      throw new Error(`${String(e)}; mdb: ${mdb}; drops: ${counterDelta(before, await dropCounters(env.dp, guard, v2.dev))}`);
    });
    await join;
  });

  it('each attack is dropped (or delivered where it must be) and counted against the attacker and reason', async () => {
    const [v1, v2, v3] = vms as [Vm, Vm, Vm];
    const attacks: [name: string, delivered: boolean, reason: string | null][] = [
      ['echo', true, null],
      ['dad', true, null],
      ['unspecified-echo', false, 'source_guard'],
      ['ra', false, 'ra_guard'],
      ['ra-hbh', false, 'ra_guard'],
      ['ra-dstopts', false, 'ra_guard'],
      ['ra-fragmented', false, 'ra_guard'],
      ['ra-vlan', false, 'vlan_tag'],
      ['ra-qinq', false, 'vlan_tag'],
      ['udp-vlan', false, 'vlan_tag'],
      ['spoof-random', false, 'source_guard'],
      ['spoof-neighbour', false, 'source_guard'],
      ['spoof-other-tenant', false, 'source_guard'],
      ['spoof-outside', false, 'source_guard'],
      ['spoof-mac', false, 'source_guard'],
      ['spoof-tcp', false, 'source_guard'],
      ['na-spoof-target', false, 'nd_spoof'],
      ['na-spoof-lla', false, 'nd_spoof'],
      ['ns-spoof-lla', false, 'nd_spoof'],
      ['redirect', false, 'nd_spoof'],
      ['dhcpv6-reply', false, 'dhcpv6_server'],
      ['dhcpv6-reply-unicast', false, 'dhcpv6_server'],
      ['rh0', false, 'ext_header'],
      ['hbh', false, 'ext_header'],
      ['dstopts', false, 'ext_header'],
      ['fragment', false, 'ext_header'],
      ['first-fragment-split', false, 'ext_header'],
      ['ns-fragmented', false, 'nd_spoof'],
      ['packet-too-big', true, null],
    ];
    const { rows, failures } = await runAttacks(v1, v2, v3, attacks);
    console.log(['attack                  delivered  counters (vm1)', ...rows.map(([a, d, c]) => `${a!.padEnd(24)}${d!.padEnd(11)}${c}`)].join('\n'));
    assert.deepEqual(failures, []);
  });

  it('a VM that owns its /64 sends from any address in it (privacy addresses), from none outside', async () => {
    const [v1, v2, v3, , v5] = vms as [Vm, Vm, Vm, Vm, Vm];
    const { rows, failures } = await runAttacks(v5, v2, v3, [
      ['echo', true, null],
      ['privacy', true, null],
      ['spoof-next-64', false, 'source_guard'],
    ]);
    // The same frames from a /128 VM: its /64 is not its own.
    const r128 = await runAttacks(v1, v2, v3, [['privacy', false, 'source_guard']]);
    console.log(['attack (/64 owner)      delivered  counters', ...[...rows, ...r128.rows.map(([a, d, c]) => [`${a} (vm1, /128)`, d, c])]
      .map(([a, d, c]) => `${a!.padEnd(24)}${d!.padEnd(11)}${c}`)].join('\n'));
    assert.deepEqual([...failures, ...r128.failures], []);
  });

  it('with its header blocks off a VM\'s extension headers pass, but RH0 and RFC 7112 first fragments are still dropped', async () => {
    const [, v2, v3, v4] = vms as [Vm, Vm, Vm, Vm];
    const { rows, failures } = await runAttacks(v4, v2, v3, [
      ['echo', true, null],
      ['hbh', true, null],
      ['dstopts', true, null],
      ['fragment', true, null],
      ['rh0', false, 'ext_header'],
      ['first-fragment-split', false, 'ext_header'],
    ]);
    console.log(['attack (blocks off)     delivered  counters (vm4)', ...rows.map(([a, d, c]) => `${a!.padEnd(24)}${d!.padEnd(11)}${c}`)].join('\n'));
    assert.deepEqual(failures, []);
  });

  it('drops are sampled to nflog group 2 with the reason in the prefix (for the events issue)', async () => {
    const [v1, v2, v3] = vms as [Vm, Vm, Vm];
    const pcap = path.join(env.dir, 'nflog.pcap');
    const dump = inNs(env.dp, ['timeout', '20', 'tcpdump', '-i', 'nflog:2', '-c', '1', '-U', '-w', pcap]);
    await new Promise((r) => setTimeout(r, 1500));
    for (let i = 0; i < 5 && !(existsSync(pcap) && readFileSync(pcap).includes('metald-guard ra_guard')); i++) {
      await inNs(v1.ns, ['/usr/bin/python3', PY, 'send', 'ra', '900', v1.mac, v1.ip, v2.mac, v2.ip, 'fd00:77::1', v3.ip]);
      await new Promise((r) => setTimeout(r, 300));
    }
    await dump;
    assert.ok(readFileSync(pcap).includes('metald-guard ra_guard'), 'no sampled ra_guard drop in nflog group 2');
  });

  // Tagged RAs (vlan_tag, medium severity): a flood of untagged rogue RAs is high severity, and the counter
  // escalation would isolate the flooder for the tests after this one.
  it('one VM flooding does not use up the log samples: another VM\'s drop of the same reason during the flood is sampled too', async () => {
    const [v1, v2, v3] = vms as [Vm, Vm, Vm];
    const pcap = path.join(env.dir, 'nflog-flood.pcap');
    const dump = inNs(env.dp, ['timeout', '4', 'tcpdump', '-i', 'nflog:2', '-U', '-w', pcap]);
    await new Promise((r) => setTimeout(r, 800));
    const flood = inNs(v3.ns, ['/usr/bin/python3', PY, 'flood', 'ra-vlan', '2000', '2.5', v3.mac, v3.ip, v2.mac, v2.ip]);
    await new Promise((r) => setTimeout(r, 400));
    for (let i = 0; i < 4; i++) {
      await inNs(v1.ns, ['/usr/bin/python3', PY, 'send', 'ra-vlan', '901', v1.mac, v1.ip, v2.mac, v2.ip, 'fd00:77::1', v3.ip]);
      await new Promise((r) => setTimeout(r, 250));
    }
    await flood;
    await dump.catch(() => undefined); // `timeout` ends tcpdump with status 124
    // The RA's source is the sender's EUI-64 link-local: v1's bytes in the capture are v1's sample.
    const ll = (mac: string) => {
      const b = mac.split(':').map((x) => parseInt(x, 16));
      return Buffer.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, b[0]! ^ 2, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!]);
    };
    const cap = readFileSync(pcap);
    const count = (needle: Buffer) => { let n = 0; for (let i = cap.indexOf(needle); i >= 0; i = cap.indexOf(needle, i + 1)) n++; return n; };
    const [mine, flooder] = [count(ll(v1.mac)), count(ll(v3.mac))];
    console.log(`nflog samples during a 2000 pps tagged-RA flood from vm3: vm3 ${flooder}, vm1 ${mine}`);
    assert.ok(mine >= 1, 'the other VM\'s drop was sampled');
    assert.ok(flooder >= 1 && flooder <= 5 + 5 * 3.5, `the flooder's samples stay within its own budget: ${flooder}`);
  });

  it('the host answers its VMs only what IPv6 needs: the gateway pings, ssh and the API port are refused', async () => {
    const [v1] = vms as [Vm];
    const [before] = await hostDenies(env, host);
    const probe = await inNs(v1.ns, ['/usr/bin/python3', '-c',
      'import socket\nfor p in (22, 8080):\n  s=socket.socket(socket.AF_INET6);s.settimeout(1)\n  try: s.connect(("fd00:77::1",p)); print("open")\n  except Exception as e: print(type(e).__name__)']);
    assert.deepEqual(probe.stdout.trim().split('\n'), ['TimeoutError', 'TimeoutError'], 'dropped silently, not refused or accepted');
    const [afterCount] = await hostDenies(env, host);
    assert.ok(afterCount - before >= 2, `host deny counter rose by ${afterCount - before}`);
  });

  it('rate limits hold per VM within 10 % while another VM floods (its own NIC rates, and the global defaults)', async () => {
    const [v1, v2, v3] = vms as [Vm, Vm, Vm];
    // [attack, vm1's NIC rate, the global default vm3 has]
    const cases: [attack: string, limit: number, global: number][] = [['nd-flood', 50, 200], ['icmp-flood', 100, 300], ['mcast-flood', 100, 150]];
    const report: string[] = [];
    const within = (rate: number, limit: number, secs: number) => Math.abs(rate - limit) <= limit * 0.1 + 5 / secs;
    for (const [attack, limit, global] of cases) {
      const [before, before3] = [await dropCounters(env.dp, guard, v1.dev), await dropCounters(env.dp, guard, v3.dev)];
      const secs = 3;
      // What reaches vm2 from vm1 (unicast echo only: multicast and NS delivery depend on snooping and ND).
      const arrived = attack === 'icmp-flood' ? capture(v2.ns, `icmp6 and ip6[40] == 128 and src host ${v1.ip}`, secs + 2) : undefined;
      await new Promise((r) => setTimeout(r, 500));
      const noise = inNs(v3.ns, ['/usr/bin/python3', PY, 'flood', attack, '2000', String(secs), v3.mac, v3.ip, v2.mac, v2.ip]);
      const res = JSON.parse((await inNs(v1.ns, ['/usr/bin/python3', PY, 'flood', attack, String(limit * 4), String(secs), v1.mac, v1.ip, v2.mac, v2.ip])).stdout) as { sent: number; seconds: number };
      const flood = JSON.parse((await noise).stdout) as { sent: number; seconds: number };
      const dropped = (await dropCounters(env.dp, guard, v1.dev)).get('rate_limit')! - before.get('rate_limit')!;
      const passedRate = (res.sent - dropped) / res.seconds;
      const dropped3 = (await dropCounters(env.dp, guard, v3.dev)).get('rate_limit')! - before3.get('rate_limit')!;
      const passed3 = (flood.sent - dropped3) / flood.seconds;
      report.push(`${attack}: vm1 limit ${limit}/s, sent ${res.sent} in ${res.seconds.toFixed(2)} s, passed ${passedRate.toFixed(1)}/s;`
        + ` vm3 (global default ${global}/s) sent ${flood.sent}, passed ${passed3.toFixed(1)}/s`);
      assert.ok(within(passedRate, limit, res.seconds), report.at(-1));
      assert.ok(within(passed3, global, flood.seconds), report.at(-1));
      if (arrived) {
        const got = await arrived;
        report.push(`  echo requests from vm1 seen at vm2: ${got} (sent ${res.sent} - dropped ${dropped} = ${res.sent - dropped})`);
        assert.ok(Math.abs(got - (res.sent - dropped)) <= 3 + 0.02 * res.sent, report.at(-1));
      }
    }
    // RAs a VM receives (here from the host, as radvd sends them): vm1 takes at most its ra_rate_limit.
    const before = await dropCounters(env.dp, guard, v1.dev);
    const [br] = (await sh('ip', ['-n', env.dp, '-j', 'link', 'show', 'dev', bridge], { encoding: 'utf8' })).stdout.match(/"address":"([0-9a-f:]{17})"/)!.slice(1);
    const ra = JSON.parse((await sh('ip', ['netns', 'exec', env.dp, 'env', `IFACE=${bridge}`, '/usr/bin/python3', PY, 'flood', 'ra-host', '200', '3', br!, 'fe80::1', v1.mac, v1.ip],
      { encoding: 'utf8' })).stdout) as { sent: number; seconds: number };
    const raDropped = (await dropCounters(env.dp, guard, v1.dev)).get('rate_limit_in')! - before.get('rate_limit_in')!;
    const raRate = (ra.sent - raDropped) / ra.seconds;
    report.push(`ra to vm1: limit 50/s, sent ${ra.sent} in ${ra.seconds.toFixed(2)} s, passed ${raRate.toFixed(1)}/s`);
    assert.ok(Math.abs(raRate - 50) <= 50 * 0.1 + 5 / ra.seconds, report.at(-1));
    console.log(report.join('\n'));
    // The flooder hit its own limiter, not vm1's.
    assert.ok((await dropCounters(env.dp, guard, v3.dev)).get('rate_limit')! > 0);
  });

  it('an isolated VM can send and receive nothing; unisolate restores it', async () => {
    const [v1, v2] = vms as [Vm, Vm];
    const admin = client(env, TOKENS.admin);
    await admin.isolateVm({ vmId: v1.id, reason: 'test' });
    await assert.rejects(inNs(v1.ns, ['ping', '-6', '-c', '1', '-W', '1', v2.ip]));
    await admin.unisolateVm({ vmId: v1.id });
    await waitUntil('ping after unisolate', async () => inNs(v1.ns, ['ping', '-6', '-c', '1', '-W', '1', v2.ip]).then(() => true, () => false));
  });
});

/** Packets the host table's VM-facing drop rule counted. */
async function hostDenies(env: Env, table: string): Promise<[number]> {
  const chain = await nftList(env.dp, ['chain', 'ip6', table, 'input']);
  for (const o of chain) {
    const rule = o['rule'] as { expr?: Record<string, unknown>[] } | undefined;
    const exprs = rule?.expr ?? [];
    const onVmBridges = exprs.some((e) => JSON.stringify(e).includes('@vm_bridges'));
    // The VM-facing deny: counted, then the sampled log and the drop in chain `deny` (decision 0032).
    const denies = exprs.some((e) => JSON.stringify(e).includes('"target":"deny"'));
    const counter = exprs.find((e) => 'counter' in e)?.['counter'] as { packets: number } | undefined;
    if (onVmBridges && denies && counter) return [counter.packets];
  }
  throw new Error('host deny rule not found');
}
