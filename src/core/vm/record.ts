// The VM as metald stores it. Plain data (JSON-serialisable) so any store —
// SQLite now, etcd later — can persist it without knowing protobuf.

export const VM_STATES = [
  'creating',
  'created',
  'booting',
  'running',
  'paused',
  'shutting_down',
  'shutdown',
  'failed',
  'deleting',
] as const;
export type VmStateName = (typeof VM_STATES)[number];

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** What the kernel side of one VM NIC looks like once metald has planned it. */
export interface NicRecord {
  /** NIC id from the request (e.g. "eth0"). */
  id: string;
  /** Host-side device name (tap or veth end), <= 15 chars, unique per host. */
  hostDevice: string;
  mac: string;
  bridge: string;
  vlanId: number | null;
  /** "addr/len" (len = on-link prefix length) or "" when the NIC has no IPv6. */
  ipv6Address: string;
  ipv6Gateway: string;
  /** Key of the IPAM allocation behind ipv6Address ("…/128" or "…/64"), or "". */
  ipv6Allocation: string;
}

export interface VmRecord {
  id: string;
  tenantId: string;
  state: VmStateName;
  isolated: boolean;
  isolationReason: string;
  /** ISO-8601 or null. */
  isolatedAt: string | null;
  /** Who isolated it: a tenant may not lift an isolation an administrator set. */
  isolatedBy?: 'admin' | 'tenant';
  /** The VmConfig exactly as received, as protobuf JSON with proto field names. */
  config: { [k: string]: Json };
  backend: string;
  /** Backend-owned opaque state (pid, start time, socket path...). */
  backendState: { [k: string]: Json };
  failureReason: string;
  nics: NicRecord[];
  createdAt: string;
  updatedAt: string;
  /** Bumped on every write; lets a store do compare-and-swap (etcd mod revision). */
  revision: number;
}
