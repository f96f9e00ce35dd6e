import { run } from '../../src/kernel/exec.js';
import { ipJson, netnsDelete, netnsList, netnsPids, type IpObject } from '../../src/kernel/netns.js';

// Kernel-side helpers for the host-networking tests and bench. Everything
// here acts only inside namespaces the caller names.

/** A logger that keeps warnings and errors for assertions and drops the rest. */
export function memoryLog(): { log: { debug(...a: unknown[]): void; info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void }; lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (...a: unknown[]) => {
    lines.push(`${level} ${a.filter((x) => typeof x === 'string').join(' ')}`);
  };
  return { log: { debug: () => {}, info: () => {}, warn: keep('warn'), error: keep('error') }, lines };
}

/** `ping -6` from inside `ns`; rejects when no reply comes. */
export async function ping6(ns: string, dst: string, extra: string[] = []): Promise<string> {
  return run('ip', ['netns', 'exec', ns, 'ping', '-6', '-n', '-c1', '-W2', ...extra, dst]);
}

export async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Until DAD is done on every global address of `dev` in `ns` (a tentative source address cannot ping). */
export async function waitAddressesReady(ns: string, dev = 'eth0'): Promise<void> {
  await waitUntil(`addresses of ${dev} in ${ns}`, async () => {
    const [link] = await ipJson(ns, ['-6', 'address', 'show', 'dev', dev]);
    const addrs = ((link?.['addr_info'] as IpObject[] | undefined) ?? []).filter((a) => a['scope'] === 'global');
    return addrs.length > 0 && addrs.every((a) => !a['tentative']);
  });
}

export async function sysctlIn(ns: string, key: string): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, 'sysctl', '-n', key])).trim();
}

export async function pinBridgeNetfilterOff(ns: string): Promise<void> {
  await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-iptables=0']);
}

export function infoData(link: IpObject | undefined): Record<string, unknown> {
  return ((link?.['linkinfo'] as IpObject | undefined)?.['info_data'] ?? {}) as Record<string, unknown>;
}

/**
 * What the plane is responsible for, as a comparable value: each bridge's MTU,
 * state, attributes and global addresses, and the master and MTU of each port.
 */
export async function hostDump(ns: string, bridges: string[], ports: string[]): Promise<unknown> {
  const [brs, links] = await Promise.all([ipJson(ns, ['-d', 'address', 'show', 'type', 'bridge']), ipJson(ns, ['link', 'show'])]);
  const out: Record<string, unknown> = {};
  for (const name of bridges) {
    const b = brs.find((x) => x['ifname'] === name);
    if (!b) continue;
    const d = infoData(b);
    out[name] = {
      mtu: b['mtu'], up: (b['flags'] as string[]).includes('UP'),
      attrs: [d['stp_state'], d['forward_delay'], d['mcast_snooping'], d['mcast_querier'], d['ageing_time']],
      addrs: ((b['addr_info'] as IpObject[]) ?? []).filter((a) => a['scope'] === 'global')
        .map((a) => `${String(a['local'])}/${String(a['prefixlen'])} metric ${String(a['metric'] ?? '-')}`).sort(),
    };
  }
  for (const p of ports) {
    const l = links.find((x) => x['ifname'] === p);
    if (l) out[p] = { master: l['master'] ?? null, mtu: l['mtu'] };
  }
  return out;
}

/** Delete every namespace `mine` accepts, killing what runs inside first. */
export async function removeNamespaces(mine: (name: string) => boolean): Promise<void> {
  for (const ns of (await netnsList()).filter(mine)) {
    for (const pid of await netnsPids(ns)) if (pid > 1 && pid !== process.pid) process.kill(pid, 'SIGKILL');
    await netnsDelete(ns);
  }
}

/**
 * Thousands of VM namespaces, fast: the data plane `dp` first — its teardown
 * unregisters every host veth end (and so every peer) in one kernel batch,
 * leaving the VM namespaces empty and quick to delete, 500 per `ip -batch`.
 * Deleting VM namespaces first tears down one veth pair each and takes minutes
 * at 10k. For namespaces without processes (VMs never booted).
 */
export async function bulkDelete(dp: string, mine: (name: string) => boolean): Promise<void> {
  await netnsDelete(dp);
  const names = (await netnsList()).filter(mine);
  for (let i = 0; i < names.length; i += 500) {
    const lines = names.slice(i, i + 500).map((n) => `netns delete ${n}`).join('\n');
    await run('ip', ['-force', '-batch', '-'], { input: `${lines}\n`, timeoutMs: 600_000 }).catch((e: unknown) => console.error(String(e)));
  }
  await removeNamespaces(mine);
}

/** A fresh data-plane namespace for a test: refuses names already in use, lo up, br_netfilter pinned off. */
export async function freshDataPlane(dp: string, mine: (name: string) => boolean): Promise<void> {
  const taken = (await netnsList()).filter(mine);
  if (taken.length) throw new Error(`random test names already in use: ${taken.join(' ')}`);
  await run('ip', ['netns', 'add', dp]);
  await run('ip', ['-n', dp, 'link', 'set', 'lo', 'up']);
  await pinBridgeNetfilterOff(dp);
}
