import { hostname } from 'node:os';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Authenticator } from '../api/auth.js';
import type { PolicyAudit } from '../api/vm-service.js';
import type { MetaldConfig } from '../config/schema.js';
import { Escalation } from '../events/incident/escalation.js';
import { HookRunner } from '../events/incident/hook.js';
import { IncidentResponder } from '../events/incident/responder.js';
import { NflogReader } from '../events/nflog/nflog-reader.js';
import { PortDirectory } from '../events/nflog/port-directory.js';
import type { EventRing } from '../events/security-events.js';
import { pri, rfc5424, eventText } from '../events/syslog/format.js';
import { LocalSyslog } from '../events/syslog/local-syslog.js';
import { RemoteSyslog } from '../events/syslog/remote-syslog.js';
import { ipJson } from '../kernel/netns.js';
import type { VmManager } from '../lifecycle/manager.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/store.js';
import { guardTables } from '../observability/observability.js';
import { GUARD_LOG_GROUP, HOST_DENY_LOG_GROUP } from './firewall-from-config.js';

// The security operations side of the daemon, built from config: escalation
// to critical, the nflog reader, syslog (local socket and remote collector),
// incident response and its hook. Everything hangs off the event ring.

export interface SecurityOpsDeps {
  ring: EventRing;
  store: Store;
  manager: VmManager;
  auth: Authenticator;
  log: Logger;
  /** Where the API listens (the hook's curl and CLI reach it there). */
  api: { host: string; port: number };
}

const INCIDENT_ADMIN = { kind: 'admin', name: 'incident-response' } as const;

export class SecurityOps {
  /** One reader per group: a flood of host denies (group 1, not limited in the kernel) cannot crowd out guard samples. */
  readonly readers: NflogReader[] = [];
  readonly responder?: IncidentResponder;
  readonly hook?: HookRunner;
  readonly local?: LocalSyslog;
  readonly remote?: RemoteSyslog;
  private readonly offs: (() => void)[] = [];
  private readonly pruneTimer: NodeJS.Timeout;

  constructor(cfg: MetaldConfig, private readonly deps: SecurityOpsDeps) {
    const { ring, log } = deps;
    const se = cfg.security_events;
    const ir = cfg.incident_response;

    const escalation = new Escalation({ packets: se.escalation.packets, windowMs: se.escalation.window });
    this.offs.push(ring.onEvent((e) => {
      const d = escalation.observe(e, Date.now());
      // Added after the listeners of this event have run, never from inside them.
      if (d) queueMicrotask(() => ring.add(d));
    }));
    this.pruneTimer = setInterval(() => escalation.prune(Date.now()), 60_000).unref();

    if (ir.enabled) {
      if (ir.hook) {
        this.hook = new HookRunner({
          path: ir.hook, timeoutMs: ir.hook_timeout, perMinute: ir.hook_rate_limit, api: deps.api, log,
          credentials: ([, , vmId, tenantId]) => {
            // Only what the guide's script does (isolate the VM, look at it), only for that tenant, only while it runs.
            if (!deps.auth.enabled || tenantId === '' || vmId === '') return { revoke: () => {} };
            return deps.auth.grant({ kind: 'tenant', tenantId, name: 'incident-hook' }, ['IsolateVm', 'GetVmInfo'], ir.hook_timeout + 5000);
          },
        });
      }
      this.responder = new IncidentResponder({
        actions: ir.actions, enhancedMs: ir.enhanced_monitoring_duration, cooldownMs: ir.cooldown, hook: this.hook,
        hookSeverities: ir.hook_severities, ring, log,
        isolate: async (vmId, reason) => void (await deps.manager.isolate(INCIDENT_ADMIN, vmId, reason)),
      });
    }

    if (se.nflog.enabled && guardTables(cfg).length > 0) {
      const netns = cfg.dataplane.netns;
      const responder = this.responder;
      const directory = new PortDirectory({
        listVms: async () => (await deps.store.listVms({})).vms,
        listLinks: async () => new Map((await ipJson(netns, ['link', 'show'])).map((l) => [Number(l['ifindex']), String(l['ifname'])])),
      });
      for (const group of [GUARD_LOG_GROUP, HOST_DENY_LOG_GROUP]) {
        this.readers.push(new NflogReader({
          netns, groups: [group], ring, log, maxRecordsPerSecond: se.nflog.max_records_per_second, directory,
          gate: {
            perKeyIntervalMs: se.nflog.per_port_interval, maxPerSecond: se.nflog.max_events_per_second,
            enhanced: (t) => responder?.isEnhanced(t) ?? false,
          },
        }));
      }
    }

    if (cfg.ipv6.security.enable_security_logging) {
      const facility = cfg.ipv6.security.syslog_facility;
      const sl = se.syslog;
      if (sl.socket !== '') this.local = new LocalSyslog({ socket: sl.socket, format: sl.format, tag: 'metald', maxBuffered: sl.max_buffered, log });
      if (sl.remote) this.remote = new RemoteSyslog({ ...sl.remote.address, protocol: sl.remote.protocol, maxBuffered: sl.remote.max_buffered, log });
      const header = { facility, hostname: hostname(), appName: 'metald', procId: String(process.pid) };
      this.offs.push(ring.onEvent((e) => {
        this.local?.send(pri(facility, e.severity), eventText(e));
        this.remote?.send(rfc5424(e, header));
      }));
    }
  }

  /** CreateVm refusals of security settings become policy_refused events. */
  get audit(): PolicyAudit {
    return {
      policyRefused: (r) => this.deps.ring.add({
        type: 'policy_refused', severity: 'medium', vm_id: r.vmId, tenant_id: r.tenantId, nic: '', port: '', reason: r.field, count: 1,
        detail: `${r.principal.name}: ${r.message}`.slice(0, 1000),
      }),
    };
  }

  start(): void {
    this.responder?.start();
    for (const r of this.readers) r.start();
  }

  async stop(): Promise<void> {
    for (const off of this.offs) off();
    clearInterval(this.pruneTimer);
    for (const r of this.readers) r.stop();
    this.responder?.stop();
    // A response under way (an isolation, a hook run) may finish, but shutdown does not wait long for it.
    await Promise.race([this.responder?.idle, new Promise((r) => setTimeout(r, 5000).unref())]);
    this.local?.stop();
    this.remote?.stop();
  }

  /** Counters of what the pieces did, on the metrics registry. */
  registerMetrics(registry: Registry): void {
    const self = this;
    const r = [registry];
    new Counter({
      name: 'metald_syslog_messages_total', help: 'Security events handed to syslog, by sink and outcome (dropped: buffer full or send failed).',
      labelNames: ['sink', 'outcome'], registers: r,
      collect() {
        this.reset();
        for (const [sink, s] of [['local', self.local], ['remote', self.remote]] as const) {
          if (!s) continue;
          this.inc({ sink, outcome: 'sent' }, s.sent);
          this.inc({ sink, outcome: 'dropped' }, s.dropped);
        }
      },
    });
    new Counter({
      name: 'metald_nflog_records_total', help: 'Packets read from the nflog groups, by outcome (event: became or joined an event; dropped: over a bound).',
      labelNames: ['outcome'], registers: r,
      collect() {
        this.reset();
        for (const rd of self.readers) {
          const s = rd.stats;
          this.inc({ outcome: 'read' }, s.records);
          this.inc({ outcome: 'event' }, s.events);
          this.inc({ outcome: 'dropped' }, s.dropped);
        }
      },
    });
    new Counter({
      name: 'metald_incident_responses_total', help: 'Automatic incident responses and hook runs, by kind and outcome.',
      labelNames: ['kind', 'outcome'], registers: r,
      collect() {
        this.reset();
        const rs = self.responder?.stats;
        if (rs) {
          this.inc({ kind: 'isolate', outcome: 'ok' }, rs.isolations);
          this.inc({ kind: 'isolate', outcome: 'failed' }, rs.isolationFailures);
          this.inc({ kind: 'enhanced_monitoring', outcome: 'ok' }, rs.monitoringStarted);
          this.inc({ kind: 'log', outcome: 'ok' }, rs.logged);
        }
        const h = self.hook?.stats;
        if (h) {
          this.inc({ kind: 'hook', outcome: 'ok' }, h.runs - h.failures);
          this.inc({ kind: 'hook', outcome: 'failed' }, h.failures);
          this.inc({ kind: 'hook', outcome: 'skipped' }, h.skipped);
        }
      },
    });
    new Gauge({
      name: 'metald_enhanced_monitoring_tenants', help: 'Tenants under enhanced monitoring (incident response to high-severity events).', registers: r,
      collect() {
        this.set(self.responder?.enhancedTenants().length ?? 0);
      },
    });
  }
}
