import { assertIfName } from '../../kernel/names.js';
import { ipIn, ipJson, linkDelete, linkShow } from '../../kernel/netns.js';

// Taps for Firecracker, behind a small interface so the host-networking
// layer's own tap adapter can replace this one. Attaching a tap to its bridge
// is the network plane's job (it attaches nic.hostDevice), not the backend's.
//
// Each tap carries its owner ("<instance>:<vm id>") as its link alias: delete
// never removes a tap whose name has since gone to another VM, and residues
// can be found by owner after a crash.

export interface TapOptions {
  /** The jail user: Firecracker opens the persistent tap after dropping root. */
  uid: number;
  gid: number;
  mtu: number;
  owner: string;
}

export interface HostNics {
  ensureTap(name: string, opts: TapOptions): Promise<void>;
  /** Removes the tap if it exists and belongs to `owner`. */
  removeTap(name: string, owner: string): Promise<void>;
  /** The tap's owner, or undefined if there is no such tap. */
  tapOwner(name: string): Promise<string | undefined>;
  /** Taps whose owner starts with `prefix`. */
  owned(prefix: string): Promise<{ name: string; owner: string }[]>;
}

const OWNER = /^[A-Za-z0-9_.:-]{1,200}$/;

function assertOwner(owner: string): string {
  if (!OWNER.test(owner)) throw new Error(`invalid tap owner ${JSON.stringify(owner)}`);
  return owner;
}

/** `ip tuntap` in the data-plane namespace (undefined = the root namespace). */
export class IpTuntapNics implements HostNics {
  constructor(private readonly netns: string | undefined) {}

  async ensureTap(name: string, opts: TapOptions): Promise<void> {
    assertIfName(name);
    assertOwner(opts.owner);
    const link = await linkShow(this.netns, name);
    if (link === undefined) {
      // vnet_hdr: Firecracker opens taps with IFF_VNET_HDR and fails on a tap made without it.
      await ipIn(this.netns, ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(opts.uid), 'group', String(opts.gid), 'vnet_hdr']);
    } else if (link['ifalias'] !== opts.owner) {
      throw new Error(`host device ${name} exists and belongs to ${JSON.stringify(link['ifalias'] ?? 'someone else')}, not ${opts.owner}`);
    }
    await ipIn(this.netns, ['link', 'set', 'dev', name, 'mtu', String(opts.mtu), 'alias', opts.owner, 'up']);
  }

  async removeTap(name: string, owner: string): Promise<void> {
    if ((await this.tapOwner(name)) === assertOwner(owner)) await linkDelete(this.netns, name);
  }

  async tapOwner(name: string): Promise<string | undefined> {
    const link = await linkShow(this.netns, name);
    if (link === undefined) return undefined;
    return typeof link['ifalias'] === 'string' ? link['ifalias'] : '';
  }

  async owned(prefix: string): Promise<{ name: string; owner: string }[]> {
    return (await ipJson(this.netns, ['link', 'show', 'type', 'tun']))
      .map((l) => ({ name: l['ifname'], owner: l['ifalias'] }))
      .filter((t): t is { name: string; owner: string } =>
        typeof t.name === 'string' && typeof t.owner === 'string' && t.owner.startsWith(prefix));
  }
}
