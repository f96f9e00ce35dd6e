// Tracing in-process: the SDK starts and stops cleanly (twice in one process:
// shutdown flushes and unregisters its globals), spans continue a caller's
// trace (traceparent), and with tracing off the helpers are pass-throughs.
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { annotate, inSpan, traceFields, traced, traceRpc, tracingActive } from '../../src/observability/spans.js';
import { Tracing, tracesUrl } from '../../src/observability/tracing.js';

interface Span { traceId: string; spanId: string; parentSpanId?: string; name: string; attributes: { key: string; value: { stringValue?: string } }[] }

async function receiver() {
  const spans: Span[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
      const r = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: Span[] }[] }[] };
      spans.push(...r.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, spans, close: () => new Promise((r) => server.close(r)) };
}

const warnings: string[] = [];
const log = { warn: (_o: object, m?: string) => void warnings.push(m ?? '') };

test('the OTLP traces URL of a configured endpoint', () => {
  assert.equal(tracesUrl('https://tracing.company.com'), 'https://tracing.company.com/v1/traces');
  assert.equal(tracesUrl('http://collector:4318/'), 'http://collector:4318/v1/traces');
  assert.equal(tracesUrl('http://gw.example/otlp'), 'http://gw.example/otlp/v1/traces');
  assert.equal(tracesUrl('http://collector:4318/v1/traces'), 'http://collector:4318/v1/traces');
});

test('start, trace, shut down (flushes), and again in the same process', async () => {
  const rx = await receiver();
  try {
    for (const round of [1, 2]) {
      const tracing = await Tracing.start({ enabled: true, samplingRate: 1, endpoint: rx.url, instance: `t${round}` }, log);
      assert.ok(tracingActive());
      const caller = { trace: `4bf92f3577b34da6a3ce929d0e0e473${round}`, span: '00f067aa0ba902b7' };
      let fields: object = {};
      await traceRpc('svc.v1.S', 'Do', { traceparent: `00-${caller.trace}-${caller.span}-01` }, async (rpc) => {
        await inSpan('step', { n: 1 }, async () => {
          annotate({ vm_id: 'vm1' });
          fields = traceFields();
        });
        rpc.code('not_found');
      });
      const before = rx.spans.length;
      await tracing.shutdown();
      assert.ok(!tracingActive());
      const mine = rx.spans.slice(before).filter((s) => s.traceId === caller.trace);
      const rpc = mine.find((s) => s.name === 'svc.v1.S/Do')!;
      const step = mine.find((s) => s.name === 'step')!;
      assert.ok(rpc && step, `round ${round}: both spans exported at shutdown (got ${rx.spans.map((s) => s.name).join(', ')})`);
      assert.equal(rpc.parentSpanId, caller.span, 'continues the caller\'s trace');
      assert.equal(step.parentSpanId, rpc.spanId);
      for (const s of [rpc, step]) assert.ok(s.attributes.some((a) => a.key === 'vm_id' && a.value.stringValue === 'vm1'), `${s.name} has vm_id`);
      assert.deepEqual(fields, { trace_id: caller.trace, span_id: step.spanId });
    }
    assert.deepEqual(warnings, []);
  } finally {
    await rx.close();
  }
});

test('tracing off: no SDK, helpers call straight through, objects are not wrapped', async () => {
  const tracing = await Tracing.start({ enabled: false, samplingRate: 1, endpoint: 'http://127.0.0.1:9', instance: 'x' }, log);
  assert.equal(tracing.enabled, false);
  assert.equal(tracingActive(), false);
  const plane = { ensureVm: async () => 'done' };
  assert.equal(traced(plane, 'network', ['ensureVm']), plane);
  assert.equal(await inSpan('x', {}, async () => 42), 42);
  assert.deepEqual(traceFields(), {});
  await tracing.shutdown();
});
