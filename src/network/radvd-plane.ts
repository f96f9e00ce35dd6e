import type { VmRecord } from '../core/vm/record.js';
import type { NetworkPlane } from './plane.js';
import { radvdInput, type RadvdBridge, type RadvdOptions } from './radvd/input.js';
import { radvdInputIsEmpty, renderRadvdConf } from './radvd/render.js';
import type { RadvdLogger, RadvdSupervisor } from './radvd/supervisor.js';

/**
 * Router advertisements on top of another plane: after every change the
 * desired radvd.conf is rendered from the bridges and all VMs, and the
 * supervisor writes/reloads it only when the text changed. A radvd failure
 * is logged, never fails the VM: the periodic reconcile tries again.
 */
export class RadvdPlane implements NetworkPlane {
  private vms = new Map<string, VmRecord>();

  constructor(
    private readonly inner: NetworkPlane,
    private readonly supervisor: RadvdSupervisor,
    private readonly bridges: readonly RadvdBridge[],
    private readonly options: RadvdOptions,
    private readonly log: RadvdLogger,
  ) {}

  async ensureVm(vm: VmRecord): Promise<void> {
    await this.inner.ensureVm(vm);
    this.vms.set(vm.id, vm);
    await this.sync();
  }

  async removeVm(vm: VmRecord): Promise<void> {
    await this.inner.removeVm(vm);
    this.vms.delete(vm.id);
    await this.sync();
  }

  applyIsolation(vm: VmRecord): Promise<void> {
    return this.inner.applyIsolation(vm);
  }

  async reconcile(vms: readonly VmRecord[]): Promise<void> {
    await this.inner.reconcile(vms);
    this.vms = new Map(vms.map((v) => [v.id, v]));
    await this.sync();
  }

  /** Leaves radvd running (like the VMs) for the next metald to adopt. */
  release(): Promise<void> {
    return this.supervisor.release();
  }

  private async sync(): Promise<void> {
    const input = radvdInput(this.bridges, [...this.vms.values()], this.options);
    try {
      if (radvdInputIsEmpty(input)) await this.supervisor.stop();
      else await this.supervisor.apply(renderRadvdConf(input));
    } catch (err) {
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'radvd update failed; retried at the next reconcile');
    }
  }
}
