import { readFile } from 'node:fs/promises';
import type { VmRecord } from '../core/vm/record.js';
import { assertIfName, assertNetnsName } from '../kernel/names.js';
import type { Logger } from '../observability/logger.js';
import { BridgeKernel, isMac } from './bridge-kernel.js';
import {
  addLine, addrsAfter, bridgeMac, desiredHostNetwork, portLine,
  type BridgeSpec, type DesiredBridge, type KernelAddrs, type KernelView, type SkippedNic,
} from './desired.js';
import {
  addGatewaysTo, emptyGateways, gatewayLines, ndPortOk, removalLines, subnetLine, type KernelGateways,
} from './gateways.js';
import { detectVlanFiltering, type VlanFilteringSupport } from './kernel-features.js';
import type { NetworkPlane } from './plane.js';
import { MAX_SHARDS, pickShard, planShardedHostNetwork, ShardNaming, type ShardedPlan, type ShardState } from './shards.js';

// The host side of VM NICs: bridges, their addresses, VM ports on them and the
// gateways of VM subnets (docs/decisions/0014, 0030). Reads the kernel, diffs
// it against desiredHostNetwork, and applies the difference with `ip -batch`,
// so every call is idempotent and a reconcile of a host that is already right
// writes nothing.

export interface BridgePlaneOptions {
  /** Data-plane namespace; undefined = the root namespace (production only). */
  netns: string | undefined;
  bridges: BridgeSpec[];
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
  /** Scopes the names of shard bridges and uplinks (decision 0020); default "metald". */
  instanceName?: string;
}

/** A VM removed less than this long ago is ignored by a reconcile whose VM list may predate the removal. */
const TOMBSTONE_MS = 5 * 60_000;

/** What the plane knows of one configured bridge: from its last read plus its writes. */
interface KnownBridge {
  addrs: KernelAddrs;
  mac: string;
  /** The ND port is attached, set up and owns the bridge MAC (gateways answer ND). */
  ndReady: boolean;
  gateways: KernelGateways;
}

export class BridgeNetworkPlane implements NetworkPlane {
  /** The write steps of the last call: for tests and the bench. */
  lastApplied: string[] = [];
  vlanFiltering: VlanFilteringSupport | undefined;

  private readonly netns: string | undefined;
  private readonly specs: BridgeSpec[];
  private readonly log: BridgePlaneOptions['log'];
  private chain: Promise<unknown> = Promise.resolve();
  private started: Promise<void> | undefined;
  /** Every VM ensured and not removed, so a reconcile with a stale VM list cannot undo a concurrent create. */
  private readonly live = new Map<string, VmRecord>();
  private readonly gone = new Map<string, number>();
  /** "bridge|gw|<address>" and "bridge|net|<prefix>" -> VMs using that gateway or subnet. */
  private readonly users = new Map<string, Set<string>>();
  /** Each configured bridge as known to be configured as desired (from our last read plus our writes). */
  private readonly known = new Map<string, KnownBridge>();
  /** Bridge -> ifindex whose sysctls we wrote (-1: created by us, ifindex not read yet). */
  private readonly sysctlsDone = new Map<string, number>();
  /** Shards of each configured bridge and where every port is (decision 0020), as of our last read plus our writes. */
  private shards = new Map<string, ShardState>();
  private readonly placement = new Map<string, string>();
  readonly naming: ShardNaming;
  private readonly kernel: BridgeKernel;

  constructor(opts: BridgePlaneOptions) {
    if (opts.netns !== undefined) assertNetnsName(opts.netns);
    for (const b of opts.bridges) assertIfName(b.name);
    this.netns = opts.netns;
    this.specs = opts.bridges.map((b) => ({ ...b, addresses: [...b.addresses] }));
    this.log = opts.log;
    this.naming = new ShardNaming(opts.instanceName ?? 'metald');
    this.kernel = new BridgeKernel(opts.netns);
    desiredHostNetwork({ bridges: this.specs, vms: [] }); // fails fast on bad addresses or duplicate names
  }

  /** Processes spawned (reads and writes): for tests and the bench. */
  get stats(): { reads: number; writes: number } {
    return this.kernel.stats;
  }

  /** One-time set-up; called by the first operation if the daemon does not call it. */
  start(): Promise<void> {
    this.started ??= this.startOnce().catch((err: unknown) => {
      this.started = undefined;
      throw err;
    });
    return this.started;
  }

  ensureVm(vm: VmRecord): Promise<void> {
    return this.serial(async () => {
      this.live.set(vm.id, vm);
      this.gone.delete(vm.id);
      const want = this.desiredOf([vm]);
      this.index(want, vm.id, true);
      // Fast path, one round trip of the ip session: ports are set unconditionally
      // (idempotent), addresses, gateways and subnet routes only when our picture of
      // the bridge lacks them. Anything unexpected (bridge gone, port missing, address
      // added by someone else) falls back to read-and-diff.
      const fast = this.fastLines(want);
      if (fast !== undefined) {
        const { lines, placed } = fast;
        try {
          await this.kernel.runFast(lines);
          this.lastApplied = lines;
          for (const b of want) this.noteAdded(b);
          this.notePlaced(placed);
          return;
        } catch (err) {
          this.log.debug({ vm_id: vm.id, err: String(err) }, 'bridge plane fast path failed; reading the kernel');
        }
      }
      await this.converge(want, false);
    });
  }

  removeVm(vm: VmRecord): Promise<void> {
    return this.serial(async () => {
      this.live.delete(vm.id);
      this.gone.set(vm.id, Date.now());
      // The port leaves with the VM's host device (the backend deletes it next).
      this.notePlaced(vm.nics.map((n) => ({ device: n.hostDevice, master: undefined })));
      // The lifecycle removes a VM in state 'deleting', which desiredHostNetwork
      // leaves out; what it had is what the same VM planned as live.
      const mine = this.desiredOf([{ ...vm, state: 'running' }]);
      this.index(mine, vm.id, false);
      // Ports need nothing: they vanish with the VM's host device. A gateway
      // and a subnet route go when no other VM on the bridge names them.
      const drop = mine.map((b) => ({
        bridge: b.name,
        gateways: b.gateways.filter((g) => !this.users.has(`${b.name}|gw|${g.address}`)).map((g) => g.address),
        subnets: b.subnets.filter((n) => !this.users.has(`${b.name}|net|${n.prefix}`)).map((n) => n.prefix),
      })).filter((d) => d.gateways.length + d.subnets.length > 0);
      if (drop.length === 0) return;
      let view: KernelView | undefined;
      const have = (br: string) => (view ? view.gateways.get(br) : this.known.get(br)?.gateways);
      const lines = () => drop.flatMap((d) => removalLines(d.bridge, d.gateways, d.subnets, have(d.bridge)));
      if (drop.some((d) => !this.known.has(d.bridge))) view = await this.read();
      try {
        this.lastApplied = lines();
        if (this.lastApplied.length) await this.kernel.runFast(this.lastApplied);
      } catch {
        // Our picture was stale (someone removed one already): once more from the kernel.
        view = await this.read();
        this.lastApplied = lines();
        await this.kernel.write(this.lastApplied);
      }
      for (const d of drop) {
        const k = this.known.get(d.bridge)?.gateways;
        for (const p of d.subnets) k?.subnets.delete(p);
        for (const g of d.gateways) {
          k?.local.delete(g);
          k?.neigh.delete(g);
        }
      }
    });
  }

  /** No-op here: the isolation issue enforces vm.isolated (nftables plane); the lifecycle already records it. */
  async applyIsolation(): Promise<void> {}

  reconcile(vms: readonly VmRecord[]): Promise<void> {
    return this.serial(async () => {
      const now = Date.now();
      for (const [id, at] of this.gone) if (now - at > TOMBSTONE_MS) this.gone.delete(id);
      const effective = new Map<string, VmRecord>();
      for (const vm of vms) if (!this.gone.has(vm.id)) effective.set(vm.id, vm);
      for (const [id, vm] of this.live) if (!effective.has(id)) effective.set(id, vm);
      this.live.clear();
      for (const [id, vm] of effective) this.live.set(id, vm);
      const desired = desiredHostNetwork({ bridges: this.specs, vms: [...effective.values()] });
      this.logSkipped(desired.skipped);
      this.users.clear();
      for (const b of desired.bridges) {
        for (const g of b.gateways) this.users.set(`${b.name}|gw|${g.address}`, new Set(g.vms));
        for (const n of b.subnets) this.users.set(`${b.name}|net|${n.prefix}`, new Set(n.vms));
      }
      await this.converge(desired.bridges, true);
    });
  }

  // --- internals ---------------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      await this.start();
      return fn();
    });
    this.chain = next.catch(() => {});
    return next;
  }

  private async startOnce(): Promise<void> {
    if (this.netns !== undefined) {
      // Our own namespace: pin what the host side relies on. br_netfilter is built in
      // here and defaults to 1 in every new namespace, which would run bridged
      // frames through ip6tables/inet hooks; the port guards use the bridge family.
      // New links (VM ports) start without IPv6: a port never needs an address, and
      // 10k ports' link-locals and fe80::/64 routes make every address add and
      // port up walk them (addrconf_verify, fib6_ifup). Bridges get it back below.
      // -e: without br_netfilter the net.bridge keys do not exist, and need not.
      await this.kernel.sysctl([
        'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.default.accept_ra=0', 'net.ipv6.conf.default.accept_redirects=0',
        'net.ipv6.conf.default.disable_ipv6=1', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-iptables=0',
      ], true);
    } else {
      // The host's own namespace is the operator's: report, do not change (guide "Host Network Hardening").
      const read = (p: string) => readFile(p, 'utf8').then((s) => s.trim(), () => undefined);
      if ((await read('/proc/sys/net/ipv6/conf/all/forwarding')) === '0') {
        this.log.warn({}, 'net.ipv6.conf.all.forwarding is 0: VM subnets will not be routed (see the deployment guide, host hardening)');
      }
      if ((await read('/proc/sys/net/bridge/bridge-nf-call-ip6tables')) === '1') {
        this.log.warn({}, 'net.bridge.bridge-nf-call-ip6tables is 1: bridged VM traffic also passes ip6tables/inet hooks');
      }
    }
    for (const b of this.specs.filter((s) => s.stp)) {
      // SPEC-NOTES 9: honoured, but say what it costs.
      this.log.warn({ bridge: b.name, forward_delay_s: b.forwardDelaySec },
        `STP is on for ${b.name}: a new VM port listens and learns for 2 x forward_delay = ${2 * b.forwardDelaySec} s before it forwards`);
    }
    this.vlanFiltering = await detectVlanFiltering(this.netns);
    this.log.info({ vlan_filtering: this.vlanFiltering.supported, detail: this.vlanFiltering.detail }, 'bridge vlan_filtering probe');
  }

  /** desiredHostNetwork restricted to the bridges these VMs use (config addresses included). */
  private desiredOf(vms: VmRecord[]): DesiredBridge[] {
    const d = desiredHostNetwork({ bridges: this.specs, vms });
    this.logSkipped(d.skipped);
    const used = new Set(vms.flatMap((v) => v.nics.map((n) => n.bridge)));
    return d.bridges.filter((b) => used.has(b.name));
  }

  private index(bridges: DesiredBridge[], vmId: string, add: boolean): void {
    const keys = bridges.flatMap((b) => [...b.gateways.map((g) => `${b.name}|gw|${g.address}`), ...b.subnets.map((n) => `${b.name}|net|${n.prefix}`)]);
    for (const key of keys) {
      const users = this.users.get(key) ?? new Set<string>();
      if (add) users.add(vmId);
      else users.delete(vmId);
      if (users.size > 0) this.users.set(key, users);
      else this.users.delete(key);
    }
  }

  /**
   * A port already placed goes (again) to its shard; a new one to the lowest
   * shard with room. undefined when that needs a read or a new shard.
   */
  private fastLines(want: DesiredBridge[]): { lines: string[]; placed: { device: string; master: string }[] } | undefined {
    const lines: string[] = [];
    const placed: { device: string; master: string }[] = [];
    for (const b of want) {
      const k = this.known.get(b.name);
      const state = this.shards.get(b.name);
      // A first gateway on this bridge needs its ND port first: the read-and-diff path makes it.
      if (!k || !state || (b.gateways.length > 0 && !k.ndReady)) return undefined;
      for (const a of b.addresses) {
        if (!k.addrs.has(a.address)) lines.push(addLine(b.name, a.address, a.length));
      }
      for (const g of b.gateways) if (!k.gateways.local.has(g.address) || !k.gateways.neigh.has(g.address)) lines.push(...gatewayLines(b.name, g.address, k.mac));
      for (const n of b.subnets) if (!k.gateways.subnets.has(n.prefix)) lines.push(subnetLine(b.name, n.prefix));
      const load = new Map(state.load);
      for (const p of b.ports) {
        let master = this.placement.get(p.device);
        if (master === undefined || ![...state.names.values()].includes(master)) {
          const k = pickShard({ names: state.names, load });
          if (k === undefined) return undefined;
          load.set(k, (load.get(k) ?? 0) + 1);
          master = state.names.get(k)!;
        }
        lines.push(portLine(master, p.device, p.mtu));
        placed.push({ device: p.device, master });
      }
    }
    return { lines, placed };
  }

  /** Keep placement and shard loads in step with a port that joined (master) or left (undefined). */
  private notePlaced(changes: { device: string; master: string | undefined }[]): void {
    for (const { device, master } of changes) {
      const before = this.placement.get(device);
      if (before === master) continue;
      for (const state of this.shards.values()) {
        for (const [k, name] of state.names) {
          if (name === before) state.load.set(k, Math.max(0, (state.load.get(k) ?? 0) - 1));
          if (name === master) state.load.set(k, (state.load.get(k) ?? 0) + 1);
        }
      }
      if (master === undefined) this.placement.delete(device);
      else this.placement.set(device, master);
    }
  }

  /** Uplink ends on the configured bridges and their shards (for the port guards: not VM ports, not unknown). */
  uplinkPorts(): string[] {
    return [...this.placement.keys()].filter((d) => this.naming.isUplink(d)).sort();
  }

  /**
   * Every uplink end any configured bridge may ever have (2 x MAX_SHARDS each):
   * the port guards trust them up front, so a shard made by an ensureVm forwards
   * at once instead of after the firewall's next reconcile. No VM port can
   * carry these names (VM ports are `m…`), and only metald makes links here.
   */
  possibleUplinkPorts(): string[] {
    return this.specs.flatMap((b) => Array.from({ length: MAX_SHARDS }, (_, i) => this.naming.names(b.name, i + 1)))
      .flatMap((n) => [n.upper, n.lower]);
  }

  /** The shard bridges each configured bridge has now (primary first). */
  shardBridges(bridge: string): string[] {
    const s = this.shards.get(bridge);
    return s ? [...s.names].sort((a, b) => a[0] - b[0]).map(([, n]) => n) : [];
  }

  /** After the fast path's lines ran: everything `b` wants (of one VM) is in place. */
  private noteAdded(b: DesiredBridge): void {
    const k = this.known.get(b.name);
    if (!k) return;
    for (const a of b.addresses) if (!k.addrs.has(a.address)) k.addrs.set(a.address, { length: a.length, ours: true });
    addGatewaysTo(k.gateways, b, k.mac);
  }

  /** Read, plan, apply; once more from a fresh read if the kernel changed under us. */
  private async converge(want: DesiredBridge[], prune: boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const view = await this.read();
      const plan = planShardedHostNetwork(want, view, this.naming, prune);
      for (const w of plan.warnings) this.warnOnce(w);
      try {
        this.lastApplied = await this.apply(plan, view);
      } catch (err) {
        for (const b of want) this.known.delete(b.name);
        if (attempt >= 2) throw err;
        this.log.warn({ err: String(err) }, 'bridge plane step failed; re-reading the kernel');
        continue;
      }
      for (const b of want) {
        if (plan.problems.some((p) => p.startsWith(`${b.name}:`))) this.known.delete(b.name);
        else this.known.set(b.name, this.knownAfter(b, view, prune));
      }
      for (const [name, state] of plan.shards) this.shards.set(name, state);
      // A full read places every port there is: what it does not place (deleted VMs, pruned infrastructure) is forgotten.
      if (prune) this.placement.clear();
      for (const [device, master] of plan.placement) this.placement.set(device, master);
      if (plan.problems.length > 0) throw new Error(`bridge plane: ${plan.problems.join('; ')}`);
      return;
    }
  }

  private knownAfter(b: DesiredBridge, view: KernelView, prune: boolean): KnownBridge {
    const port = this.naming.ndPort(b.name);
    const l = view.links.get(port);
    const mac = view.bridges.get(b.name)?.mac || bridgeMac(b.name);
    const wasReady = l?.master === b.name && l.up && ndPortOk(view.portDetails.get(port)) && view.macOwner.get(b.name) === port;
    return {
      addrs: addrsAfter(b, view.bridges.get(b.name)?.addrs, prune),
      mac,
      // The plan made the ND port right when the bridge has gateways, and pruned it when not.
      ndReady: b.gateways.length > 0 || (!prune && wasReady),
      // With prune the plan removed ours that nothing wants: what is left is what is wanted.
      gateways: addGatewaysTo(prune ? emptyGateways() : view.gateways.get(b.name) ?? emptyGateways(), b, mac),
    };
  }

  private read(): Promise<KernelView> {
    return this.kernel.read(this.specs.map((b) => ({ bridge: b.name, ndPort: this.naming.ndPort(b.name) })));
  }

  private async apply(plan: ShardedPlan, view: KernelView): Promise<string[]> {
    const steps: string[] = [];
    const configured = (n: string) => this.specs.some((s) => s.name === n);
    if (plan.create.length) {
      await this.kernel.write(plan.create);
      steps.push(...plan.create);
      for (const name of plan.created) this.sysctlsDone.delete(name);
    }
    if (plan.noIpv6.length) {
      // Shard bridges and uplinks are plain L2: no link-local, no RA processing,
      // not a second host on the VMs' link (the root namespace's default may have IPv6 on).
      const kv = plan.noIpv6.map((n) => `net/ipv6/conf/${n}/disable_ipv6=1`);
      await this.kernel.sysctl(kv, false);
      steps.push(...kv.map((s) => `sysctl ${s}`));
    }
    const fresh = [...view.bridges.entries()].filter(([n]) => configured(n));
    for (const [name, k] of fresh) {
      // Adopt the ifindex of a bridge we created, so its recreation by anyone shows as a change.
      if (this.sysctlsDone.get(name) === -1) this.sysctlsDone.set(name, k.ifindex);
    }
    const need = [...plan.created.filter(configured), ...fresh.filter(([n, k]) => this.sysctlsDone.get(n) !== k.ifindex).map(([n]) => n)];
    if (need.length) {
      // Slash form: a bridge name may contain dots (the guide's step 1.2 sysctls).
      const kv = need.flatMap((n) => ['disable_ipv6=0', 'forwarding=1', 'accept_ra=0', 'accept_redirects=0'].map((x) => `net/ipv6/conf/${n}/${x}`));
      await this.kernel.sysctl(kv, false);
      steps.push(...kv.map((s) => `sysctl ${s}`));
      for (const n of need) this.sysctlsDone.set(n, plan.created.includes(n) ? -1 : view.bridges.get(n)!.ifindex);
    }
    await this.kernel.write(plan.lines);
    steps.push(...plan.lines);
    const fdb = plan.fdb.filter((l) => isMac(l.split(' ')[2] ?? ''));
    await this.kernel.writeBridge(fdb);
    steps.push(...fdb.map((l) => `bridge ${l}`));
    return steps;
  }

  private readonly reported = new Set<string>();
  private warnOnce(msg: string, fields: Record<string, unknown> = {}): void {
    if (this.reported.has(msg)) return;
    this.reported.add(msg);
    this.log.warn(fields, msg);
  }

  private logSkipped(skipped: SkippedNic[]): void {
    for (const s of skipped) this.warnOnce(`NIC ${s.vmId}/${s.nicId} left without host-side plumbing: ${s.reason}`, { vm_id: s.vmId, nic: s.nicId });
  }
}
