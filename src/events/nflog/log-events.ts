import { DROP_REASONS, type DropReason } from '../../firewall/guard-names.js';
import { GUARD_SEVERITY, type SecurityEvent } from '../security-events.js';
import type { PacketSummary } from './pcap-nflog.js';

// PURE: which nflog records become events, and when. The guards log at most
// LOG_SAMPLE_PER_PORT packets a second per port and reason and LOG_SAMPLE_RATE
// per reason (kernel side); the host table 50 a second (decision 0032). Here each (port, reason) makes at most one event per
// `perKeyIntervalMs` (the first at once), the logged packets in between are
// carried on the next one (or flushed when the interval ends), and all keys
// together make at most `maxPerSecond` events (a token bucket). A tenant
// under enhanced monitoring has no per-key interval: each logged packet is an
// event, still within the global budget. Decision 0027.

export type LogClass =
  | { kind: 'guard'; reason: DropReason; inbound: boolean }
  | { kind: 'host_deny' };

/** The nflog prefix as the tables write it ("metald-guard ra_guard ", "metald-guard ra_guard-in ", "metald-ipv6-deny: "). */
export function classify(prefix: string): LogClass | undefined {
  if (prefix.startsWith('metald-ipv6-deny')) return { kind: 'host_deny' };
  const m = /^metald-guard ([a-z0-9_]+?)(-in)? *$/.exec(prefix);
  if (!m || !(DROP_REASONS as readonly string[]).includes(m[1]!)) return undefined;
  return { kind: 'guard', reason: m[1] as DropReason, inbound: m[2] !== undefined };
}

export interface Attributed {
  cls: LogClass;
  timeMs: number;
  /** Host port (bridge port or routed device) the packet came from, or went to for inbound drops. */
  port: string;
  vmId: string;
  tenantId: string;
  nic: string;
  packet: PacketSummary;
}

export type EventDraft = Omit<SecurityEvent, 'seq'>;

/** Severity and fields of the event one record (standing for `logged` records) makes. */
export function draft(a: Attributed, logged: number): EventDraft {
  const base = { vm_id: a.vmId, tenant_id: a.tenantId, nic: a.nic, port: a.port, packet: a.packet, logged, time: new Date(a.timeMs).toISOString() };
  if (a.cls.kind === 'host_deny') {
    // A VM talking to the host's own services (sshd, the API) or routing out with a foreign source.
    return { ...base, type: 'host_deny', severity: 'medium', reason: 'host_deny', count: logged };
  }
  const { reason, inbound } = a.cls;
  // Inbound drops (RAs sent to this VM beyond its rate) say nothing against the VM that receives them.
  return { ...base, type: 'guard_sample', severity: inbound ? 'low' : GUARD_SEVERITY[reason], reason: inbound ? `${reason}_in` : reason, count: 0 };
}

export interface GateOptions {
  perKeyIntervalMs: number;
  maxPerSecond: number;
  /** Tenants under enhanced monitoring (incident response). */
  enhanced: (tenantId: string) => boolean;
  /** Keys tracked at most (memory bound); records of new keys beyond it only count as dropped. */
  maxKeys?: number;
}

interface KeyState { lastMs: number; pending: number; last?: Attributed }

export class LogEventGate {
  private readonly keys = new Map<string, KeyState>();
  private tokens: number;
  private refillMs = 0;
  /** Records that made no event and were not carried (over the memory bound). */
  dropped = 0;

  constructor(private readonly opts: GateOptions) {
    this.tokens = opts.maxPerSecond;
  }

  /** One record: the event to record now, if any. */
  offer(a: Attributed, nowMs: number): EventDraft | undefined {
    const key = `${a.port}\0${a.cls.kind === 'guard' ? a.cls.reason + (a.cls.inbound ? '-in' : '') : 'host'}`;
    let k = this.keys.get(key);
    if (!k) {
      if (this.keys.size >= (this.opts.maxKeys ?? 10_000)) {
        this.dropped++;
        return undefined;
      }
      k = { lastMs: -Infinity, pending: 0 };
      this.keys.set(key, k);
    }
    const interval = this.opts.enhanced(a.tenantId) ? 0 : this.opts.perKeyIntervalMs;
    if (nowMs - k.lastMs >= interval && this.take(nowMs)) {
      const logged = k.pending + 1;
      k.lastMs = nowMs;
      k.pending = 0;
      k.last = undefined;
      return draft(a, logged);
    }
    k.pending++;
    k.last = a;
    return undefined;
  }

  /** Carried records whose interval is over become events; idle keys are forgotten. */
  flush(nowMs: number): EventDraft[] {
    const out: EventDraft[] = [];
    for (const [key, k] of this.keys) {
      if (k.pending > 0 && k.last) {
        const interval = this.opts.enhanced(k.last.tenantId) ? 0 : this.opts.perKeyIntervalMs;
        if (nowMs - k.lastMs >= interval && this.take(nowMs)) {
          out.push(draft(k.last, k.pending));
          k.lastMs = nowMs;
          k.pending = 0;
          k.last = undefined;
        }
      } else if (nowMs - k.lastMs > 2 * this.opts.perKeyIntervalMs + 1000) {
        this.keys.delete(key);
      }
    }
    return out;
  }

  private take(nowMs: number): boolean {
    const rate = this.opts.maxPerSecond;
    this.tokens = Math.min(rate, this.tokens + ((nowMs - this.refillMs) / 1000) * rate);
    this.refillMs = nowMs;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}
