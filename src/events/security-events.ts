import type { DropReason } from '../firewall/guard-names.js';
import type { PacketSummary } from './nflog/pcap-nflog.js';

// PURE: security events and the bounded in-memory store they live in.
// Guard drops come from counter deltas (exact counts, one event per VM, NIC
// and reason per collection tick whatever the packet rate, so a flood cannot
// swamp the store) and, first, from the guards' nflog samples (guard_sample:
// within milliseconds, with the packet's addresses, no count of their own;
// decision 0028); host firewall denies from its nflog group; API-side events
// from the daemon (authentication failures, refused policies, isolation
// on/off, drift repaired); incident response's own steps.

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const EVENT_TYPES = [
  'guard_drop', 'guard_sample', 'host_deny', 'attack_detected', 'auth_failure', 'policy_refused',
  'vm_isolated', 'vm_unisolated', 'drift_repaired', 'monitoring_enhanced',
] as const;
export type SecurityEventType = (typeof EVENT_TYPES)[number];

export interface SecurityEvent {
  /** Increasing per metald process: the pagination cursor. */
  seq: number;
  /** ISO-8601. */
  time: string;
  type: SecurityEventType;
  severity: Severity;
  vm_id: string;
  tenant_id: string;
  /** NIC id ("eth0") and its host port. */
  nic: string;
  port: string;
  /** Guard drop reason (d_<reason>), or what the API side saw. */
  reason: string;
  /**
   * Packets this event adds to the tally: exact for guard_drop (kernel counters), logged packets for
   * host_deny, 0 for guard_sample (its packets are in a later guard_drop), 1 for API-side events.
   */
  count: number;
  /** nflog events: the last logged packet, and how many logged packets the event stands for. */
  packet?: PacketSummary;
  logged?: number;
  /** Free text: what was refused, repaired or done. */
  detail?: string;
}

/**
 * Attacks on other VMs or on the network (rogue RAs, spoofing, ND poisoning, rogue
 * DHCPv6) are high; header tricks and tagging are medium; floods held by the rate
 * limits and non-IPv6 frames (often a misconfigured guest) are low. Nothing is
 * critical by itself: escalation (isolation) is the incident-response step's call.
 */
export const GUARD_SEVERITY: Record<DropReason, Severity> = {
  ra_guard: 'high',
  source_guard: 'high',
  nd_spoof: 'high',
  dhcpv6_server: 'high',
  ext_header: 'medium',
  vlan_tag: 'medium',
  // A VM trying to reach another tenant or VLAN is probing; its own rule list or isolation is routine.
  tenant_isolation: 'medium',
  policy_deny: 'low',
  isolation: 'low',
  rate_limit: 'low',
  non_ipv6: 'low',
};

export interface EventQuery {
  vmId?: string;
  tenantId?: string;
  types?: readonly string[];
  severities?: readonly string[];
  /** Only events at or after this time (ms since the epoch). */
  sinceMs?: number;
  /** Only events with seq greater than this (the page token). */
  afterSeq?: number;
  limit: number;
}

/** The query's filters (not its limit): the page reads and the stream use the same test. */
export function matches(e: SecurityEvent, q: Omit<EventQuery, 'limit'>): boolean {
  if (q.afterSeq !== undefined && e.seq <= q.afterSeq) return false;
  if (q.vmId !== undefined && e.vm_id !== q.vmId) return false;
  if (q.tenantId !== undefined && e.tenant_id !== q.tenantId) return false;
  if (q.types && !q.types.includes(e.type)) return false;
  if (q.severities && !q.severities.includes(e.severity)) return false;
  if (q.sinceMs !== undefined && Date.parse(e.time) < q.sinceMs) return false;
  return true;
}

export interface EventPage {
  events: SecurityEvent[];
  /** seq of the last event returned when more may follow, else undefined. */
  next?: number;
}

/** A ring of at most `capacity` events, none older than `retentionMs`. */
export class EventRing {
  private readonly buf: (SecurityEvent | undefined)[];
  private start = 0;
  private length = 0;
  private seq = 0;
  private readonly listeners = new Set<(e: SecurityEvent) => void>();

  constructor(private readonly capacity: number, private readonly retentionMs: number, private readonly now: () => number = Date.now) {
    if (capacity < 1) throw new Error('event ring capacity must be at least 1');
    this.buf = new Array(capacity);
  }

  add(e: Omit<SecurityEvent, 'seq' | 'time'> & { time?: string }): SecurityEvent {
    const ev: SecurityEvent = { ...e, seq: ++this.seq, time: e.time ?? new Date(this.now()).toISOString() };
    if (this.length === this.capacity) {
      this.start = (this.start + 1) % this.capacity;
      this.length--;
    }
    this.buf[(this.start + this.length) % this.capacity] = ev;
    this.length++;
    for (const l of this.listeners) {
      try {
        l(ev);
      } catch {
        // A consumer's failure (a sink, a stream) must not stop recording nor the other consumers.
      }
    }
    return ev;
  }

  /** Called for every event added (metrics, later syslog and incident response). */
  onEvent(l: (e: SecurityEvent) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Drop events past retention (oldest first, so stop at the first young one). */
  expire(): void {
    const cutoff = this.now() - this.retentionMs;
    while (this.length > 0 && Date.parse(this.buf[this.start]!.time) < cutoff) {
      this.buf[this.start] = undefined;
      this.start = (this.start + 1) % this.capacity;
      this.length--;
    }
  }

  get size(): number {
    return this.length;
  }

  /** Oldest first. */
  query(q: EventQuery): EventPage {
    this.expire();
    const events: SecurityEvent[] = [];
    for (let i = 0; i < this.length; i++) {
      const e = this.buf[(this.start + i) % this.capacity]!;
      if (!matches(e, q)) continue;
      if (events.length === q.limit) return { events, next: events[events.length - 1]!.seq };
      events.push(e);
    }
    return { events };
  }
}
