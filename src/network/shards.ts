import { createHash } from 'node:crypto';
import { base32 } from '../core/vm/ids.js';
import {
  bridgeMac, planHostNetwork, type DesiredBridge, type DesiredPort, type HostNetworkPlan, type KernelView,
} from './desired.js';
import { macOwnerLine, ndPortLines, ndPortOk, planGateways } from './gateways.js';

// PURE: a configured bridge past the kernel's 1023 ports (docs/decisions/0020).
// The tenant names one bridge; metald spreads its VM ports over the bridge
// itself (the primary, which keeps the addresses and radvd) and shard bridges
// joined to it at L2 by one veth uplink each — a star, so no loop and one
// broadcast domain: ND, SLAAC, RAs and the one on-link /64 behave as on a
// single bridge. Placement is read back from the kernel (a port stays where it
// is), so nothing about shards is stored.

/** BR_MAX_PORTS (1024) minus the reserved port 0: the 1024th `master` fails with "Exchange full". */
export const MAX_PORTS_PER_BRIDGE = 1023;
/** Ports of the primary kept free for uplinks, so a full primary can still grow a shard. */
export const MAX_SHARDS = 127;
/** One more port of the primary is the ND port (decision 0030). */
export const PRIMARY_VM_PORTS = MAX_PORTS_PER_BRIDGE - MAX_SHARDS - 1;
/** A shard's own uplink end takes one port. */
export const SHARD_VM_PORTS = MAX_PORTS_PER_BRIDGE - 1;
/** VM ports one configured bridge takes (895 + 127 x 1022 = 130 689; the guide's max_vms is 50 000). */
export const VM_PORTS_PER_CONFIGURED_BRIDGE = PRIMARY_VM_PORTS + MAX_SHARDS * SHARD_VM_PORTS;

function tag(domain: string, ...parts: string[]): string {
  return base32(createHash('sha256').update([domain, ...parts].join('\0')).digest());
}

/**
 * Names of shard k (1..MAX_SHARDS) of a configured bridge (11 and 12 chars):
 * `s<inst 3><bridge 5><k 2>` for the shard bridge and `u<inst 3><bridge 5><k 2>p|s`
 * for the uplink's ends on the primary (p) and on the shard (s). Every uplink
 * of an instance starts with `u<inst 3>` (uplinkPrefix): the port guards match
 * it (nft `iifname "u<tag>*"`) and VM ports (`m<tag>…`) can never look like one.
 */
export interface ShardNames { shard: string; upper: string; lower: string }

export class ShardNaming {
  readonly instanceTag: string;
  private readonly bridgeTags = new Map<string, string>();

  constructor(readonly instance: string) {
    this.instanceTag = tag('instance', instance).slice(0, 3);
  }

  /** Prefix of every uplink end of this instance. */
  get uplinkPrefix(): string {
    return `u${this.instanceTag}`;
  }

  names(bridge: string, k: number): ShardNames {
    if (!Number.isInteger(k) || k < 1 || k > MAX_SHARDS) throw new Error(`shard index ${k} out of range`);
    const base = `${this.instanceTag}${this.bridgeTag(bridge)}${k.toString(36).padStart(2, '0')}`;
    return { shard: `s${base}`, upper: `u${base}p`, lower: `u${base}s` };
  }

  /** The shard index of `name` if it is a shard bridge of `bridge`. */
  shardIndex(bridge: string, name: string): number | undefined {
    const head = `s${this.instanceTag}${this.bridgeTag(bridge)}`;
    if (name.length !== head.length + 2 || !name.startsWith(head)) return undefined;
    const rest = name.slice(head.length);
    if (!/^[0-9a-z]{2}$/.test(rest)) return undefined;
    const k = parseInt(rest, 36);
    return k >= 1 && k <= MAX_SHARDS && this.names(bridge, k).shard === name ? k : undefined;
  }

  isUplink(name: string): boolean {
    return name.startsWith(this.uplinkPrefix) && name.length === 12;
  }

  /**
   * The ND port of a configured bridge, `n<inst 3><bridge 5>` (9 chars): a
   * carrier-less tap on the primary with neigh_suppress, through which the
   * bridge answers Neighbour Solicitations for its VM subnets' gateways (decision 0030).
   */
  ndPort(bridge: string): string {
    return `n${this.instanceTag}${this.bridgeTag(bridge)}`;
  }

  /** Uplink ends and ND ports: ports of metald's bridges that are not VM ports. */
  isInfrastructure(name: string): boolean {
    return this.isUplink(name) || (name.length === 9 && name.startsWith(`n${this.instanceTag}`));
  }

  private bridgeTag(bridge: string): string {
    let t = this.bridgeTags.get(bridge);
    if (t === undefined) {
      t = tag('bridge', this.instance, bridge).slice(0, 5);
      this.bridgeTags.set(bridge, t);
    }
    return t;
  }
}

/** Where one configured bridge's ports are, as the plane remembers it for its fast path. */
export interface ShardState {
  /** Index 0 is the primary. */
  names: Map<number, string>;
  /** VM (non-uplink) ports per index. */
  load: Map<number, number>;
}

export interface ShardedPlan extends HostNetworkPlan {
  /** Shard bridges, uplink ends and ND ports made by this plan: IPv6 off before they come up. */
  noIpv6: string[];
  /** `bridge -batch` lines, run after `lines` (the ND ports' fdb entries). */
  fdb: string[];
  /** Per configured bridge, after the plan is applied. */
  shards: Map<string, ShardState>;
  /** Every port on a configured bridge or one of its shards -> the bridge it is on, after the plan. */
  placement: Map<string, string>;
}

export function capacityOf(k: number): number {
  return k === 0 ? PRIMARY_VM_PORTS : SHARD_VM_PORTS;
}

/**
 * VM ports a bridge takes while more shards can still be made. Attaching or
 * detaching a port, and every port state change, loops over all ports of its
 * bridge in the kernel (br_add_if, del_nbp, br_port_state_selection: ~0.13 µs
 * per port per loop here, 0.1 ms more per attach at 900 ports than at 100), so
 * small bridges keep that cost flat; 128 bridges of 256 hold 32 768 VMs, past
 * that they grow evenly to their capacity.
 */
export const SHARD_FILL = 256;

/**
 * Where the next port goes: the lowest index below SHARD_FILL while shards can
 * still be made (undefined: make one), else the least loaded with room
 * (undefined: all full).
 */
export function pickShard(state: ShardState): number | undefined {
  const ks = [...state.names.keys()].sort((a, b) => a - b);
  const load = (k: number) => state.load.get(k) ?? 0;
  if (state.names.size <= MAX_SHARDS) return ks.find((k) => load(k) < Math.min(SHARD_FILL, capacityOf(k)));
  let best: number | undefined;
  for (const k of ks) if (load(k) < capacityOf(k) && (best === undefined || load(k) < load(best))) best = k;
  return best;
}

/**
 * planHostNetwork for configured bridges that may be sharded: places each
 * port that is not on one of its bridge's shards yet on the lowest shard with
 * room (making a new one when all are full), keeps uplinks in place, and with
 * `prune` removes shards that hold no VM port.
 */
export function planShardedHostNetwork(
  want: readonly DesiredBridge[], view: KernelView, naming: ShardNaming, prune: boolean,
): ShardedPlan {
  const expanded: DesiredBridge[] = [];
  const createUplinks: string[] = [];
  const attachUplinks: string[] = [];
  const remove: string[] = [];
  const noIpv6: string[] = [];
  const shards = new Map<string, ShardState>();
  const placement = new Map<string, string>();
  const problems: string[] = [];
  const nd: NdPlan = { create: [], lines: [], remove: [], noIpv6: [], fdb: [] };

  for (const b of want) {
    const state: ShardState = { names: new Map([[0, b.name]]), load: new Map([[0, 0]]) };
    for (const name of view.bridges.keys()) {
      const k = naming.shardIndex(b.name, name);
      if (k !== undefined) {
        state.names.set(k, name);
        state.load.set(k, 0);
      }
    }
    const indexOf = new Map([...state.names].map(([k, n]) => [n, k]));
    for (const [dev, l] of view.links) {
      const k = l.master === undefined ? undefined : indexOf.get(l.master);
      if (k === undefined) continue;
      placement.set(dev, l.master!);
      if (!naming.isInfrastructure(dev)) state.load.set(k, state.load.get(k)! + 1);
    }
    const portsOf = new Map<number, DesiredPort[]>([...state.names.keys()].map((k) => [k, []]));
    for (const p of b.ports) {
      const l = view.links.get(p.device);
      const at = l?.master === undefined ? undefined : indexOf.get(l.master);
      if (at !== undefined) {
        portsOf.get(at)!.push(p);
        continue;
      }
      if (!l) {
        // Not a device yet (a tap before boot): the primary's list, where the plan skips it.
        portsOf.get(0)!.push(p);
        continue;
      }
      let k = pickShard(state);
      if (k === undefined) {
        k = [...Array(MAX_SHARDS).keys()].map((i) => i + 1).find((i) => !state.names.has(i));
        if (k === undefined) {
          problems.push(`${b.name}: all ${MAX_SHARDS} shards are full; ${p.device} not attached`);
          continue;
        }
        const n = naming.names(b.name, k);
        state.names.set(k, n.shard);
        state.load.set(k, 0);
        indexOf.set(n.shard, k);
        portsOf.set(k, []);
      }
      state.load.set(k, state.load.get(k)! + 1);
      portsOf.get(k)!.push(p);
      placement.set(p.device, state.names.get(k)!);
    }

    const uplinkPorts: DesiredPort[] = [];
    const shardBridges: DesiredBridge[] = [];
    for (const [k, shard] of [...state.names].sort((x, y) => x[0] - y[0])) {
      if (k === 0) continue;
      const n = naming.names(b.name, k);
      if (prune && state.load.get(k) === 0 && portsOf.get(k)!.length === 0) {
        // Deleting one veth end deletes both; the bridge goes after its uplink.
        if (view.links.has(n.upper)) remove.push(`link delete dev ${n.upper}`);
        else if (view.links.has(n.lower)) remove.push(`link delete dev ${n.lower}`);
        remove.push(`link delete dev ${shard}`);
        placement.delete(n.upper);
        placement.delete(n.lower);
        state.names.delete(k);
        state.load.delete(k);
        continue;
      }
      const up = view.links.get(n.upper);
      const low = view.links.get(n.lower);
      if (!up || !low) {
        if (up) remove.push(`link delete dev ${n.upper}`);
        if (low) remove.push(`link delete dev ${n.lower}`);
        createUplinks.push(`link add ${n.upper} mtu ${b.mtu} type veth peer name ${n.lower} mtu ${b.mtu}`);
        noIpv6.push(n.upper, n.lower);
        // The shard side is a permanent multicast router port: MLD reports of its
        // VMs reach the primary's querier and snooping table without waiting for a query.
        attachUplinks.push(`link set dev ${n.upper} master ${b.name} mtu ${b.mtu} up`,
          `link set dev ${n.lower} master ${shard} mtu ${b.mtu} up`,
          `link set dev ${n.lower} type bridge_slave mcast_router 2`);
        placement.set(n.upper, b.name);
        placement.set(n.lower, shard);
      }
      uplinkPorts.push({ device: n.upper, mtu: b.mtu, vmId: '', nicId: '' });
      if (!view.bridges.has(shard)) noIpv6.push(shard);
      shardBridges.push({
        name: shard,
        mtu: b.mtu,
        // Only the primary has an address to send MLD queries from.
        attrs: { ...b.attrs, mcast_querier: 0 },
        addresses: [],
        gateways: [],
        subnets: [],
        ports: [...portsOf.get(k)!, { device: n.lower, mtu: b.mtu, vmId: '', nicId: '' }],
      });
    }
    expanded.push({ ...b, ports: [...portsOf.get(0)!, ...uplinkPorts] }, ...shardBridges);
    shards.set(b.name, state);
    const ndPort = naming.ndPort(b.name);
    planNdPort(b, view, ndPort, prune, nd);
    if (b.gateways.length > 0) placement.set(ndPort, b.name);
    else if (prune) placement.delete(ndPort);
  }

  const plan = planHostNetwork(expanded, view, prune);
  // A port that leaves its bridge loses its settings: re-attaching a shard's uplink end makes it a router port again.
  const lowers = new Set(want.flatMap((b) => [...(shards.get(b.name)?.names ?? [])].filter(([k]) => k > 0).map(([k]) => naming.names(b.name, k).lower)));
  const lines = plan.lines.flatMap((l) => {
    const dev = /^link set dev (\S+) master /.exec(l)?.[1];
    return dev !== undefined && lowers.has(dev) ? [l, `link set dev ${dev} type bridge_slave mcast_router 2`] : [l];
  });
  // Shard bridges never carry addresses: prune would only drop marked ones, and there are none.
  const macOf = (b: string) => view.bridges.get(b)?.mac || bridgeMac(b);
  return {
    ...plan,
    // Removals first: a shard deleted and made again by one plan (never happens) would otherwise clash.
    create: [...remove, ...nd.remove, ...plan.create, ...createUplinks, ...nd.create],
    // Gateways last: they need the bridge up with IPv6 on (and old gateway addresses gone, in plan.lines).
    lines: [...lines, ...attachUplinks, ...nd.lines, ...planGateways(want, view.gateways, macOf, prune)],
    problems: [...plan.problems, ...problems],
    noIpv6: [...noIpv6, ...nd.noIpv6],
    fdb: want.filter((b) => nd.fdb.includes(b.name)).map((b) => macOwnerLine(naming.ndPort(b.name), macOf(b.name))),
    shards,
    placement,
  };
}

interface NdPlan { create: string[]; lines: string[]; remove: string[]; noIpv6: string[]; fdb: string[] }

/**
 * The ND port of configured bridge `b` (decision 0030): made when the bridge
 * has gateways to answer for, repaired (master, settings, the bridge MAC's fdb
 * entry) while it does, removed by a pruning reconcile once it has none.
 */
function planNdPort(b: DesiredBridge, view: KernelView, port: string, prune: boolean, nd: NdPlan): void {
  const l = view.links.get(port);
  if (b.gateways.length === 0) {
    if (l && prune) nd.remove.push(`link delete dev ${port}`);
    return;
  }
  if (!l) {
    // Persistent and never opened: no carrier, so it forwards nothing and sends nothing.
    nd.create.push(`tuntap add dev ${port} mode tap`);
    nd.noIpv6.push(port);
  }
  if (!l || l.master !== b.name || l.mtu !== b.mtu || !l.up || !ndPortOk(view.portDetails.get(port))) nd.lines.push(...ndPortLines(b.name, port, b.mtu));
  if (view.macOwner.get(b.name) !== port) nd.fdb.push(b.name);
}
