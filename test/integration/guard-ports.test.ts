// Ports of a metald bridge that are not VM ports (issue 5 item 1 and item 2, SPEC-NOTES 1), with
// real packets through FirewallPlane's table in a namespace of the test's own: a port metald does
// not know never reaches a VM (fail closed, counted by the unknown_port rule); a trusted port (a
// shard uplink, a router) does; RAs reach a VM only from an allowed router's link-local address on
// such a port — never from a VM port, even one that claims that address, and never from an
// unknown port.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FirewallPlane } from '../../src/firewall/firewall-plane.js';
import { nftList } from '../../src/kernel/nft.js';
import { UnmanagedNetworkPlane } from '../../src/network/plane.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';
import { memoryLog, pinBridgeNetfilterOff } from '../helpers/hostnet-kernel.js';
import { portCounter } from '../helpers/guard-counters.js';

const sh = promisify(execFile);
const PY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'guards', 'packets.py');
const tag = randomBytes(3).toString('hex');
const dp = `mtdtest-gp-${tag}`;
/** Namespace behind each bridge port: VM a (listens), VM b (claims the router's address), a trusted router, a stranger. */
const NS = { vpa: `${dp}-a`, vpb: `${dp}-b`, rtr0: `${dp}-r`, unk0: `${dp}-u` } as const;
const MAC = { vpa: '52:54:00:00:00:0a', vpb: '52:54:00:00:00:0b', rtr0: '52:54:00:00:00:01', unk0: '52:54:00:00:00:99' } as const;
const A = vmRecord('a', [{ hostDevice: 'vpa', bridge: 'br0', address: 'fd00:10::a/64', mac: MAC.vpa }]);
const B = vmRecord('b', [{ hostDevice: 'vpb', bridge: 'br0', address: 'fd00:10::b/64', mac: MAC.vpb }]);
const TABLE = 'gpt_guard';
const tmp = mkdtempSync(path.join(tmpdir(), 'mtd-gp-'));

const ip = (ns: string, args: string[]) => sh('ip', ['-n', ns, ...args]);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 90_000 });

const plane = new FirewallPlane(new UnmanagedNetworkPlane(), {
  netns: dp, guardTable: TABLE, hostTable: 'gpt_security', guardLogGroup: 2, host: undefined, log: memoryLog().log,
  trustedPorts: () => ['rtr0'],
  defaults: { raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
    bridges: new Map([['br0', { raGuard: true, allowedRaSources: ['fe80::1'], mldSnooping: true }]]) },
});

before(async () => {
  for (const ns of [dp, ...Object.values(NS)]) await sh('ip', ['netns', 'add', ns]);
  // No IPv6 stack behind the ports: their own ND and MLD would move the counters; scapy sends raw frames.
  for (const ns of Object.values(NS)) await inNs(ns, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  await pinBridgeNetfilterOff(dp);
  await ip(dp, ['link', 'add', 'br0', 'type', 'bridge']);
  await ip(dp, ['link', 'set', 'br0', 'up']);
  for (const [port, ns] of Object.entries(NS)) {
    await ip(dp, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await ip(dp, ['link', 'set', port, 'master', 'br0', 'up']);
    await ip(ns, ['link', 'set', 'eth0', 'address', MAC[port as keyof typeof MAC], 'up']);
  }
  await plane.reconcile([A, B]);
});

after(async () => {
  for (const ns of [dp, ...Object.values(NS)]) await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});

/** Sends one frame built by scapy from `ns` (every frame carries flow label `fl`). */
async function send(ns: string, fl: number, what: string): Promise<void> {
  const mac = MAC[(Object.entries(NS).find(([, n]) => n === ns)![0]) as keyof typeof MAC];
  const frames: Record<string, string> = {
    udp: `Ether(src="${mac}",dst="${MAC.vpa}")/IPv6(src="fd00:10::99",dst="fd00:10::a",fl=${fl})/UDP(sport=4000,dport=9)/Raw(b"x")`,
    'ra-fe80::1': `Ether(src="${mac}",dst="33:33:00:00:00:01")/IPv6(src="fe80::1",dst="ff02::1",hlim=255,fl=${fl})/ICMPv6ND_RA(routerlifetime=0)`,
    'ra-fe80::2': `Ether(src="${mac}",dst="33:33:00:00:00:01")/IPv6(src="fe80::2",dst="ff02::1",hlim=255,fl=${fl})/ICMPv6ND_RA(routerlifetime=0)`,
  };
  await inNs(ns, ['/usr/bin/python3', '-c', `from scapy.all import *\nconf.verb=0\nsendp(${frames[what]!},iface="eth0")`]);
}

/** Packets the fail-closed rule for unknown ports dropped. */
async function unknownPortDrops(): Promise<number> {
  const rules = (await nftList(dp, ['chain', 'bridge', TABLE, 'vm_out_forwarded'])).map((o) => o['rule'] as { comment?: string; expr?: { counter?: { packets: number } }[] } | undefined);
  const rule = rules.find((r) => r?.comment === 'unknown_port');
  assert.ok(rule, 'the unknown_port rule is in vm_out_forwarded');
  return rule.expr!.find((e) => e.counter)!.counter!.packets;
}

test('an unknown port never reaches a VM, a trusted port does; RAs only from an allowed router on a trusted port', { timeout: 180_000 }, async () => {
  const cases: [from: keyof typeof NS, what: string, delivered: boolean, counts: [get: () => Promise<number>, name: string] | null][] = [
    ['unk0', 'udp', false, [unknownPortDrops, 'unknown_port']],
    ['rtr0', 'udp', true, null],
    ['rtr0', 'ra-fe80::1', true, null],
    ['rtr0', 'ra-fe80::2', false, [() => portCounter(dp, TABLE, 'd_ra_guard_in', 'vpa'), 'd_ra_guard_in[vpa]']],
    ['vpb', 'ra-fe80::1', false, [() => portCounter(dp, TABLE, 'd_ra_guard', 'vpb'), 'd_ra_guard[vpb]']],
    ['unk0', 'ra-fe80::1', false, [unknownPortDrops, 'unknown_port']],
  ];
  const ready = path.join(tmp, 'ready');
  let sniffed: string | undefined;
  const sniffer = inNs(NS.vpa, ['/usr/bin/python3', PY, 'sniff', '60', ready]).then((r) => (sniffed = r.stdout));
  for (let i = 0; i < 300 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(existsSync(ready), 'the sniffer in VM a started');
  const rows: string[] = [];
  const failures: string[] = [];
  const counted: (string | null)[] = [];
  for (const [i, [from, what, , counts]] of cases.entries()) {
    const before = counts ? await counts[0]() : 0;
    await send(NS[from], i + 1, what);
    await new Promise((r) => setTimeout(r, 150));
    counted.push(counts ? `${counts[1]}+${(await counts[0]()) - before}` : null);
  }
  // The end marker (a trusted port's UDP is delivered) stops the sniffer; resent until it has.
  for (let i = 0; i < 20 && sniffed === undefined; i++) {
    await send(NS.rtr0, 0xfffff, 'udp');
    await Promise.race([sniffer, new Promise((r) => setTimeout(r, 500))]);
  }
  await sniffer;
  const seen = new Set(JSON.parse(sniffed!) as number[]);
  for (const [i, [from, what, delivered, counts]] of cases.entries()) {
    const got = seen.has(i + 1);
    rows.push(`${`${what} from ${from}`.padEnd(24)}${(got ? 'yes' : 'no').padEnd(11)}${counted[i] ?? '-'}`);
    if (got !== delivered) failures.push(`${what} from ${from}: delivered=${got}, expected ${delivered}`);
    // A frame from an unknown port floods to both VM ports (the bridge learned no MAC): 1 or 2 drops.
    const n = counted[i] === null ? 0 : Number(counted[i]!.split('+')[1]);
    if (counts && !(n === 1 || (counts[1] === 'unknown_port' && n === 2))) failures.push(`${what} from ${from}: counted ${counted[i]}, expected ${counts[1]}+1`);
  }
  console.log(['frame                   delivered  counter', ...rows].join('\n'));
  assert.deepEqual(failures, []);
});
