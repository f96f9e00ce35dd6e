import { context, propagation, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Span } from '@opentelemetry/api';

// Spans for what metald does, through the OpenTelemetry API only (the SDK is
// loaded by tracing.ts when `otel.enabled`). Every helper checks one flag
// first and, with tracing off, calls straight through: no span objects, no
// context switches, nothing allocated (issue 7: tracing off costs nothing).
//
// A trace per RPC (`traceRpc`, SERVER span named <service>/<method> as the
// RPC conventions name them), with child spans for the lifecycle's steps
// (`inSpan`: validate, ipam, backend.*, network.*, firewall.*), and the
// VM/tenant the RPC concerns as attributes `vm_id` / `tenant_id` (the names
// the logs and metrics use, so one id finds all three).

let active = false;

/** Called by tracing.ts when the SDK starts and stops. */
export function setTracingActive(on: boolean): void {
  active = on;
}

export function tracingActive(): boolean {
  return active;
}

const tracer = () => trace.getTracer('metald');

function fail(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/** Runs `fn` in a child span of the current one; an error marks the span failed and is rethrown. */
export function inSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  if (!active) return fn();
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn();
    } catch (err) {
      fail(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** The synchronous form of inSpan (validation). */
export function inSpanSync<T>(name: string, attributes: Attributes, fn: () => T): T {
  if (!active) return fn();
  return tracer().startActiveSpan(name, { attributes }, (span) => {
    try {
      return fn();
    } catch (err) {
      fail(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Adds attributes to the current span and to the RPC span it belongs to (e.g. the vm_id a create chose). */
export function annotate(attributes: Attributes): void {
  if (!active) return;
  trace.getActiveSpan()?.setAttributes(attributes);
  (context.active().getValue(RPC_SPAN) as Span | undefined)?.setAttributes(attributes);
}

const RPC_SPAN = Symbol.for('metald.rpc_span');

/** Reads request headers, whichever HTTP layer carried them. */
export type HeaderSource = { get(name: string): string | null } | Record<string, string | string[] | undefined>;

const headerGetter = {
  keys: (h: HeaderSource) => ('get' in h && typeof h.get === 'function' ? [] : Object.keys(h)),
  get(h: HeaderSource, key: string): string | undefined {
    if ('get' in h && typeof h.get === 'function') return (h.get as (k: string) => string | null)(key) ?? undefined;
    const v = (h as Record<string, string | string[] | undefined>)[key];
    return Array.isArray(v) ? v[0] : v;
  },
};

export interface RpcSpan {
  /** The Connect code the RPC ended with ('ok' or an error code). */
  code(code: string): void;
  attributes(a: Attributes): void;
}

const NOOP_RPC: RpcSpan = { code: () => {}, attributes: () => {} };

/**
 * Runs one RPC in a SERVER span `<service>/<method>`, continuing the caller's trace when the request carries
 * W3C trace context (traceparent). `fn` reports the outcome through the RpcSpan it is given.
 */
export function traceRpc<T>(service: string | undefined, method: string, headers: HeaderSource | undefined, fn: (span: RpcSpan) => Promise<T>): Promise<T> {
  if (!active) return fn(NOOP_RPC);
  const parent = headers ? propagation.extract(context.active(), headers, headerGetter) : context.active();
  const attributes: Attributes = { 'rpc.system': 'connect_rpc', 'rpc.method': method, ...(service ? { 'rpc.service': service } : {}) };
  const span = tracer().startSpan(service ? `${service}/${method}` : method, { kind: SpanKind.SERVER, attributes }, parent);
  const ctx = trace.setSpan(parent, span).setValue(RPC_SPAN, span);
  const rec: RpcSpan = {
    code(code) {
      if (code === 'ok') return;
      span.setAttribute('rpc.connect_rpc.error_code', code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: code });
    },
    attributes: (a) => span.setAttributes(a),
  };
  return context.with(ctx, async () => {
    try {
      return await fn(rec);
    } finally {
      span.end();
    }
  });
}

/** `trace_id` / `span_id` of the current span, for log lines (pino mixin); {} outside a sampled span or with tracing off. */
export function traceFields(): { trace_id?: string; span_id?: string } {
  if (!active) return {};
  const sc = trace.getActiveSpan()?.spanContext();
  // An unsampled trace is never exported: its id would lead nowhere.
  if (!sc || !(sc.traceFlags & TraceFlags.SAMPLED) || !trace.isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}

/**
 * The same object with some async methods run in spans `<prefix>.<snake_case method>` (e.g. the network plane's
 * ensureVm as `network.ensure_vm`) and the VM's id as attribute. A Proxy, so `instanceof` and every other member
 * still work. With tracing off the object itself is returned.
 */
export function traced<T extends object>(target: T, prefix: string, methods: readonly (keyof T & string)[]): T {
  if (!active) return target;
  const names = new Map(methods.map((m) => [m, `${prefix}.${m.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`]));
  return new Proxy(target, {
    get(t, key, receiver) {
      const value: unknown = Reflect.get(t, key, receiver);
      const name = typeof key === 'string' ? names.get(key as keyof T & string) : undefined;
      if (!name || typeof value !== 'function') return value;
      return (...args: unknown[]) => inSpan(name, vmAttributes(args[0]), () => (value as (...a: unknown[]) => Promise<unknown>).apply(t, args));
    },
  });
}

/** vm_id of a call's first argument: a VM record, a backend spec ({ id }) or a VM id. */
function vmAttributes(arg: unknown): Attributes {
  if (typeof arg === 'string') return { vm_id: arg };
  if (arg && typeof arg === 'object' && 'id' in arg && typeof arg.id === 'string') return { vm_id: arg.id };
  return {};
}
