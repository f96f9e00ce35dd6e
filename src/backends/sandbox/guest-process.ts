import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// The sandbox guest as a Linux process: identified by pid *and* start time
// (so a recycled pid is never taken for it), observed through /proc.

export type Guest = { pid: number | null; startTime: number | null };

export interface ProcStat { state: string; startTime: number }

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (['ENOENT', 'ESRCH'].includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
  // comm (field 2) may contain spaces and ')' itself; everything after the last ')' is well-formed.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = Number(fields[19]);
  if (state === undefined || !Number.isInteger(startTime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return { state, startTime };
}

/** The guest's /proc state, or undefined if the recorded process no longer lives. */
export async function liveGuest(h: Guest): Promise<ProcStat | undefined> {
  if (h.pid === null) return undefined;
  const st = await readProcStat(h.pid);
  // A zombie has already released its namespaces; reaping it is its parent's business.
  if (st === undefined || st.startTime !== h.startTime || st.state === 'Z' || st.state === 'X') return undefined;
  return st;
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    if (await check()) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, 50);
  }
}

export function signal(pid: number, sig: NodeJS.Signals, group: boolean): void {
  try {
    // The guest is a session leader (spawned detached), so its pid is its process
    // group: signalling the group also reaches the shell's children (`sleep`).
    process.kill(group ? -pid : pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    if (group) signal(pid, sig, false);
  }
}

export async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    const [sa, sb] = await Promise.all([stat(a), stat(b)]);
    return sa.ino === sb.ino && sa.dev === sb.dev;
  } catch {
    return false;
  }
}
