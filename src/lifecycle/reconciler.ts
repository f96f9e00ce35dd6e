import type { BackendStatus, VmBackend } from '../backends/backend.js';
import type { VmRecord, VmStateName } from '../core/vm/record.js';
import type { NetworkPlane } from '../network/plane.js';
import type { Mutation, Store } from '../store/store.js';
import type { Allocation } from '../core/ipam/types.js';
import type { Logger, VmManager } from './manager.js';

// Brings the backend's reality in line with the store. The store is the
// truth for what should exist; the backend is the truth for whether a guest
// is alive. Start-up and the periodic pass run the same code.

export interface ReconcileReport {
  checked: number;
  rolledBack: string[];
  deleted: string[];
  markedFailed: string[];
  orphansRemoved: string[];
  recreated: string[];
  /** Allocations held for VMs that no longer exist (should never happen: they commit together). */
  allocationsReleased: string[];
}

/** What a stored state should become given what the backend reports. */
export function decide(state: VmStateName, status: BackendStatus):
  | { action: 'none' }
  | { action: 'rollback' }
  | { action: 'finish-delete' }
  | { action: 'set'; state: VmStateName; reason?: string }
  | { action: 'recreate' } {
  switch (state) {
    case 'creating':
      // The caller never got an answer: undo, so no half-made VM remains.
      return { action: 'rollback' };
    case 'deleting':
      return { action: 'finish-delete' };
    case 'booting':
      if (status === 'running') return { action: 'set', state: 'running' };
      return { action: 'set', state: 'failed', reason: 'boot was interrupted (metald restarted)' };
    case 'shutting_down':
      // Reconcile only ever sees this state after metald died mid-shutdown
      // (API calls hold the VM's lock): finish it, forcing the guest off.
      return { action: 'set', state: 'shutdown' };
    case 'running':
    case 'paused':
      if (status === 'running') return state === 'running' ? { action: 'none' } : { action: 'set', state: 'running' };
      if (status === 'paused') return state === 'paused' ? { action: 'none' } : { action: 'set', state: 'paused' };
      return { action: 'set', state: 'failed', reason: status === 'absent' ? 'the VM\'s sandbox disappeared' : 'the guest process exited unexpectedly' };
    case 'created':
    case 'shutdown':
      return status === 'absent' ? { action: 'recreate' } : { action: 'none' };
    case 'failed':
      return { action: 'none' };
  }
}

export class Reconciler {
  constructor(
    private readonly store: Store,
    private readonly backend: VmBackend,
    private readonly network: NetworkPlane,
    private readonly manager: VmManager,
    private readonly log: Logger,
  ) {}

  async reconcileAll(): Promise<ReconcileReport> {
    const report: ReconcileReport = { checked: 0, rolledBack: [], deleted: [], markedFailed: [], orphansRemoved: [], recreated: [], allocationsReleased: [] };
    const { vms } = await this.store.listVms({});
    for (const stored of vms) {
      report.checked++;
      await this.manager.withLock(stored.id, async () => {
        // Re-read under the lock: an API call may have changed it meanwhile.
        const vm = await this.store.getVm(stored.id);
        if (!vm) return;
        try {
          await this.reconcileVm(vm, report);
        } catch (err) {
          // One VM that cannot be repaired must not stop the others (or start-up).
          const reason = `reconcile failed: ${err instanceof Error ? err.message : String(err)}`.slice(0, 2000);
          this.log.error({ vm_id: vm.id, tenant_id: vm.tenantId, err: reason }, 'reconcile of vm failed');
          const current = await this.store.getVm(vm.id);
          if (current && current.state !== 'failed' && current.state !== 'creating' && current.state !== 'deleting') {
            await this.manager.write(current, { state: 'failed', failureReason: reason }).catch(() => {});
            report.markedFailed.push(vm.id);
          }
        }
      });
    }
    const live = new Set((await this.store.listVms({})).vms.map((v) => v.id));
    for (const id of await this.backend.listResidues()) {
      if (live.has(id)) continue;
      await this.manager.withLock(id, async () => {
        if (await this.store.getVm(id)) return;
        await this.backend.delete(id, undefined);
        report.orphansRemoved.push(id);
      });
    }
    report.allocationsReleased = await this.releaseOrphanAllocations();
    await this.network.reconcile((await this.store.listVms({})).vms);
    const changed = report.rolledBack.length + report.deleted.length + report.markedFailed.length + report.orphansRemoved.length + report.recreated.length + report.allocationsReleased.length;
    if (changed > 0) this.log.warn({ ...report }, 'reconcile repaired drift');
    return report;
  }

  private async releaseOrphanAllocations(): Promise<string[]> {
    const ipam = this.manager.ipam;
    if (!ipam) return [];
    return this.manager.withAllocationLock(async () => {
      const released: Allocation[] = [];
      for (const a of ipam.list({ includeQuarantined: false })) {
        if (a.vmId && !(await this.store.getVm(a.vmId))) released.push(ipam.release(a.key, new Date()));
      }
      if (released.length) {
        await this.manager.commitAllocations(released.map((allocation): Mutation => ({ op: 'putAllocation', allocation, create: false })));
      }
      return released.map((a) => a.key);
    });
  }

  private async reconcileVm(vm: VmRecord, report: ReconcileReport): Promise<void> {
    let status: BackendStatus = 'absent';
    if (vm.state !== 'creating') {
      try {
        status = await this.backend.status(vm.backendState);
      } catch (err) {
        // Not knowing is not a failure of the VM (a timed-out `ip` under load):
        // leave it as it is and look again at the next pass.
        this.log.warn({ vm_id: vm.id, err: err instanceof Error ? err.message : String(err) }, 'could not read vm status; retrying at the next reconcile');
        return;
      }
    }
    const d = decide(vm.state, status);
    switch (d.action) {
      case 'none':
        return;
      case 'rollback':
        await this.manager.rollbackCreate(vm, undefined);
        report.rolledBack.push(vm.id);
        return;
      case 'finish-delete':
        await this.manager.finishDelete(vm);
        report.deleted.push(vm.id);
        return;
      case 'recreate': {
        const handle = await this.backend.create(this.manager.specOf(vm));
        await this.network.ensureVm(vm);
        await this.manager.write(vm, { backendState: handle });
        report.recreated.push(vm.id);
        return;
      }
      case 'set': {
        let backendState = vm.backendState;
        if (d.state === 'failed' || d.state === 'shutdown') {
          // Whatever is left of the guest (a boot metald did not live to
          // record, a guest in a namespace that vanished) is stopped.
          backendState = await this.backend.shutdown(vm.backendState, { force: true, timeoutMs: 0 });
        }
        await this.manager.write(vm, { state: d.state, backendState, ...(d.reason ? { failureReason: d.reason } : {}) });
        if (d.state === 'failed') {
          report.markedFailed.push(vm.id);
          this.log.warn({ vm_id: vm.id, tenant_id: vm.tenantId, reason: d.reason }, 'vm marked failed');
        }
      }
    }
  }
}
