// The TCP/UDP echo of test/integration/isolation/probe.py running in a VM's namespace, and the
// wait for a VM's address to leave DAD (the probes bind the configured address).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitUntil } from './daemon-harness.js';

export const PROBE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'integration', 'isolation', 'probe.py');
const sh = promisify(execFile);

/**
 * Starts `probe.py serve addr port` in `ns`; each whole line it prints ("ready", "got udp <src>")
 * is pushed to `got` (python -u writes a print's pieces separately: partial lines are kept back).
 */
export function serveProbe(ns: string, addr: string, port: number, got: string[], suffix = ''): ChildProcess {
  const server = spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-u', PROBE, 'serve', addr, String(port)]);
  let partial = '';
  server.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    got.push(...lines.filter(Boolean).map((l) => l + suffix));
  });
  return server;
}

/** Until no address of eth0 in `ns` is tentative. */
export async function waitForDad(ns: string, label: string): Promise<void> {
  await waitUntil(`DAD of ${label}`, async () => !(await sh('ip', ['netns', 'exec', ns, 'ip', '-6', 'addr', 'show', 'dev', 'eth0', 'tentative'], { encoding: 'utf8' })).stdout.includes('inet6'), 20_000);
}
