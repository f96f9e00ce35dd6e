import { invalidArgument } from '../core/errors.js';
import type { Ipam } from '../core/ipam/allocator.js';
import type { Allocation, BridgeSubnet } from '../core/ipam/types.js';
import { formatIpv6, parseIpv6 } from '../core/net/ipv6.js';
import type { PlannedNic } from '../core/vm/validate.js';

// Turns the planned NICs of a CreateVm into IPAM allocations and the address
// and gateway each NIC is configured with. All or nothing: on any error the
// allocations already taken are given back before the error propagates.

export interface NicAddressing {
  ipv6Address: string;
  ipv6Gateway: string;
  ipv6Allocation: string;
}

const SUBNET_BITS = 64n;
/** The host end of every routed link answers as this (decision 0021). */
export const ROUTED_GATEWAY = 'fe80::1';

export function assignAddresses(
  ipam: Ipam | undefined,
  bridges: readonly BridgeSubnet[],
  nics: readonly PlannedNic[],
  owner: { vmId: string; tenantId: string },
  now: Date,
  /** Names of routed attachments (config bridges with mode: routed). */
  routed: readonly string[] = [],
): { allocations: Allocation[]; addressing: NicAddressing[] } {
  const allocations: Allocation[] = [];
  try {
    const addressing = nics.map((nic, i): NicAddressing => {
      const field = `config.network[${i}].ipv6`;
      if (!ipam) {
        if (nic.staticAddress) throw invalidArgument(`${field}.address`, 'IPv6 is not enabled on this host (no address pools are configured)');
        return { ipv6Address: '', ipv6Gateway: '', ipv6Allocation: '' };
      }
      const a = ipam.allocate({
        tenantId: owner.tenantId,
        vmId: owner.vmId,
        nicId: nic.id,
        field,
        bridge: nic.bridge || undefined,
        poolId: nic.poolId || undefined,
        address: nic.staticAddress,
        wholePrefix: nic.wholePrefix,
      }, now);
      allocations.push(a);
      const addressing = routed.includes(nic.bridge) ? routedAddressOf(a, nic, field) : addressOf(a, nic, bridges, field);
      return { ...addressing, ipv6Allocation: a.key };
    });
    return { allocations, addressing };
  } catch (err) {
    for (const a of allocations) ipam!.unreserve(a.key);
    throw err;
  }
}

/** The address (with its on-link prefix length) and gateway a NIC is given for an allocation. */
function addressOf(a: Allocation, nic: PlannedNic, bridges: readonly BridgeSubnet[], field: string): Omit<NicAddressing, 'ipv6Allocation'> {
  const addr = parseIpv6(a.address);
  const onBridge = bridges.find((b) => b.name === nic.bridge && contains(b.network, b.length, addr));
  // The on-link prefix and the gateway are not the tenant's to choose: the
  // host makes the bridge answer for the gateway and routes the subnet to it,
  // so a free choice would let a tenant make the host claim another VM's
  // address or add a /0 route.
  const length = a.kind === 'prefix' ? 64 : onBridge?.length ?? 64;
  if (nic.staticAddress && nic.staticAddress.length !== length) {
    throw invalidArgument(`${field}.address`, `prefix length must be /${length} (${onBridge ? `the subnet of bridge ${onBridge.name}` : 'a VM subnet'}), got /${nic.staticAddress.length}`);
  }
  // The bridge answers as the gateway of its own subnet, and of every VM
  // subnet on it at <subnet>::1 (SPEC-NOTES 7).
  const gateway = onBridge?.hostAddresses[0] ?? (((addr >> (128n - SUBNET_BITS)) << (128n - SUBNET_BITS)) | 1n);
  if (nic.gateway !== undefined && nic.gateway !== gateway) {
    throw invalidArgument(`${field}.gateway`, `must be ${formatIpv6(gateway)}, the address metald gives the bridge for this subnet`);
  }
  if (gateway === addr) {
    throw invalidArgument(`${field}.address`, `${a.address} is the gateway address of its subnet; choose another address`);
  }
  return { ipv6Address: `${a.address}/${length}`, ipv6Gateway: formatIpv6(gateway) };
}

/**
 * On a routed attachment nothing is on-link but the host: the NIC holds its
 * /128 (or its /64 in prefix mode) and reaches everything through the host's
 * link-local address on the point-to-point link.
 */
function routedAddressOf(a: Allocation, nic: PlannedNic, field: string): Omit<NicAddressing, 'ipv6Allocation'> {
  const length = a.kind === 'prefix' ? 64 : 128;
  if (nic.staticAddress && nic.staticAddress.length !== length) {
    throw invalidArgument(`${field}.address`, `prefix length must be /${length} (routed attachment ${nic.bridge}), got /${nic.staticAddress.length}`);
  }
  if (nic.gateway !== undefined && nic.gateway !== parseIpv6(ROUTED_GATEWAY)) {
    throw invalidArgument(`${field}.gateway`, `must be ${ROUTED_GATEWAY}, the host's link-local address on a routed attachment`);
  }
  return { ipv6Address: `${a.address}/${length}`, ipv6Gateway: ROUTED_GATEWAY };
}

function contains(network: bigint, length: number, addr: bigint): boolean {
  const shift = BigInt(128 - length);
  return addr >> shift === network >> shift;
}
