import { formatIpv6, parseInterface } from '../../core/net/ipv6.js';
import type { VmRecord } from '../../core/vm/record.js';
import type { RadvdInput, RadvdInterface } from './render.js';

// What radvd should advertise, from config and VMs. Pure.
//
// - Every bridge with an IPv6 address advertises its on-link /64 (guide
//   step 1.3: on-link, autonomous, 3600/1800 s) with RDNSS/DNSSL.
// - A NIC that holds a /64 of its own (prefix mode, or privacy extensions,
//   decision 0012) gets a stanza on its host-side port: RAs sent there reach
//   only that VM, so no VM learns another's prefix. radvd cannot put one
//   interface in two stanzas nor give different prefixes to different
//   `clients`, hence per port (docs/decisions/0016).

export interface RadvdBridge {
  name: string;
  /** "addr/len" of the bridge (config ipv6_address), if any. */
  address?: string;
  mtu: number;
}

export interface RadvdOptions {
  dnsServers: readonly string[];
  searchDomain?: string;
  /** Seconds (guide: 30/60). */
  minInterval?: number;
  maxInterval?: number;
}

export function radvdInput(bridges: readonly RadvdBridge[], vms: readonly VmRecord[], o: RadvdOptions): RadvdInput {
  const dns = {
    ...(o.dnsServers.length ? { rdnss: [...o.dnsServers] } : {}),
    ...(o.searchDomain ? { dnssl: [o.searchDomain] } : {}),
  };
  const interfaces: RadvdInterface[] = [];
  const bridgeSubnets = new Set<string>();
  for (const b of bridges) {
    if (!b.address) continue;
    const { address, length } = parseInterface(b.address);
    if (length !== 64) continue; // SLAAC needs a /64; longer on-link prefixes are not advertised.
    const shift = BigInt(128 - length);
    const prefix = `${formatIpv6((address >> shift) << shift)}/64`;
    bridgeSubnets.add(prefix);
    interfaces.push({
      name: b.name,
      prefixes: [{ prefix }],
      mtu: b.mtu,
      minRtrAdvInterval: o.minInterval ?? 30,
      maxRtrAdvInterval: o.maxInterval ?? 60,
      ...dns,
    });
  }
  const bridgeNames = new Set(interfaces.map((i) => i.name));
  for (const vm of vms) {
    for (const n of vm.nics) {
      if (!n.ipv6Allocation.endsWith('/64') || bridgeSubnets.has(n.ipv6Allocation) || !bridgeNames.has(n.bridge)) continue;
      interfaces.push({
        name: n.hostDevice,
        // On-link: the bridge carries the /64's gateway (<prefix>::1, SPEC-NOTES 7).
        prefixes: [{ prefix: n.ipv6Allocation, onLink: true, autonomous: true, routerAddr: false }],
        // Not a default router on the port: the default route stays on the bridge's RAs.
        defaultLifetime: 0,
        minRtrAdvInterval: 3,
        maxRtrAdvInterval: 4,
        ...dns,
      });
    }
  }
  return { interfaces };
}
