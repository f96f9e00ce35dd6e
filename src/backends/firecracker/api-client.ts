import { closeSync, openSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, basename } from 'node:path';
import type { ApiRequest } from './api-plan.js';

// HTTP/1.1 over Firecracker's Unix socket with node:http alone.
//
// A jail's socket path (<base>/<instance>/firecracker/<63-char id>/root/run/
// firecracker.socket) can exceed sun_path's 108 bytes. We therefore open the
// socket's directory and connect through /proc/self/fd/<fd>/<name>, which is
// short whatever the real path; the fd is closed as soon as the connect settles.

export class FirecrackerApiError extends Error {
  constructor(
    readonly request: ApiRequest,
    readonly status: number,
    readonly faultMessage: string,
  ) {
    super(`firecracker rejected ${request.method} ${request.path}: ${status} ${faultMessage}`);
    this.name = 'FirecrackerApiError';
  }
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

const DEFAULT_TIMEOUT_MS = 10_000;

function connectShort(socketPath: string): net.Socket {
  const dirFd = openSync(dirname(socketPath), 'r');
  const sock = net.connect(`/proc/self/fd/${dirFd}/${basename(socketPath)}`);
  let closed = false;
  const release = () => {
    if (!closed) {
      closed = true;
      closeSync(dirFd);
    }
  };
  sock.once('connect', release);
  sock.once('error', release);
  sock.once('close', release);
  return sock;
}

/** One request; resolves with any status (the caller decides what is an error). */
export function rawRequest(socketPath: string, req: ApiRequest, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const payload = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
    const r = http.request({
      method: req.method,
      path: req.path,
      host: 'localhost',
      createConnection: () => connectShort(socketPath),
      headers: {
        accept: 'application/json',
        ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
      },
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          // not JSON: keep the text for the error message
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    r.on('timeout', () => r.destroy(new Error(`firecracker API ${req.method} ${req.path} timed out after ${timeoutMs} ms`)));
    r.on('error', reject);
    r.end(payload);
  });
}

/** A request that must succeed (2xx); Firecracker's `fault_message` becomes the error text. */
export async function call(socketPath: string, req: ApiRequest, timeoutMs?: number): Promise<unknown> {
  const res = await rawRequest(socketPath, req, timeoutMs);
  if (res.status >= 200 && res.status < 300) return res.body;
  const fault = typeof res.body === 'object' && res.body !== null && typeof (res.body as { fault_message?: unknown }).fault_message === 'string'
    ? (res.body as { fault_message: string }).fault_message
    : JSON.stringify(res.body ?? '');
  throw new FirecrackerApiError(req, res.status, fault);
}
