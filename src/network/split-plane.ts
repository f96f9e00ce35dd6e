import type { VmRecord } from '../core/vm/record.js';
import type { NetworkPlane } from './plane.js';

/**
 * Bridged and routed attachments side by side (decision 0021): each plane sees
 * the VM with only the NICs of its kind, so neither logs the other's NICs as
 * unplumbed. Bridged first, as before.
 */
export class AttachmentSplitPlane implements NetworkPlane {
  private readonly routedNames: ReadonlySet<string>;

  constructor(private readonly bridged: NetworkPlane, private readonly routed: NetworkPlane, routedNames: readonly string[]) {
    this.routedNames = new Set(routedNames);
  }

  async ensureVm(vm: VmRecord): Promise<void> {
    await this.bridged.ensureVm(this.withNics(vm, false));
    await this.routed.ensureVm(this.withNics(vm, true));
  }

  async removeVm(vm: VmRecord): Promise<void> {
    await this.bridged.removeVm(this.withNics(vm, false));
    await this.routed.removeVm(this.withNics(vm, true));
  }

  async applyIsolation(vm: VmRecord): Promise<void> {
    await this.bridged.applyIsolation(this.withNics(vm, false));
    await this.routed.applyIsolation(this.withNics(vm, true));
  }

  async reconcile(vms: readonly VmRecord[]): Promise<void> {
    await this.bridged.reconcile(vms.map((v) => this.withNics(v, false)));
    await this.routed.reconcile(vms.map((v) => this.withNics(v, true)));
  }

  private withNics(vm: VmRecord, routed: boolean): VmRecord {
    return { ...vm, nics: vm.nics.filter((n) => this.routedNames.has(n.bridge) === routed) };
  }
}
