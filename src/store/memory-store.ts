import type { Allocation } from '../core/ipam/types.js';
import type { VmRecord } from '../core/vm/record.js';
import { deepFreeze } from './freeze.js';
import { AllocationConflictError, StoreConflictError, type Mutation, type Store, type VmPage, type VmQuery } from './store.js';
import { VmIndex } from './vm-index.js';


/** Shared argument checks so both stores reject the same inputs. */
export function checkRevision(vm: VmRecord): void {
  if (!Number.isSafeInteger(vm.revision) || vm.revision < 1) {
    throw new RangeError(`vm ${vm.id}: revision must be a positive integer, got ${vm.revision}`);
  }
}

export function checkLimit(limit: number | undefined): void {
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
    throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
  }
}

/** Same contract as SqliteStore, for unit tests of the core. Not durable. */
export class MemoryStore implements Store {
  private readonly index = new VmIndex();
  private readonly allocations = new Map<string, string>();

  async getVm(id: string): Promise<VmRecord | undefined> {
    return this.index.get(id);
  }

  async listVms(q: VmQuery): Promise<VmPage> {
    checkLimit(q.limit);
    return this.index.list(q);
  }

  async countVms(): Promise<number> {
    return this.index.size;
  }

  async listAllocations(): Promise<Allocation[]> {
    return [...this.allocations.keys()].sort().map((k) => JSON.parse(this.allocations.get(k)!) as Allocation);
  }

  async commit(mutations: readonly Mutation[]): Promise<void> {
    // Check every mutation against the state the earlier ones leave, then
    // apply: all-or-nothing, as a SQLite transaction.
    const staged = validateCommit(mutations, (id) => this.index.get(id)?.revision ?? 0);
    const allocs = new Map(this.allocations);
    for (const m of staged) {
      if (m.op === 'putAllocation') {
        if (allocs.has(m.allocation.key) !== !m.create) throw new AllocationConflictError(m.allocation.key, m.create);
        allocs.set(m.allocation.key, JSON.stringify(m.allocation));
      } else if (m.op === 'deleteAllocation') allocs.delete(m.key);
    }
    for (const m of staged) {
      if (m.op === 'deleteVm') this.index.delete(m.id);
      else if (m.op === 'putVm') this.index.put(m.vm);
    }
    this.allocations.clear();
    for (const [k, v] of allocs) this.allocations.set(k, v);
  }

  async close(): Promise<void> {}
}

/**
 * Revision checks for a whole commit, simulating it in order. Returns the
 * mutations with frozen copies of the records to store.
 */
export function validateCommit(mutations: readonly Mutation[], storedRevision: (id: string) => number): Mutation[] {
  const pending = new Map<string, number>();
  return mutations.map((m) => {
    if (m.op === 'putAllocation' || m.op === 'deleteAllocation') return m;
    if (m.op === 'deleteVm') {
      pending.set(m.id, 0);
      return m;
    }
    checkRevision(m.vm);
    const actual = pending.get(m.vm.id) ?? storedRevision(m.vm.id);
    if (actual !== m.vm.revision - 1) throw new StoreConflictError(m.vm.id, m.vm.revision - 1, actual);
    pending.set(m.vm.id, m.vm.revision);
    return { op: 'putVm', vm: deepFreeze(structuredClone(m.vm)) };
  });
}
