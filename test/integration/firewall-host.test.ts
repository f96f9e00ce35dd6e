// The host table with a management prefix, with real packets: a management
// host reaches ssh (port 22 here) and the API port, any other source is
// dropped (and counted); ND and ping keep working; loopback and replies pass;
// denies are logged with the guide's prefix; an RA or redirect from a
// neighbour changes no route (checked against the same attack without the
// table). The "host" is a namespace of the test's own with a veth to a
// "management" namespace.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { FirewallPlane } from '../../src/firewall/firewall-plane.js';
import { nftList } from '../../src/kernel/nft.js';
import { UnmanagedNetworkPlane } from '../../src/network/plane.js';
import { memoryLog } from '../helpers/hostnet-kernel.js';

const tag = randomBytes(3).toString('hex');
const host = `mtdtest-fh-${tag}`;
const mgmt = `mtdtest-fm-${tag}`;
const sh = (args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
const inNs = (ns: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 20_000 });
const servers: ReturnType<typeof spawn>[] = [];

before(() => {
  for (const ns of [host, mgmt]) sh(['netns', 'add', ns]);
  sh(['-n', host, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', mgmt]);
  for (const [ns, dev, addrs] of [[host, 'up0', ['fd00:99:1::1/64', 'fd00:99:2::1/64']], [mgmt, 'eth0', ['fd00:99:1::10/64', 'fd00:99:2::10/64']]] as const) {
    inNs(ns, ['sysctl', '-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
    sh(['-n', ns, 'link', 'set', 'lo', 'up']);
    sh(['-n', ns, 'link', 'set', dev, 'up']);
    for (const a of addrs) sh(['-n', ns, 'addr', 'add', a, 'dev', dev, 'nodad']);
  }
  for (const port of [22, 8080]) {
    servers.push(spawn('ip', ['netns', 'exec', host, '/usr/bin/python3', '-c',
      `import socket\ns=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("::",${port}));s.listen()\nwhile True:\n  c,_=s.accept();c.sendall(b"ok");c.close()`]));
  }
});
after(() => {
  for (const s of servers) s.kill('SIGKILL');
  for (const ns of [host, mgmt]) sh(['netns', 'del', ns]);
});

const connect = (src: string, port: number) => inNs(mgmt, ['/usr/bin/python3', '-c',
  `import socket\ntry:\n  s=socket.create_connection(("fd00:99:1::1",${port}),timeout=1.5,source_address=("${src}",0)); print(s.recv(10).decode())\nexcept Exception as e: print(type(e).__name__)`]).trim();

test('management prefix: ssh and the API port from it, nothing else from anywhere else; ND and ping still work', async () => {
  const plane = new FirewallPlane(new UnmanagedNetworkPlane(), {
    netns: host, guardTable: 'fh_guard', hostTable: 'fh_security', guardLogGroup: 2, log: memoryLog().log,
    defaults: { raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 }, bridges: new Map() },
    host: { vmBridges: [], vmRanges: ['fd00:77::/48'], managementPrefixes: ['fd00:99:1::/64'], managementPorts: [22, 8080], allowedRaSources: [],
      ndRate: 1000, icmpRate: 1000, icmpErrorRate: 100, logGroup: 1 },
  });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(connect('fd00:99:2::10', 22), 'ok', 'before the table: open to all');
  await plane.reconcile([]);
  assert.equal(connect('fd00:99:1::10', 22), 'ok');
  assert.equal(connect('fd00:99:1::10', 8080), 'ok');
  assert.equal(connect('fd00:99:2::10', 22), 'TimeoutError');
  assert.equal(connect('fd00:99:2::10', 8080), 'TimeoutError');
  assert.match(inNs(mgmt, ['ping', '-6', '-c', '1', '-W', '2', '-I', 'fd00:99:2::10', 'fd00:99:1::1']), / 0% packet loss/);
  const input = await nftList(host, ['chain', 'ip6', 'fh_security', 'input']);
  const last = input.map((o) => o['rule'] as { expr?: Record<string, unknown>[] } | undefined).filter(Boolean).at(-1)!;
  const counted = (last.expr!.find((e) => 'counter' in e)!['counter'] as { packets: number }).packets;
  assert.ok(counted >= 2, `default drop counted ${counted}`);
});

test('a flood at the host is dropped and counted packet for packet; its log is a sample of at most 50 a second (decision 0032)', async () => {
  const input = async () => (await nftList(host, ['chain', 'ip6', 'fh_security', 'input']))
    .map((o) => o['rule'] as { expr?: Record<string, unknown>[] } | undefined).filter(Boolean).at(-1)!;
  const dropped = async () => ((await input()).expr!.find((e) => 'counter' in e)!['counter'] as { packets: number }).packets;
  // The nflog group the table logs to, read as metald's event reader reads it.
  const reader = spawn('ip', ['netns', 'exec', host, 'tcpdump', '-i', 'nflog:1', '-n', '-l', '-q'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let lines = 0;
  reader.stdout!.on('data', (b: Buffer) => { lines += b.toString().split('\n').filter((l) => l.trim()).length; });
  try {
    await new Promise((r) => setTimeout(r, 800));
    // The host's neighbour entry resolved first: an unresolved one queues only a few packets and drops the rest.
    assert.match(inNs(mgmt, ['ping', '-6', '-c', '1', '-W', '2', '-I', 'fd00:99:2::10', 'fd00:99:1::1']), / 0% packet loss/);
    const before = await dropped();
    const t0 = performance.now();
    inNs(mgmt, ['/usr/bin/python3', '-c',
      'import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.bind(("fd00:99:2::10",0))\nfor i in range(3000): s.sendto(b"x",("fd00:99:1::1",9999))']);
    const secs = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 800));
    const counted = (await dropped()) - before;
    assert.ok(counted >= 3000 && counted < 3050, `every packet dropped and counted: ${counted}`);
    assert.ok(lines >= 1, 'the flood was logged');
    assert.ok(lines <= 50 + Math.ceil(50 * (secs + 1.6)), `log lines ${lines} for 3000 packets in ${secs.toFixed(2)} s`);
    console.log(`host flood: 3000 packets in ${secs.toFixed(2)} s, dropped+counted ${counted}, logged ${lines}`);
  } finally {
    reader.kill('SIGTERM');
  }
});

test('loopback and the replies of the host\'s own connections pass; a deny is logged with the guide\'s prefix', async () => {
  // Loopback: the host's own services over ::1 (iif lo), whatever the management prefix says.
  assert.equal(inNs(host, ['/usr/bin/python3', '-c',
    'import socket\ns=socket.create_connection(("::1",22),timeout=2); print(s.recv(10).decode())']).trim(), 'ok');
  // Established: a connection the host opens to a source it would otherwise deny gets its replies.
  const server = spawn('ip', ['netns', 'exec', mgmt, '/usr/bin/python3', '-c',
    'import socket\ns=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("fd00:99:2::10",5555));s.listen()\nc,_=s.accept();c.sendall(b"reply");c.close()']);
  servers.push(server);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(inNs(host, ['/usr/bin/python3', '-c',
    'import socket\ns=socket.create_connection(("fd00:99:2::10",5555),timeout=3); print(s.recv(10).decode())']).trim(), 'reply');
  // The deny's log line carries the guide's prefix (step 1.1), read from the nflog group.
  const pcap = `/tmp/mtdtest-fh-${tag}.pcap`;
  const dump = spawn('ip', ['netns', 'exec', host, 'timeout', '6', 'tcpdump', '-i', 'nflog:1', '-U', '-c', '1', '-w', pcap], { stdio: 'ignore' });
  const done = new Promise((r) => dump.on('close', r));
  try {
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < 3; i++) connect('fd00:99:2::10', 8080);
    await done;
    assert.ok(readFileSync(pcap).includes('metald-ipv6-deny: '), 'a deny logged with the prefix "metald-ipv6-deny: "');
  } finally {
    rmSync(pcap, { force: true });
  }
});

test('no RA or redirect from a neighbour changes the host\'s routes with the table; both would without it', async () => {
  const hostLl = inNs(host, ['ip', '-6', '-j', 'addr', 'show', 'dev', 'up0', 'scope', 'link']).match(/"local":"(fe80[^"]+)"/)![1]!;
  const mgmtLl = inNs(mgmt, ['ip', '-6', '-j', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']).match(/"local":"(fe80[^"]+)"/)![1]!;
  const hostMac = JSON.parse(inNs(host, ['ip', '-j', 'link', 'show', 'dev', 'up0']))[0].address as string;
  inNs(host, ['sysctl', '-qw', 'net.ipv6.conf.up0.accept_ra=2', 'net.ipv6.conf.up0.accept_redirects=1']);
  sh(['-n', host, '-6', 'route', 'replace', 'fd00:99:50::/64', 'via', mgmtLl, 'dev', 'up0']);
  const scapy = (frame: string) => inNs(mgmt, ['/usr/bin/python3', '-c', `from scapy.all import *\nconf.verb=0\nsendp(${frame},iface="eth0")`]);
  const ra = () => scapy(`Ether(dst="33:33:00:00:00:01")/IPv6(src="${mgmtLl}",dst="ff02::1",hlim=255)/ICMPv6ND_RA(routerlifetime=1800)`
    + `/ICMPv6NDOptPrefixInfo(prefix="fd00:99:7::",prefixlen=64,L=1,A=1)`);
  const redirect = () => scapy(`Ether(dst="${hostMac}")/IPv6(src="${mgmtLl}",dst="${hostLl}",hlim=255)/ICMPv6ND_Redirect(tgt="fe80::bad",dst="fd00:99:50::5")`);
  const changed = () => ({
    defaultRoute: inNs(host, ['ip', '-6', 'route', 'show', 'default']).includes(mgmtLl),
    slaac: inNs(host, ['ip', '-6', 'addr', 'show', 'dev', 'up0']).includes('fd00:99:7:'),
    redirected: inNs(host, ['ip', '-6', 'route', 'get', 'fd00:99:50::5']).includes('fe80::bad'),
  });
  const reset = () => {
    sh(['-n', host, '-6', 'route', 'flush', 'default']);
    sh(['-n', host, '-6', 'addr', 'flush', 'dev', 'up0', 'to', 'fd00:99:7::/64']);
    sh(['-n', host, '-6', 'route', 'flush', 'cache']);
    sh(['-n', host, '-6', 'route', 'replace', 'fd00:99:50::/64', 'via', mgmtLl, 'dev', 'up0']);
  };
  const settle = () => new Promise((r) => setTimeout(r, 700));
  // Without the table (deleted as drift): the attacks work, so the test can tell.
  execFileSync('ip', ['netns', 'exec', host, 'nft', 'delete', 'table', 'ip6', 'fh_security']);
  ra();
  redirect();
  await settle();
  assert.deepEqual(changed(), { defaultRoute: true, slaac: true, redirected: true }, 'without the table the RA and the redirect take effect');
  reset();
  // The plane puts the table back; the same RA and redirect change nothing and are counted.
  const plane = new FirewallPlane(new UnmanagedNetworkPlane(), {
    netns: host, guardTable: 'fh_guard', hostTable: 'fh_security', guardLogGroup: 2, log: memoryLog().log,
    defaults: { raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 }, bridges: new Map() },
    host: { vmBridges: [], vmRanges: ['fd00:77::/48'], managementPrefixes: ['fd00:99:1::/64'], managementPorts: [22, 8080], allowedRaSources: [],
      ndRate: 1000, icmpRate: 1000, icmpErrorRate: 100, logGroup: 1 },
  });
  await plane.reconcile([]);
  const ruleCount = async (needle: string) => {
    const rule = (await nftList(host, ['chain', 'ip6', 'fh_security', 'input'])).map((o) => o['rule'] as { expr?: Record<string, unknown>[] } | undefined)
      .find((r) => JSON.stringify(r?.expr ?? []).includes(needle));
    return (rule!.expr!.find((e) => 'counter' in e)!['counter'] as { packets: number }).packets;
  };
  ra();
  redirect();
  await settle();
  assert.deepEqual(changed(), { defaultRoute: false, slaac: false, redirected: false }, 'with the table nothing changed');
  assert.equal(await ruleCount('"@allowed_ra_sources"'), 1, 'the RA counted by the allowed-sources rule');
  assert.equal(await ruleCount('"nd-redirect"'), 1, 'the redirect counted');
});
