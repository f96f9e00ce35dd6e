import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../../src/kernel/exec.js';
import { REPO } from './daemon-harness.js';

// Shared by the qemu tests and the boot bench: the guest image (built, or
// taken from the cache, by scripts/build-guest-image.sh), guest test
// scripts, and a sweep for qemu processes a failed test left behind.

export interface GuestImage {
  dir: string;
  kernel: string;
  initrd: string;
}

/** Builds the image on first use (Debian packages through apt), then reuses the cache. */
export async function guestImage(): Promise<GuestImage> {
  const out = await run('bash', [path.join(REPO, 'scripts/build-guest-image.sh')], { timeoutMs: 600_000 });
  const dir = out.trim().split('\n').pop() ?? '';
  if (!dir.startsWith('/')) throw new Error(`build-guest-image.sh printed no image directory: ${out}`);
  return { dir, kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initramfs.cpio.gz') };
}

/** `metald.run=` kernel argument: guest/init runs the script once the guest is ready. */
export function guestRun(script: string): string {
  return `metald.run=${Buffer.from(script).toString('base64')}`;
}

/**
 * A guest script that pings each target until it answers (at most `tries`
 * one-second attempts; the other VM may still be booting) and prints
 * `PING-OK <target>` or `PING-FAIL <target>` on the console.
 */
export function pingScript(targets: string[], tries = 60): string {
  return targets.map((t) => `i=0; until ping6 -c1 -W1 ${t} >/dev/null 2>&1; do i=$((i+1)); [ $i -ge ${tries} ] && break; sleep 0.2; done; `
    + `if [ $i -lt ${tries} ]; then echo "PING-OK ${t}"; else echo "PING-FAIL ${t}"; fi\n`).join('');
}

/** Pids of live processes whose command line mentions `needle` (e.g. a test's state dir). */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(needle)) pids.push(Number(name));
  }
  return pids;
}

export async function killMentioning(needle: string): Promise<void> {
  for (const pid of await pidsMentioning(needle)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
