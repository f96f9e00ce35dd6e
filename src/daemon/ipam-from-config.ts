import { Ipam } from '../core/ipam/allocator.js';
import type { BridgeSubnet, PoolSpec } from '../core/ipam/types.js';
import { parseInterface, parseIpv6, parsePrefix } from '../core/net/ipv6.js';
import { allBridges, allPools, type MetaldConfig } from '../config/schema.js';

/** Bridges' on-link subnets from `ipv6.bridge(s).ipv6_address`. */
export function bridgeSubnets(cfg: MetaldConfig): BridgeSubnet[] {
  return allBridges(cfg).flatMap((b) => {
    if (!b.ipv6_address) return [];
    const { address, length } = parseInterface(b.ipv6_address);
    const shift = BigInt(128 - length);
    return [{ name: b.name, network: (address >> shift) << shift, length, hostAddresses: [address] }];
  });
}

export function poolSpecs(cfg: MetaldConfig): PoolSpec[] {
  const dns = cfg.ipv6.dns.servers.map(parseIpv6);
  return allPools(cfg).map((p) => {
    const { network, length } = parsePrefix(p.prefix);
    const shift = BigInt(128 - length);
    const reserved = p.reserved.map(parseIpv6);
    // A DNS server handed to guests inside the pool must never become a VM's address.
    for (const d of dns) if (d >> shift === network >> shift && !reserved.includes(d)) reserved.push(d);
    return {
      id: p.id,
      network,
      length,
      mode: p.mode,
      autoAssign: p.auto_assign,
      reserved,
      rateLimit: p.rate_limit,
      tenantRateLimit: p.tenant_rate_limit,
      tenants: p.tenants,
      description: p.description,
      securityProfile: p.security_profile,
    };
  });
}

/** The address manager for this config, or undefined when IPv6 is off or there are no pools. */
export function ipamFromConfig(cfg: MetaldConfig): Ipam | undefined {
  if (!cfg.ipv6.enabled) return undefined;
  const pools = poolSpecs(cfg);
  if (pools.length === 0) return undefined;
  return new Ipam(pools, { quarantineMs: cfg.ipv6.quarantine, bridges: bridgeSubnets(cfg) });
}
