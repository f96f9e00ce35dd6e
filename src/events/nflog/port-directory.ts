import type { VmRecord } from '../../core/vm/record.js';

// Who is behind a logged packet. nflog names interfaces by index only, so
// indexes are resolved through a cached link listing of the data-plane
// namespace (an index is never reused while the namespace lives, so a cached
// entry cannot point at the wrong port); ports, MACs and addresses to VMs
// through the store. Both are refreshed on a miss, at most once a second,
// never per packet.

export interface PortOwner {
  vmId: string;
  tenantId: string;
  nicId: string;
  port: string;
}

export interface DirectorySources {
  listVms: () => Promise<readonly VmRecord[]>;
  /** ifindex -> name of every link in the data-plane namespace. */
  listLinks: () => Promise<Map<number, string>>;
  now?: () => number;
}

const MISS_REFRESH_MS = 1000;
const MAX_AGE_MS = 5000;

export class PortDirectory {
  private links = new Map<number, string>();
  private linksAt = -Infinity;
  private ports = new Map<string, PortOwner>();
  private macs = new Map<string, PortOwner>();
  private addrs = new Map<string, PortOwner>();
  private vmsAt = -Infinity;
  private readonly now: () => number;

  constructor(private readonly src: DirectorySources) {
    this.now = src.now ?? Date.now;
  }

  async ifname(index: number | undefined): Promise<string | undefined> {
    if (index === undefined || index === 0) return undefined;
    if (!this.links.has(index) && this.now() - this.linksAt >= MISS_REFRESH_MS) {
      this.linksAt = this.now();
      this.links = await this.src.listLinks();
    }
    return this.links.get(index);
  }

  async byPort(port: string): Promise<PortOwner | undefined> {
    return this.lookup(() => this.ports.get(port));
  }

  async byMac(mac: string): Promise<PortOwner | undefined> {
    return this.lookup(() => this.macs.get(mac.toLowerCase()));
  }

  /** Exact address of a NIC (source-guarded ports cannot send from another). */
  async byAddress(addr: string): Promise<PortOwner | undefined> {
    return this.lookup(() => this.addrs.get(addr));
  }

  private async lookup(get: () => PortOwner | undefined): Promise<PortOwner | undefined> {
    const age = this.now() - this.vmsAt;
    let hit = age < MAX_AGE_MS ? get() : undefined;
    if (!hit && age >= MISS_REFRESH_MS) {
      await this.refreshVms();
      hit = get();
    }
    return hit;
  }

  private async refreshVms(): Promise<void> {
    this.vmsAt = this.now();
    const ports = new Map<string, PortOwner>();
    const macs = new Map<string, PortOwner>();
    const addrs = new Map<string, PortOwner>();
    for (const vm of await this.src.listVms()) {
      for (const n of vm.nics) {
        const o: PortOwner = { vmId: vm.id, tenantId: vm.tenantId, nicId: n.id, port: n.hostDevice };
        ports.set(n.hostDevice, o);
        macs.set(n.mac.toLowerCase(), o);
        if (n.ipv6Address) addrs.set(n.ipv6Address.split('/')[0]!, o);
      }
    }
    this.ports = ports;
    this.macs = macs;
    this.addrs = addrs;
  }
}
