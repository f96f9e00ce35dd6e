import { MAX_TENANTS } from '../core/policy/zones.js';
import { MetaldError } from '../core/errors.js';

// Tenant ids -> the small numbers packet marks carry (docs/decisions/0027).
// One registry serves every table that marks packets (bridge and routed
// guards), so a mark set by one is understood by the other. The numbers live
// in the kernel's port_zone maps: after a restart they are read back from
// there, and a tenant keeps its number as long as it has VMs on this host.

export class TenantIndex {
  private byTenant = new Map<string, number>();
  private used = new Set<number>();

  /** The tenant's number, assigning the smallest free one. */
  get(tenant: string): number {
    const have = this.byTenant.get(tenant);
    if (have !== undefined) return have;
    let n = 1;
    while (this.used.has(n)) n++;
    if (n > MAX_TENANTS) throw new MetaldError('resource_exhausted', `this host already has VMs of ${MAX_TENANTS} tenants`);
    this.set(tenant, n);
    return n;
  }

  /** Take a number read back from the kernel; false when it conflicts with one already known. */
  adopt(tenant: string, n: number): boolean {
    if (n < 1 || n > MAX_TENANTS) return false;
    const have = this.byTenant.get(tenant);
    if (have !== undefined) return have === n;
    if (this.used.has(n)) return false;
    this.set(tenant, n);
    return true;
  }

  /** Forget tenants that have no VM any more (their numbers can be reused). */
  retain(tenants: ReadonlySet<string>): void {
    for (const [t, n] of this.byTenant) {
      if (tenants.has(t)) continue;
      this.byTenant.delete(t);
      this.used.delete(n);
    }
  }

  get size(): number {
    return this.byTenant.size;
  }

  private set(tenant: string, n: number): void {
    this.byTenant.set(tenant, n);
    this.used.add(n);
  }
}
