import type { Allocation } from '../core/ipam/types.js';
import type { VmRecord, VmStateName } from '../core/vm/record.js';

export interface VmQuery {
  tenantId?: string;
  states?: readonly VmStateName[];
  /** Keyset pagination: only ids strictly greater than this. */
  afterId?: string;
  /** Max rows returned; undefined = all. */
  limit?: number;
}

export interface VmPage {
  vms: VmRecord[];
  /** Rows matching tenantId/states, ignoring afterId/limit. */
  total: number;
}

/**
 * One atomic change. A commit applies a list of these in one transaction
 * (SQLite transaction / etcd Txn). Later issues add kinds (IP allocations,
 * pool counters) so VM rows and their resources change together.
 */
export type Mutation =
  | { op: 'putVm'; vm: VmRecord }
  | { op: 'deleteVm'; id: string }
  /** create: the key must be new (a duplicate fails the commit); otherwise it must exist. */
  | { op: 'putAllocation'; allocation: Allocation; create: boolean }
  | { op: 'deleteAllocation'; key: string };

/**
 * Durable state. Records returned are read-only (a store may share frozen
 * objects between calls); write a changed copy back with commit(). Every method resolves only after the data is durable
 * (fsync'd WAL for SQLite, quorum for etcd). Async so etcd fits later.
 */
export interface Store {
  getVm(id: string): Promise<VmRecord | undefined>;
  /** Ordered by id ascending. */
  listVms(query: VmQuery): Promise<VmPage>;
  countVms(): Promise<number>;
  /** Every IP allocation, in use or quarantined (IPAM loads them at start). */
  listAllocations(): Promise<Allocation[]>;
  commit(mutations: readonly Mutation[]): Promise<void>;
  close(): Promise<void>;
}

/** A putVm whose revision does not follow the stored one: someone else wrote first. */
/** A putAllocation that would duplicate (create) or miss (update) a key. */
export class AllocationConflictError extends Error {
  constructor(readonly key: string, readonly create: boolean) {
    super(create ? `allocation ${key} already exists` : `allocation ${key} does not exist`);
    this.name = 'AllocationConflictError';
  }
}

export class StoreConflictError extends Error {
  constructor(
    readonly id: string,
    /** Revision the writer expected to find stored (0 = no row). */
    readonly expectedRevision: number,
    /** Revision actually stored (0 = no row). */
    readonly actualRevision: number,
  ) {
    super(`conflict on vm ${id}: expected stored revision ${expectedRevision}, found ${actualRevision}`);
    this.name = 'StoreConflictError';
  }
}
