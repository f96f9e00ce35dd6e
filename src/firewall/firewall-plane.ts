import type { VmRecord } from '../core/vm/record.js';
import { nftApply, type NftObject } from '../kernel/nft.js';
import type { Logger } from '../observability/logger.js';
import type { NetworkPlane } from '../network/plane.js';
import { elementDelta, mergeElements, type ElementMap } from './guard-elements.js';
import { COUNTER_SETS, policyClasses, renderGuardTable, STATIC_SETS, type GuardFamily } from './guard-table.js';
import { TenantIndex } from './tenant-index.js';
import { ClassBook } from './class-book.js';
import { renderTables } from './render-tables.js';
import { CLASS_VMAP } from '../core/policy/plan.js';
import { PORT_ZONE_MAP } from '../core/policy/compile.js';
import { TENANT_OF_MARK } from '../core/policy/zones.js';
import { renderHostTable, type HostTableInput } from './host-table.js';
import { declaredNames, expectedCounts, guardTableMatches, mapEntries, rateClassRemoval, ruleCounts, sameCounts, syncLines, unusedClasses } from './kernel-view.js';
import { GuardReader, type SetKind } from './guard-reader.js';
import { PortLedger } from './port-ledger.js';
import { portGuards, type GuardDefaults, type PortGuard, type RateKind } from './port-guard.js';

// The port guards and the host firewall on top of another plane
// (docs/decisions/0017). A VM's guards go in before its port is attached
// and come out after it is gone, as element updates in one `nft -f`
// transaction each. Start-up and the periodic reconcile compare the kernel
// with the desired tables: a missing or altered table is replaced whole, and
// elements are diffed (so a repair adds or deletes only what differs, and a
// check that finds nothing writes nothing).

export interface FirewallPlaneOptions {
  netns: string | undefined;
  /** `bridge` guards bridged NICs, `ip6` routed ones (each plane only the NICs of its kind). Default bridge. */
  family?: GuardFamily;
  guardTable: string;
  hostTable: string;
  defaults: GuardDefaults;
  /** nflog group of sampled guard drops. */
  guardLogGroup: number;
  /** Host table settings; undefined = no host table. */
  host: Omit<HostTableInput, 'table'> | undefined;
  /** Ports that may talk to VMs without being VM ports (shard uplinks). */
  trustedPorts?: () => readonly string[];
  /** Tenant numbers shared with the other guard plane (decision 0027); default: this plane's own. */
  tenants?: TenantIndex;
  /** Compare set contents on every n-th reconcile (listing 50k-element sets costs seconds); default 6. */
  elementCheckEvery?: number;
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
}

export interface FirewallStats {
  /** `nft -f` transactions written (a check that finds nothing writes none). */
  writes: number;
  fullApplies: number;
  elementUpdates: number;
  driftRepairs: number;
  checks: number;
  /** Policy and rate classes removed because no VM used them any more. */
  classesRemoved: number;
}

export class FirewallPlane implements NetworkPlane {
  readonly stats: FirewallStats = { writes: 0, fullApplies: 0, elementUpdates: 0, driftRepairs: 0, checks: 0, classesRemoved: 0 };
  private readonly ledger = new PortLedger();
  private readonly classes: ClassBook;
  /** Whether class ids and tenant numbers were read back from a table we kept. */
  private adopted = false;
  private readonly tenants: TenantIndex;
  /** Every VM ensured and not removed: what a whole-table replace must carry. */
  private known = new Map<string, VmRecord>();
  private chain: Promise<unknown> = Promise.resolve();
  private structureOk = false;
  /** Ports written while a full check lists the sets (undefined when none is listing). */
  private touched: Set<string> | undefined;
  /** A full check is listing the sets: a reconcile meanwhile checks cheaply (its listing could predate the first one's repair). */
  private listing = false;

  private readonly family: GuardFamily;
  /** "<family> <table>" as nft commands name the guard table. */
  private readonly ref: string;
  private readonly read: GuardReader;

  constructor(private readonly inner: NetworkPlane, private readonly opts: FirewallPlaneOptions) {
    this.family = opts.family ?? 'bridge';
    this.ref = `${this.family} ${opts.guardTable}`;
    this.read = new GuardReader(opts.netns, this.family, opts.guardTable);
    this.classes = new ClassBook(this.ref, opts.defaults.rates);
    this.tenants = opts.tenants ?? new TenantIndex();
  }

  async ensureVm(vm: VmRecord): Promise<void> {
    // Guards first: the port is never attached without them.
    await this.serial(async () => {
      this.known.set(vm.id, vm);
      await this.ensureStructure(false);
      await this.writePort(vm);
    });
    await this.inner.ensureVm(vm);
  }

  async removeVm(vm: VmRecord): Promise<void> {
    await this.inner.removeVm(vm);
    await this.serial(async () => {
      this.known.delete(vm.id);
      this.touch(vm);
      const had = this.ledger.forget(vm.id);
      if (!had) return;
      try {
        await this.write([...elementDelta(this.ref, had.guard, new Map()), ...elementDelta(this.hostRef(), had.host, new Map())]);
      } catch (err) {
        // Someone removed some of them already: the next reconcile's diff finishes the job.
        this.opts.log.warn({ vm_id: vm.id, err: String(err) }, 'removing port guards failed; repaired by the next reconcile');
      }
    });
  }

  async applyIsolation(vm: VmRecord): Promise<void> {
    await this.serial(async () => {
      if (this.known.has(vm.id)) this.known.set(vm.id, vm);
      if (this.ledger.has(vm.id)) await this.writePort(vm);
    });
    await this.inner.applyIsolation(vm);
  }

  async reconcile(vms: readonly VmRecord[]): Promise<void> {
    const listSets = await this.serial(async () => {
      const every = this.opts.elementCheckEvery ?? 6;
      const fullCheck = this.stats.checks % every === 0 && !this.listing;
      this.stats.checks++;
      this.known = new Map(vms.map((v) => [v.id, v]));
      this.structureOk = false;
      this.tenants.retain(new Set(vms.map((v) => v.tenantId)));
      const replaced = await this.ensureStructure(fullCheck);
      if (!fullCheck) await this.writeChangedPorts();
      if (!fullCheck || replaced) return undefined;
      this.touched = new Set();
      this.listing = true;
      return this.elementSetNames();
    });
    if (listSets) {
      // Listing every set takes seconds at 10k VMs (nft prints ~450k elements): done outside the
      // lock, so a CreateVm meanwhile is not kept waiting; what it wrote is left out of the diff.
      let have: Map<string, NftObject[]> | undefined;
      try {
        have = await this.read.sets(listSets);
      } finally {
        await this.serial(async () => {
          const touched = this.touched;
          this.touched = undefined;
          this.listing = false;
          if (have) await this.syncElements(have, touched ?? new Set());
        });
      }
    }
    await this.inner.reconcile(vms);
  }

  /** Leaves the tables in place (like the VMs and radvd): a stopped metald must not open the ports. */
  async release(): Promise<void> {
    const inner = this.inner as { release?: () => Promise<void> };
    if (inner.release) await inner.release();
  }

  /** The tables this plane loads for these VMs. */
  render(vms: readonly VmRecord[]): string {
    return renderTables(this.opts, vms, this.trusted(), this.tenants, this.classes.ids);
  }

  private trusted(): readonly string[] {
    return this.opts.trustedPorts?.() ?? [];
  }

  private hostRef(): string {
    return `ip6 ${this.opts.hostTable}`;
  }

  /** Routed host devices are VM-facing interfaces of the host table (only for the plane that owns it). */
  private hostElements(vms: readonly VmRecord[]): ElementMap {
    if (!this.opts.host) return new Map();
    const devices = this.routedDevices(vms).map((d) => JSON.stringify(d));
    return devices.length ? new Map([['vm_bridges', devices]]) : new Map();
  }

  private routedDevices(vms: readonly VmRecord[]): string[] {
    return vms.flatMap((v) => v.nics.filter((n) => this.opts.defaults.bridges.get(n.bridge)?.routed).map((n) => n.hostDevice));
  }

  private guards(vms: Iterable<VmRecord>): PortGuard[] {
    const routed = this.family === 'ip6';
    return portGuards([...vms], this.opts.defaults, (t) => this.tenants.get(t)).filter((p) => p.routed === routed);
  }

  private portElements(vm: VmRecord): ElementMap {
    return mergeElements(this.guards([vm]), [], this.classes.ids);
  }

  /** One VM's elements: only what differs from what we wrote last (counters survive). */
  private async writePort(vm: VmRecord): Promise<void> {
    this.touch(vm);
    const lines = this.classes.missing(this.guards([vm]));
    const want = this.portElements(vm);
    const wantHost = this.hostElements([vm]);
    lines.push(
      ...elementDelta(this.ref, this.ledger.guardOf(vm.id), want),
      ...elementDelta(this.hostRef(), this.ledger.hostOf(vm.id), wantHost),
    );
    if (lines.length > 0) {
      await this.write(lines);
      this.stats.elementUpdates++;
    }
    this.ledger.record(vm, want, wantHost);
  }

  private touch(vm: VmRecord): void {
    if (this.touched) for (const n of vm.nics) this.touched.add(n.hostDevice);
  }

  /** Between full element checks: rewrite VMs whose record changed (e.g. isolation) since we wrote them. */
  private async writeChangedPorts(): Promise<void> {
    // Computing 50k VMs' elements costs ~2 s: only VMs whose record changed since we wrote them.
    for (const vm of this.known.values()) if (this.ledger.stale(vm)) await this.writePort(vm);
  }

  /**
   * Class ids and tenant numbers of a table we keep: read back once, so a
   * restarted metald names the same classes and marks the same tenants.
   */
  private async adoptState(vms: readonly VmRecord[]): Promise<void> {
    if (this.adopted) return;
    this.adopted = true;
    let vmap: NftObject[];
    let zones: NftObject[];
    try {
      [vmap, zones] = await Promise.all([this.read.elements(CLASS_VMAP, 'map'), this.read.elements(PORT_ZONE_MAP, 'map')]);
    } catch {
      return; // no table (or not ours yet): nothing to adopt, it is loaded whole
    }
    this.classes.adoptIds(vmap);
    const tenantOf = new Map(vms.flatMap((v) => v.nics.map((n) => [n.hostDevice, v.tenantId] as const)));
    for (const [port, mark] of mapEntries(zones)) {
      const tenant = typeof port === 'string' ? tenantOf.get(port) : undefined;
      if (tenant !== undefined && typeof mark === 'number') this.tenants.adopt(tenant, TENANT_OF_MARK(mark));
    }
  }

  /**
   * Both tables present with the chains and sets we render, and — on a full
   * check — the rules (rules per chain; a rate chain with one rule per class
   * set): otherwise replace them whole in one transaction. A full check lists
   * the table, which costs seconds at 50k VMs (nft fetches every set element),
   * so the every-pass check looks at chain and set names only (milliseconds).
   * Returns whether the guard table was replaced.
   */
  private async ensureStructure(full = true): Promise<boolean> {
    if (this.structureOk) return false;
    const vms = [...this.known.values()];
    // Chains, set names and rule counts do not depend on the VMs (rate classes are compared with the
    // kernel's own class sets): check against the table rendered without ports, which costs nothing at 50k.
    const text = renderTables(this.opts, [], this.trusted());
    // Before anything computes a port's elements: they name tenant numbers and class ids.
    await this.adoptState(vms);
    let guardOk: boolean;
    let hostOk: boolean;
    if (full) {
      const guard = await this.read.table();
      guardOk = guard !== undefined && this.guardMatches(guard, text);
      const host = this.opts.host ? await this.read.table('ip6', this.opts.hostTable) : [];
      hostOk = host !== undefined && (!this.opts.host || sameCounts(ruleCounts(host), expectedCounts('ip6', this.opts.hostTable, text)));
    } else {
      guardOk = await this.namesMatch(this.family, this.opts.guardTable, text);
      hostOk = !this.opts.host || (await this.namesMatch('ip6', this.opts.hostTable, text));
    }
    if (!guardOk) this.classes.resetIds(this.guards(vms));
    if (!guardOk || !hostOk) {
      const script = [
        ...(guardOk ? [] : [`table ${this.ref} {}`, `delete table ${this.ref}`, renderGuardTable(this.guardInput(vms))]),
        ...(hostOk || !this.opts.host ? [] : [`table ${this.hostRef()} {}`, `delete table ${this.hostRef()}`, renderHostTable({ ...this.opts.host, table: this.opts.hostTable, routedDevices: this.routedDevices(vms) })]),
      ].join('\n');
      await nftApply(this.opts.netns, `${script}\n`);
      this.stats.writes++;
      if (this.stats.fullApplies > 0) {
        this.stats.driftRepairs++;
        this.opts.log.warn({ guard_table: !guardOk, host_table: !hostOk }, 'nftables drift repaired: table replaced');
      }
      this.stats.fullApplies++;
    }
    if (!hostOk) this.ledger.resetHost(vms, (v) => this.hostElements([v]));
    if (!guardOk) {
      const ports = this.guards(vms);
      this.ledger.resetGuard(vms, (v) => this.portElements(v));
      this.classes.resetRates(ports);
    }
    this.structureOk = true;
    return !guardOk;
  }

  /** Every rendered chain and set of the table exists (no rules or elements listed: cheap at any size). */
  private async namesMatch(family: string, table: string, text: string): Promise<boolean> {
    const names = await this.read.names(family, table);
    const have = new Set([...names.chains.map((n) => `chain ${n}`), ...names.sets.map((n) => `set ${n}`)]);
    const want = declaredNames(family, table, text);
    // Rate classes the kernel lacks are added by the element pass, not by a replace.
    const ok = want.length > 0 && want.every((w) => have.has(w) || /^set (rlp|lim)_/.test(w));
    if (ok && table === this.opts.guardTable) this.classes.adoptRates(names.sets);
    return ok;
  }

  /** Fixed chains exactly as rendered; each rate chain has one rule per class set in the kernel. */
  private guardMatches(have: readonly NftObject[], text: string): boolean {
    // Policy classes are added as ports need them: known ones must have their rules, others may not be there.
    const bodies = new Map(policyClasses(this.guards(this.known.values())).map((c) => [c.chain, c.body.length]));
    if (!guardTableMatches(have, expectedCounts(this.family, this.opts.guardTable, text), bodies)) return false;
    this.classes.adoptRates(have.map((o) => (o['set'] as { name?: string } | undefined)?.name));
    return true;
  }

  /** The sets a full check compares, with their kind. */
  private elementSetNames(): { name: string; kind: SetKind }[] {
    return [...STATIC_SETS.map((d) => ({ name: d.name, kind: d.kind ?? 'set' })), ...this.classes.rateSetNames().map((name) => ({ name, kind: 'set' as const }))];
  }

  /**
   * Diff the listed sets against the desired elements; write only the difference. Elements naming a
   * port written since the listing (`touched`) are left out both ways: the listing is older than
   * that write, and the next full check compares them.
   */
  private async syncElements(listed: ReadonlyMap<string, NftObject[]>, touched: ReadonlySet<string>): Promise<void> {
    const vms = [...this.known.values()];
    const ports = this.guards(vms);
    // Policy classes no VM uses any more (its VMs deleted or their rules changed) go with this check:
    // VMs with rules of their own would otherwise leave a chain each behind.
    const inUse = new Set(policyClasses(ports).map((c) => c.chain));
    const lines = this.classes.missing(ports);
    // Forgotten only now that missing classes have their ids: no id is reused in the transaction that frees it.
    this.classes.forgetPolicy(inUse);
    const want = mergeElements(ports, this.trusted(), this.classes.ids);
    const quoted = [...touched].map((p) => `"${p}"`);
    const untouched = (el: string) => !quoted.some((q) => el.includes(q));
    for (const [name, have] of listed) lines.push(...syncLines(this.ref, name, have, want.get(name) ?? [], untouched));
    // The class dispatch: one element per class this plane knows; unused classes are removed apart.
    const vmap = await this.read.elements(CLASS_VMAP, 'map');
    const gc = unusedClasses(this.ref, vmap, await this.read.chains(), this.opts.guardTable, inUse);
    const rates = await this.unusedRateClasses(ports);
    lines.push(...syncLines(this.ref, CLASS_VMAP, vmap, this.classes.dispatch(gc.elements)));
    if (this.opts.host) {
      const have = await this.read.elements('vm_bridges', 'set', 'ip6', this.opts.hostTable);
      lines.push(...syncLines(this.hostRef(), 'vm_bridges', have, [...this.opts.host.vmBridges, ...this.routedDevices(vms)].map((d) => JSON.stringify(d))));
      this.ledger.resetHost(vms, (v) => this.hostElements([v]));
    }
    if (lines.length > 0) {
      // Counter sets are pre-filled again (an add of an existing element keeps its counter).
      for (const s of COUNTER_SETS) {
        const els = want.get(s.name) ?? [];
        if (els.length) lines.push(`add element ${this.ref} ${s.name} { ${els.join(', ')} }`);
      }
    }
    if (lines.length > 0 || gc.lines.length > 0 || rates.lines.length > 0) await this.write([...lines, ...gc.lines, ...rates.lines]);
    this.classes.forgetRates(rates.classes);
    if (lines.length > 0) {
      this.stats.driftRepairs++;
      this.opts.log.warn({ lines: lines.length }, 'nftables drift repaired: elements');
    }
    if (gc.chains + rates.classes.length > 0) {
      this.stats.classesRemoved += gc.chains + rates.classes.length;
      this.opts.log.info({ policy_classes: gc.chains, rate_classes: rates.classes.length }, 'unused classes removed');
    }
    this.ledger.resetGuard(vms, (v) => this.portElements(v), (v) => v.nics.some((n) => touched.has(n.hostDevice)));
  }

  /** Rate classes (besides the defaults) no port uses any more, and the commands that remove them. */
  private async unusedRateClasses(ports: readonly PortGuard[]): Promise<{ classes: [RateKind, number][]; lines: string[] }> {
    const classes = this.classes.unusedRates(ports);
    const lines: string[] = [];
    const chains = new Map<RateKind, NftObject[]>();
    for (const [kind, rate] of classes) {
      if (!chains.has(kind)) chains.set(kind, await this.read.chain(`rate_${kind}`));
      lines.push(...rateClassRemoval(this.ref, chains.get(kind)!, kind, rate));
    }
    return { classes, lines };
  }

  private guardInput(vms: readonly VmRecord[]) {
    return {
      family: this.family, table: this.opts.guardTable, ports: this.guards(vms), trustedPorts: this.trusted(), defaultRates: this.opts.defaults.rates, logGroup: this.opts.guardLogGroup, classIds: this.classes.ids,
    };
  }

  private async write(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await nftApply(this.opts.netns, `${lines.join('\n')}\n`);
    this.stats.writes++;
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.chain.then(f, f);
    this.chain = next.catch(() => {});
    return next;
  }
}
