import type { VmRecord, VmStateName } from '../core/vm/record.js';
import type { VmPage, VmQuery } from './store.js';

// Every VM in memory, ordered by id, with per-tenant orderings and per-state
// counts kept as records change. Lookups, pages and totals cost O(page), not
// O(VMs): this is what keeps GetVmInfo and ListVms fast at 50 000 VMs. The
// durable stores keep it in step with what they persist.
//
// Ids are ASCII ([a-z0-9-]), so JS string order equals SQLite's and etcd's
// byte order.

const ALL = '\0all';

export class VmIndex {
  private readonly byId = new Map<string, VmRecord>();
  private readonly order = new Map<string, string[]>([[ALL, []]]);
  private readonly counts = new Map<string, Map<VmStateName, number>>();

  get size(): number {
    return this.byId.size;
  }

  get(id: string): VmRecord | undefined {
    return this.byId.get(id);
  }

  /** Records must not be mutated afterwards (the stores freeze them). */
  put(vm: VmRecord): void {
    const old = this.byId.get(vm.id);
    if (old) this.remove(old);
    this.byId.set(vm.id, vm);
    insertSorted(this.order.get(ALL)!, vm.id);
    let tenantIds = this.order.get(vm.tenantId);
    if (!tenantIds) this.order.set(vm.tenantId, (tenantIds = []));
    insertSorted(tenantIds, vm.id);
    this.bump(ALL, vm.state, 1);
    this.bump(vm.tenantId, vm.state, 1);
  }

  delete(id: string): void {
    const old = this.byId.get(id);
    if (old) this.remove(old);
  }

  list(q: VmQuery): VmPage {
    const key = q.tenantId ?? ALL;
    const ids = this.order.get(key) ?? [];
    const states = q.states?.length ? new Set<VmStateName>(q.states) : undefined;
    const limit = q.limit ?? Infinity;
    const vms: VmRecord[] = [];
    for (let i = q.afterId === undefined ? 0 : upperBound(ids, q.afterId); i < ids.length && vms.length < limit; i++) {
      const vm = this.byId.get(ids[i]!)!;
      if (!states || states.has(vm.state)) vms.push(vm);
    }
    return { vms, total: this.total(key, states) };
  }

  private total(key: string, states: Set<VmStateName> | undefined): number {
    const c = this.counts.get(key);
    if (!c) return 0;
    let n = 0;
    for (const [state, k] of c) if (!states || states.has(state)) n += k;
    return n;
  }

  private remove(vm: VmRecord): void {
    this.byId.delete(vm.id);
    removeSorted(this.order.get(ALL)!, vm.id);
    const tenantIds = this.order.get(vm.tenantId);
    if (tenantIds) {
      removeSorted(tenantIds, vm.id);
      if (tenantIds.length === 0) this.order.delete(vm.tenantId);
    }
    this.bump(ALL, vm.state, -1);
    this.bump(vm.tenantId, vm.state, -1);
  }

  private bump(key: string, state: VmStateName, d: number): void {
    let c = this.counts.get(key);
    if (!c) this.counts.set(key, (c = new Map()));
    const n = (c.get(state) ?? 0) + d;
    if (n === 0) c.delete(state);
    else c.set(state, n);
    if (c.size === 0 && key !== ALL) this.counts.delete(key);
  }
}

/** First index whose id is > after. */
function upperBound(ids: readonly string[], after: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(ids: string[], id: string): void {
  const i = upperBound(ids, id);
  if (ids[i - 1] !== id) ids.splice(i, 0, id);
}

function removeSorted(ids: string[], id: string): void {
  const i = upperBound(ids, id) - 1;
  if (ids[i] === id) ids.splice(i, 1);
}
