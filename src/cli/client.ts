import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { PoolService } from '../gen/vmprovisioner/v1/pool_pb.js';
import { VmService } from '../gen/vmprovisioner/v1/vm_pb.js';

export interface ClientOptions {
  api: string;
  token?: string;
}

export function vmClient(opts: ClientOptions): Client<typeof VmService> {
  return createClient(VmService, transport(opts));
}

export function poolClient(opts: ClientOptions): Client<typeof PoolService> {
  return createClient(PoolService, transport(opts));
}

function transport(opts: ClientOptions) {
  const interceptors: Interceptor[] = [];
  if (opts.token) {
    const token = opts.token;
    interceptors.push((next) => async (req) => {
      req.header.set('authorization', `Bearer ${token}`);
      return next(req);
    });
  }
  return createConnectTransport({ baseUrl: opts.api, httpVersion: '1.1', interceptors });
}
