// Security operations with real packets (issue 7): the real daemon with two
// sandbox VMs on a bridge in its own data-plane namespace. e1 (tenant a)
// attacks, e2 (tenant b) probes the host. Checks: a guard drop is an event
// within 1 s from the nflog samples; the host firewall's denies are events of
// the VM behind them; the SSE stream delivers live events scoped like the
// JSON form; syslog receivers (a Unix datagram socket standing in for
// /dev/log, a TCP collector) get the events with facility local0; a refused
// policy is an event; a rogue-RA flood escalates to critical, the VM is
// isolated (its packets stop) and the guide's incident script runs, unchanged,
// with the right arguments and isolates through the API.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Code, ConnectError } from '@connectrpc/connect';
import { baseConfig, cleanupEnv, client, leftovers, newEnv, REPO, startDaemon, TOKENS, waitUntil, writeConfig, type Daemon, bootedVm } from '../helpers/daemon-harness.js';

const PY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'guards', 'packets.py');
const sh = promisify(execFile);
const inNs = (ns: string, args: string[]) => sh('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 60_000 });

interface Vm { id: string; tenant: string; ns: string; dev: string; mac: string; ip: string }
interface Ev { seq: number; type: string; severity: string; vm_id: string; tenant_id: string; nic: string; port: string; reason: string; count: number; packet?: { src?: string; src_mac?: string; icmp_type?: number; dport?: number }; detail?: string }

/** The guide's incident-response.sh, exactly as the guide prints it (test/unit/config.test.ts checks the copy). */
function guideIncidentScript(): string {
  return readFileSync(path.join(REPO, 'test/fixtures/guide-incident-response.sh'), 'utf8');
}

/** A Unix datagram receiver (Node has none): one JSON string per datagram on stdout. */
function unixDgramReceiver(sock: string): ChildProcess {
  return spawn('/usr/bin/python3', ['-c', [
    'import socket, sys, json, os',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    `s.bind(${JSON.stringify(sock)})`,
    'print("ready", flush=True)',
    'while True: print(json.dumps(s.recv(65536).decode()), flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
}

describe('security operations: nflog events, SSE, syslog, incident response', { timeout: 240_000 }, async () => {
  const env = await newEnv();
  const vms: Vm[] = [];
  const sock = path.join(env.dir, 'log.sock');
  const argsFile = path.join(env.dir, 'hook-args');
  const local: string[] = [];
  const remote: string[] = [];
  let receiver: ChildProcess | undefined;
  let collector: net.Server | undefined;
  let daemon: Daemon | undefined;

  const events = async (query: string, token: string = TOKENS.admin) => {
    const res = await fetch(`${env.url}/debug/security/events?${query}`, { headers: { authorization: `Bearer ${token}` } });
    return (await res.json()) as { events: Ev[] };
  };
  /** An SSE subscription: collects the events it is sent. */
  const stream = async (query: string, token?: string) => {
    const ac = new AbortController();
    const res = await fetch(`${env.url}/debug/security/events/stream?${query}`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: ac.signal });
    const got: Ev[] = [];
    const done = (async () => {
      if (!res.ok || !res.body) return;
      let buf = '';
      const dec = new TextDecoder();
      try {
        for await (const chunk of res.body) {
          buf += dec.decode(chunk as Uint8Array, { stream: true });
          for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = block.split('\n').find((l) => l.startsWith('data: '));
            if (data) got.push(JSON.parse(data.slice(6)) as Ev);
          }
        }
      } catch {
        // aborted
      }
    })();
    return { res, got, close: async () => { ac.abort(); await done; } };
  };

  before(async () => {
    receiver = unixDgramReceiver(sock);
    await new Promise<void>((resolve) => receiver!.stdout!.setEncoding('utf8').once('data', () => resolve()));
    receiver.stdout!.on('data', (d: string) => local.push(...d.split('\n').filter(Boolean).map((l) => JSON.parse(l) as string)));
    // RFC 6587 octet-counted frames.
    collector = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) break;
          const n = Number(buf.subarray(0, sp).toString());
          if (buf.length < sp + 1 + n) break;
          remote.push(buf.subarray(sp + 1, sp + 1 + n).toString());
          buf = buf.subarray(sp + 1 + n);
        }
      });
    });
    await new Promise<void>((r) => collector!.listen(0, '127.0.0.1', r));
    const collectorPort = (collector.address() as net.AddressInfo).port;
    writeFileSync(path.join(env.dir, 'guide-incident-response.sh'), guideIncidentScript());
    const hook = path.join(env.dir, 'hook.sh');
    writeFileSync(hook, `#!/bin/bash\nprintf '%s\\n' "$@" > ${argsFile}\nexec /bin/bash ${path.join(env.dir, 'guide-incident-response.sh')} "$@"\n`);
    chmodSync(hook, 0o755);
    writeConfig(env, baseConfig(env, {
      ipv6: {
        default_pool: { id: 'test', prefix: 'fd00:77::/48', reserved: ['fd00:77::1'] },
        bridge: { name: `${env.inst}br`, ipv6_address: 'fd00:77::1/64' },
        security: { syslog_facility: 'local0' },
      },
      security_events: {
        escalation: { packets: 50, window: '10s' },
        syslog: { socket: sock, remote: { address: `127.0.0.1:${collectorPort}`, protocol: 'tcp' } },
      },
      incident_response: { hook, hook_severities: ['critical'], hook_timeout: '20s' },
    }));
    daemon = await startDaemon(env);
    for (const s of [{ id: 'e1', token: TOKENS.a, tenant: 'tenant-a', ip: 'fd00:77::21' }, { id: 'e2', token: TOKENS.b, tenant: 'tenant-b', ip: 'fd00:77::22' }]) {
      vms.push(await bootedVm(env, s));
    }
    // metald's nflog reader has bound the groups once its start-up line is logged.
    await waitUntil('the nflog readers', async () => daemon!.logs().filter((l) => l['msg'] === 'reading nflog groups').length === 2, 10_000);
  });

  after(async () => {
    receiver?.kill();
    collector?.close();
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('a rogue RA is an event within 1 s (nflog sample), live on the SSE stream of its tenant only, and in syslog as local0', async () => {
    const [v1, v2] = vms as [Vm, Vm];
    const mine = await stream('type=guard_sample', TOKENS.a);
    const theirs = await stream('type=guard_sample', TOKENS.b);
    assert.equal(mine.res.headers.get('content-type'), 'text/event-stream');
    assert.equal((await stream('', undefined)).res.status, 401);
    await inNs(v1.ns, ['/usr/bin/python3', PY, 'send', 'ra', '7', v1.mac, v1.ip, v2.mac, v2.ip, 'fd00:77::1', v2.ip]);
    // From the moment the sender (scapy, ~0.4 s to start) has sent it.
    const sent = Date.now();
    let e: Ev | undefined;
    await waitUntil('a guard_sample for e1', async () => {
      e = (await events(`vm_id=${v1.id}&type=guard_sample`)).events.find((x) => x.reason === 'ra_guard');
      return e !== undefined;
    }, 1000);
    const latency = Date.now() - sent;
    assert.deepEqual([e!.vm_id, e!.tenant_id, e!.nic, e!.port, e!.severity, e!.count], [v1.id, 'tenant-a', 'eth0', v1.dev, 'high', 0]);
    assert.equal(e!.packet?.icmp_type, 134, 'the logged packet is the RA');
    assert.equal(e!.packet?.src_mac, v1.mac);
    await waitUntil('the SSE event', async () => mine.got.some((x) => x.seq === e!.seq), 1000);
    const sseLatency = Date.now() - sent;
    await mine.close();
    await theirs.close();
    assert.equal(theirs.got.filter((x) => x.vm_id === v1.id).length, 0, "tenant b's stream shows nothing of tenant a");
    // A reconnecting client resumes after the last id it saw (Last-Event-ID); stored events are replayed first.
    const replay = await fetch(`${env.url}/debug/security/events/stream?type=guard_sample`, { headers: { authorization: `Bearer ${TOKENS.a}`, 'last-event-id': String(e!.seq - 1) } });
    const reader = replay.body!.getReader();
    let text = '';
    while (!text.includes(`id: ${e!.seq}\n`)) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    // syslog: PRI 131 = local0 (16) * 8 + err (3) for a high event.
    await waitUntil('syslog lines', async () => local.some((l) => l.includes(`seq=${e!.seq} `)) && remote.some((l) => l.includes(`seq="${e!.seq}"`)), 3000);
    const l = local.find((x) => x.includes(`seq=${e!.seq} `))!;
    assert.match(l, new RegExp(`^<131>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d metald\\[\\d+\\]: security_event seq=${e!.seq} type=guard_sample severity=high vm_id=e1 tenant_id=tenant-a nic=eth0 port=${v1.dev} reason=ra_guard count=0`));
    const r = remote.find((x) => x.includes(`seq="${e!.seq}"`))!;
    assert.match(r, /^<131>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ metald \d+ guard_sample \[metald@32473 seq="\d+" type="guard_sample" severity="high" vm_id="e1" tenant_id="tenant-a" /);
    console.log(`rogue RA: guard_sample after ${latency} ms (SSE ${sseLatency} ms)`);
  });

  it('the host firewall denies a VM probing ssh: a host_deny event of that VM; a refused policy is an event', async () => {
    const [, v2] = vms as [Vm, Vm];
    // SYNs to the host's sshd: dropped and logged by the host table (batched by the kernel for up to 1 s).
    let e: Ev | undefined;
    for (let i = 0; i < 3 && !e; i++) {
      await inNs(v2.ns, ['/usr/bin/python3', '-c', 'import socket\ns=socket.socket(socket.AF_INET6);s.settimeout(1)\ntry: s.connect(("fd00:77::1",22))\nexcept Exception: pass']);
      await waitUntil('a host_deny for e2', async () => {
        e = (await events(`vm_id=${v2.id}&type=host_deny`)).events[0];
        return e !== undefined;
      }, 2500).catch(() => {});
    }
    assert.ok(e, `no host_deny for e2: ${JSON.stringify((await events('type=host_deny')).events)}`);
    // Attributed by the source MAC (the bridge hands the host no port; the guards pin the MAC to e2's port).
    assert.deepEqual([e!.tenant_id, e!.severity, e!.packet?.dport, e!.packet?.src_mac, e!.port], ['tenant-b', 'medium', 22, v2.mac, v2.dev]);
    assert.ok(e!.count >= 1);
    const b = client(env, TOKENS.b);
    await assert.rejects(b.createVm({ vmId: 'bad-policy', config: { network: [{ id: 'eth0', securityPolicy: { ingressRules: ['allow tcp from any to any port 99999'] } }] } }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument);
    const [p] = (await events('type=policy_refused', TOKENS.b)).events;
    assert.deepEqual([p?.vm_id, p?.tenant_id, p?.reason], ['bad-policy', 'tenant-b', 'config.network[0].security_policy.ingress_rules[0]']);
  });

  it('a rogue RA flood is critical: the VM is isolated (packets stop) and the guide\'s script runs with the right arguments', async () => {
    const [v1, v2] = vms as [Vm, Vm];
    // e1 and e2 are different tenants (strict by default: they never reach each other); the gateway shows packets flow.
    await inNs(v1.ns, ['ping', '-6', '-c', '1', '-W', '2', 'fd00:77::1']);
    await inNs(v1.ns, ['/usr/bin/python3', PY, 'flood', 'ra', '400', '0.5', v1.mac, v1.ip, v2.mac, v2.ip]);
    let crit: Ev | undefined;
    await waitUntil('attack_detected', async () => {
      crit = (await events(`vm_id=${v1.id}&type=attack_detected`)).events[0];
      return crit !== undefined;
    }, 5000);
    assert.deepEqual([crit!.severity, crit!.tenant_id, crit!.reason], ['critical', 'tenant-a', 'ra_guard']);
    await waitUntil('the VM isolated', async () => (await client(env, TOKENS.admin).getVmInfo({ vmId: v1.id })).vm!.isolated, 5000);
    await assert.rejects(inNs(v1.ns, ['ping', '-6', '-c', '2', '-W', '1', 'fd00:77::1']), 'packets of the isolated VM stop');
    await waitUntil('the hook', async () => existsSync(argsFile) && readFileSync(argsFile, 'utf8').split('\n').length >= 4, 10_000);
    assert.deepEqual(readFileSync(argsFile, 'utf8').trim().split('\n'), ['critical', 'attack_detected', v1.id, 'tenant-a']);
    // The guide's curl (no token, no content type, port 8080) reached this instance and was allowed to isolate.
    let ran: Record<string, unknown> | undefined;
    await waitUntil('the hook to finish', async () => (ran = daemon!.logs().find((x) => x['msg'] === 'incident hook ran' || x['msg'] === 'incident hook failed')) !== undefined, 20_000);
    assert.equal(ran!['msg'], 'incident hook ran', JSON.stringify(ran));
    assert.match(String(ran!['output']), /CRITICAL: Isolating VM e1/);
    assert.match(String(ran!['output']), /"isolated":true/);
    const info = (await client(env, TOKENS.admin).getVmInfo({ vmId: v1.id })).vm!;
    assert.match(info.isolationReason, /^incident response: critical attack_detected \(ra_guard\)/, 'the script did not overwrite why');
    const types = (await events(`vm_id=${v1.id}`)).events.map((x) => x.type);
    assert.ok(types.includes('vm_isolated') && types.includes('monitoring_enhanced'), types.join(','));
    await client(env, TOKENS.admin).unisolateVm({ vmId: v1.id });
  });
});
