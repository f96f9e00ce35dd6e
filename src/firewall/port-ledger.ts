import type { VmRecord } from '../core/vm/record.js';
import type { ElementMap } from './guard-elements.js';

// What the firewall plane last wrote for each VM: its guard-table elements, its host-table elements
// and the record revision they came from. A VM's next write is the difference against this (so its
// drop counters survive an isolation), and a pass between full checks rewrites only VMs whose
// revision moved.

const EMPTY: ElementMap = new Map();

export class PortLedger {
  private guard = new Map<string, ElementMap>();
  private host = new Map<string, ElementMap>();
  private revision = new Map<string, number>();

  guardOf(id: string): ElementMap {
    return this.guard.get(id) ?? EMPTY;
  }

  hostOf(id: string): ElementMap {
    return this.host.get(id) ?? EMPTY;
  }

  /** Whether anything of the VM is in the kernel by our hand. */
  has(id: string): boolean {
    return this.guard.has(id) || this.host.has(id);
  }

  /** The VM's record changed since we wrote it (or we never did). */
  stale(vm: VmRecord): boolean {
    return this.revision.get(vm.id) !== vm.revision;
  }

  record(vm: VmRecord, guard: ElementMap, host: ElementMap): void {
    this.guard.set(vm.id, guard);
    this.host.set(vm.id, host);
    this.revision.set(vm.id, vm.revision);
  }

  /** Drops the VM; returns what it had, undefined when nothing. */
  forget(id: string): { guard: ElementMap; host: ElementMap } | undefined {
    this.revision.delete(id);
    const had = this.has(id) ? { guard: this.guardOf(id), host: this.hostOf(id) } : undefined;
    this.guard.delete(id);
    this.host.delete(id);
    return had;
  }

  /** The host table was written whole (or diffed whole) for these VMs. */
  resetHost(vms: readonly VmRecord[], hostOf: (vm: VmRecord) => ElementMap): void {
    this.host = new Map(vms.map((v) => [v.id, hostOf(v)]));
  }

  /**
   * The guard table now holds these VMs' elements, written whole or diffed whole. A VM written
   * meanwhile (`keep`) keeps what its own write recorded: had that write failed, the next pass must
   * still see it unwritten and retry it (e.g. an isolation), not wait for the next full check.
   */
  resetGuard(vms: readonly VmRecord[], guardOf: (vm: VmRecord) => ElementMap, keep: (vm: VmRecord) => boolean = () => false): void {
    const [guard, revision] = [this.guard, this.revision];
    this.guard = new Map();
    this.revision = new Map();
    for (const v of vms) {
      const [g, r] = keep(v) ? [guard.get(v.id), revision.get(v.id)] : [guardOf(v), v.revision];
      if (g) this.guard.set(v.id, g);
      if (r !== undefined) this.revision.set(v.id, r);
    }
  }
}
