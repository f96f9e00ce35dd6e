import { IpSession } from '../../kernel/ip-session.js';
import { assertIfName } from '../../kernel/names.js';
import { ipJson, linkDelete, linkShow } from '../../kernel/netns.js';
import { DataPlaneTaps, tapLines, type TapSpec } from '../../network/taps.js';

// Taps for Firecracker, made by the host-networking layer's DataPlaneTaps
// lines on one long-lived `ip -batch` session (no `ip` process per tap,
// decision 0022). Attaching a tap to its bridge is the network plane's job
// (it attaches nic.hostDevice), not the backend's.
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

/** Taps in the data-plane namespace (undefined = the root namespace). */
export class DataPlaneNics implements HostNics {
  private readonly session: IpSession;
  private readonly taps: DataPlaneTaps;

  constructor(private readonly netns: string | undefined) {
    this.session = new IpSession(netns);
    this.taps = new DataPlaneTaps(netns, this.session);
  }

  /**
   * The usual case — a new tap — is two session round trips: `tuntap add`
   * (vnet_hdr: Firecracker opens taps with IFF_VNET_HDR and fails on a tap made
   * without it), then MTU, owner alias and up. Only when the add fails is the
   * kernel read: a tap of that name is accepted only if its alias names this
   * VM (a retried create), never one that belongs to another.
   */
  async ensureTap(name: string, opts: TapOptions): Promise<void> {
    assertOwner(opts.owner);
    const spec: TapSpec = { name, mtu: opts.mtu, owner: { uid: opts.uid, gid: opts.gid } };
    const [add] = tapLines(spec);
    try {
      await this.session.run([add!]);
    } catch (err) {
      const owner = await this.tapOwner(name);
      if (owner === undefined) throw err;
      if (owner !== opts.owner) {
        throw new Error(`host device ${name} exists and belongs to ${JSON.stringify(owner || 'someone else')}, not ${opts.owner}`);
      }
      await this.taps.ensureTap(spec); // checks its type, flags and uid/gid
    }
    await this.session.run([`link set dev ${name} mtu ${opts.mtu} alias ${opts.owner} up`]);
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
