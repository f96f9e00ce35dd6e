import { DataPlaneTaps, type TapAdapter } from '../../network/taps.js';

// The host end of a qemu NIC is a persistent tap, made before qemu starts
// (qemu then only opens it by name: no helper scripts, no privileges of its
// own needed for it). Attaching it to a bridge is the network plane's job.
// The taps come from the host-networking layer's DataPlaneTaps: its lines go
// to one long-lived `ip -batch` session, so a VM's tap costs netlink round
// trips instead of an `ip` process (~5 ms each here; decision 0022).

export interface HostNics {
  /** Create the tap if missing (or accept an identical one), set its MTU and bring it up; idempotent. */
  ensureTap(name: string, opts: { mtu: number }): Promise<void>;
  /** Remove the tap; one already gone is not an error. */
  removeTap(name: string): Promise<void>;
  /** Whether the tap exists. */
  hasTap(name: string): Promise<boolean>;
}

/** HostNics over a TapAdapter (default: DataPlaneTaps in `netns`, undefined = the root namespace). */
export function dataPlaneNics(netns: string | undefined, taps: TapAdapter = new DataPlaneTaps(netns)): HostNics {
  return {
    // Root-owned: qemu runs as root and opens the tap before anything else.
    ensureTap: (name, { mtu }) => taps.ensureTap({ name, mtu }),
    removeTap: (name) => taps.removeTap(name),
    hasTap: async (name) => (await taps.tapIfindex(name)) !== undefined,
  };
}
