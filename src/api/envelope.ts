import type { ConnectError } from '@connectrpc/connect';
import type { Principal } from '../core/principal.js';
import type { Authenticator } from './auth.js';
import { toConnectError } from './errors.js';

export interface RpcObserver {
  /** Called after every RPC with its outcome (metrics and traces hook in here). */
  onRpc(method: string, code: string, seconds: number): void;
  onInternalError(method: string, err: unknown): void;
}

/**
 * What every RPC goes through, whichever HTTP path carried it: authenticate,
 * run, map errors to Connect codes, report the outcome.
 */
export class RpcEnvelope {
  constructor(
    private readonly auth: Authenticator,
    private readonly observer: RpcObserver,
  ) {}

  async run<T>(method: string, authorization: string | null | undefined, fn: (p: Principal) => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    let code = 'ok';
    try {
      return await fn(this.auth.authenticate(authorization, method));
    } catch (err) {
      const ce: ConnectError = toConnectError(err, (e) => this.observer.onInternalError(method, e));
      code = String(ce.code);
      throw ce;
    } finally {
      this.observer.onRpc(method, code, Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }
}
