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

/** The rogue prefix the attacker advertises; the listener's console must never show it. */
export const ROGUE_PREFIX = '2001:db8:bad::';
const WAIT_TRIES = 60;

/**
 * The attacker's part of the port-guard test (guest/metald-pkt.c does the
 * ICMPv6): wait for the victim's listener to say it is up, send a legitimate
 * echo (the listener must see it: the control), then `count` echoes from a
 * spoofed source address added to eth0, `count` rogue router advertisements,
 * and the end marker from its own address. Kernel command lines are at most
 * 2048 bytes on x86, so the script stays short.
 */
export function attackScript(o: { self: string; victim: string; spoof: string; count: number }): string {
  return `metald-pkt listen 90 Q2-LISTENING >/dev/null
metald-pkt echo ${o.victim} ATTACK-START ${o.self}
ip -6 addr add ${o.spoof}/128 dev eth0
i=0; while [ $i -lt ${o.count} ]; do metald-pkt echo ${o.victim} SPOOF ${o.spoof}; i=$((i+1)); done
metald-pkt ra eth0 ${ROGUE_PREFIX} ${o.count}
ip -6 addr del ${o.spoof}/128 dev eth0
sleep 1; metald-pkt echo ${o.victim} METALD-END ${o.self}
`;
}

/**
 * The victim's part: a listener on its console (every echo request and RA it
 * receives), a router solicitation (radvd's answer shows that RAs do reach
 * it), and "Q2-LISTENING" echoes to the attacker until the attack starts.
 */
export function listenScript(o: { attacker: string }): string {
  return `metald-pkt listen 120 METALD-END | tee /run/listen.out &
sleep 0.5; metald-pkt rs eth0
i=0; until grep -q ATTACK-START /run/listen.out || [ $i -ge ${WAIT_TRIES * 2} ]; do metald-pkt echo ${o.attacker} Q2-LISTENING >/dev/null; sleep 0.5; i=$((i+1)); done
wait
`;
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
