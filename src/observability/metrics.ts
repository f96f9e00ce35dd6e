import http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { VmRecord } from '../core/vm/record.js';
import { VM_STATES } from '../core/vm/record.js';
import type { Ipam } from '../core/ipam/allocator.js';
import type { EventRing } from '../events/security-events.js';
import type { DropReason } from '../firewall/guard-names.js';
import { DROP_REASONS } from '../firewall/guard-names.js';
import type { CounterCollector, LinkStat } from './collector.js';
import type { MonotonicCounters } from './counters.js';

// The Prometheus registry and its own listener (`metrics_address`). Kernel
// counters are exposed by collect functions that read the collector's last
// dump at scrape time, never by counters metald increments itself, so a
// metric cannot drift from the kernel. Per-VM labels (vm_id, tenant_id) only
// while the number of VMs is at most `perVmLabelLimit` (bounded cardinality);
// above it the same metrics carry no per-VM labels and are summed.

/** The guide's four per-guard metrics and the counter set each reads. */
export const GUARD_METRICS: readonly [name: string, reason: DropReason, help: string][] = [
  ['metald_ipv6_ra_guard_blocks_total', 'ra_guard', 'Router advertisements dropped by RA guard (kernel counter d_ra_guard).'],
  ['metald_ipv6_source_guard_violations_total', 'source_guard', 'Packets dropped for a spoofed source MAC or address (kernel counter d_source_guard).'],
  ['metald_ipv6_extension_header_blocks_total', 'ext_header', 'Packets dropped for a blocked extension header (kernel counter d_ext_header).'],
  ['metald_ipv6_rate_limit_exceeded_total', 'rate_limit', 'Packets dropped by a per-port rate limit (kernel counter d_rate_limit).'],
];

export interface MetricsSources {
  collector: CounterCollector | undefined;
  ipam: () => Ipam | undefined;
  events: EventRing;
  /** Largest VM count at which per-VM labels are used; 0 = never. */
  perVmLabelLimit: number;
  /** nftables write statistics of the firewall plane, when there is one. */
  firewall?: () => { writes: number; fullApplies: number; driftRepairs: number } | undefined;
}

type Labels = Record<string, string>;

export class Metrics {
  readonly registry = new Registry();
  readonly rpcDuration: Histogram<'method' | 'code'>;
  private server?: http.Server;

  constructor(private readonly src: MetricsSources) {
    const r = [this.registry];
    const c = src.collector;
    const self = this;
    for (const [name, reason, help] of GUARD_METRICS) {
      new Counter({
        name, help, labelNames: ['vm_id', 'tenant_id'], registers: r,
        collect() {
          this.reset();
          if (c) self.perVm(c.drops.get(reason)!, {}, (l, v) => this.inc(l, v));
        },
      });
    }
    new Counter({
      name: 'metald_network_security_events_total',
      help: 'Packets dropped by the port guards, by reason (sum of the kernel counters d_<reason>).',
      labelNames: ['reason', 'vm_id', 'tenant_id'], registers: r,
      collect() {
        this.reset();
        if (c) for (const reason of DROP_REASONS) self.perVm(c.drops.get(reason)!, { reason }, (l, v) => this.inc(l, v));
      },
    });
    for (const [unit, rx, tx] of [['bytes', 'rxBytes', 'txBytes'], ['packets', 'rxPackets', 'txPackets']] as const) {
      new Counter({
        name: `metald_vm_network_${unit}_total`,
        help: `${unit} through VM NICs (link statistics of the host ports); direction is the VM's: tx = sent by the VM.`,
        labelNames: ['direction', 'vm_id', 'tenant_id'], registers: r,
        collect() {
          this.reset();
          if (!c) return;
          // The host port receives what the VM sends.
          const dirs: [string, LinkStat][] = [['tx', rx], ['rx', tx]];
          for (const [direction, stat] of dirs) self.perVm(c.links.get(stat)!, { direction }, (l, v) => this.inc(l, v));
        },
      });
    }
    new Gauge({
      name: 'metald_vms', help: 'VMs by state.', labelNames: ['state'], registers: r,
      collect() {
        this.reset();
        const n = new Map<string, number>(VM_STATES.map((s) => [s, 0]));
        for (const vm of c?.vms ?? []) n.set(vm.state, (n.get(vm.state) ?? 0) + 1);
        for (const [state, v] of n) this.set({ state }, v);
      },
    });
    const pool = (name: string, help: string, pick: (s: ReturnType<Ipam['stats']>) => number) => new Gauge({
      name, help, labelNames: ['pool'], registers: r,
      collect() {
        this.reset();
        const ipam = src.ipam();
        if (!ipam) return;
        const now = new Date();
        for (const p of ipam.pools()) this.set({ pool: p.id }, pick(ipam.stats(p.id, now)));
      },
    });
    pool('metald_ip_pool_size', 'Pool size (/128 addresses in address mode, /64 prefixes in prefix mode).', (s) => Number(s.size));
    pool('metald_ip_pool_used', 'Pool units in use (same units as metald_ip_pool_size).', (s) => Number(s.used));
    pool('metald_ip_pool_utilisation', 'used / size, 0..1.', (s) => s.utilisation);
    this.rpcDuration = new Histogram({
      name: 'metald_rpc_duration_seconds', help: 'RPC latency by method and Connect code.', labelNames: ['method', 'code'], registers: r,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    });
    const recorded = new Counter({
      name: 'metald_security_events_recorded_total', help: 'Security events recorded (guard drops once per VM, NIC, reason and tick; API-side events).',
      labelNames: ['type', 'severity'], registers: r,
    });
    src.events.onEvent((e) => recorded.inc({ type: e.type, severity: e.severity }));
    this.collectorMetrics(c);
    const fw = (name: string, help: string, pick: (s: { writes: number; fullApplies: number; driftRepairs: number }) => number) => new Counter({
      name, help, registers: r,
      collect() {
        this.reset();
        const s = src.firewall?.();
        if (s) this.inc(pick(s));
      },
    });
    fw('metald_nft_writes_total', 'nft -f transactions written by the firewall plane.', (s) => s.writes);
    fw('metald_nft_full_applies_total', 'Whole-table loads (start-up and drift repairs).', (s) => s.fullApplies);
    fw('metald_nft_drift_repairs_total', 'nftables drift repaired (tables replaced or elements rewritten).', (s) => s.driftRepairs);
  }

  /** The RpcObserver hook. */
  observeRpc(method: string, code: string, seconds: number): void {
    this.rpcDuration.observe({ method, code }, seconds);
  }

  /** Per-VM series (sum over the VM's ports) below the limit, else one series without VM labels. */
  private perVm(counters: MonotonicCounters, base: Labels, emit: (l: Labels, v: number) => void): void {
    const c = this.src.collector!;
    if (!usePerVmLabels(c.vms.length, this.src.perVmLabelLimit)) {
      emit(base, counters.sum());
      return;
    }
    const byVm = new Map<string, { tenant: string; v: number }>();
    for (const vm of c.vms as VmRecord[]) byVm.set(vm.id, { tenant: vm.tenantId, v: 0 });
    for (const port of counters.keys()) {
      const o = c.owners.get(port);
      const e = o && byVm.get(o.vmId);
      if (e) e.v += counters.total(port);
    }
    for (const [vmId, e] of byVm) emit({ ...base, vm_id: vmId, tenant_id: e.tenant }, e.v);
  }

  private collectorMetrics(c: CounterCollector | undefined): void {
    const r = [this.registry];
    new Counter({
      name: 'metald_metrics_dumps_total', help: 'Kernel counter dumps by kind (full: every drop counter set; fast: sets whose counters moved; link: link statistics).',
      labelNames: ['kind'], registers: r,
      collect() {
        this.reset();
        if (!c) return;
        this.inc({ kind: 'full' }, c.stats.fullDumps);
        this.inc({ kind: 'fast' }, c.stats.fastDumps);
        this.inc({ kind: 'link' }, c.stats.linkDumps);
      },
    });
    new Counter({
      name: 'metald_metrics_collection_failures_total', help: 'Collection ticks that failed.', registers: r,
      collect() {
        this.reset();
        if (c) this.inc(c.stats.failures);
      },
    });
    new Counter({
      name: 'metald_metrics_collection_cpu_seconds_total', help: 'CPU the counter reads used (metald and its nft session), what the collector budgets (8 % of a core).', registers: r,
      collect() {
        this.reset();
        if (c) this.inc(c.stats.cpuMs / 1000);
      },
    });
    new Gauge({
      name: 'metald_metrics_dump_period_seconds', help: 'Current spacing of full drop-counter dumps and link reads (the interval, or longer when the CPU budget stretches it).',
      labelNames: ['kind'], registers: r,
      collect() {
        this.reset();
        if (!c) return;
        this.set({ kind: 'full' }, c.stats.fullEveryMs / 1000);
        this.set({ kind: 'link' }, c.stats.linkEveryMs / 1000);
      },
    });
    new Gauge({
      name: 'metald_metrics_dump_duration_seconds', help: 'Wall time of the last full drop-counter dump and link read.', labelNames: ['kind'], registers: r,
      collect() {
        this.reset();
        if (!c) return;
        this.set({ kind: 'full' }, c.stats.lastFullMs / 1000);
        this.set({ kind: 'link' }, c.stats.lastLinkMs / 1000);
      },
    });
  }

  /** Serve GET /metrics on its own listener. */
  async listen(address: string): Promise<{ host: string; port: number }> {
    const { host, port } = parseHostPort(address);
    this.server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    const a = this.server.address() as { address: string; port: number };
    return { host: a.address, port: a.port };
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

/** Per-VM labels at or below the limit (0 turns them off). */
export function usePerVmLabels(vmCount: number, limit: number): boolean {
  return limit > 0 && vmCount <= limit;
}

/** "127.0.0.1:9464" / "[::1]:9464" (the config has validated the form). */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`metrics_address ${JSON.stringify(s)} is not host:port`);
  return { host: m[1]!, port: Number(m[2]) };
}
