import { Code, type ConnectError } from '@connectrpc/connect';
import type { Principal } from '../core/principal.js';
import type { Authenticator } from './auth.js';
import { toConnectError } from './errors.js';
import { PoolService } from '../gen/vmprovisioner/v1/pool_pb.js';
import { VmService } from '../gen/vmprovisioner/v1/vm_pb.js';
import { traceRpc, type HeaderSource } from '../observability/spans.js';

/** RPC method -> its service's full name (span names are <service>/<method>). */
const SERVICE_OF = new Map([VmService, PoolService].flatMap((s) => s.methods.map((m) => [m.name, s.typeName] as const)));

export interface RpcObserver {
  /** Called after every RPC with its outcome (metrics and traces hook in here). */
  onRpc(method: string, code: string, seconds: number): void;
  onInternalError(method: string, err: unknown): void;
}

/**
 * What every RPC goes through, whichever HTTP path carried it: authenticate,
 * run, map errors to Connect codes, report the outcome; one trace (span) per
 * RPC when tracing is on.
 */
export class RpcEnvelope {
  constructor(
    private readonly auth: Authenticator,
    private readonly observer: RpcObserver,
  ) {}

  /** `headers` (optional) carry the caller's trace context (traceparent) into the RPC's span. */
  async run<T>(method: string, authorization: string | null | undefined, fn: (p: Principal) => Promise<T>, headers?: HeaderSource): Promise<T> {
    return traceRpc(SERVICE_OF.get(method), method, headers, async (span) => {
      const t0 = process.hrtime.bigint();
      let code = 'ok';
      let codeName = 'ok';
      try {
        const p = this.auth.authenticate(authorization, method);
        span.attributes(p.kind === 'tenant' ? { tenant_id: p.tenantId } : { 'enduser.role': 'admin' });
        return await fn(p);
      } catch (err) {
        const ce: ConnectError = toConnectError(err, (e) => this.observer.onInternalError(method, e));
        code = String(ce.code);
        // "invalid_argument", as the Connect protocol and the RPC span conventions spell it.
        codeName = Code[ce.code].replace(/[A-Z]/g, (c, i: number) => `${i ? '_' : ''}${c.toLowerCase()}`);
        throw ce;
      } finally {
        span.code(codeName);
        this.observer.onRpc(method, code, Number(process.hrtime.bigint() - t0) / 1e9);
      }
    });
  }
}
