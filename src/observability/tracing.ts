import { context, diag, propagation, trace, DiagLogLevel } from '@opentelemetry/api';
import { logs } from '@opentelemetry/api-logs';
import { setTracingActive } from './spans.js';

// OpenTelemetry tracing (`otel:` in the config): the NodeSDK with an
// OTLP/HTTP exporter (JSON encoding, decision 0031), sampled by
// `sampling_rate` at the root and by the caller's decision when a request
// carries trace context, exporting in batches. Loaded only when enabled (the
// SDK is many modules metald does not need otherwise). Traces only: no
// metrics or logs exporters (Prometheus and pino/syslog cover those), no
// auto-instrumentation (the spans are metald's own, spans.ts: a trace shows
// the steps of an RPC, not every socket). The SDK registers process-wide
// globals (tracer provider, context manager, propagator); shutdown flushes
// what is queued and unregisters them, so a process (a test) can start
// tracing again.

export interface TracingSettings {
  enabled: boolean;
  /** 0..1: share of new traces recorded and exported. */
  samplingRate: number;
  endpoint?: string;
  /** service.instance.id: the config's instance_name. */
  instance: string;
}

interface Log {
  warn(o: object, m?: string): void;
}

/** The OTLP/HTTP traces URL for a configured endpoint: a base URL gets `/v1/traces` (as OTEL_EXPORTER_OTLP_ENDPOINT does). */
export function tracesUrl(endpoint: string): string {
  const u = new URL(endpoint);
  if (!u.pathname.endsWith('/v1/traces')) u.pathname = `${u.pathname.replace(/\/+$/, '')}/v1/traces`;
  return u.toString();
}

export class Tracing {
  private constructor(private readonly sdk: { shutdown(): Promise<void> } | undefined) {}

  /** Starts the SDK when enabled; else a Tracing whose shutdown does nothing (and no span is ever made). */
  static async start(s: TracingSettings, log: Log): Promise<Tracing> {
    if (!s.enabled || !s.endpoint) return new Tracing(undefined);
    const [{ NodeSDK }, { OTLPTraceExporter }, { resourceFromAttributes }, { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler }] = await Promise.all([
      import('@opentelemetry/sdk-node'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/sdk-trace-base'),
    ]);
    // Export failures (collector down) are the SDK's to report: through metald's log, at most as warnings.
    diag.setLogger({
      error: (m, ...a) => log.warn({ otel: a.map(String).join(' ') }, `opentelemetry: ${m}`),
      warn: (m, ...a) => log.warn({ otel: a.map(String).join(' ') }, `opentelemetry: ${m}`),
      info: () => {}, debug: () => {}, verbose: () => {},
    }, DiagLogLevel.WARN);
    const sdk = new NodeSDK({
      resource: resourceFromAttributes({ 'service.name': 'metald', 'service.instance.id': s.instance }),
      // Resource detectors would read the host, process and environment: metald says who it is itself.
      autoDetectResources: false,
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(s.endpoint) }))],
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(s.samplingRate) }),
      instrumentations: [],
      // Without these the SDK would also export metrics and logs over OTLP (its defaults read OTEL_*_EXPORTER).
      metricReaders: [],
      logRecordProcessors: [],
    });
    sdk.start();
    setTracingActive(true);
    return new Tracing(sdk);
  }

  get enabled(): boolean {
    return this.sdk !== undefined;
  }

  /** Flushes the spans still queued, stops the exporter and unregisters the SDK's globals. */
  async shutdown(): Promise<void> {
    if (!this.sdk) return;
    setTracingActive(false);
    try {
      await this.sdk.shutdown();
    } finally {
      trace.disable();
      context.disable();
      propagation.disable();
      logs.disable();
      diag.disable();
    }
  }
}
