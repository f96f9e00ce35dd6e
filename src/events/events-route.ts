import type http from 'node:http';
import type http2 from 'node:http2';
import { ConnectError } from '@connectrpc/connect';
import { codeToHttpStatus, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { invalidArgument, MetaldError } from '../core/errors.js';
import type { Principal } from '../core/principal.js';
import { parseDuration } from '../config/schema-common.js';
import type { RpcEnvelope } from '../api/envelope.js';
import { EventStreams } from './events-stream.js';
import { EVENT_TYPES, SEVERITIES, type EventQuery, type EventRing } from './security-events.js';

// GET /debug/security/events on the API port (the guide's step 3.3): JSON,
// filters vm_id, tenant_id, type, severity (comma lists), since (ISO-8601 time
// or a duration back from now, e.g. "10m"), limit (1-1000, default 100) and
// page_token (from the previous page's next_page_token). Authenticated like
// the RPCs (through the envelope, so failures are auth_failure events and the
// latency is measured); an administrator sees everything, a tenant only its
// own VMs' events and never API-side events without a tenant.
// GET /debug/security/events/stream: the same as server-sent events.

export const EVENTS_PATH = '/debug/security/events';
/** Server-sent events: the same filters; `since` or `page_token` (or Last-Event-ID) replay stored events first. */
export const STREAM_PATH = `${EVENTS_PATH}/stream`;
const MAX_LIMIT = 1000;

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/** Parse the query string into a ring query for this principal (throws MetaldError naming the parameter). */
export function eventQuery(params: URLSearchParams, p: Principal, nowMs: number): EventQuery {
  for (const k of params.keys()) {
    if (!['vm_id', 'tenant_id', 'type', 'severity', 'since', 'limit', 'page_token'].includes(k)) throw invalidArgument(k, 'unknown query parameter');
  }
  const list = (k: string, allowed: readonly string[]) => {
    const v = params.get(k);
    if (v === null || v === '') return undefined;
    const xs = v.split(',');
    const bad = xs.find((x) => !allowed.includes(x));
    if (bad !== undefined) throw invalidArgument(k, `${JSON.stringify(bad)} is not one of ${allowed.join(', ')}`);
    return xs;
  };
  const q: EventQuery = { limit: 100, types: list('type', EVENT_TYPES), severities: list('severity', SEVERITIES) };
  const vm = params.get('vm_id');
  if (vm) q.vmId = vm;
  const tenant = params.get('tenant_id') || undefined;
  if (p.kind === 'tenant') {
    if (tenant !== undefined && tenant !== p.tenantId) throw new MetaldError('permission_denied', 'a tenant may only see its own events', 'tenant_id');
    q.tenantId = p.tenantId;
  } else if (tenant !== undefined) q.tenantId = tenant;
  const since = params.get('since');
  if (since) {
    const ms = /^\d+(ms|s|m|h)/.test(since) ? nowMs - safeDuration(since) : Date.parse(since);
    if (Number.isNaN(ms)) throw invalidArgument('since', `${JSON.stringify(since)} is neither an ISO-8601 time nor a duration such as "10m"`);
    q.sinceMs = ms;
  }
  const limit = params.get('limit');
  if (limit !== null) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw invalidArgument('limit', `must be an integer from 1 to ${MAX_LIMIT}, got ${JSON.stringify(limit)}`);
    q.limit = n;
  }
  const token = params.get('page_token');
  if (token) {
    if (!/^\d{1,15}$/.test(token)) throw invalidArgument('page_token', 'not a token this endpoint returned');
    q.afterSeq = Number(token);
  }
  return q;
}

function safeDuration(s: string): number {
  try {
    return parseDuration(s);
  } catch (err) {
    throw invalidArgument('since', err instanceof Error ? err.message : String(err));
  }
}

/** The ApiServer `extra` hook: true when it took the request. */
export function securityEventsRoute(ring: EventRing, envelope: RpcEnvelope, streams = new EventStreams(ring)): (req: Req, res: Res) => boolean {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== EVENTS_PATH && url.pathname !== STREAM_PATH) return false;
    const send = (status: number, body: string | Uint8Array) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body);
    };
    if (req.method !== 'GET') {
      send(405, JSON.stringify({ code: 'unimplemented', message: `${url.pathname} takes GET` }));
      return true;
    }
    const auth = req.headers['authorization'];
    const fail = (err: unknown) => {
      const ce = err instanceof ConnectError ? err : ConnectError.from(err);
      send(codeToHttpStatus(ce.code), errorToJsonBytes(ce, {}));
    };
    if (url.pathname === STREAM_PATH) {
      const lastId = req.headers['last-event-id'];
      envelope.run('debug.SecurityEventsStream', typeof auth === 'string' ? auth : undefined, async (p) => {
        const q = eventQuery(url.searchParams, p, Date.now());
        // An EventSource reconnecting says where it stopped.
        if (typeof lastId === 'string' && /^\d{1,15}$/.test(lastId)) q.afterSeq = Number(lastId);
        streams.admit();
        return q;
      }).then((q) => {
        try {
          streams.open(q, res);
        } catch (err) {
          fail(err); // the stream limit, reached while this one was being authorised
        }
      }, fail);
      return true;
    }
    envelope.run('debug.SecurityEvents', typeof auth === 'string' ? auth : undefined, async (p) => {
      const page = ring.query(eventQuery(url.searchParams, p, Date.now()));
      return { events: page.events, next_page_token: page.next === undefined ? '' : String(page.next) };
    }).then((body) => send(200, JSON.stringify(body)), fail);
    return true;
  };
}
