import dgram from 'node:dgram';
import net from 'node:net';
import { BoundedQueue } from './bounded-queue.js';
import { octetCounted } from './format.js';

// The SIEM: RFC 5424 messages to a remote collector, over TCP with RFC 6587
// octet counting (framing that survives newlines) or one UDP datagram each.
// TCP reconnects with a growing delay; while the collector is down messages
// wait in a bounded queue (oldest dropped, counted). UDP cannot tell "down"
// except by the ICMP errors a connected socket reports: those messages count
// as dropped.

export interface RemoteSyslogOptions {
  host: string;
  port: number;
  protocol: 'tcp' | 'udp';
  maxBuffered: number;
  log: { warn(o: object, m?: string): void; info(o: object, m?: string): void };
}

/** Bytes queued in the socket before messages wait in our own bounded queue instead. */
const SOCKET_HIGH_WATER = 256 * 1024;

export class RemoteSyslog {
  readonly queue: BoundedQueue;
  sent = 0;
  private sendErrors = 0;
  private tcp: net.Socket | undefined;
  private connected = false;
  private udp: dgram.Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = 500;
  private stopped = false;
  private warned = false;

  constructor(private readonly opts: RemoteSyslogOptions) {
    this.queue = new BoundedQueue(opts.maxBuffered);
  }

  get dropped(): number {
    return this.queue.dropped + this.sendErrors;
  }

  send(msg: string): void {
    this.queue.push(msg);
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.tcp?.destroy();
    this.udp?.close();
  }

  private pump(): void {
    if (this.opts.protocol === 'udp') return this.pumpUdp();
    if (!this.connected) return this.connect();
    const s = this.tcp!;
    for (let m = this.queue.shift(); m !== undefined; m = this.queue.shift()) {
      s.write(octetCounted(m));
      this.sent++;
      if (s.writableLength > SOCKET_HIGH_WATER) return;
    }
  }

  private connect(): void {
    if (this.tcp || this.stopped || this.timer) return;
    const s = net.connect({ host: this.opts.host, port: this.opts.port });
    this.tcp = s;
    s.setKeepAlive(true, 30_000);
    s.on('connect', () => {
      this.connected = true;
      this.retryMs = 500;
      if (this.warned) this.opts.log.info({ collector: `${this.opts.host}:${this.opts.port}`, buffered: this.queue.length }, 'syslog collector reachable again');
      this.warned = false;
      this.pump();
    });
    s.on('drain', () => this.pump());
    // The collector never talks back; reading keeps a half-closed socket from lingering.
    s.on('data', () => {});
    s.on('error', (err) => {
      if (!this.warned) this.opts.log.warn({ collector: `${this.opts.host}:${this.opts.port}`, err: String(err), buffered_max: this.opts.maxBuffered }, 'syslog collector unreachable; events wait in a bounded buffer');
      this.warned = true;
    });
    s.on('close', () => {
      this.tcp = undefined;
      this.connected = false;
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.connect();
      }, this.retryMs).unref();
      this.retryMs = Math.min(this.retryMs * 2, 30_000);
    });
  }

  private pumpUdp(): void {
    if (!this.udp) {
      const u = dgram.createSocket(net.isIPv6(this.opts.host) ? 'udp6' : 'udp4');
      u.on('error', () => {});
      u.unref();
      this.udp = u;
    }
    for (let m = this.queue.shift(); m !== undefined; m = this.queue.shift()) {
      this.udp.send(m, this.opts.port, this.opts.host, (err) => {
        if (err) this.sendErrors++;
        else this.sent++;
      });
    }
  }
}
