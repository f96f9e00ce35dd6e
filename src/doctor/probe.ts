// The I/O behind `metald doctor`. Sysctls are read in the target namespace
// (`ip netns exec NS sysctl -n KEY`) or, for the root namespace, from
// /proc/sys; they are written only by writeSysctls, which doctor.ts calls for
// --fix. Features that need new links or nft tables are probed in a scratch
// namespace `<instance>-doctor-<hex>` made here and always deleted: nothing is
// ever created in the root namespace.

import { randomBytes } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import { CommandError, run } from '../kernel/exec.js';
import { foreignMarkSetters, type TableRef } from './foreign-marks.js';
import { assertNetnsName } from '../kernel/names.js';
import { ipIn, ipJson, netnsAdd, netnsDelete, netnsExists } from '../kernel/netns.js';
import {
  HOST_WIDE_NOTE,
  judge,
  sysctlFixCommand,
  type Check,
  type CheckResult,
  type LinkFeature,
  type NftFamily,
  type Observation,
  type Probe,
  type Target,
} from './checks.js';

const SYSCTL_KEY = /^[a-z0-9_]+(\.[a-z0-9_]+)+$/;
const TABLE = 'metald_doctor_probe';

function assertKey(key: string): string {
  if (!SYSCTL_KEY.test(key)) throw new Error(`invalid sysctl key ${JSON.stringify(key)}`);
  return key;
}

function errorText(err: unknown): string {
  const text = err instanceof CommandError ? err.stderr : err instanceof Error ? err.message : String(err);
  const line = text.split('\n').map((l) => l.trim()).find((l) => /error|not supported|unknown|no such|denied/i.test(l));
  // "/dev/stdin:4:5-12: Error: Could not process rule: Protocol error" → "Could not process rule: Protocol error".
  return (line ?? text.trim().split('\n')[0] ?? '')
    .replace(/^.*?Error:\s*/, '').replace(/^RTNETLINK answers:\s*/, '').replace(/\.$/, '').slice(0, 80);
}

// ---- sysctls ----

/** Read one key in the current (root) namespace; undefined when the key does not exist. */
export async function readRootSysctl(key: string): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/sys/${assertKey(key).replace(/\./g, '/')}`, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Read one key in the target; undefined when the key does not exist there. */
export async function readSysctl(target: Target, key: string): Promise<string | undefined> {
  if (target.kind === 'root') return readRootSysctl(key);
  try {
    return (await run('ip', ['netns', 'exec', assertNetnsName(target.name), 'sysctl', '-n', assertKey(key)])).trim();
  } catch (err) {
    if (err instanceof CommandError && /cannot stat|No such file/.test(err.stderr)) return undefined;
    throw err;
  }
}

/** `sysctl -w k=v ...` in the target, one process for all keys. */
export async function writeSysctls(target: Target, pairs: readonly { key: string; value: string }[]): Promise<void> {
  if (pairs.length === 0) return;
  const args = ['-w', ...pairs.map(({ key, value }) => {
    if (!/^\d+$/.test(value)) throw new Error(`invalid sysctl value ${JSON.stringify(value)}`);
    return `${assertKey(key)}=${value}`;
  })];
  if (target.kind === 'root') await run('sysctl', args);
  else await run('ip', ['netns', 'exec', assertNetnsName(target.name), 'sysctl', ...args]);
}

async function observeSysctl(target: Target, probe: Extract<Probe, { kind: 'sysctl' }>, netnsPresent: boolean): Promise<Observation> {
  const value = netnsPresent ? await readSysctl(target, probe.key) : undefined;
  if (value !== undefined) return { ok: value === probe.want, found: value };
  if (probe.hostWide && target.kind === 'netns') {
    // Global in the kernel: only the initial namespace shows it. Read there, never written from here.
    const root = await readRootSysctl(probe.key);
    return {
      ok: root === probe.want,
      na: true,
      found: `root ns: ${root ?? 'missing'}`,
      note: HOST_WIDE_NOTE,
      fix: `host-wide: metald doctor --root --fix (${sysctlFixCommand({ kind: 'root' }, probe.key, probe.want)})`,
    };
  }
  if (!netnsPresent && target.kind === 'netns') {
    return {
      ok: false,
      found: `no namespace ${target.name}`,
      fix: `start metald (it creates ${target.name}) or pass --netns NS`,
    };
  }
  return { ok: false, found: 'missing', fix: 'this kernel has no such key (IPv6 disabled?)' };
}

/** Other tables of the target that set the packet mark (decision 0027). */
async function observeMarks(target: Target, own: readonly TableRef[], netnsPresent: boolean): Promise<Observation> {
  if (!netnsPresent) return { ok: true, na: true, found: 'no namespace yet', note: 'the namespace does not exist: nothing to read' };
  const argv = ['-j', 'list', 'ruleset'];
  let text: string;
  try {
    text = target.kind === 'root' ? await run('nft', argv) : await run('ip', ['netns', 'exec', target.name, 'nft', ...argv]);
  } catch (err) {
    return { ok: false, found: `cannot list the ruleset (${errorText(err)})` };
  }
  const setters = foreignMarkSetters(text.trim() ? JSON.parse(text) : {}, own);
  return setters.length ? { ok: false, found: `set by ${setters.join(', ')}` } : { ok: true, found: 'none' };
}

// ---- kernel features (scratch namespace) ----

function nftTable(family: NftFamily, name: string, rule?: string): string {
  // Base chains, so the family's hooks really register (an empty table proves little).
  const hook = family === 'netdev' ? 'type filter hook ingress device "lo" priority 0; policy accept;'
    : 'type filter hook forward priority 0; policy accept;';
  // nft 1.0.6 wants one statement per line here (see machine notes).
  return `table ${family} ${name} {\n  chain probe {\n    ${hook}\n${rule ? `    ${rule}\n` : ''}  }\n}\n`;
}

async function observeNft(ns: string, family: NftFamily, rule: string | undefined, hasNft: boolean): Promise<Observation> {
  if (!hasNft) return { ok: false, found: 'nft not installed', fix: 'apt-get install nftables' };
  // Each probe gets its own table name suffix so concurrent probes do not collide.
  const name = `${TABLE}_${randomBytes(3).toString('hex')}`;
  try {
    await run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: nftTable(family, name, rule) });
  } catch (err) {
    return { ok: false, found: `not supported (${errorText(err)})` };
  }
  // Deleting the scratch namespace removes the table anyway; this is only tidiness.
  await run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', family, name]).catch(() => undefined);
  return { ok: true, found: 'supported' };
}

async function tryIp(ns: string, args: string[]): Promise<string | undefined> {
  try {
    await ipIn(ns, args);
    return undefined;
  } catch (err) {
    return errorText(err);
  }
}

async function observeLink(ns: string, feature: LinkFeature): Promise<Observation> {
  const no = (why: string): Observation => ({ ok: false, found: `not supported (${why})` });
  const yes: Observation = { ok: true, found: 'supported' };
  switch (feature) {
    case 'bridge': {
      const err = await tryIp(ns, ['link', 'add', 'dbr0', 'type', 'bridge']);
      return err === undefined ? yes : no(err);
    }
    case 'tun': {
      try {
        await access('/dev/net/tun');
      } catch {
        return no('/dev/net/tun missing');
      }
      const err = await tryIp(ns, ['tuntap', 'add', 'dev', 'dtap0', 'mode', 'tap']);
      return err === undefined ? yes : no(err);
    }
    case 'vlan': {
      const parent = await tryIp(ns, ['link', 'add', 'dveth0', 'type', 'veth', 'peer', 'name', 'dveth1']);
      if (parent !== undefined) return no(`no parent link: ${parent}`);
      const err = await tryIp(ns, ['link', 'add', 'link', 'dveth0', 'name', 'dveth0.5', 'type', 'vlan', 'id', '5']);
      return err === undefined ? yes : no(err);
    }
    case 'vlan_filtering': {
      const err = await tryIp(ns, ['link', 'add', 'dbrvf', 'type', 'bridge', 'vlan_filtering', '1']);
      if (err !== undefined) return no(err);
      // Some kernels accept the attribute and ignore it: believe only what the link reports.
      const info = (await ipJson(ns, ['-d', 'link', 'show', 'dev', 'dbrvf']))[0]?.['linkinfo'] as
        { info_data?: { vlan_filtering?: number } } | undefined;
      return info?.info_data?.vlan_filtering === 1 ? yes : no('vlan_filtering stays 0');
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** /dev/kvm alone is not enough: a PVM host has it but no kvm_intel/kvm_amd, and guests cannot boot. */
export async function observeKvm(sys = '/sys/module', dev = '/dev/kvm'): Promise<Observation> {
  if (!(await exists(dev))) return { ok: false, found: `${dev} missing: QEMU will use TCG, firecracker cannot run` };
  for (const mod of ['kvm_intel', 'kvm_amd']) {
    if (await exists(`${sys}/${mod}`)) return { ok: true, found: `${dev} + ${mod}` };
  }
  return { ok: false, found: 'KVM present but no hardware module: QEMU will use TCG' };
}

async function observeBinary(probe: Extract<Probe, { kind: 'binary' }>): Promise<Observation> {
  let out: string;
  try {
    out = await run(probe.file, probe.args, { timeoutMs: 10_000 });
  } catch (err) {
    // Some tools (radvd) print their version on stderr and exit 1: they still ran.
    if (!(err instanceof CommandError) || err.code === null) return { ok: false, found: 'not installed' };
    out = err.stderr;
  }
  const m = probe.version.exec(out);
  return { ok: true, found: m ? m[0] : 'installed (version unknown)' };
}

/** Run `fn` in a fresh namespace `<instance>-doctor-<hex>`, deleted afterwards whatever happens. */
export async function withScratchNetns<T>(instance: string, fn: (ns: string) => Promise<T>): Promise<T> {
  const ns = assertNetnsName(`${instance}-doctor-${randomBytes(3).toString('hex')}`);
  await netnsAdd(ns);
  try {
    await ipIn(ns, ['link', 'set', 'lo', 'up']);
    return await fn(ns);
  } finally {
    await netnsDelete(ns);
  }
}

export interface ProbeOptions {
  target: Target;
  instance: string;
}

/** Probe every check; results come back in the checks' order. */
export async function probeChecks(checks: readonly Check[], o: ProbeOptions): Promise<CheckResult[]> {
  const netnsPresent = o.target.kind === 'root' || (await netnsExists(o.target.name));
  const needsScratch = checks.some((c) => c.probe.kind === 'nft' || c.probe.kind === 'link');
  const observe = async (c: Check, ns: string | undefined, hasNft: boolean): Promise<CheckResult> => {
    const p = c.probe;
    switch (p.kind) {
      case 'sysctl':
        return judge(c, await observeSysctl(o.target, p, netnsPresent));
      case 'nft':
        return judge(c, await observeNft(ns!, p.family, p.rule, hasNft));
      case 'link':
        return judge(c, await observeLink(ns!, p.feature));
      case 'kvm':
        return judge(c, await observeKvm());
      case 'binary':
        return judge(c, await observeBinary(p));
      case 'marks':
        return judge(c, await observeMarks(o.target, p.own, netnsPresent));
    }
  };
  const all = async (ns: string | undefined) => {
    const hasNft = ns === undefined ? false : (await observeBinary({ kind: 'binary', file: 'nft', args: ['--version'], version: /x/ })).ok;
    // Independent probes (distinct link and table names): run them side by side.
    return Promise.all(checks.map((c) => observe(c, ns, hasNft)));
  };
  return needsScratch ? withScratchNetns(o.instance, all) : all(undefined);
}
