// OpenTelemetry (issue 7): the real daemon (sandbox VMs on a bridge with the
// port guards, in its own data-plane namespace) exports a trace per RPC over
// OTLP/HTTP to a receiver run here; CreateVm's trace has the lifecycle's steps
// as child spans with the VM's id, and the log lines made within it carry its
// trace id. With sampling_rate 0 nothing is sent.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, it } from 'node:test';
import { baseConfig, cleanupEnv, client, leftovers, newEnv, startDaemon, TOKENS, writeConfig, type Env } from '../helpers/daemon-harness.js';

interface OtlpAttr { key: string; value: { stringValue?: string; intValue?: string | number; arrayValue?: unknown } }
interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; attributes?: OtlpAttr[]; status?: { code?: number } }
interface OtlpRequest { resourceSpans: { resource: { attributes: OtlpAttr[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] }

/** An OTLP/HTTP receiver: POST /v1/traces with JSON bodies (what metald's exporter sends), every request kept. */
async function receiver(): Promise<{ url: string; requests: OtlpRequest[]; paths: string[]; close: () => Promise<void> }> {
  const requests: OtlpRequest[] = [];
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
      paths.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      if (req.method === 'POST' && req.url === '/v1/traces') requests.push(JSON.parse(body) as OtlpRequest);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, requests, paths, close: () => new Promise((r) => server.close(() => r())) };
}

const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes?.find((a) => a.key === key)?.value;
  return v?.stringValue ?? v?.intValue;
};
const spansOf = (reqs: OtlpRequest[]) => reqs.flatMap((r) => r.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));

function config(env: Env, otel: object) {
  return baseConfig(env, {
    otel,
    ipv6: {
      default_pool: { id: 'test', prefix: 'fd00:78::/48', reserved: ['fd00:78::1'] },
      bridge: { name: `${env.inst}br`, ipv6_address: 'fd00:78::1/64' },
    },
  });
}

describe('traces reach an OTLP/HTTP receiver', { timeout: 120_000 }, async () => {
  const envs: Env[] = [];
  const rx = await receiver();

  after(async () => {
    for (const env of envs) {
      await cleanupEnv(env);
      assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
    }
    await rx.close();
  });

  it('CreateVm is one trace: the RPC span with validate, ipam, backend, firewall and network steps under it', async () => {
    const env = await newEnv();
    envs.push(env);
    writeConfig(env, config(env, { enabled: true, sampling_rate: 1, endpoint: rx.url }));
    const d = await startDaemon(env);
    const c = client(env, TOKENS.a);
    const res = await c.createVm({ config: { tenantId: 'tenant-a', network: [{ id: 'eth0', ipv6: { address: 'fd00:78::21/64' } }] } });
    const vmId = res.vmId;
    await assert.rejects(c.createVm({ vmId: 'bad id!', config: { tenantId: 'tenant-a' } }));
    await d.kill('SIGTERM'); // shutdown flushes the batch

    assert.ok(rx.paths.every((p) => p === 'POST /v1/traces application/json'), rx.paths.join('\n'));
    const [resource] = rx.requests[0]!.resourceSpans.map((r) => Object.fromEntries(r.resource.attributes.map((a) => [a.key, a.value.stringValue])));
    assert.deepEqual([resource!['service.name'], resource!['service.instance.id']], ['metald', env.inst]);
    const spans = spansOf(rx.requests);
    const roots = spans.filter((s) => s.name === 'vmprovisioner.v1.VmService/CreateVm');
    assert.equal(roots.length, 2, 'one trace per RPC');
    const root = roots.find((s) => attr(s, 'vm_id') === vmId)!;
    assert.ok(root, `a CreateVm span with vm_id ${vmId}`);
    assert.equal(root.kind, 2, 'SERVER');
    assert.equal(root.parentSpanId ?? '', '', 'a root span (no traceparent was sent)');
    assert.deepEqual([attr(root, 'rpc.system'), attr(root, 'rpc.service'), attr(root, 'rpc.method'), attr(root, 'tenant_id')],
      ['connect_rpc', 'vmprovisioner.v1.VmService', 'CreateVm', 'tenant-a']);
    const inTrace = spans.filter((s) => s.traceId === root.traceId);
    const byName = (n: string) => {
      const s = inTrace.filter((x) => x.name === n);
      assert.equal(s.length, 1, `one ${n} span in the trace (got ${inTrace.map((x) => x.name).join(', ')})`);
      return s[0]!;
    };
    for (const step of ['validate', 'ipam.allocate', 'backend.create', 'firewall.ensure_vm']) {
      assert.equal(byName(step).parentSpanId, root.spanId, `${step} is a child of the RPC span`);
    }
    assert.equal(byName('network.ensure_vm').parentSpanId, byName('firewall.ensure_vm').spanId, 'the guards wrap the port attachment');
    for (const step of ['ipam.allocate', 'backend.create', 'firewall.ensure_vm', 'network.ensure_vm']) assert.equal(attr(byName(step), 'vm_id'), vmId, step);
    assert.equal(attr(byName('backend.create'), 'backend'), 'sandbox');

    // The refused create: its RPC span failed with the Connect code, its validation span too.
    const bad = roots.find((s) => s !== root)!;
    assert.deepEqual([bad.status?.code, attr(bad, 'rpc.connect_rpc.error_code')], [2, 'invalid_argument']);
    assert.equal(spans.find((s) => s.traceId === bad.traceId && s.name === 'validate')?.status?.code, 2);

    // Log lines made within the trace carry its ids.
    const created = d.logs().find((l) => l['msg'] === 'vm created' && l['vm_id'] === vmId)!;
    assert.ok(created, 'the "vm created" log line');
    assert.equal(created['trace_id'], root.traceId);
    assert.ok(inTrace.some((s) => s.spanId === created['span_id']), 'its span_id is a span of that trace');
    assert.ok(!d.logs().find((l) => l['msg'] === 'metald serving')!['trace_id'], 'lines outside an RPC have none');
  });

  it('sampling_rate 0 sends no spans', async () => {
    const env = await newEnv();
    envs.push(env);
    const before = rx.requests.length;
    writeConfig(env, config(env, { enabled: true, sampling_rate: 0, endpoint: rx.url }));
    const d = await startDaemon(env);
    const c = client(env, TOKENS.a);
    await c.createVm({ config: { tenantId: 'tenant-a', network: [{ id: 'eth0', ipv6: { address: 'fd00:78::22/64' } }] } });
    await c.listVms({});
    await d.kill('SIGTERM');
    assert.deepEqual(spansOf(rx.requests.slice(before)), []);
    assert.ok(!d.logs().some((l) => 'trace_id' in l), 'no trace ids in the logs either');
  });
});
