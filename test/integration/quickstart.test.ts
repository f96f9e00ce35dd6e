import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { bridgeMac } from '../../src/network/desired.js';
import { freePort } from '../helpers/daemon-harness.js';

// The README's first command ends in `metald quickstart`: it must start on the
// embedded config and print a curl call that works as printed.

const tag = Math.random().toString(16).slice(2, 6);
const instance = `mtdqs${tag}`;
const netns = `mtdtest-qs-${tag}`;
const dataDir = mkdtempSync(join(tmpdir(), 'metald-qs-'));
let child: ChildProcess | undefined;

after(() => {
  child?.kill('SIGKILL');
  // radvd outlives metald by design (the next start adopts it): stop it here.
  const pidFile = `/run/metald/${instance}/radvd-${instance}.pid`;
  if (existsSync(pidFile)) { try { process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL'); } catch {} }
  rmSync(`/run/metald/${instance}`, { recursive: true, force: true });
  for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!)) {
    if (ns.startsWith(instance) || ns === netns) {
      try { execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean).forEach((p) => process.kill(Number(p), 'SIGKILL')); } catch {}
      try { execFileSync('ip', ['netns', 'del', ns]); } catch {}
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
  // Per-VM resolv.conf files of VMs the test could not delete through the API.
  for (const d of existsSync('/etc/netns') ? readdirSync('/etc/netns') : []) {
    if (d.startsWith(`${instance}-`)) rmSync(`/etc/netns/${d}`, { recursive: true, force: true });
  }
});

it('quickstart serves the embedded config and its printed curl call works', async () => {
  const port = await freePort();
  child = spawn(process.execPath, ['bin/metald.js', 'quickstart', '--port', String(port), '--data-dir', dataDir, '--netns', netns, '--instance', instance], { stdio: ['ignore', 'pipe', 'pipe'] });
  let banner = '';
  child.stderr!.on('data', (d) => (banner += d));
  const deadline = Date.now() + 30_000;
  while (!banner.includes("-d '") || !/\n\s*}'\n/.test(banner)) {
    assert.ok(Date.now() < deadline, `no banner: ${banner}`);
    assert.equal(child.exitCode, null, `quickstart exited: ${banner}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const url = /curl -sS -X POST (\S+) /.exec(banner)![1]!;
  const body = banner.slice(banner.indexOf("-d '") + 4, banner.search(/}'\n/) + 1);
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  const json = await res.json() as { vmId: string; state: string };
  assert.equal(res.status, 200, JSON.stringify(json));
  assert.equal(json.state, 'VM_STATE_CREATED');
  const nsList = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(nsList.includes(`${instance}-vm-${json.vmId}`), 'the VM has its namespace');
  assert.ok(nsList.includes(netns), 'the data plane namespace exists');
  // A second VM, auto-assigned on the bridge; both boot and reach their
  // gateways and each other over the bridge; the bridge carries the first
  // VM's subnet gateway (…:100::1) too.
  const post = (m: string, b: unknown) => fetch(url.replace('CreateVm', m), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(b) }).then((r) => r.json() as Promise<any>);
  const second = await post('CreateVm', { vm_id: 'qs-two', config: { tenant_id: 'test-customer', network: [{ id: 'eth0' }] } });
  assert.equal(second.vm.networkStatus[0].ipv6Address, 'fd00:6d74::2/64');
  for (const id of [json.vmId, 'qs-two']) assert.equal((await post('BootVm', { vm_id: id })).state, 'VM_STATE_RUNNING');
  // Up to 3 echoes, the first success ends it: right after boot, DAD and ND may still be running on a loaded machine.
  const ping = (id: string, dst: string) => execFileSync('ip', ['netns', 'exec', `${instance}-vm-${id}`, 'ping', '-6', '-c1', '-w9', '-W3', dst], { encoding: 'utf8' });
  assert.match(ping(json.vmId, 'fd00:6d74:0:100::1'), / 0% packet loss/);
  assert.match(ping('qs-two', 'fd00:6d74::1'), / 0% packet loss/);
  assert.match(ping('qs-two', 'fd00:6d74:0:100::10'), / 0% packet loss/, 'VMs in different /64s reach each other through the bridge');
  // radvd runs and the auto-assigned VM also forms a SLAAC address from the bridge's RA.
  // (An address still in DAD shows as "tentative": wait until one has passed.)
  let slaac = '';
  for (let i = 0; i < 100 && !/scope global dynamic/.test(slaac); i++) {
    slaac = execFileSync('ip', ['-n', `${instance}-vm-qs-two`, '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global', 'dynamic', '-tentative'], { encoding: 'utf8' });
    if (!/scope global dynamic/.test(slaac)) await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(slaac, /inet6 fd00:6d74::[0-9a-f:]+\/64 scope global dynamic/);
  // The bridge keeps the MAC metald gave it (not its lowest port's), so the router's link-local never moves.
  const br = JSON.parse(execFileSync('ip', ['-n', netns, '-j', 'link', 'show', 'dev', 'br-metald'], { encoding: 'utf8' })) as { address: string }[];
  assert.equal(br[0]!.address, bridgeMac('br-metald'));
  await post('DeleteVm', { vm_id: 'qs-two' });
  // The guest sees the DNS of its network document as its resolv.conf.
  const resolv = execFileSync('ip', ['netns', 'exec', `${instance}-vm-${json.vmId}`, 'cat', '/etc/resolv.conf'], { encoding: 'utf8' });
  assert.match(resolv, /^nameserver fd00:6d74::53$/m);
  const del = await fetch(url.replace('CreateVm', 'DeleteVm'), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ vm_id: json.vmId }) });
  assert.equal(del.status, 200);
  assert.equal(existsSync(`/etc/netns/${instance}-vm-${json.vmId}`), false, 'per-VM resolv.conf removed');
});
