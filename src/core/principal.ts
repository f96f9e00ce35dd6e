// Who is calling. Tenants see only their own VMs; a VM of another tenant is
// reported as not found, so ids of other tenants cannot be probed.

export type Principal =
  | { kind: 'admin'; name: string }
  | { kind: 'tenant'; tenantId: string; name: string };

export const ANONYMOUS_ADMIN: Principal = { kind: 'admin', name: 'anonymous (auth disabled)' };

export function canSee(p: Principal, tenantId: string): boolean {
  return p.kind === 'admin' || p.tenantId === tenantId;
}
