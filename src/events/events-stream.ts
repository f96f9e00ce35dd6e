import type http from 'node:http';
import type http2 from 'node:http2';
import { MetaldError } from '../core/errors.js';
import { matches, type EventQuery, type EventRing, type SecurityEvent } from './security-events.js';

// The streaming form of GET /debug/security/events: server-sent events
// (text/event-stream, one `id:`/`event:`/`data:` block per event), which
// curl, browsers' EventSource and SIEM shippers read without a gRPC stack.
// The query was already authorised and scoped (a tenant's stream is forced to
// its tenant). Stored events are replayed first when the query asks for them
// (since, page_token or Last-Event-ID), then live ones follow; both are taken
// in one synchronous step, so none is missed or sent twice. A client that
// does not keep up is cut off (the SSE `id` lets it resume), never buffered
// without bound.

type Res = http.ServerResponse | http2.Http2ServerResponse;

const MAX_STREAMS = 64;
/** Bytes queued for one slow client before it is dropped. */
const MAX_BUFFERED = 1 << 20;
const HEARTBEAT_MS = 15_000;

export class EventStreams {
  private open_ = 0;

  constructor(private readonly ring: EventRing, private readonly maxStreams = MAX_STREAMS) {}

  get count(): number {
    return this.open_;
  }

  /** Throws resource_exhausted when the stream limit is reached (checked while authorising). */
  admit(): void {
    if (this.open_ >= this.maxStreams) throw new MetaldError('resource_exhausted', `at most ${this.maxStreams} event streams at once`);
  }

  open(q: EventQuery, res: Res): void {
    this.admit();
    this.open_++;
    // HTTP/2 forbids connection-specific headers.
    const h1 = !('stream' in res && (res as http2.Http2ServerResponse).stream !== undefined);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', ...(h1 ? { connection: 'keep-alive' } : {}) });
    let closed = false;
    let off = () => {};
    let beat: NodeJS.Timeout | undefined;
    const close = () => {
      if (closed) return;
      closed = true;
      off();
      clearInterval(beat);
      this.open_--;
    };
    const write = (text: string) => {
      if (closed) return;
      (res as http.ServerResponse).write(text);
      if (res.writableLength > MAX_BUFFERED) {
        close();
        (res as http.ServerResponse).end();
      }
    };
    const send = (e: SecurityEvent) => write(`id: ${e.seq}\nevent: security_event\ndata: ${JSON.stringify(e)}\n\n`);
    if (q.afterSeq !== undefined || q.sinceMs !== undefined) {
      for (let after = q.afterSeq; ;) {
        const page = this.ring.query({ ...q, afterSeq: after, limit: 1000 });
        for (const e of page.events) send(e);
        if (page.next === undefined) break;
        after = page.next;
      }
    }
    if (closed) return;
    const live = { ...q, afterSeq: undefined, sinceMs: undefined };
    off = this.ring.onEvent((e) => {
      if (matches(e, live)) send(e);
    });
    // Comments keep proxies from timing the stream out and show the client it is alive.
    write(': stream open\n\n');
    beat = setInterval(() => write(': ping\n\n'), HEARTBEAT_MS).unref();
    res.on('close', close);
    // The client may have gone while it was being authorised: no 'close' will come any more.
    if ((res as http.ServerResponse).destroyed) close();
  }
}
