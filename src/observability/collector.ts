import type { VmRecord } from '../core/vm/record.js';
import { GUARD_SEVERITY, type EventRing } from '../events/security-events.js';
import { DROP_REASONS, type DropReason } from '../firewall/guard-names.js';
import { MonotonicCounters } from './counters.js';
import { parseCounterSet, parseNftJson, parseProcNetDev, type LinkCounters } from './kernel-dumps.js';
import type { NftSession } from './nft-session.js';

// Reads the kernel's counters on a timer: the per-port drop counters of the
// guard tables (decision 0017) and the host ports' link statistics. Never one
// read per VM: one listing per counter set (all ports at once) and one
// /proc/net/dev read. Costs grow with the number of ports (measured by
// bench/metrics: ~4 µs per set element), so collection is tiered (decision
// 0026): the whole dump runs every tick while it costs at most `budget` of
// the interval, else as often as the budget allows; a reason whose counters
// moved stays on the fast tick for HOT_MS.

export interface GuardTableRef {
  family: 'bridge' | 'ip6';
  table: string;
}

export interface CollectorOptions {
  session: NftSession;
  tables: readonly GuardTableRef[];
  /** Every VM (store order). */
  listVms: () => Promise<readonly VmRecord[]>;
  events: EventRing;
  intervalMs: number;
  /**
   * Share of one core the reads' wall time may use (default 0.07): 80 % of it for drop counters (half of that for
   * the fast tier while a reason is hot), 20 % for link statistics. Real CPU runs ~1.4x the reads' wall time
   * (garbage collection, the VM map), so 0.07 keeps collection within 10 % of a core (bench/metrics).
   */
  budget?: number;
  log: { warn(o: object, m?: string): void };
  now?: () => number;
}

export interface PortOwner {
  vmId: string;
  tenantId: string;
  nicId: string;
}

export const LINK_STATS = ['rxBytes', 'rxPackets', 'txBytes', 'txPackets'] as const satisfies readonly (keyof LinkCounters)[];
export type LinkStat = (typeof LINK_STATS)[number];

/** A reason whose counters moved is read every tick for this long. */
export const HOT_MS = 2000;
/** The VM map is refreshed this often, and at once when a counter moves for a port it does not know. */
const VM_REFRESH_MS = 5000;

export interface TickStats {
  ticks: number;
  fullDumps: number;
  fastDumps: number;
  linkDumps: number;
  failures: number;
  /** Wall time of the last full counter dump and of the last link read (ms). */
  lastFullMs: number;
  lastLinkMs: number;
  /** Current spacing of full dumps and link reads (ms): the interval, or more when the budget stretches it. */
  fullEveryMs: number;
  linkEveryMs: number;
  /** How late ticks started against their schedule (ms): worst and total (mean = total / ticks). */
  maxLatenessMs: number;
  latenessSumMs: number;
}

export class CounterCollector {
  readonly drops = new Map<DropReason, MonotonicCounters>(DROP_REASONS.map((r) => [r, new MonotonicCounters()]));
  readonly links = new Map<LinkStat, MonotonicCounters>(LINK_STATS.map((s) => [s, new MonotonicCounters()]));
  readonly stats: TickStats = { ticks: 0, fullDumps: 0, fastDumps: 0, linkDumps: 0, failures: 0, lastFullMs: 0, lastLinkMs: 0, fullEveryMs: 0, linkEveryMs: 0, maxLatenessMs: 0, latenessSumMs: 0 };
  /** port -> owner, from the store. */
  owners = new Map<string, PortOwner>();
  vms: readonly VmRecord[] = [];

  private readonly handles = new Map<string, number>();
  private readonly hotUntil = new Map<DropReason, number>();
  private nextFull = 0;
  private nextFast = 0;
  private nextLink = 0;
  private vmsAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private warnedAt = -Infinity;
  private readonly now: () => number;
  private readonly budget: number;

  constructor(private readonly opts: CollectorOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.budget = opts.budget ?? 0.07;
    this.stats.fullEveryMs = this.stats.linkEveryMs = opts.intervalMs;
  }

  start(): void {
    this.stopped = false;
    let due = this.now();
    const loop = async () => {
      const late = Math.max(0, this.now() - due);
      this.stats.maxLatenessMs = Math.max(this.stats.maxLatenessMs, late);
      this.stats.latenessSumMs += late;
      await this.tick().catch((err) => {
        this.stats.failures++;
        this.warn({ err: String(err) }, 'metrics collection tick failed');
      });
      if (this.stopped) return;
      due += this.opts.intervalMs;
      // Behind schedule (a slow tick): start again now rather than queue up missed ticks.
      if (due < this.now()) due = this.now();
      this.timer = setTimeout(loop, due - this.now()).unref();
    };
    this.timer = setTimeout(loop, 0).unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One collection pass (the timer calls it; tests and the bench may too). */
  async tick(): Promise<void> {
    const t = this.now();
    this.stats.ticks++;
    if (t - this.vmsAt >= VM_REFRESH_MS) await this.refreshVms(t);
    // Each tier is spaced so that its measured cost stays within its share of the budget.
    const spacing = (ms: number, share: number) => Math.max(this.opts.intervalMs, ms / (this.budget * share));
    const hot = DROP_REASONS.filter((r) => (this.hotUntil.get(r) ?? -Infinity) > t);
    if (t >= this.nextFull) {
      const ms = await this.timed(() => this.readDrops(DROP_REASONS));
      this.stats.fullDumps++;
      this.stats.lastFullMs = ms;
      // While a reason is hot, half of the drop-counter share is the fast tier's.
      this.stats.fullEveryMs = spacing(ms, hot.length > 0 ? 0.4 : 0.8);
      this.nextFull = t + this.stats.fullEveryMs;
    } else if (hot.length > 0 && t >= this.nextFast) {
      const ms = await this.timed(() => this.readDrops(hot));
      this.stats.fastDumps++;
      this.nextFast = t + spacing(ms, 0.4);
    }
    if (t >= this.nextLink) {
      const ms = await this.timed(() => this.readLinks());
      this.stats.linkDumps++;
      this.stats.lastLinkMs = ms;
      this.stats.linkEveryMs = spacing(ms, 0.2);
      this.nextLink = t + this.stats.linkEveryMs;
    }
  }

  /** Wall time of a read: nft's work (CPU-bound) plus parsing here. */
  private async timed(f: () => Promise<void>): Promise<number> {
    const t0 = this.now();
    await f();
    return this.now() - t0;
  }

  /** At most one warning a minute: a tick fails the same way ten times a second. */
  private warn(o: object, msg: string): void {
    const t = this.now();
    if (t - this.warnedAt < 60_000) return;
    this.warnedAt = t;
    this.opts.log.warn({ ...o, failures: this.stats.failures }, msg);
  }

  private async refreshVms(t: number): Promise<void> {
    this.vms = await this.opts.listVms();
    const owners = new Map<string, PortOwner>();
    for (const vm of this.vms) for (const n of vm.nics) owners.set(n.hostDevice, { vmId: vm.id, tenantId: vm.tenantId, nicId: n.id });
    this.owners = owners;
    this.vmsAt = t;
  }

  private async readDrops(reasons: readonly DropReason[]): Promise<void> {
    for (const reason of reasons) {
      const merged = new Map<string, number>();
      let restarted = false;
      let missing = false;
      for (const { family, table } of this.opts.tables) {
        let text: string;
        try {
          text = await this.opts.session.listSet(family, table, `d_${reason}`);
        } catch (err) {
          // Table not there (yet, or being replaced by a drift repair): keep the last values.
          missing = true;
          this.warn({ table, reason, err: String(err) }, 'drop counters unreadable this tick');
          continue;
        }
        const set = parseCounterSet(parseNftJson(text));
        if (!set) continue;
        const key = `${family} ${table} ${reason}`;
        const h = this.handles.get(key);
        if (h !== undefined && h !== set.handle) restarted = true;
        this.handles.set(key, set.handle);
        for (const [port, n] of set.packets) merged.set(port, n);
      }
      if (missing) continue;
      const deltas = this.drops.get(reason)!.apply(merged, restarted);
      if (deltas.length > 0) this.hotUntil.set(reason, this.now() + HOT_MS);
      // A port created since the last refresh: learn its VM before attributing the event.
      if (deltas.some((d) => !this.owners.has(d.key))) await this.refreshVms(this.now());
      for (const d of deltas) {
        const o = this.owners.get(d.key);
        this.opts.events.add({
          type: 'guard_drop', severity: GUARD_SEVERITY[reason], vm_id: o?.vmId ?? '', tenant_id: o?.tenantId ?? '',
          nic: o?.nicId ?? '', port: d.key, reason, count: d.count,
        });
      }
    }
  }

  private async readLinks(): Promise<void> {
    const all = parseProcNetDev(await this.opts.session.netDev());
    // Only VM ports: bridges, uplinks and peers would grow the label set for nothing.
    const snaps = new Map<LinkStat, Map<string, number>>(LINK_STATS.map((s) => [s, new Map()]));
    for (const [dev, c] of all) {
      if (!this.owners.has(dev)) continue;
      for (const s of LINK_STATS) snaps.get(s)!.set(dev, c[s]);
    }
    for (const s of LINK_STATS) this.links.get(s)!.apply(snaps.get(s)!);
  }
}
