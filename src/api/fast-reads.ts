import type http from 'node:http';
import { fromJsonString, toJsonString, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { codeToHttpStatus, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import type { VmRecord } from '../core/vm/record.js';
import { GetVmInfoRequestSchema, ListVmsRequestSchema, VmInfoSchema } from '../gen/vmprovisioner/v1/vm_pb.js';
import { toVmInfo } from './convert.js';
import type { RpcEnvelope } from './envelope.js';
import type { VmReads } from './vm-reads.js';

// The two hottest reads, GetVmInfo and ListVms, in their most common form —
// Connect unary JSON over HTTP/1.1 — are answered here without the Connect
// adapter, whose per-request machinery (universal request objects, abort
// signals, stream plumbing) cost ~10x the work itself (docs/decisions/0006).
// Anything else about the request (binary, gRPC, compression, GET, HTTP/2)
// goes to the adapter. Both paths share auth, logic and error mapping, and a
// test checks they answer byte-for-byte alike.

const PREFIX = '/vmprovisioner.v1.VmService/';
const MAX_BODY = 64 * 1024;

/** Serialised VmInfo per stored revision: the store returns the same frozen object per revision. */
const jsonCache = new WeakMap<VmRecord, Buffer>();
function vmInfoJson(vm: VmRecord): Buffer {
  let b = jsonCache.get(vm);
  if (b === undefined) {
    b = Buffer.from(toJsonString(VmInfoSchema, toVmInfo(vm)));
    jsonCache.set(vm, b);
  }
  return b;
}

const bytes = (s: string) => Buffer.from(s);
const GET_OPEN = bytes('{"vm":');
const LIST_OPEN = bytes('{"vms":[');
const COMMA = bytes(',');
const CLOSE = bytes('}');

type Handler = (body: string, auth: string | undefined) => Promise<Buffer>;

export function createFastReads(reads: VmReads, envelope: RpcEnvelope) {
  const handlers: Record<string, Handler> = {
    GetVmInfo: (body, auth) =>
      envelope.run('GetVmInfo', auth, async (p) => {
        const req = parse(GetVmInfoRequestSchema, body);
        return Buffer.concat([GET_OPEN, vmInfoJson(await reads.get(p, req.vmId)), CLOSE]);
      }),
    ListVms: (body, auth) =>
      envelope.run('ListVms', auth, async (p) => {
        const r = await reads.list(p, parse(ListVmsRequestSchema, body));
        // Same field order and default-omission as protobuf JSON.
        const tail: string[] = [];
        if (r.nextPageToken) tail.push(`"nextPageToken":${JSON.stringify(r.nextPageToken)}`);
        if (r.totalCount) tail.push(`"totalCount":${r.totalCount}`);
        if (!r.vms.length) return bytes(`{${tail.join(',')}}`);
        const parts: Buffer[] = [LIST_OPEN];
        r.vms.forEach((vm, i) => {
          if (i) parts.push(COMMA);
          parts.push(vmInfoJson(vm));
        });
        parts.push(bytes(`]${tail.map((t) => `,${t}`).join('')}}`));
        return Buffer.concat(parts);
      }),
  };

  /** Returns false (touching nothing) when the request is not for the fast path. */
  return function handle(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (req.method !== 'POST' || req.httpVersionMajor !== 1 || !req.url?.startsWith(PREFIX)) return false;
    const handler = handlers[req.url.slice(PREFIX.length)];
    if (!handler) return false;
    const h = req.headers;
    const ct = h['content-type'];
    if (ct !== 'application/json' && ct !== 'application/json; charset=utf-8') return false;
    if (h['content-encoding'] && h['content-encoding'] !== 'identity') return false;
    const pv = h['connect-protocol-version'];
    if (pv !== undefined && pv !== '1') return false;

    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      const respond = (status: number, body: string | Uint8Array) => {
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      const fail = (err: unknown) => {
        const ce = ConnectError.from(err);
        respond(codeToHttpStatus(ce.code), errorToJsonBytes(ce, {}));
      };
      if (size > MAX_BODY) return fail(new ConnectError(`request body larger than ${MAX_BODY} bytes`, Code.ResourceExhausted));
      handler(Buffer.concat(chunks).toString('utf8'), h.authorization).then((out) => respond(200, out), fail);
    });
    return true;
  };
}

function parse<D extends DescMessage>(schema: D, body: string): MessageShape<D> {
  try {
    // As the Connect adapter does by default: unknown fields are ignored (forward compatibility).
    return fromJsonString(schema, body || '{}', { ignoreUnknownFields: true });
  } catch (e) {
    throw new ConnectError(`cannot decode ${schema.typeName} from JSON: ${e instanceof Error ? e.message : String(e)}`, Code.InvalidArgument);
  }
}
