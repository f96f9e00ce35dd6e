import type { VmRecord } from '../vm/record.js';

// What a guest is told about its network, in two forms made from the same
// data: a metadata document in the shape of Firecracker's MMDS (the guest
// reads it over the MMDS address; other VMMs put it on a config drive or the
// sandbox applies it directly) and kernel command-line arguments, for guests
// whose init reads /proc/cmdline before any network is up. Pure.

export interface GuestDns {
  servers: string[];
  searchDomain?: string;
  dnssec: boolean;
  dnsOverTls: boolean;
}

export interface GuestNicConfig {
  'interface-id': string;
  mac: string;
  'device-number': number;
  /** "addr/len"; empty when the NIC has no IPv6. */
  ipv6: string;
  'ipv6-gateway': string;
  /** The guest may pick RFC 4941/8981 temporary addresses (it holds a whole /64). */
  'privacy-extensions': boolean;
  /** SLAAC expected (router advertisements) in addition to the static address. */
  slaac: boolean;
}

export interface GuestNetworkDocument {
  latest: {
    'meta-data': {
      'instance-id': string;
      'tenant-id': string;
      network: { interfaces: GuestNicConfig[] };
      dns: { servers: string[]; search: string[]; dnssec: boolean; 'dns-over-tls': boolean };
    };
  };
}

export function guestNetworkDocument(vm: VmRecord, dns: GuestDns): GuestNetworkDocument {
  const nicsOfConfig = (vm.config['network'] as { ipv6?: { enable_privacy_extensions?: boolean } }[] | undefined) ?? [];
  return {
    latest: {
      'meta-data': {
        'instance-id': vm.id,
        'tenant-id': vm.tenantId,
        network: {
          interfaces: vm.nics.map((n, i) => ({
            'interface-id': n.id,
            mac: n.mac,
            'device-number': i,
            ipv6: n.ipv6Address,
            'ipv6-gateway': n.ipv6Gateway,
            'privacy-extensions': !!nicsOfConfig[i]?.ipv6?.enable_privacy_extensions && n.ipv6Allocation.endsWith('/64'),
            slaac: n.ipv6Allocation.endsWith('/64'),
          })),
        },
        dns: {
          servers: [...dns.servers],
          search: dns.searchDomain ? [dns.searchDomain] : [],
          dnssec: dns.dnssec,
          'dns-over-tls': dns.dnsOverTls,
        },
      },
    },
  };
}

/**
 * Kernel arguments for the first NIC and DNS (`metald.ip6=addr/len
 * metald.gw6=gw metald.dns=a,b metald.search=d`), read by metald's guest
 * init. The Linux `ip=` argument is IPv4-only, hence our own keys.
 */
export function guestKernelArgs(doc: GuestNetworkDocument): string[] {
  const md = doc.latest['meta-data'];
  const args: string[] = [];
  const first = md.network.interfaces[0];
  if (first?.ipv6) args.push(`metald.ip6=${first.ipv6}`);
  if (first?.['ipv6-gateway']) args.push(`metald.gw6=${first['ipv6-gateway']}`);
  if (md.dns.servers.length) args.push(`metald.dns=${md.dns.servers.join(',')}`);
  if (md.dns.search.length) args.push(`metald.search=${md.dns.search.join(',')}`);
  return args;
}

/** resolv.conf text for the document's DNS settings. */
export function resolvConf(doc: GuestNetworkDocument): string {
  const dns = doc.latest['meta-data'].dns;
  const lines = ['# written by metald from the VM\'s network metadata'];
  for (const s of dns.servers) lines.push(`nameserver ${s}`);
  if (dns.search.length) lines.push(`search ${dns.search.join(' ')}`);
  const opts = [dns.dnssec ? 'edns0 trust-ad' : '', 'rotate'].filter(Boolean);
  if (dns.servers.length > 1) lines.push(`options ${opts.join(' ')}`);
  return `${lines.join('\n')}\n`;
}
