import { createClient, type Client, type Interceptor, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { Authenticator, type TokenEntry } from '../../src/api/auth.js';
import { ApiServer } from '../../src/api/server.js';
import { RpcEnvelope } from '../../src/api/envelope.js';
import { createFastReads } from '../../src/api/fast-reads.js';
import { VmReads } from '../../src/api/vm-reads.js';
import { registerVmService } from '../../src/api/vm-service.js';
import { registerPoolService } from '../../src/api/pool-service.js';
import { parseConfig } from '../../src/config/load.js';
import { validationContext } from '../../src/daemon/daemon.js';
import { bridgeSubnets, ipamFromConfig } from '../../src/daemon/ipam-from-config.js';
import { PoolService } from '../../src/gen/vmprovisioner/v1/pool_pb.js';
import { VmService } from '../../src/gen/vmprovisioner/v1/vm_pb.js';
import { VmManager } from '../../src/lifecycle/manager.js';
import { UnmanagedNetworkPlane } from '../../src/network/plane.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { FakeBackend } from './fake-backend.js';
import type { VmBackend } from '../../src/backends/backend.js';

export const TOKENS = {
  admin: 'admin-token-0123456789abcdef',
  customer: 'test-customer-token-0123456789',
  other: 'other-tenant-token-0123456789ab',
};

export const silentLog = { info() {}, warn() {}, error() {} };

export interface Harness<B extends VmBackend = FakeBackend> {
  url: string;
  backend: B;
  store: Store;
  manager: VmManager;
  authFailures: string[];
  client(token?: string, kind?: 'connect' | 'grpc' | 'grpc-web' | 'connect-binary'): Client<typeof VmService>;
  pools(token?: string): Client<typeof PoolService>;
  close(): Promise<void>;
}

/** The host config most API tests run against: two bridges, the guide's /44 pool and a ULA pool. */
export const HARNESS_CONFIG = `
ipv6:
  enable_vlans: true
  default_vlan: 100
  management_vlan: 1
  quarantine: 10m
  default_pool:
    id: production
    prefix: "2600:BEEF:1000::/44"
    reserved: ["2600:BEEF:1000::1", "2600:BEEF:1000::2", "2600:BEEF:1000::10", "2600:BEEF:1000::11", "2600:BEEF:1000::100"]
  pools:
    - id: lab
      prefix: "fd00:10::/48"
    - id: manual
      prefix: "2600:beef:2000::/48"
      auto_assign: false
  bridges:
    - name: br-prod
      ipv6_address: "2600:BEEF:1000::1/64"
    - name: br-shared
      ipv6_address: "fd00:10::1/64"
      mtu: 9000
`;

export async function startHarness<B extends VmBackend = FakeBackend>(opts: { maxVms?: number; maxBridgePorts?: number; authMode?: 'tokens' | 'none'; store?: Store; fastPath?: boolean; configYaml?: string; now?: () => Date; backend?: B } = {}): Promise<Harness<B>> {
  const store = opts.store ?? new MemoryStore();
  const backend = opts.backend ?? (new FakeBackend() as unknown as B);
  const { config } = parseConfig(opts.configYaml ?? HARNESS_CONFIG, 'harness');
  const ipam = ipamFromConfig(config);
  ipam?.load(await store.listAllocations());
  const manager = new VmManager(store, backend, new UnmanagedNetworkPlane(), {
    instanceName: 'mtdtest',
    maxVms: opts.maxVms ?? 1000,
    maxBridgePorts: opts.maxBridgePorts,
    defaultShutdownTimeoutMs: 1000,
    validation: validationContext(config),
    ipam,
    bridgeSubnets: bridgeSubnets(config),
    now: opts.now,
  }, silentLog);
  const tokens: TokenEntry[] = [
    { token: TOKENS.admin, role: 'admin', name: 'ops' },
    { token: TOKENS.customer, tenant_id: 'test-customer' },
    { token: TOKENS.other, tenant_id: 'other-tenant' },
  ];
  const authFailures: string[] = [];
  const auth = new Authenticator(opts.authMode ?? 'tokens', tokens, (f) => authFailures.push(f.reason));
  const envelope = new RpcEnvelope(auth, { onRpc() {}, onInternalError(_m, e) { console.error(e); } });
  const server = new ApiServer({
    host: '127.0.0.1',
    port: 0,
    routes: (r) => {
      registerVmService(r, manager, envelope);
      registerPoolService(r, { manager, store, quarantineMs: config.ipv6.quarantine, now: opts.now }, envelope);
    },
    fastPath: opts.fastPath === false ? undefined : createFastReads(new VmReads(manager), envelope),
  });
  const { port } = await server.listen();
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    backend,
    store,
    manager,
    authFailures,
    client(token, kind = 'connect') {
      const interceptors: Interceptor[] = token
        ? [(next) => async (req) => { req.header.set('authorization', `Bearer ${token}`); return next(req); }]
        : [];
      let t: Transport;
      if (kind === 'grpc') t = createGrpcTransport({ baseUrl: url, interceptors });
      else if (kind === 'grpc-web') t = createGrpcWebTransport({ baseUrl: url, httpVersion: '1.1', interceptors });
      else t = createConnectTransport({ baseUrl: url, httpVersion: '1.1', useBinaryFormat: kind === 'connect-binary', interceptors });
      return createClient(VmService, t);
    },
    pools(token) {
      const interceptors: Interceptor[] = token
        ? [(next) => async (req) => { req.header.set('authorization', `Bearer ${token}`); return next(req); }]
        : [];
      return createClient(PoolService, createConnectTransport({ baseUrl: url, httpVersion: '1.1', interceptors }));
    },
    close: () => server.close(),
  };
}
