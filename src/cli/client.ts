import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { VmService } from '../gen/vmprovisioner/v1/vm_pb.js';

export interface ClientOptions {
  api: string;
  token?: string;
}

export function vmClient(opts: ClientOptions): Client<typeof VmService> {
  const interceptors: Interceptor[] = [];
  if (opts.token) {
    const token = opts.token;
    interceptors.push((next) => async (req) => {
      req.header.set('authorization', `Bearer ${token}`);
      return next(req);
    });
  }
  const transport = createConnectTransport({ baseUrl: opts.api, httpVersion: '1.1', interceptors });
  return createClient(VmService, transport);
}
