// radvd run by RadvdSupervisor for real: needs root, radvd and rdisc6 (ndisc6).
// Everything lives in namespaces made here (`mtdtest-ra-<hex>` for the data
// plane with bridge br-ra, `mtdtest-ra-<hex>-vm1` for a VM on a veth port),
// radvd only runs inside them, and `after` kills their processes by pid and
// deletes them even when a test fails. The host's namespace is never touched.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseIpv6, parsePrefix, prefixContains } from '../../src/core/net/ipv6.js';
import { run } from '../../src/kernel/exec.js';
import { ipIn, ipJson, netnsAdd, netnsDelete, netnsList, netnsPids } from '../../src/kernel/netns.js';
import { renderRadvdConf, type RadvdInterface } from '../../src/network/radvd/render.js';
import { RadvdConfigError, RadvdSupervisor } from '../../src/network/radvd/supervisor.js';

const TAG = randomBytes(3).toString('hex');
const HOST = `mtdtest-ra-${TAG}`;
const VM = `mtdtest-ra-${TAG}-vm1`;
const BRIDGE = 'br-ra';
const PORT = `vp${TAG}`;
const INSTANCE = `mtdtest${TAG}`;
const quiet = { info() {}, warn() {}, error() {} };
const fixtures = new URL('../fixtures/radvd/', import.meta.url).pathname;

const have = async (cmd: string) => run('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
const skip = process.getuid?.() !== 0 ? 'needs root' : undefined;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sysctl = (ns: string, kv: string) => run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv]);

/** The VM's SLAAC address in `prefix`, once no longer tentative. */
async function slaac(prefix: string): Promise<string | undefined> {
  const p = parsePrefix(prefix);
  const [link] = await ipJson(VM, ['-6', 'addr', 'show', 'dev', 'eth0']);
  const infos = (link?.['addr_info'] ?? []) as Record<string, unknown>[];
  const hit = infos.find((a) => typeof a['local'] === 'string' && prefixContains(p, parseIpv6(a['local']))
    && a['prefixlen'] === 64 && !a['tentative']);
  return hit?.['local'] as string | undefined;
}

async function defaultRoute(): Promise<Record<string, unknown> | undefined> {
  return (await ipJson(VM, ['-6', 'route', 'show', 'default']))[0];
}

async function bridgeLinkLocal(): Promise<string> {
  const [link] = await ipJson(HOST, ['-6', 'addr', 'show', 'dev', BRIDGE]);
  // iproute2 prints filtered-out addresses as {} in addr_info, so filter here rather than with `scope link`.
  const ll = ((link?.['addr_info'] ?? []) as Record<string, unknown>[]).find((a) => a['scope'] === 'link')?.['local'];
  assert.equal(typeof ll, 'string', JSON.stringify(link));
  return ll as string;
}

/**
 * Until the bridge forwards on `port`. Carrier and port state follow the kernel's
 * linkwatch, which lags by seconds when other work churns thousands of netdevs;
 * RAs sent before that are lost and the next one is 16 s away.
 */
async function portForwarding(port: string): Promise<void> {
  await waitFor(`bridge port ${port} forwarding`, async () => {
    const [l] = await ipJson(HOST, ['-d', 'link', 'show', 'dev', port]);
    const info = l?.['linkinfo'] as { info_slave_data?: { state?: string } } | undefined;
    return l?.['operstate'] === 'UP' && info?.info_slave_data?.state === 'forwarding' ? true : undefined;
  }, 30_000);
}

const rdisc6 = () => run('ip', ['netns', 'exec', VM, 'rdisc6', '-1', 'eth0'], { timeoutMs: 15_000 });

async function rereads(sup: RadvdSupervisor): Promise<number> {
  const log = await readFile(sup.logPath, 'utf8').catch(() => '');
  return log.split('attempting to reread config file').length - 1;
}

/** radvd processes whose command line mentions `dir` (ours, wherever they run): the daemon and its privsep child. */
async function radvdsUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (argv.split('\0')[0]?.endsWith('radvd') && argv.includes(dir)) pids.push(Number(e));
  }
  return pids;
}

const seen = new Set<number>();
/** Until none of our radvd processes exists any more, not even as a zombie (their cmdline is empty then). */
async function waitNoRadvd(dir: string): Promise<number[]> {
  for (const pid of await radvdsUsing(dir)) seen.add(pid);
  const gone = async () => {
    const left = [...seen].filter((pid) => existsSync(`/proc/${pid}`));
    return left.length === 0 ? true : undefined;
  };
  await waitFor('our radvd processes to be gone', gone, 10_000).catch(() => {});
  return [...seen].filter((pid) => existsSync(`/proc/${pid}`));
}

function bridgeStanza(prefixes: string[]): RadvdInterface {
  return { name: BRIDGE, prefixes: prefixes.map((prefix) => ({ prefix })), rdnss: ['fd00:ab::53'], dnssl: ['vm.test'] };
}

describe('RadvdSupervisor in a data-plane namespace', { skip, timeout: 120_000 }, () => {
  let dir = '';
  const sups: RadvdSupervisor[] = [];
  const timings: Record<string, string> = {};
  const textA = renderRadvdConf({ interfaces: [bridgeStanza(['fd00:ab::/64'])] });
  const textB = renderRadvdConf({ interfaces: [bridgeStanza(['fd00:ab::/64', 'fd00:ac::/64'])] });
  let sup: RadvdSupervisor;
  const supervisor = (overrides: Partial<ConstructorParameters<typeof RadvdSupervisor>[0]> = {}) => {
    const s = new RadvdSupervisor({ netns: HOST, dir, instance: INSTANCE, log: quiet, backoff: { initialMs: 200, maxMs: 2_000 }, ...overrides });
    sups.push(s);
    return s;
  };

  before(async () => {
    for (const cmd of ['radvd', 'rdisc6']) assert.ok(await have(cmd), `${cmd} is not installed (scripts/setup.sh)`);
    assert.deepEqual((await netnsList()).filter((n) => n.startsWith(HOST)), [], 'random names already in use');
    dir = await mkdtemp(join(tmpdir(), 'mtdtest-ra-'));
    // mkdtemp makes 0700; radvd rereads its file as user "radvd" on SIGHUP.
    await chmod(dir, 0o755);
    await netnsAdd(HOST);
    await netnsAdd(VM);
    await ipIn(HOST, ['link', 'set', 'lo', 'up']);
    await ipIn(HOST, ['link', 'add', BRIDGE, 'type', 'bridge']);
    await sysctl(HOST, `net.ipv6.conf.${BRIDGE}.accept_dad=0`);
    await ipIn(HOST, ['link', 'set', BRIDGE, 'up']);
    await ipIn(HOST, ['addr', 'add', 'fd00:ab::1/64', 'dev', BRIDGE, 'nodad']);
    await ipIn(HOST, ['link', 'add', PORT, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', VM]);
    await sysctl(HOST, `net.ipv6.conf.${PORT}.accept_dad=0`);
    await ipIn(HOST, ['link', 'set', PORT, 'master', BRIDGE, 'up']);
    await ipIn(VM, ['link', 'set', 'lo', 'up']);
    // accept_ra=1 and autoconf=1 are a new namespace's defaults: left as they are.
    await sysctl(VM, 'net.ipv6.conf.eth0.accept_dad=0');
    await ipIn(VM, ['link', 'set', 'eth0', 'up']);
    await portForwarding(PORT);
    sup = supervisor();
  });

  after(async () => {
    for (const s of sups) await s.stop().catch(() => {});
    for (const ns of (await netnsList()).filter((n) => n.startsWith(HOST))) {
      for (const pid of await netnsPids(ns)) if (pid > 1 && pid !== process.pid) process.kill(pid, 'SIGKILL');
      await netnsDelete(ns);
    }
    // radvd's privilege-separation child exits once its parent is gone (and is then reaped by init).
    const left = await waitNoRadvd(dir);
    if (dir) await rm(dir, { recursive: true, force: true });
    console.log(`# radvd timings: ${JSON.stringify(timings)}`);
    assert.deepEqual(left, [], 'radvd processes left behind');
    assert.deepEqual((await netnsList()).filter((n) => n.startsWith(HOST)), [], 'namespaces left behind');
  });

  it('the golden files and the guide step 1.3 file pass `radvd -c`, without warnings', async () => {
    for (const f of (await readdir(fixtures)).filter((n) => n.endsWith('.conf'))) {
      const r = spawnSync('ip', ['netns', 'exec', HOST, 'radvd', '-c', '-C', join(fixtures, f)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${f}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /warn/i, f);
    }
  });

  it('refuses a directory the radvd user cannot reach, before starting anything', async () => {
    if (!(await run('getent', ['passwd', 'radvd']).then(() => true, () => false))) return;
    const closed = join(dir, 'closed');
    await mkdir(join(closed, 'radvd'), { recursive: true });
    await chmod(closed, 0o700);
    const s = supervisor({ dir: join(closed, 'radvd') });
    await assert.rejects(s.apply(textA), /cannot read it/);
    assert.equal(s.status().running, false);
  });

  it('advertises the prefix, RDNSS and DNSSL: the VM gets a SLAAC address and a default route', async (t) => {
    const t0 = performance.now();
    const res = await sup.apply(textA);
    const applied = performance.now();
    assert.deepEqual(res, { changed: true, started: true, reloaded: false });
    assert.equal(sup.status().running, true);
    const addr = await waitFor('SLAAC address in fd00:ab::/64', () => slaac('fd00:ab::/64')).catch(async (err: Error) => {
      const dump = await Promise.all([
        ipIn(VM, ['-6', 'addr']), ipIn(VM, ['-6', 'route']), ipIn(HOST, ['-d', 'link']), ipIn(HOST, ['-6', 'addr']),
        run('ip', ['netns', 'exec', VM, 'sysctl', 'net.ipv6.conf.eth0.accept_ra', 'net.ipv6.conf.all.forwarding', 'net.ipv6.conf.eth0.forwarding']),
        readFile(sup.logPath, 'utf8'), rdisc6().catch((e: Error) => e.message),
      ].map((p) => p.catch((e: Error) => e.message)));
      throw new Error(`${err.message}\n${dump.join('\n----\n')}`);
    });
    const gotAddr = performance.now();
    const ll = await bridgeLinkLocal();
    const route = await waitFor('default route', defaultRoute);
    assert.equal(route['gateway'], ll);
    assert.equal(route['dev'], 'eth0');
    assert.equal(route['protocol'], 'ra');
    timings['apply+start'] = `${(applied - t0).toFixed(0)} ms`;
    timings['start→SLAAC'] = `${(gotAddr - applied).toFixed(0)} ms`;
    const r0 = performance.now();
    const ra = await rdisc6();
    timings['rdisc6 RS→RA'] = `${(performance.now() - r0).toFixed(0)} ms`;
    assert.match(ra, /Prefix\s+:\s+fd00:ab::\/64/);
    assert.match(ra, /Recursive DNS server\s+:\s+fd00:ab::53/);
    assert.match(ra, /DNS search list\s+:\s+vm\.test/);
    assert.match(ra, /Stateful address conf\.\s+:\s+No/);
    assert.match(ra, /Stateful other conf\.\s+:\s+No/);
    assert.match(ra, /Valid time\s+:\s+3600 /);
    assert.match(ra, /Pref\. time\s+:\s+1800 /);
    assert.match(ra, new RegExp(`from ${ll}`));
    t.diagnostic(`VM address ${addr}; ${JSON.stringify(timings)}`);
    // radvd runs in the data-plane namespace, not the host's.
    assert.ok((await netnsPids(HOST)).includes(sup.status().pid!));
    assert.equal((await run('ip', ['netns', 'exec', HOST, 'sysctl', '-n', 'net.ipv6.conf.all.forwarding'])).trim(), '1');
  });

  it('applying the same text again sends no SIGHUP', async () => {
    const { pid, reloads } = sup.status();
    const before = await rereads(sup);
    assert.deepEqual(await sup.apply(textA), { changed: false, started: false, reloaded: false });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sup.status().pid, pid);
    assert.equal(sup.status().reloads, reloads);
    assert.equal(await rereads(sup), before);
  });

  it('a changed text is validated, swapped in and reloaded with exactly one SIGHUP', async () => {
    const { pid, reloads } = sup.status();
    const before = await rereads(sup);
    const t0 = performance.now();
    assert.deepEqual(await sup.apply(textB), { changed: true, started: false, reloaded: true });
    await waitFor('the new prefix in the VM', () => slaac('fd00:ac::/64'));
    timings['SIGHUP→new prefix in VM'] = `${(performance.now() - t0).toFixed(0)} ms`;
    assert.equal(sup.status().pid, pid);
    assert.equal(sup.status().reloads, reloads + 1);
    await waitFor('radvd to log the reread', async () => ((await rereads(sup)) === before + 1 ? true : undefined), 3_000);
    assert.equal(await readFile(sup.configPath, 'utf8'), textB);
  });

  it('an invalid text is rejected: the old config stays and radvd keeps running', async () => {
    const { pid, reloads } = sup.status();
    const bad = 'interface br-ra { bogus; };\n';
    await assert.rejects(sup.apply(bad), (err: unknown) => err instanceof RadvdConfigError && /syntax error/.test(err.output));
    assert.equal(await readFile(sup.configPath, 'utf8'), textB);
    assert.deepEqual((await readdir(dir)).filter((f) => f.includes('.tmp-')), []);
    assert.equal(sup.status().pid, pid);
    assert.equal(sup.status().reloads, reloads);
    assert.equal(sup.status().running, true);
    process.kill(pid!, 0);
    const ra = await rdisc6();
    assert.match(ra, /fd00:ab::\/64/);
    assert.match(ra, /fd00:ac::\/64/);
  });

  it('restarts radvd within a few seconds after SIGKILL', async () => {
    const { pid, restarts } = sup.status();
    for (const p of await radvdsUsing(dir)) seen.add(p);
    const t0 = performance.now();
    process.kill(pid!, 'SIGKILL');
    const newPid = await waitFor('a new radvd', async () => {
      const s = sup.status();
      return s.running && s.pid !== pid ? s.pid : undefined;
    }, 10_000); // ~0.25 s normally; `ip netns exec` slows down when the host has thousands of namespaces
    timings['SIGKILL→restarted'] = `${(performance.now() - t0).toFixed(0)} ms`;
    assert.equal(sup.status().restarts, restarts + 1);
    assert.ok((await netnsPids(HOST)).includes(newPid!));
    assert.match(await rdisc6(), /fd00:ac::\/64/);
  });

  it('a new supervisor adopts the radvd a released one left running', async () => {
    const { pid } = sup.status();
    await sup.release();
    const next = supervisor();
    const res = await next.apply(textB);
    // Adopted, not restarted; one SIGHUP in case the file changed while nobody supervised it.
    assert.deepEqual(res, { changed: false, started: false, reloaded: true });
    assert.equal(next.status().pid, pid);
    sup = next;
  });

  it('prefix mode on a shared bridge: a stanza per VM port reaches only that VM', async () => {
    // radvd allows one stanza per interface and `clients` cannot differ per client, so a
    // VM's own /64 goes in a stanza on its bridge port: RAs sent there skip the bridge.
    const vm2 = `${HOST}-vm2`;
    const port2 = `vq${TAG}`;
    await netnsAdd(vm2);
    await ipIn(HOST, ['link', 'add', port2, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vm2]);
    await sysctl(HOST, `net.ipv6.conf.${port2}.accept_dad=0`);
    await ipIn(HOST, ['link', 'set', port2, 'master', BRIDGE, 'up']);
    await sysctl(vm2, 'net.ipv6.conf.eth0.accept_dad=0');
    await ipIn(vm2, ['link', 'set', 'eth0', 'up']);
    await portForwarding(port2);
    const port = (name: string, prefix: string): RadvdInterface => ({
      name, prefixes: [{ prefix, onLink: false, routerAddr: false }], defaultLifetime: 0, minRtrAdvInterval: 3, maxRtrAdvInterval: 4,
    });
    const t0 = performance.now();
    await sup.apply(renderRadvdConf({
      interfaces: [bridgeStanza([]), port(PORT, 'fd00:1:0:1::/64'), port(port2, 'fd00:1:0:2::/64')],
    }));
    const globals = async (ns: string) => ((await ipJson(ns, ['-6', 'addr', 'show', 'dev', 'eth0']))[0]?.['addr_info'] as Record<string, unknown>[])
      .filter((a) => a['scope'] === 'global').map((a) => a['local'] as string);
    await Promise.all([
      waitFor('vm1 /64', () => slaac('fd00:1:0:1::/64')).then(() => { timings['per-port stanza→vm1 /64'] = `${(performance.now() - t0).toFixed(0)} ms`; }),
      waitFor('vm2 /64', async () => (await globals(vm2)).find((a) => a.startsWith('fd00:1:0:2:')))
        .then(() => { timings['per-port stanza→vm2 /64'] = `${(performance.now() - t0).toFixed(0)} ms`; }),
    ]);
    await new Promise((r) => setTimeout(r, 4_500)); // one more periodic RA on every port
    // (vm2 may also hold fd00:ab/fd00:ac addresses: its link came up while the bridge still advertised them.)
    assert.ok(!(await globals(VM)).some((a) => a.startsWith('fd00:1:0:2:')), 'vm1 got vm2 prefix');
    assert.ok(!(await globals(vm2)).some((a) => a.startsWith('fd00:1:0:1:')), 'vm2 got vm1 prefix');
    // The default router is still the bridge (port stanzas advertise router lifetime 0).
    const route = await defaultRoute();
    assert.equal(route?.['gateway'], await bridgeLinkLocal());
  });

  it('stop() leaves no radvd process behind', async () => {
    const { pid } = sup.status();
    for (const p of await radvdsUsing(dir)) seen.add(p);
    assert.ok(seen.size >= 1);
    const t0 = performance.now();
    await sup.stop();
    timings['stop() returned'] = `${(performance.now() - t0).toFixed(0)} ms`;
    assert.equal(sup.status().running, false);
    assert.throws(() => process.kill(pid!, 0), /ESRCH/);
    assert.deepEqual(await waitNoRadvd(dir), []);
    timings['stop→no radvd process'] = `${(performance.now() - t0).toFixed(0)} ms`;
    // Nothing restarts it.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await radvdsUsing(dir), []);
  });
});
