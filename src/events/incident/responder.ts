import type { EventRing, SecurityEvent, SecurityEventType, Severity } from '../security-events.js';
import type { HookArgs, HookRunner } from './hook.js';

// Automatic incident response (the guide's "Security Event Response
// Procedures"): by the event's severity, critical -> isolate the VM (through
// the lifecycle manager, so it is durable, enforced in nftables and itself an
// event), high -> enhanced monitoring of the tenant for a while, medium ->
// a log line; then the operator's hook with SEVERITY EVENT_TYPE VM_ID
// TENANT_ID. Each action and each hook run happens at most once per cooldown
// for the same VM (or tenant, or API-side source), so an attack that makes
// ten events a second makes one response. Decision 0028.

export const ACTIONS = ['isolate', 'enhanced_monitoring', 'log', 'none'] as const;
export type Action = (typeof ACTIONS)[number];

/** What the responder reacts to: detections, never its own steps (isolation, monitoring) — no loops. */
export const RESPONDED_TYPES: readonly SecurityEventType[] = [
  'guard_drop', 'guard_sample', 'host_deny', 'attack_detected', 'auth_failure', 'policy_refused', 'drift_repaired',
];

export interface ResponderOptions {
  actions: Record<Severity, Action>;
  enhancedMs: number;
  cooldownMs: number;
  hook?: HookRunner;
  hookSeverities: readonly Severity[];
  /** Isolate through the lifecycle manager (as an administrator named "incident-response"). */
  isolate: (vmId: string, reason: string) => Promise<void>;
  ring: EventRing;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void; error(o: object, m?: string): void };
  now?: () => number;
}

export interface ResponderStats {
  isolations: number;
  isolationFailures: number;
  monitoringStarted: number;
  logged: number;
}

export class IncidentResponder {
  readonly stats: ResponderStats = { isolations: 0, isolationFailures: 0, monitoringStarted: 0, logged: 0 };
  private readonly enhancedUntil = new Map<string, number>();
  private readonly lastDone = new Map<string, number>();
  private readonly now: () => number;
  /** Settles when every response started so far is over (tests, shutdown). */
  idle: Promise<void> = Promise.resolve();
  private off: (() => void) | undefined;

  constructor(private readonly opts: ResponderOptions) {
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    this.off = this.opts.ring.onEvent((e) => this.onEvent(e));
  }

  stop(): void {
    this.off?.();
  }

  /** Is the tenant under enhanced monitoring (more nflog samples become events)? */
  isEnhanced(tenantId: string): boolean {
    if (tenantId === '') return false;
    const until = this.enhancedUntil.get(tenantId);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.enhancedUntil.delete(tenantId);
    return false;
  }

  /** Tenants under enhanced monitoring now. */
  enhancedTenants(): string[] {
    return [...this.enhancedUntil.keys()].filter((t) => this.isEnhanced(t));
  }

  onEvent(e: SecurityEvent): void {
    if (!RESPONDED_TYPES.includes(e.type)) return;
    const action = this.opts.actions[e.severity];
    const hook = this.opts.hook && this.opts.hookSeverities.includes(e.severity) && this.once(`hook ${e.severity} ${e.vm_id || e.tenant_id || e.type}`);
    const act = action !== 'none' && this.once(`${action} ${e.vm_id || e.tenant_id || e.type}`);
    if (!act && !hook) return;
    // Responses run one after another (the hook after the action, so the guide's script finds the VM isolated).
    this.idle = this.idle.then(async () => {
      if (act) await this.act(action, e);
      if (hook) await this.opts.hook!.run([e.severity, e.type, e.vm_id, e.tenant_id] satisfies HookArgs);
    });
  }

  /** True the first time `key` is seen within the cooldown. */
  private once(key: string): boolean {
    const t = this.now();
    if (t - (this.lastDone.get(key) ?? -Infinity) < this.opts.cooldownMs) return false;
    this.lastDone.set(key, t);
    if (this.lastDone.size > 10_000) {
      for (const [k, at] of this.lastDone) if (t - at >= this.opts.cooldownMs) this.lastDone.delete(k);
    }
    return true;
  }

  private async act(action: Action, e: SecurityEvent): Promise<void> {
    const what = { event_seq: e.seq, type: e.type, severity: e.severity, vm_id: e.vm_id, tenant_id: e.tenant_id, reason: e.reason };
    switch (action) {
      case 'isolate': {
        if (e.vm_id === '') return this.logIt(what, 'critical event without a VM: nothing to isolate');
        try {
          await this.opts.isolate(e.vm_id, `incident response: ${e.severity} ${e.type} (${e.reason}), event ${e.seq}`.slice(0, 1024));
          this.stats.isolations++;
        } catch (err) {
          this.stats.isolationFailures++;
          this.opts.log.error({ ...what, err: err instanceof Error ? err.message : String(err) }, 'incident response could not isolate the VM');
        }
        return;
      }
      case 'enhanced_monitoring': {
        if (e.tenant_id === '') return this.logIt(what, 'high event without a tenant: nothing to monitor more closely');
        const was = this.isEnhanced(e.tenant_id);
        const until = this.now() + this.opts.enhancedMs;
        this.enhancedUntil.set(e.tenant_id, until);
        if (was) return;
        this.stats.monitoringStarted++;
        this.opts.ring.add({
          type: 'monitoring_enhanced', severity: 'low', vm_id: e.vm_id, tenant_id: e.tenant_id, nic: '', port: '', reason: e.reason, count: 0,
          detail: `every logged drop of tenant ${e.tenant_id}'s VMs is an event until ${new Date(until).toISOString()} (after event ${e.seq})`,
        });
        return;
      }
      case 'log':
        return this.logIt(what, 'security incident');
      case 'none':
        return;
    }
  }

  private logIt(what: object, msg: string): void {
    this.stats.logged++;
    this.opts.log.warn({ ...what, security_incident: true }, msg);
  }
}
