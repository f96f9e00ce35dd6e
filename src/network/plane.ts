import type { VmRecord } from '../core/vm/record.js';

/**
 * The host network seen from the lifecycle: everything on the host side of a
 * VM's NICs (bridge ports, addresses, nftables guards, RAs, isolation).
 * Each method is idempotent: start-up, every change and drift repair call the
 * same methods with the VM as stored.
 */
export interface NetworkPlane {
  /** Make the host side of the VM's NICs match the record (ports attached, guards loaded). */
  ensureVm(vm: VmRecord): Promise<void>;
  /** Remove everything ensureVm made for the VM. Must work on a half-made VM. */
  removeVm(vm: VmRecord): Promise<void>;
  /** Apply or lift isolation as recorded in vm.isolated. */
  applyIsolation(vm: VmRecord): Promise<void>;
  /** Bring the whole host side in line with the full set of VMs (start-up and periodic repair). */
  reconcile(vms: readonly VmRecord[]): Promise<void>;
}

/**
 * The plane for a host without metald-managed networking: the backend's own
 * NIC plumbing is all there is. Isolation is recorded and exposed by the
 * lifecycle; enforcing it is the nftables plane's job.
 */
export class UnmanagedNetworkPlane implements NetworkPlane {
  async ensureVm(): Promise<void> {}
  async removeVm(): Promise<void> {}
  async applyIsolation(): Promise<void> {}
  async reconcile(): Promise<void> {}
}
