import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import type { ConnectRouter } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';

// One port for Connect (JSON and binary), gRPC-Web and gRPC. Over TLS, ALPN
// picks HTTP/2 or HTTP/1.1. In cleartext there is no negotiation, so the
// first bytes decide: the HTTP/2 connection preface goes to the h2c server
// (gRPC clients use prior knowledge), anything else to the HTTP/1.1 server
// (curl, browsers, Connect over HTTP/1.1).

type NodeHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface ApiServerOptions {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  /** Plain HTTP handlers for paths outside the RPC services (e.g. /debug/...). Return false to fall through to 404. */
  extra?: (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => boolean;
  tls?: { certFile: string; keyFile: string };
  /** Tried before the Connect adapter for HTTP/1.1 requests; returns true if it took the request. */
  fastPath?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n');

export class ApiServer {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private h1?: http.Server;
  private h2?: http2.Http2Server;

  constructor(private readonly opts: ApiServerOptions) {}

  async listen(): Promise<{ host: string; port: number }> {
    const rpc = connectNodeAdapter({
      routes: this.opts.routes,
      fallback: (req, res) => {
        if (this.opts.extra?.(req, res as unknown as http.ServerResponse)) return;
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'not_found', message: `no route for ${req.method} ${req.url}` }));
      },
    }) as unknown as NodeHandler;
    const fast = this.opts.fastPath;
    const handler: NodeHandler = fast
      ? (req, res) => {
          if (!fast(req as http.IncomingMessage, res as http.ServerResponse)) rpc(req, res);
        }
      : rpc;

    if (this.opts.tls) {
      const secure = http2.createSecureServer(
        {
          cert: readFileSync(this.opts.tls.certFile),
          key: readFileSync(this.opts.tls.keyFile),
          allowHTTP1: true,
        },
        handler,
      );
      this.server = secure as unknown as net.Server;
    } else {
      this.h1 = http.createServer(handler);
      this.h1.keepAliveTimeout = 65_000;
      this.h2 = http2.createServer({}, rpc);
      const h1 = this.h1;
      const h2 = this.h2;
      this.server = net.createServer({ pauseOnConnect: false }, (socket) => {
        socket.once('data', (first: Buffer) => {
          const n = Math.min(first.length, H2_PREFACE.length);
          if (first.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
            // The h2 session reads the socket's native handle and would miss
            // the bytes already read; a JS stream in front replays them.
            h2.emit('connection', replayingStream(socket, first));
          } else {
            socket.pause();
            socket.unshift(first);
            h1.emit('connection', socket);
            socket.resume();
          }
        });
      });
    }
    this.server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    const addr = this.server.address() as net.AddressInfo;
    return { host: addr.address, port: addr.port };
  }

  async close(): Promise<void> {
    if (!this.server) return;
    const closed = new Promise<void>((r) => this.server!.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}

function replayingStream(socket: net.Socket, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, enc, cb) {
      socket.write(chunk, enc, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(first);
  socket.on('data', (chunk) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('close', () => d.destroy());
  socket.on('error', (e) => d.destroy(e));
  return d;
}
