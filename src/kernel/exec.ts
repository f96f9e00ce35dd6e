import { execFile, spawn } from 'node:child_process';

// Every external command goes through here: an argument array, never a shell.

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')} failed (exit ${code ?? 'signal'}): ${stderr.trim().slice(0, 500)}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  /** Written to the command's stdin (for `ip -batch -`, `nft -f -`). */
  input?: string;
  timeoutMs?: number;
}

export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args as string[],
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number'
            ? ((err as unknown as { code: number }).code)
            : null;
          reject(new CommandError([file, ...args], code, stderr || err.message));
          return;
        }
        resolve(stdout);
      },
    );
    if (opts.input !== undefined) {
      // A command that stops reading early (ip -batch on an error) makes the
      // write fail with EPIPE; unhandled, that would kill the daemon. The exit
      // code reports the failure.
      child.stdin?.on('error', () => {});
      child.stdin?.end(opts.input);
    }
  });
}

/** Start a long-lived process that outlives metald (own session, no stdio). */
export function spawnDetached(file: string, args: readonly string[]): number {
  const child = spawn(file, args as string[], { detached: true, stdio: 'ignore' });
  // A missing program is reported asynchronously as 'error'; unhandled, it
  // would crash the daemon. pid is undefined in that case, so we throw here.
  child.on('error', () => {});
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${file}`);
  return child.pid;
}
