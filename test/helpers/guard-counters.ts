// The guard table's per-port counters and frames counted at a VM, for the tests that send real
// packets (port guards, host ports, policies, isolation).
import { spawn } from 'node:child_process';
import { nftList } from '../../src/kernel/nft.js';

type CounterSet = { name: string; elem?: { elem: { val: string; counter?: { packets: number } } }[] };

/** Packets of one per-port counter set (`d_<reason>`, `d_<reason>_in`) for port `dev`. */
export async function portCounter(netns: string, table: string, set: string, dev: string): Promise<number> {
  const body = (await nftList(netns, ['set', 'bridge', table, set])).find((o) => 'set' in o)?.['set'] as CounterSet | undefined;
  return body?.elem?.find((e) => e.elem?.val === dev)?.elem.counter?.packets ?? 0;
}

/** Every d_* counter of port `dev`, in one listing of the table: reason -> packets. */
export async function dropCounters(netns: string, table: string, dev: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const o of await nftList(netns, ['table', 'bridge', table])) {
    const set = o['set'] as CounterSet | undefined;
    if (!set?.name.startsWith('d_')) continue;
    out.set(set.name.slice(2), set.elem?.find((e) => e.elem?.val === dev)?.elem.counter?.packets ?? 0);
  }
  return out;
}

/** The counters that moved, as "reason+n ..." ("-" when none did). */
export function counterDelta(before: Map<string, number>, after: Map<string, number>): string {
  return [...after].filter(([k, v]) => v !== (before.get(k) ?? 0)).map(([k, v]) => `${k}+${v - (before.get(k) ?? 0)}`).join(' ') || '-';
}

/** Frames matching `filter` that arrive on eth0 in `ns` within `secs` seconds (tcpdump, one line each). */
export function capture(ns: string, filter: string, secs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, 'timeout', String(secs), 'tcpdump', '-i', 'eth0', '-nn', '-l', '--immediate-mode', filter], { stdio: ['ignore', 'pipe', 'ignore'] });
    let n = 0;
    let rest = '';
    p.stdout.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n');
      rest = lines.pop()!;
      n += lines.filter((l) => l.trim()).length;
    });
    p.on('error', reject);
    p.on('close', () => resolve(n));
  });
}
