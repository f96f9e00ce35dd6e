import type { VmRecord } from '../core/vm/record.js';
import { nftApply, nftList, type NftObject } from '../kernel/nft.js';
import type { Logger } from '../observability/logger.js';
import type { NetworkPlane } from '../network/plane.js';
import {
  COUNTER_SETS, mergeElements, portElementCommands, rateClassCommands, rateClasses, renderGuardTable, STATIC_SETS,
} from './guard-table.js';
import { renderHostTable, type HostTableInput } from './host-table.js';
import { portGuards, type GuardDefaults, type PortGuard, type RateKind } from './port-guard.js';
import { elementDiff, ruleCounts } from './kernel-view.js';

// The port guards and the host firewall on top of another plane
// (docs/decisions/0017). A VM's guards go in before its port is attached
// and come out after it is gone, as element updates in one `nft -f`
// transaction each. Start-up and the periodic reconcile compare the kernel
// with the desired tables: a missing or altered table is replaced whole, and
// elements are diffed (so a repair adds or deletes only what differs, and a
// check that finds nothing writes nothing).

export interface FirewallPlaneOptions {
  netns: string | undefined;
  guardTable: string;
  hostTable: string;
  defaults: GuardDefaults;
  /** nflog group of sampled guard drops. */
  guardLogGroup: number;
  /** Host table settings; undefined = no host table (ipv6 firewall integration off). */
  host: Omit<HostTableInput, 'table'> | undefined;
  /** Ports that may talk to VMs without being VM ports (shard uplinks). */
  trustedPorts?: () => readonly string[];
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
}

export interface FirewallStats {
  /** `nft -f` transactions written (a check that finds nothing writes none). */
  writes: number;
  fullApplies: number;
  elementUpdates: number;
  driftRepairs: number;
  checks: number;
}

export class FirewallPlane implements NetworkPlane {
  readonly stats: FirewallStats = { writes: 0, fullApplies: 0, elementUpdates: 0, driftRepairs: 0, checks: 0 };
  /** Guards in the kernel, by VM id, as last written. */
  private applied = new Map<string, PortGuard[]>();
  private isolated = new Set<string>();
  private classes = new Set<string>();
  private chain: Promise<unknown> = Promise.resolve();
  private structureOk = false;
  /** Every VM ensured and not removed: what a whole-table replace must carry. */
  private known = new Map<string, VmRecord>();

  constructor(private readonly inner: NetworkPlane, private readonly opts: FirewallPlaneOptions) {}

  get guardTable(): string {
    return this.opts.guardTable;
  }

  async ensureVm(vm: VmRecord): Promise<void> {
    // Guards first: the port is never attached without them.
    await this.serial(async () => {
      this.known.set(vm.id, vm);
      await this.ensureStructure([...this.known.values()]);
      const want = portGuards([vm], this.opts.defaults);
      const had = this.applied.get(vm.id);
      if (had && JSON.stringify(had) === JSON.stringify(want)) return;
      const lines = [
        ...(had ? had.flatMap((p) => portElementCommands(this.opts.guardTable, 'delete', p)) : []),
        ...this.classCommands(want),
        ...want.flatMap((p) => portElementCommands(this.opts.guardTable, 'add', p)),
      ];
      await this.write(lines);
      this.applied.set(vm.id, want);
      this.stats.elementUpdates++;
      await this.syncIsolation(vm);
    });
    await this.inner.ensureVm(vm);
  }

  async removeVm(vm: VmRecord): Promise<void> {
    await this.inner.removeVm(vm);
    await this.serial(async () => {
      this.known.delete(vm.id);
      const had = this.applied.get(vm.id);
      if (!had) return;
      const lines = had.flatMap((p) => portElementCommands(this.opts.guardTable, 'delete', p));
      if (this.isolated.has(vm.id)) lines.push(...isolationLines(this.opts.guardTable, 'delete', had));
      try {
        await this.write(lines);
      } catch (err) {
        // Someone removed some of them already: the next reconcile's diff finishes the job.
        this.structureOk = false;
        this.opts.log.warn({ vm_id: vm.id, err: String(err) }, 'removing port guards failed; repaired by the next reconcile');
      }
      this.applied.delete(vm.id);
      this.isolated.delete(vm.id);
    });
  }

  async applyIsolation(vm: VmRecord): Promise<void> {
    await this.serial(async () => {
      if (this.applied.has(vm.id)) this.applied.set(vm.id, portGuards([vm], this.opts.defaults));
      await this.syncIsolation(vm);
    });
    await this.inner.applyIsolation(vm);
  }

  async reconcile(vms: readonly VmRecord[]): Promise<void> {
    await this.serial(async () => {
      this.stats.checks++;
      this.known = new Map(vms.map((v) => [v.id, v]));
      this.structureOk = false;
      await this.ensureStructure(vms);
      await this.syncElements(vms);
    });
    await this.inner.reconcile(vms);
  }

  /**
   * Leaves the tables in place (like the VMs and radvd): a stopped metald
   * must not open the ports; the next one adopts them.
   */
  async release(): Promise<void> {
    const inner = this.inner as { release?: () => Promise<void> };
    if (inner.release) await inner.release();
  }

  /** The tables metald would load for these VMs (for `metald render`). */
  render(vms: readonly VmRecord[]): string {
    return renderTables(this.opts, vms, this.trusted());
  }

  private trusted(): readonly string[] {
    return this.opts.trustedPorts?.() ?? [];
  }

  private classCommands(ports: readonly PortGuard[]): string[] {
    const out: string[] = [];
    for (const [k, r] of rateClasses(ports, this.opts.defaults.rates)) {
      const key = `${k}/${r}`;
      if (this.classes.has(key)) continue;
      out.push(...rateClassCommands(this.opts.guardTable, k as RateKind, r));
      this.classes.add(key);
    }
    return out;
  }

  private async syncIsolation(vm: VmRecord): Promise<void> {
    const guards = this.applied.get(vm.id) ?? [];
    if (vm.isolated === this.isolated.has(vm.id) || guards.length === 0) return;
    await this.write(isolationLines(this.opts.guardTable, vm.isolated ? 'add' : 'delete', guards));
    if (vm.isolated) this.isolated.add(vm.id);
    else this.isolated.delete(vm.id);
  }

  /**
   * Tables present with the rules we render (compared rule count per chain
   * and the sets' declarations): otherwise replace them whole in one
   * transaction. Cheap (`nft -t`: no set contents), so it runs on every check.
   */
  private async ensureStructure(vms: readonly VmRecord[]): Promise<void> {
    if (this.structureOk) return;
    const want = this.render(vms);
    const [guardOk, hostOk] = await Promise.all([
      this.tableMatches('bridge', this.opts.guardTable, want),
      this.opts.host ? this.tableMatches('ip6', this.opts.hostTable, want) : Promise.resolve(true),
    ]);
    if (!guardOk || !hostOk) {
      const replace = [
        ...(guardOk ? [] : [`table bridge ${this.opts.guardTable} {}`, `delete table bridge ${this.opts.guardTable}`]),
        ...(hostOk || !this.opts.host ? [] : [`table ip6 ${this.opts.hostTable} {}`, `delete table ip6 ${this.opts.hostTable}`]),
      ].join('\n');
      const guard = guardOk ? '' : renderGuardTable(this.guardInput(vms));
      const host = hostOk || !this.opts.host ? '' : renderHostTable({ ...this.opts.host, table: this.opts.hostTable });
      await nftApply(this.opts.netns, `${replace}\n${guard}${host}`);
      this.stats.writes++;
      if (this.stats.fullApplies > 0) {
        this.stats.driftRepairs++;
        this.opts.log.warn({ guard_table: !guardOk, host_table: !hostOk }, 'nftables drift repaired: table replaced');
      }
      this.stats.fullApplies++;
      if (!guardOk) this.resetApplied(vms);
    }
    this.structureOk = true;
  }

  private async tableMatches(family: string, table: string, wantText: string): Promise<boolean> {
    let have: NftObject[];
    try {
      have = await nftList(this.opts.netns, ['table', family, table], { terse: true });
    } catch (err) {
      if (err instanceof Error && /No such file or directory/.test(err.message)) return false;
      throw err;
    }
    return sameCounts(ruleCounts(have), expectedCounts(family, table, wantText));
  }

  /** After a whole-table load everything rendered is in the kernel. */
  private resetApplied(vms: readonly VmRecord[]): void {
    this.applied = new Map(vms.map((v) => [v.id, portGuards([v], this.opts.defaults)]));
    this.isolated = new Set(vms.filter((v) => v.isolated).map((v) => v.id));
    this.classes = new Set(rateClasses([...this.applied.values()].flat(), this.opts.defaults.rates).map(([k, r]) => `${k}/${r}`));
  }

  /** Diff the static sets against the desired elements; write only the difference. */
  private async syncElements(vms: readonly VmRecord[]): Promise<void> {
    const ports = portGuards(vms, this.opts.defaults);
    const want = mergeElements(ports, this.trusted());
    want.set('isolated', vms.filter((v) => v.isolated).flatMap((v) => v.nics.map((n) => JSON.stringify(n.hostDevice))));
    const lines = [...this.classCommands(ports)];
    for (const s of STATIC_SETS) {
      const have = await nftList(this.opts.netns, [s.decl.includes(': verdict') ? 'map' : 'set', 'bridge', this.opts.guardTable, s.name]);
      const { add, remove } = elementDiff(have, want.get(s.name) ?? []);
      if (remove.length) lines.push(`delete element bridge ${this.opts.guardTable} ${s.name} { ${remove.join(', ')} }`);
      if (add.length) lines.push(`add element bridge ${this.opts.guardTable} ${s.name} { ${add.join(', ')} }`);
    }
    // Counter sets are only pre-filled (never trimmed here: a deleted VM's counters go with its delete).
    for (const s of COUNTER_SETS) {
      const els = want.get(s.name) ?? [];
      if (els.length) lines.push(`add element bridge ${this.opts.guardTable} ${s.name} { ${els.join(', ')} }`);
    }
    const changed = lines.some((l) => !l.startsWith(`add element bridge ${this.opts.guardTable} d_`) && !l.startsWith(`add element bridge ${this.opts.guardTable} c_`));
    if (changed) {
      await this.write(lines);
      this.stats.driftRepairs++;
      this.opts.log.warn({ lines: lines.length }, 'nftables drift repaired: elements');
    }
    this.resetApplied(vms);
  }

  private guardInput(vms: readonly VmRecord[]) {
    return { table: this.opts.guardTable, ports: portGuards(vms, this.opts.defaults), trustedPorts: this.trusted(), defaultRates: this.opts.defaults.rates, logGroup: this.opts.guardLogGroup };
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

function isolationLines(table: string, verb: 'add' | 'delete', guards: readonly PortGuard[]): string[] {
  return [`${verb} element bridge ${table} isolated { ${guards.map((p) => JSON.stringify(p.device)).join(', ')} }`];
}

export function renderTables(opts: Pick<FirewallPlaneOptions, 'guardTable' | 'hostTable' | 'defaults' | 'host' | 'guardLogGroup'>, vms: readonly VmRecord[], trusted: readonly string[] = []): string {
  const guard = renderGuardTable({
    table: opts.guardTable, ports: portGuards(vms, opts.defaults), trustedPorts: trusted, defaultRates: opts.defaults.rates, logGroup: opts.guardLogGroup,
  });
  return opts.host ? `${guard}${renderHostTable({ ...opts.host, table: opts.hostTable })}` : guard;
}

/** Rules per chain as rendered, from the rendered text of one table. */
function expectedCounts(family: string, table: string, text: string): Map<string, number> {
  const start = text.indexOf(`table ${family} ${table} {`);
  const counts = new Map<string, number>();
  if (start < 0) return counts;
  let chain: string | undefined;
  for (const line of text.slice(start).split('\n').slice(1)) {
    if (line === '}') break;
    const m = /^\tchain (\S+) \{$/.exec(line);
    if (m) {
      chain = m[1]!;
      counts.set(chain, 0);
    } else if (line === '\t}') chain = undefined;
    else if (chain && line.startsWith('\t\t') && !line.includes(' hook ')) counts.set(chain, counts.get(chain)! + 1);
  }
  return counts;
}

/** Every desired chain with its rules; extra chains only as rate classes left by deleted VMs. */
function sameCounts(have: Map<string, number>, want: Map<string, number>): boolean {
  for (const [k, v] of want) if (have.get(k) !== v) return false;
  for (const k of have.keys()) if (!want.has(k) && !k.startsWith('rl_')) return false;
  return true;
}
