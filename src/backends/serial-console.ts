import { open, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// The guest's serial console, as the VMM appends it to a file (qemu's
// -serial file:, Firecracker's PUT /serial): where readiness is read from,
// and what a failed boot is explained with. Shared by the qemu and
// firecracker backends.

/** The line metald's guest init prints once its network is configured (guest/init). */
export const READY_MARKER = 'METALD-READY';
const READY_LINE = /(^|\n)METALD-READY\r?\n/;
const PANIC = /Kernel panic - not syncing[^\n]*/;

export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** The console text from byte `offset` on (at most `max` bytes, the newest). */
export async function readFrom(path: string, offset: number, max = 256 * 1024): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    const start = Math.max(offset, size - max);
    if (size <= start) return '';
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

/** The last lines of a console text, for failure_reason (which holds 2000 characters). */
export function consoleTail(text: string, maxChars = 1200, maxLines = 25): string {
  const lines = text.replace(/\r/g, '').split('\n').filter((l) => l.trim() !== '');
  const tail = lines.slice(-maxLines).join('\n');
  return tail.length > maxChars ? `…${tail.slice(-maxChars)}` : tail;
}

export type BootOutcome = { ready: true } | { ready: false; why: string };

export interface WatchOptions {
  /** Console bytes before this offset belong to earlier boots. */
  offset: number;
  timeoutMs: number;
  /** False once the VMM process is gone. */
  alive: () => Promise<boolean>;
  /** Names the VMM in "… exited during boot". */
  vmm?: string;
  /** Readiness without a marker (guests that cannot report): true when the VMM says it runs. */
  vmmReady?: () => Promise<boolean>;
  pollMs?: number;
}

/** Waits for the ready marker (or vmmReady), a kernel panic, the VMM's exit or the timeout. */
export async function watchBoot(consolePath: string, o: WatchOptions): Promise<BootOutcome> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const text = await readFrom(consolePath, o.offset);
    if (o.vmmReady ? await o.vmmReady() : READY_LINE.test(text)) return { ready: true };
    const panic = PANIC.exec(text);
    if (panic) return { ready: false, why: `guest kernel panic (${panic[0]})` };
    if (!(await o.alive())) return { ready: false, why: `${o.vmm ?? 'qemu'} exited during boot` };
    if (Date.now() >= deadline) return { ready: false, why: `no ${READY_MARKER} on the console within ${o.timeoutMs} ms` };
    await sleep(Math.min(o.pollMs ?? 50, Math.max(1, deadline - Date.now())));
  }
}
