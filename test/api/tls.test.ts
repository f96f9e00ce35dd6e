import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { VmService } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { ApiServer } from '../../src/api/server.js';

// Optional TLS (tls.cert_file / tls.key_file): ALPN serves HTTP/2 (gRPC) and
// HTTP/1.1 (Connect, curl) on the same port.

const dir = mkdtempSync(join(tmpdir(), 'metald-tls-'));
const cert = join(dir, 'cert.pem');
const key = join(dir, 'key.pem');
let server: ApiServer;
let url: string;

before(async () => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  server = new ApiServer({
    host: '127.0.0.1',
    port: 0,
    tls: { certFile: cert, keyFile: key },
    routes: (r) => r.service(VmService, { getVmInfo: async (req) => ({ vm: { vmId: req.vmId } }) }),
  });
  url = `https://127.0.0.1:${(await server.listen()).port}`;
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

it('serves Connect over HTTP/1.1 and HTTP/2 and gRPC over TLS', async () => {
  const ca = readFileSync(cert);
  for (const t of [
    createConnectTransport({ baseUrl: url, httpVersion: '1.1', nodeOptions: { ca } }),
    createConnectTransport({ baseUrl: url, httpVersion: '2', nodeOptions: { ca } }),
    createGrpcTransport({ baseUrl: url, nodeOptions: { ca } }),
  ]) {
    const res = await createClient(VmService, t).getVmInfo({ vmId: 'tls-ok' });
    assert.equal(res.vm?.vmId, 'tls-ok');
  }
});

it('refuses a client that does not trust the certificate', async () => {
  const t = createConnectTransport({ baseUrl: url, httpVersion: '1.1' });
  await assert.rejects(createClient(VmService, t).getVmInfo({ vmId: 'x' }), /certificate/i);
});
