import { CommandError } from '../../kernel/exec.js';
import { assertIfName } from '../../kernel/names.js';
import { ipBatch, linkDelete, linkShow } from '../../kernel/netns.js';

// The host end of a qemu NIC is a persistent tap, made before qemu starts
// (qemu then only opens it by name: no helper scripts, no privileges of its
// own needed for it). Attaching it to a bridge is the network plane's job.
// Behind an interface so that the host-networking layer's own tap adapter can
// replace this one without touching the backend.

export interface HostNics {
  /** Create the tap if missing and set its MTU; idempotent. */
  ensureTap(name: string, opts: { mtu: number }): Promise<void>;
  /** Remove the tap; one already gone is not an error. */
  removeTap(name: string): Promise<void>;
  /** Whether the tap exists. */
  hasTap(name: string): Promise<boolean>;
}

/** Taps made with `ip tuntap` in `netns` (undefined = the root namespace, production only). */
export function netnsTaps(netns: string | undefined): HostNics {
  return {
    async ensureTap(name, { mtu }) {
      assertIfName(name);
      if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 65535) throw new Error(`invalid MTU ${mtu} for tap ${name}`);
      // One `ip` process in the usual case (a new tap); an existing one only gets its MTU.
      try {
        await ipBatch(netns, [`tuntap add dev ${name} mode tap`, `link set dev ${name} mtu ${mtu}`]);
      } catch (err) {
        if (!(err instanceof CommandError) || (await linkShow(netns, name)) === undefined) throw err;
        await ipBatch(netns, [`link set dev ${name} mtu ${mtu}`]);
      }
    },
    async removeTap(name) {
      await linkDelete(netns, assertIfName(name));
    },
    async hasTap(name) {
      return (await linkShow(netns, assertIfName(name))) !== undefined;
    },
  };
}
