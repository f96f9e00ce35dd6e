import { createConnection } from 'node:net';

// A minimal QMP client: connect to the VM's Unix socket, read the greeting,
// negotiate (qmp_capabilities), run commands one after the other, close.
// qemu serves one QMP client at a time, so a connection lives for one
// operation only; asynchronous events in between are skipped.

export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
}

export class QmpError extends Error {
  constructor(readonly command: string, readonly errorClass: string, desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

/** Runs the commands in order and returns each one's `return` value. */
export function qmp(socketPath: string, commands: QmpCommand[], timeoutMs = 5_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    const queue: QmpCommand[] = [{ execute: 'qmp_capabilities' }, ...commands];
    const results: unknown[] = [];
    let greeted = false;
    let buf = '';
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(results.slice(1));
    };
    const timer = setTimeout(() => finish(new Error(`QMP ${socketPath}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const sendNext = () => {
      const next = queue[0];
      if (next === undefined) finish();
      else sock.write(`${JSON.stringify(next)}\n`);
    };
    sock.setEncoding('utf8');
    sock.on('error', (err) => finish(new Error(`QMP ${socketPath}: ${err.message}`)));
    sock.on('close', () => finish(new Error(`QMP ${socketPath}: connection closed by qemu`)));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '' || done) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          finish(new Error(`QMP ${socketPath}: unparsable line ${JSON.stringify(line.slice(0, 200))}`));
          return;
        }
        if (!greeted) {
          if (!('QMP' in msg)) return finish(new Error(`QMP ${socketPath}: no greeting`));
          greeted = true;
          sendNext();
        } else if ('return' in msg) {
          results.push(msg['return']);
          queue.shift();
          sendNext();
        } else if ('error' in msg) {
          const e = (msg['error'] ?? {}) as { class?: string; desc?: string };
          finish(new QmpError(queue[0]?.execute ?? '?', e.class ?? 'Error', e.desc ?? ''));
        }
        // else: an event (STOP, RESUME, POWERDOWN...), not an answer.
      }
    });
  });
}

export type QemuRunState = 'running' | 'paused' | 'stopped';

/** query-status, folded onto the three states a backend reports. */
export async function queryStatus(socketPath: string, timeoutMs?: number): Promise<QemuRunState> {
  const [ret] = await qmp(socketPath, [{ execute: 'query-status' }], timeoutMs);
  const status = (ret as { status?: unknown } | undefined)?.status;
  if (status === 'running') return 'running';
  // "shutdown": the guest powered off but qemu still runs (it does not with our flags).
  if (status === 'shutdown' || status === 'guest-panicked' || status === 'internal-error' || status === 'io-error') return 'stopped';
  return 'paused';
}
