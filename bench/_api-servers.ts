// Child process for bench/api: serves either the real metald API stack or a
process.on('SIGINT', () => process.exit(0));
// bare node:http handler, so the load generator never shares a process with
// the server it measures.
import http from 'node:http';
import { Authenticator } from '../src/api/auth.js';
import { ApiServer } from '../src/api/server.js';
import { RpcEnvelope } from '../src/api/envelope.js';
import { createFastReads } from '../src/api/fast-reads.js';
import { VmReads } from '../src/api/vm-reads.js';
import { registerVmService } from '../src/api/vm-service.js';
import { VmManager } from '../src/lifecycle/manager.js';
import { UnmanagedNetworkPlane } from '../src/network/plane.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { FakeBackend } from '../test/helpers/fake-backend.js';

const [kind, arg] = process.argv.slice(2);
const silent = { info() {}, warn() {}, error() {} };

if (kind === 'metald') {
  const store = SqliteStore.open(arg!);
  const manager = new VmManager(store, new FakeBackend(), new UnmanagedNetworkPlane(), {
    instanceName: 'bench', maxVms: 100_000, defaultShutdownTimeoutMs: 1000,
    validation: { bridges: [], enableVlans: false, defaultVlan: undefined, managementVlan: undefined, poolPrefixes: [], defaultSourceGuard: true },
  }, silent);
  const auth = new Authenticator('tokens', [{ token: 'bench-admin-token-0123456789', role: 'admin' }]);
  const envelope = new RpcEnvelope(auth, { onRpc() {}, onInternalError() {} });
  const server = new ApiServer({
    host: '127.0.0.1', port: 0,
    routes: (r) => registerVmService(r, manager, envelope),
    fastPath: createFastReads(new VmReads(manager), envelope),
  });
  const { port } = await server.listen();
  process.send!({ port });
} else {
  // Bare handler: the exact bytes metald answered with, keyed by path.
  const bodies = new Map<string, Buffer>(Object.entries(JSON.parse(arg!) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v)]));
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = bodies.get(req.url ?? '');
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as { port: number }).port }));
}
