import type { VmRecord } from '../core/vm/record.js';
import { GUARD_SEVERITY, type EventRing } from '../events/security-events.js';
import { DROP_REASONS, type DropReason } from '../firewall/guard-names.js';
import { MonotonicCounters } from './counters.js';
import { scanProcNetDev, type CounterSink, type LinkCounters } from './kernel-dumps.js';

// Reads the kernel's counters on a timer: the per-port drop counters of the
// guard tables (decision 0017) and the host ports' link statistics. Never one
// read per VM: one listing per counter set (all ports at once) and one
// /proc/net/dev read. Costs grow with the number of ports (bench/metrics:
// ~5 µs of CPU per set element at 10k, nft's JSON formatting most of it), so
// collection is tiered within a CPU budget (decision 0026), each tier spaced
// so that its measured CPU (metald's process and the nft session's, not wall
// time) stays within its share:
// - full: the 8 drop-counter sets, every port; every tick while it fits;
// - fast: only the sets of reasons whose counters moved in the last HOT_MS
//   (or that markHot flagged), while any is hot;
// - links: /proc/net/dev.

export interface GuardTableRef {
  family: 'bridge' | 'ip6';
  table: string;
}

/** What the collector reads through (NftSession; a fake kernel in tests). */
export interface CounterReader {
  readSet(family: GuardTableRef['family'], table: string, set: string, sink: CounterSink): Promise<void>;
  netDev(): Promise<string>;
  /** CPU time (ns) the reader's own process has used so far (the nft session), 0 without one. */
  cpuNs(): Promise<number>;
}

export interface CollectorOptions {
  session: CounterReader;
  tables: readonly GuardTableRef[];
  /** Every VM (store order). */
  listVms: () => Promise<readonly VmRecord[]>;
  events: EventRing;
  intervalMs: number;
  /**
   * Share of one core the reads' measured CPU may use (default 0.08, for a target of 10 %: ticks, the VM map and
   * garbage collected after a read are not measured): 80 % of it for drop counters (half of that for the fast tier
   * while a reason is hot), 20 % for link statistics.
   */
  budget?: number;
  log: { warn(o: object, m?: string): void };
  now?: () => number;
  /** CPU time (ns) collection has used so far; default metald's process (process.cpuUsage) + the nft session. */
  cpuNs?: () => Promise<number>;
}

export interface PortOwner {
  vmId: string;
  tenantId: string;
  nicId: string;
}

export const LINK_STATS = ['rxBytes', 'rxPackets', 'txBytes', 'txPackets'] as const satisfies readonly (keyof LinkCounters)[];
export type LinkStat = (typeof LINK_STATS)[number];

/** A reason whose counters moved is on the fast tier for this long (or for two fast-tier periods, if longer). */
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
  /** CPU (metald + nft) of the last full dump, and of all reads so far (ms). */
  lastFullCpuMs: number;
  cpuMs: number;
  /** Spacing of full dumps and link reads (ms) that the last one's CPU implies: the interval, or more when the budget stretches it. */
  fullEveryMs: number;
  linkEveryMs: number;
  /** How late ticks started against their schedule (ms): worst and total (mean = total / ticks). */
  maxLatenessMs: number;
  latenessSumMs: number;
}

interface Found {
  port: string;
  count: number;
}

export class CounterCollector {
  readonly drops = new Map<DropReason, MonotonicCounters>(DROP_REASONS.map((r) => [r, new MonotonicCounters()]));
  readonly links = new Map<LinkStat, MonotonicCounters>(LINK_STATS.map((s) => [s, new MonotonicCounters()]));
  readonly stats: TickStats = {
    ticks: 0, fullDumps: 0, fastDumps: 0, linkDumps: 0, failures: 0, lastFullMs: 0, lastLinkMs: 0, lastFullCpuMs: 0, cpuMs: 0,
    fullEveryMs: 0, linkEveryMs: 0, maxLatenessMs: 0, latenessSumMs: 0,
  };
  /** port -> owner, from the store. */
  owners = new Map<string, PortOwner>();
  vms: readonly VmRecord[] = [];

  /** When each reason's counters last moved (or markHot said so). */
  private readonly movedAt = new Map<DropReason, number>();
  /** Spacing of fast reads that the last one's CPU implies (ms): a reason stays hot for at least two of them. */
  private fastEveryMs = 0;
  /** CPU allowance of each tier (ms): accrues with time at the tier's share of the budget, never above 0; a read spends it. */
  private readonly credit = { full: 0, fast: 0, link: 0 };
  private lastTick: number | undefined;
  private vmsAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private warnedAt = -Infinity;
  private readonly now: () => number;
  private readonly cpuNs: () => Promise<number>;
  private readonly budget: number;

  constructor(private readonly opts: CollectorOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.cpuNs = opts.cpuNs ?? (async () => {
      const u = process.cpuUsage();
      return (u.user + u.system) * 1000 + (await opts.session.cpuNs());
    });
    this.budget = opts.budget ?? 0.08;
    this.stats.fullEveryMs = this.stats.linkEveryMs = opts.intervalMs;
  }

  start(): void {
    this.stopped = false;
    let due = this.now();
    const loop = async () => {
      const late = Math.max(0, this.now() - due);
      this.stats.maxLatenessMs = Math.max(this.stats.maxLatenessMs, late);
      this.stats.latenessSumMs += late;
      this.running = this.tick().catch((err) => {
        this.stats.failures++;
        this.warn({ err: String(err) }, 'metrics collection tick failed');
      });
      await this.running;
      if (this.stopped) return;
      due += this.opts.intervalMs;
      // Behind schedule (a slow tick): start again now rather than queue up missed ticks.
      if (due < this.now()) due = this.now();
      this.timer = setTimeout(loop, due - this.now()).unref();
    };
    this.timer = setTimeout(loop, 0).unref();
  }

  /** Stops the timer; resolves once a tick in progress has finished (its reads would restart a closed session). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** A drop seen elsewhere (e.g. an nflog sample): its reason is read on the fast tier from now on. */
  markHot(reason: DropReason): void {
    this.movedAt.set(reason, this.now());
  }

  /** One collection pass (the timer calls it; tests and the bench may too). */
  async tick(): Promise<void> {
    const t = this.now();
    this.stats.ticks++;
    if (t - this.vmsAt >= VM_REFRESH_MS) await this.refreshVms(t);
    // Hot long enough for the fast tier to read the reason again (at 10k ports that can take more than 2 s).
    const hotMs = Math.max(HOT_MS, 2 * this.fastEveryMs);
    const hot = DROP_REASONS.filter((r) => (this.movedAt.get(r) ?? -Infinity) + hotMs > t);
    // Shares of the budget: 20 % links, 80 % drop counters (half of it for the fast tier while a reason is hot).
    // The fast tier's allowance also accrues while nothing is hot, but only to pay off its last reads: a new
    // attack is read at once. A tier reads when it owes nothing, then owes the read's measured CPU, so over
    // any stretch of time collection spends at most its budget (plus one read).
    const share = { full: hot.length > 0 ? 0.4 : 0.8, fast: 0.4, link: 0.2 };
    const dt = this.lastTick === undefined ? 0 : t - this.lastTick;
    this.lastTick = t;
    for (const k of ['full', 'fast', 'link'] as const) this.credit[k] = Math.min(0, this.credit[k] + dt * this.budget * share[k]);
    const every = (cpuMs: number, s: number) => Math.max(this.opts.intervalMs, cpuMs / (this.budget * s));
    if (this.credit.full >= 0) {
      const { wallMs, cpuMs } = await this.measured(() => this.readDrops(DROP_REASONS));
      this.credit.full -= cpuMs;
      this.stats.fullDumps++;
      this.stats.lastFullMs = wallMs;
      this.stats.lastFullCpuMs = cpuMs;
      this.stats.fullEveryMs = every(cpuMs, share.full);
    } else if (hot.length > 0 && this.credit.fast >= 0) {
      const { cpuMs } = await this.measured(() => this.readDrops(hot));
      this.credit.fast -= cpuMs;
      this.stats.fastDumps++;
      this.fastEveryMs = every(cpuMs, share.fast);
    }
    if (this.credit.link >= 0) {
      const { wallMs, cpuMs } = await this.measured(() => this.readLinks());
      this.credit.link -= cpuMs;
      this.stats.linkDumps++;
      this.stats.lastLinkMs = wallMs;
      this.stats.linkEveryMs = every(cpuMs, share.link);
    }
  }

  /** Wall time and CPU of a read: nft's work plus the parsing here. */
  private async measured(f: () => Promise<void>): Promise<{ wallMs: number; cpuMs: number }> {
    const c0 = await this.cpuNs();
    const t0 = this.now();
    await f();
    const wallMs = this.now() - t0;
    // Never negative (the nft session restarted and its counter with it): a restart gives no credit.
    const cpuMs = Math.max(0, ((await this.cpuNs()) - c0) / 1e6);
    this.stats.cpuMs += cpuMs;
    return { wallMs, cpuMs };
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

  /** A sink that feeds one table's listing into the reason's counters; moved ports go to `found`. */
  private sink(counters: MonotonicCounters, found: Found[]): CounterSink {
    // The set's handle is the epoch: a replaced table (new handle) restarted every counter in it.
    let epoch = 0;
    return {
      handle: (h) => {
        epoch = h;
      },
      element: (port, raw) => {
        const count = counters.observe(port, raw, epoch);
        if (count > 0) found.push({ port, count });
      },
    };
  }

  /** Whole counter sets: every port of each reason, in every guard table. */
  private async readDrops(reasons: readonly DropReason[]): Promise<void> {
    for (const reason of reasons) {
      const counters = this.drops.get(reason)!;
      const found: Found[] = [];
      let missing = false;
      counters.begin();
      for (const { family, table } of this.opts.tables) {
        try {
          await this.opts.session.readSet(family, table, `d_${reason}`, this.sink(counters, found));
        } catch (err) {
          // Table not there (yet, or being replaced by a drift repair): keep the last values.
          missing = true;
          this.warn({ table, reason, err: String(err) }, 'drop counters unreadable this tick');
        }
      }
      if (!missing) counters.end();
      await this.report(reason, found);
    }
  }

  /** Moved counters: the reason becomes hot, and each port's delta is an event. */
  private async report(reason: DropReason, found: readonly Found[]): Promise<void> {
    if (found.length === 0) return;
    this.movedAt.set(reason, this.now());
    // A port created since the last refresh: learn its VM before attributing the event.
    if (found.some((f) => !this.owners.has(f.port))) await this.refreshVms(this.now());
    for (const f of found) {
      const o = this.owners.get(f.port);
      this.opts.events.add({
        type: 'guard_drop', severity: GUARD_SEVERITY[reason], vm_id: o?.vmId ?? '', tenant_id: o?.tenantId ?? '',
        nic: o?.nicId ?? '', port: f.port, reason, count: f.count,
      });
    }
  }

  private async readLinks(): Promise<void> {
    const text = await this.opts.session.netDev();
    const [rxB, rxP, txB, txP] = LINK_STATS.map((s) => this.links.get(s)!);
    for (const c of [rxB, rxP, txB, txP]) c!.begin();
    // Only VM ports: bridges, uplinks and peers would grow the label set for nothing.
    scanProcNetDev(text, (dev) => this.owners.has(dev), (dev, rxBytes, rxPackets, txBytes, txPackets) => {
      rxB!.observe(dev, rxBytes);
      rxP!.observe(dev, rxPackets);
      txB!.observe(dev, txBytes);
      txP!.observe(dev, txPackets);
    });
    for (const c of [rxB, rxP, txB, txP]) c!.end();
  }
}
