import { allBridges, type MetaldConfig } from '../config/schema.js';
import { tableNames } from '../daemon/firewall-from-config.js';
import type { EventRing } from '../events/security-events.js';
import { FirewallPlane } from '../firewall/firewall-plane.js';
import { DROP_REASONS, type DropReason } from '../firewall/guard-names.js';
import type { VmManager } from '../lifecycle/manager.js';
import type { NetworkPlane } from '../network/plane.js';
import type { Store } from '../store/store.js';
import { CounterCollector, type GuardTableRef } from './collector.js';
import type { Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { NftSession } from './nft-session.js';

// The metrics side of the daemon, built from config: the kernel counter
// collector (in the data-plane namespace), the registry and its listener.

export interface ObservabilityDeps {
  store: Store;
  manager: VmManager;
  network: NetworkPlane;
  events: EventRing;
  log: Logger;
}

/** Guard tables whose drop counters are read: the bridge table for bridged NICs, the ip6 one for routed NICs. */
export function guardTables(cfg: MetaldConfig): GuardTableRef[] {
  if (!cfg.ipv6.enabled || !cfg.ipv6.security.enable_firewall_integration) return [];
  const bridges = allBridges(cfg);
  const t = tableNames(cfg);
  return [
    ...(bridges.some((b) => b.mode === 'bridged') ? [{ family: 'bridge' as const, table: t.guardTable }] : []),
    ...(bridges.some((b) => b.mode === 'routed') ? [{ family: 'ip6' as const, table: t.routedTable }] : []),
  ];
}

export class Observability {
  readonly session: NftSession;
  readonly collector: CounterCollector;
  readonly metrics: Metrics;
  private readonly expiry: NodeJS.Timeout;

  constructor(private readonly cfg: MetaldConfig, private readonly deps: ObservabilityDeps) {
    this.session = new NftSession(cfg.dataplane.netns);
    this.collector = new CounterCollector({
      session: this.session,
      tables: guardTables(cfg),
      listVms: async () => (await deps.store.listVms({})).vms,
      events: deps.events,
      intervalMs: cfg.metrics_collection_interval,
      log: deps.log,
    });
    const network = deps.network;
    this.metrics = new Metrics({
      collector: this.collector,
      ipam: () => deps.manager.ipam,
      events: deps.events,
      perVmLabelLimit: cfg.metrics_per_vm_label_limit,
      firewall: () => (network instanceof FirewallPlane ? network.stats : undefined),
    });
    // An nflog sample (src/events/nflog) says at once which reason is dropping: its counter sets go on the
    // fast tier before a full dump (seconds apart at 10k ports) would have noticed (decision 0026).
    deps.events.onEvent((e) => {
      if (e.type === 'guard_sample' && (DROP_REASONS as readonly string[]).includes(e.reason)) this.collector.markHot(e.reason as DropReason);
    });
    // Retention also applies while nobody queries.
    this.expiry = setInterval(() => deps.events.expire(), 60_000).unref();
  }

  /** Starts collecting and serving; a metrics port that cannot be bound is logged, not fatal (the API matters more). */
  async start(): Promise<void> {
    this.collector.start();
    try {
      const addr = await this.metrics.listen(this.cfg.metrics_address);
      this.deps.log.info({ metrics_address: addr, interval_ms: this.cfg.metrics_collection_interval }, 'metrics serving');
    } catch (err) {
      this.deps.log.error({ metrics_address: this.cfg.metrics_address, err: String(err) }, 'metrics listener could not start; serving the API without metrics');
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.expiry);
    await this.collector.stop();
    this.session.close();
    await this.metrics.close();
  }
}
