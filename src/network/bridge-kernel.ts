import { run } from '../kernel/exec.js';
import { IpSession } from '../kernel/ip-session.js';
import { assertIfName, assertNetnsName } from '../kernel/names.js';
import { parseKernelView, type KernelView } from './desired.js';
import { GATEWAY_PROTO, parseGatewayView } from './gateways.js';

// The bridge plane's I/O (docs/decisions/0014, 0020, 0030): reading the kernel
// into a KernelView and writing `ip -batch` / `bridge -batch` lines and
// sysctls, in the data-plane namespace or (production) the root one.

/** Largest `ip -batch` input per process (a pipe buffer is 64 KiB). */
const BATCH_BYTES = 48 * 1024;
/** Lines per call of the gateway session (each call well inside its 30 s timeout). */
const GATEWAY_CHUNK = 1000;

/**
 * Gateway lines (neighbours and routes on the bridges, decision 0030) go to a
 * session of their own: `ip neigh` dumps every link once per `ip` process
 * (iproute2's ll_init_map) to map names, which at 10k sandbox VMs costs
 * seconds (each veth's peer namespace id is a linear search in the kernel) —
 * once per session instead of once per batch process — and leaves that process
 * with a name cache that goes stale when a link is re-made, so only lines that
 * name bridges go there.
 */
export function isGatewayLine(l: string): boolean {
  return l.startsWith('neigh ') || l.startsWith('route ');
}

export function isMac(s: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(s);
}

export class BridgeKernel {
  /** Processes spawned (reads and writes): for tests and the bench. */
  readonly stats = { reads: 0, writes: 0 };
  /** The fast path's writes: netlink round trips, not a process each (src/kernel/ip-session.ts). */
  private readonly session: IpSession;
  private readonly gatewaySession: IpSession;

  constructor(private readonly netns: string | undefined) {
    if (netns !== undefined) assertNetnsName(netns);
    this.session = new IpSession(netns);
    this.gatewaySession = new IpSession(netns);
  }

  /** Lines through the long-lived `ip -batch` sessions (ports and gateways side by side): netlink round trips only. */
  async runFast(lines: string[]): Promise<void> {
    this.stats.writes++;
    const gw = lines.filter(isGatewayLine);
    const rest = lines.filter((l) => !isGatewayLine(l));
    const results = await Promise.allSettled([this.onSession(this.session, rest), this.onSession(this.gatewaySession, gw)]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** A session whose lines failed starts afresh next time: its name cache may be what is stale. */
  private async onSession(session: IpSession, lines: string[]): Promise<void> {
    try {
      for (let i = 0; i < lines.length; i += GATEWAY_CHUNK) await session.run(lines.slice(i, i + GATEWAY_CHUNK));
    } catch (err) {
      session.close();
      throw err;
    }
  }

  /**
   * The kernel as the plan needs it. `configured`: the configured bridges and
   * their ND ports (decision 0030), whose port settings and the owner of the
   * bridge MAC's fdb entry are read too.
   */
  async read(configured: readonly { bridge: string; ndPort: string }[]): Promise<KernelView> {
    this.stats.reads += 4 + configured.length;
    // Details (bridge attributes) only for bridges: `-d` on every VM port would
    // multiply the size of the link dump. Neighbours and routes: only permanent
    // ones and ours; the parse keeps those on configured bridges.
    const parse = (out: string) => (out.trim() === '' ? [] : (JSON.parse(out) as Record<string, unknown>[]));
    const [bridges, links, neighs, routes, ...ports] = await Promise.all([
      this.ip(['-d', '-json', 'address', 'show', 'type', 'bridge']),
      this.ip(['-json', 'link', 'show']),
      this.ip(['-json', '-6', 'neigh', 'show', 'nud', 'permanent']),
      this.ip(['-json', '-6', 'route', 'show', 'table', 'all', 'proto', String(GATEWAY_PROTO)]),
      // A missing ND port is normal (no gateways yet): its show fails.
      ...configured.map((c) => this.ip(['-d', '-json', 'link', 'show', 'dev', assertIfName(c.ndPort)]).catch(() => '')),
    ]);
    const view = parseKernelView(parse(bridges), parse(links));
    view.gateways = parseGatewayView(parse(neighs), parse(routes), new Set(configured.map((c) => c.bridge)));
    const owners = await Promise.all(configured.map(async (c, i) => {
      const info = (parse(ports[i]!)[0]?.['linkinfo'] as Record<string, unknown> | undefined)?.['info_slave_data'];
      if (info && typeof info === 'object') view.portDetails.set(c.ndPort, info as Record<string, unknown>);
      const mac = view.bridges.get(c.bridge)?.mac;
      if (!mac || !isMac(mac) || !view.links.has(c.ndPort)) return undefined;
      this.stats.reads++;
      const out = await this.bridgeCmd(['-json', 'fdb', 'get', mac, 'br', c.bridge]).catch(() => '');
      return parse(out)[0]?.['ifname'];
    }));
    configured.forEach((c, i) => {
      const o = owners[i];
      if (typeof o === 'string') view.macOwner.set(c.bridge, o);
    });
    return view;
  }

  /** Lines in order: everything but gateway lines by `ip -batch` processes, then the gateway lines on their session. */
  async write(lines: string[]): Promise<void> {
    // One line is one command; a line break inside would start a command nobody wrote.
    if (lines.some((l) => /[\r\n\0]/.test(l))) throw new Error('ip batch line contains a line break');
    await this.writeProcesses(lines.filter((l) => !isGatewayLine(l)));
    const gw = lines.filter(isGatewayLine);
    if (gw.length) {
      this.stats.writes++;
      await this.onSession(this.gatewaySession, gw);
    }
  }

  private async writeProcesses(lines: string[]): Promise<void> {
    // Chunks: each `ip` stays far below exec's 30 s timeout (a 10k-VM start-up
    // reconcile is ~30k lines, seconds of kernel work), and its stdin fits in a
    // pipe buffer, so an `ip` that stops at a bad line cannot EPIPE us mid-write.
    let chunk: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (chunk.length === 0) return;
      this.stats.writes++;
      await this.ip(['-batch', '-'], `${chunk.join('\n')}\n`);
      chunk = [];
      bytes = 0;
    };
    for (const l of lines) {
      if (bytes + l.length + 1 > BATCH_BYTES) await flush();
      chunk.push(l);
      bytes += l.length + 1;
    }
    await flush();
  }

  /** `bridge -batch -` (fdb entries: few lines, reconcile only). */
  async writeBridge(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    if (lines.some((l) => /[\r\n\0]/.test(l))) throw new Error('bridge batch line contains a line break');
    this.stats.writes++;
    await this.bridgeCmd(['-batch', '-'], `${lines.join('\n')}\n`);
  }

  async sysctl(kv: string[], ignoreMissing: boolean): Promise<void> {
    this.stats.writes++;
    const args = ['-q', ...(ignoreMissing ? ['-e'] : []), '-w', ...kv];
    // Only production (no data-plane namespace) writes in the root namespace, and only for its own bridges.
    if (this.netns === undefined) await run('sysctl', args);
    else await run('ip', ['netns', 'exec', this.netns, 'sysctl', ...args]);
  }

  close(): void {
    this.session.close();
    this.gatewaySession.close();
  }

  /**
   * `ip` in the data-plane namespace. Not `ip -n`: iproute2 then unshares the
   * mount namespace and remounts /sys, copying every mount — one per `ip netns`
   * namespace, i.e. per sandbox VM — so one call costs 2.7 ms with 20 mounts and
   * 26 ms with 10k (measured, bench/netsetup). nsenter only joins the network
   * namespace, which is all rtnetlink needs, at the same cost at any scale.
   */
  private ip(args: string[], input?: string): Promise<string> {
    return this.inNetns('ip', args, input);
  }

  private bridgeCmd(args: string[], input?: string): Promise<string> {
    return this.inNetns('bridge', args, input);
  }

  private inNetns(tool: 'ip' | 'bridge', args: string[], input?: string): Promise<string> {
    const opts = input === undefined ? {} : { input };
    if (this.netns === undefined) return run(tool, args, opts);
    return run('nsenter', [`--net=/run/netns/${this.netns}`, '--', tool, ...args], opts);
  }
}
