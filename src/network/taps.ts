import { IpSession } from '../kernel/ip-session.js';
import { assertIfName, assertNetnsName } from '../kernel/names.js';
import { linkDelete, linkShow } from '../kernel/netns.js';

// Host NICs for real VMMs (firecracker, qemu): a persistent tap in the
// data-plane namespace named after the VM NIC's host device. The VMM opens it
// by name (TUNSETIFF), so it must run in the data-plane namespace too (the
// jailer's --netns /run/netns/<dataplane.netns>). The network plane then
// attaches it to its bridge or routes to it, exactly as it does a sandbox veth.

export interface TapSpec {
  /** The NIC's host device (NicRecord.hostDevice), <= 15 chars. */
  name: string;
  /** The bridge's (or routed attachment's) MTU. */
  mtu: number;
  /** The jailer's uid/gid, so the unprivileged VMM may open the tap; root-owned when absent. */
  owner?: { uid: number; gid: number };
}

/**
 * `ip -batch` lines making the tap: single queue (multi_queue off; a VMM
 * asking for one queue on a multi-queue tap fails TUNSETIFF), with the virtio
 * net header (vnet_hdr: Firecracker and qemu's virtio-net use it for offloads).
 */
export function tapLines(spec: TapSpec): string[] {
  assertIfName(spec.name);
  if (!Number.isInteger(spec.mtu) || spec.mtu < 1280 || spec.mtu > 65535) throw new Error(`invalid MTU ${spec.mtu} for tap ${spec.name}`);
  const owner = spec.owner;
  if (owner && ![owner.uid, owner.gid].every((n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32 - 1)) {
    throw new Error(`invalid tap owner ${JSON.stringify(owner)} for ${spec.name}`);
  }
  return [
    `tuntap add dev ${spec.name} mode tap vnet_hdr${owner ? ` user ${owner.uid} group ${owner.gid}` : ''}`,
    `link set dev ${spec.name} mtu ${spec.mtu} up`,
  ];
}

/** What the firecracker and qemu backends need: idempotent create, and delete. */
export interface TapAdapter {
  /** Make the tap (or accept an identical one: a retried create, a restart). */
  ensureTap(spec: TapSpec): Promise<void>;
  /** The tap's ifindex (to record in the backend handle), undefined when it does not exist. */
  tapIfindex(name: string): Promise<number | undefined>;
  /** Remove the tap; one that is already gone is not an error. Pass the ifindex ensureTap gave to never remove a reused name. */
  removeTap(name: string, ifindex?: number): Promise<void>;
}

export class DataPlaneTaps implements TapAdapter {
  private readonly session: IpSession;

  /** `netns`: config `dataplane.netns` (undefined: the root namespace, production). */
  constructor(private readonly netns: string | undefined, session?: IpSession) {
    if (netns !== undefined) assertNetnsName(netns);
    this.session = session ?? new IpSession(netns);
  }

  async ensureTap(spec: TapSpec): Promise<void> {
    const [add, up] = tapLines(spec);
    try {
      await this.session.run([add!]);
    } catch (err) {
      // TUNSETIFF answers EBUSY for a tap that exists: fine if it is the one we would make.
      const have = await linkShow(this.netns, spec.name, true);
      const d = ((have?.['linkinfo'] as Record<string, unknown> | undefined)?.['info_data'] ?? {}) as Record<string, unknown>;
      const same = d['type'] === 'tap' && d['vnet_hdr'] === true && d['multi_queue'] === false
        && (spec.owner ? d['user'] === spec.owner.uid && d['group'] === spec.owner.gid : d['user'] === undefined);
      if (!same) throw err;
    }
    await this.session.run([up!]);
  }

  async tapIfindex(name: string): Promise<number | undefined> {
    const ifindex = (await linkShow(this.netns, assertIfName(name)))?.['ifindex'];
    return typeof ifindex === 'number' ? ifindex : undefined;
  }

  async removeTap(name: string, ifindex?: number): Promise<void> {
    assertIfName(name);
    if (ifindex !== undefined) {
      const have = await linkShow(this.netns, name);
      if (have === undefined || have['ifindex'] !== ifindex) return;
    }
    await linkDelete(this.netns, name);
  }

  close(): void {
    this.session.close();
  }
}
