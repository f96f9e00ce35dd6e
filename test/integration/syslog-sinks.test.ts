// The syslog sinks against real sockets on loopback and in a temp dir: the
// remote collector over TCP (octet counting) and UDP, its bounded buffer
// while the collector is down (oldest dropped, counted, the rest delivered
// once it is up), and the local socket through logger, which waits for a
// socket that appears late.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalSyslog } from '../../src/events/syslog/local-syslog.js';
import { RemoteSyslog } from '../../src/events/syslog/remote-syslog.js';
import { freePort, waitUntil } from '../helpers/daemon-harness.js';

const quiet = { warn: () => {}, info: () => {} };

test('TCP collector down: messages wait in the bounded buffer (oldest dropped), then arrive octet-counted in order', async (t) => {
  const port = await freePort();
  const sink = new RemoteSyslog({ host: '127.0.0.1', port, protocol: 'tcp', maxBuffered: 3, log: quiet });
  t.after(() => sink.stop());
  for (const m of ['m1', 'm2', 'm3', 'm4', 'm5 with ünïcode']) sink.send(m);
  assert.equal(sink.dropped, 2);
  let raw = '';
  const server = net.createServer((s) => s.setEncoding('utf8').on('data', (d: string) => (raw += d)));
  t.after(() => server.close());
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  await waitUntil('the buffered messages', async () => raw.endsWith('ünïcode'), 5000);
  assert.equal(raw, '2 m32 m417 m5 with ünïcode');
  assert.equal(sink.sent, 3);
});

test('UDP: one datagram per message', async (t) => {
  const u = dgram.createSocket('udp4');
  const got: string[] = [];
  u.on('message', (m) => got.push(m.toString()));
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  t.after(() => u.close());
  const sink = new RemoteSyslog({ host: '127.0.0.1', port: u.address().port, protocol: 'udp', maxBuffered: 10, log: quiet });
  t.after(() => sink.stop());
  sink.send('<130>1 a');
  sink.send('<133>1 b');
  await waitUntil('two datagrams', async () => got.length === 2, 2000);
  assert.deepEqual(got, ['<130>1 a', '<133>1 b']);
});

test('local socket through logger: lines wait until the socket exists, each with its own PRI', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'metald-syslog-'));
  const sock = path.join(dir, 'log');
  const sink = new LocalSyslog({ socket: sock, format: 'local', tag: 'metald', maxBuffered: 100, log: quiet });
  const rx = spawn('/usr/bin/python3', ['-c', `import socket\ns=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(sock)})\nprint('ready', flush=True)\nwhile True: print(s.recv(9000).decode(), flush=True)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    sink.stop();
    rx.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  sink.send(130, 'security_event first');
  let out = '';
  rx.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  await waitUntil('the receiver', async () => out.includes('ready'), 5000);
  sink.send(133, 'security_event second');
  await waitUntil('both lines', async () => out.includes('second'), 5000);
  const lines = out.split('\n').filter((l) => l.startsWith('<'));
  assert.match(lines[0]!, new RegExp(`^<130>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d metald\\[${process.pid}\\]: security_event first$`));
  assert.match(lines[1]!, /^<133>.* metald\[\d+\]: security_event second$/);
  // format: rfc5424 (for a local rsyslog): logger writes the RFC 5424 header.
  const s5424 = new LocalSyslog({ socket: sock, format: 'rfc5424', tag: 'metald', maxBuffered: 100, log: quiet });
  t.after(() => s5424.stop());
  s5424.send(131, 'security_event third');
  await waitUntil('the RFC 5424 line', async () => out.includes('third'), 5000);
  assert.match(out.split('\n').find((l) => l.includes('third'))!, new RegExp(`^<131>1 \\d{4}-\\d\\d-\\d\\dT\\S+ \\S+ metald ${process.pid} - - security_event third$`));
});
