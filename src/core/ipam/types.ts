// IPAM's data, shared by the pure allocator (src/core/ipam/allocator.ts),
// the store (allocations persist in the same commit as their VM) and the API.

export type AllocationKind = 'address' | 'prefix';

/** One pool as the allocator sees it (built from config by the daemon). */
export interface PoolSpec {
  id: string;
  network: bigint;
  /** Prefix length: prefix mode 32..63; address mode 32..120. */
  length: number;
  mode: AllocationKind;
  autoAssign: boolean;
  /** Addresses never handed out (plus, per subnet, the subnet-router anycast ::0). */
  reserved: bigint[];
  /** Allocations per rolling hour; undefined = unlimited; 0 = none (draining). */
  rateLimit?: number;
  /** Allocations per rolling hour per tenant; undefined = unlimited. */
  tenantRateLimit?: number;
  /** Tenants allowed to use this pool; empty = every tenant. */
  tenants: string[];
  description: string;
  securityProfile?: string;
}

/** A bridge's on-link subnet: its addresses are never handed out, and address-mode NICs on it get /128s from it. */
export interface BridgeSubnet {
  name: string;
  /** The /64 (or longer) on-link prefix of the bridge's ipv6_address. */
  network: bigint;
  length: number;
  /** Addresses the host configures on the bridge (its own address; gateways). */
  hostAddresses: bigint[];
}

/**
 * A durable allocation. `key` is the canonical prefix text ("2600:beef::5/128",
 * "2600:beef:0:100::/64"): unique per host, the store's primary key.
 */
export interface Allocation {
  key: string;
  poolId: string;
  kind: AllocationKind;
  /** Canonical prefix text (same as key). */
  prefix: string;
  /** The NIC's stable address inside `prefix` (for a /128: the address itself). */
  address: string;
  /** Owner: a VM NIC, or a manual allocation (vmId '' and owner set). */
  vmId: string;
  nicId: string;
  tenantId: string;
  owner: string;
  /** ISO-8601. */
  allocatedAt: string;
  /** ISO-8601 start of quarantine, or null while in use. */
  releasedAt: string | null;
}

/** What a NIC asks for. */
export interface AllocationRequest {
  tenantId: string;
  vmId: string;
  nicId: string;
  owner?: string;
  /** Request path of the NIC's ipv6 block, for errors ("config.network[0].ipv6"). */
  field: string;
  /** The bridge the NIC sits on (its subnet is where address-mode /128s come from). */
  bridge?: string;
  /** Explicit pool; otherwise the pool containing `address`, or the default auto-assign pool. */
  poolId?: string;
  /** Static request: the address and the prefix length the request wrote (e.g. /64). */
  address?: { address: bigint; length: number };
  /** The NIC needs a /64 of its own (privacy extensions under a strict source guard). */
  wholePrefix?: boolean;
}

export interface PoolStats {
  id: string;
  prefix: string;
  mode: AllocationKind;
  autoAssign: boolean;
  /** Units: /128 addresses in address mode, /64 prefixes in prefix mode. */
  size: bigint;
  used: bigint;
  quarantined: bigint;
  free: bigint;
  /** used / size, 0..1 */
  utilisation: number;
  allocationsLastHour: number;
}
