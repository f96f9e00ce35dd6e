import type { VmRecord } from '../core/vm/record.js';
import { ipBatch, ipJson, sysctlWrite } from '../kernel/netns.js';
import { assertIfName, assertNetnsName } from '../kernel/names.js';
import type { Logger } from '../observability/logger.js';
import type { NetworkPlane } from './plane.js';
import {
  desiredRoutes, parseRoutedView, planRouted, ROUTED_HOST_ADDRESS, ROUTED_PROTO, routedLines, routedSysctls,
  type DesiredRoute, type RoutedAttachment,
} from './routed.js';

// The routed attachment (docs/decisions/0021): per VM NIC a point-to-point
// host device with fe80::1 and a route to the NIC's /128 or /64. An ensure is
// two processes (sysctls, then one `ip -batch` of idempotent replaces); a
// reconcile reads links, fe80::1 holders and our routes, and writes only the difference.

export interface RoutedPlaneOptions {
  netns: string | undefined;
  attachments: RoutedAttachment[];
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
}

export class RoutedNetworkPlane implements NetworkPlane {
  lastApplied: string[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private started = false;

  constructor(private readonly opts: RoutedPlaneOptions) {
    if (opts.netns !== undefined) assertNetnsName(opts.netns);
    for (const a of opts.attachments) assertIfName(a.name);
  }

  ensureVm(vm: VmRecord): Promise<void> {
    return this.serial(async () => {
      const want = desiredRoutes(this.opts.attachments, [vm]);
      if (want.length === 0) return;
      try {
        await this.apply(want.flatMap((r) => routedSysctls(r.device)), want.flatMap(routedLines));
      } catch (err) {
        // A device that is not there yet (a tap made at boot) is plumbed by a later ensure or reconcile.
        const present = new Set((await ipJson(this.opts.netns, ['link', 'show'])).map((l) => String(l['ifname']).split('@')[0]));
        const here = want.filter((r) => present.has(r.device));
        if (here.length === want.length) throw err;
        await this.apply(here.flatMap((r) => routedSysctls(r.device)), here.flatMap(routedLines));
      }
    });
  }

  removeVm(vm: VmRecord): Promise<void> {
    return this.serial(async () => {
      const lines = desiredRoutes(this.opts.attachments, [{ ...vm, state: 'running' }])
        .filter((r) => r.dst !== '').map((r) => `route del ${r.dst} dev ${r.device} proto ${ROUTED_PROTO}`);
      // -force: a route already gone (its device deleted first) is not an error.
      if (lines.length) await ipBatch(this.opts.netns, lines, { force: true });
      this.lastApplied = lines;
    });
  }

  async applyIsolation(): Promise<void> {}

  reconcile(vms: readonly VmRecord[]): Promise<void> {
    return this.serial(async () => {
      const want = desiredRoutes(this.opts.attachments, vms);
      const [links, addrs, routes] = await Promise.all([
        ipJson(this.opts.netns, ['link', 'show']),
        ipJson(this.opts.netns, ['-6', 'address', 'show', 'to', `${ROUTED_HOST_ADDRESS}/128`]),
        ipJson(this.opts.netns, ['-6', 'route', 'show', 'proto', String(ROUTED_PROTO)]),
      ]);
      const plan = planRouted(want, parseRoutedView(links, addrs, routes), true);
      await this.apply(plan.sysctlDevices.flatMap(routedSysctls), plan.lines);
    });
  }

  /** The routes this plane wants for these VMs (for tests and the bench). */
  routesOf(vms: readonly VmRecord[]): DesiredRoute[] {
    return desiredRoutes(this.opts.attachments, vms);
  }

  private async apply(sysctls: string[], lines: string[]): Promise<void> {
    if (sysctls.length) await sysctlWrite(this.opts.netns, sysctls);
    if (lines.length) await ipBatch(this.opts.netns, lines);
    this.lastApplied = [...sysctls.map((s) => `sysctl ${s}`), ...lines];
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      if (!this.started && this.opts.netns !== undefined) {
        // Our own data-plane namespace: the host routes between VMs and out. (The root
        // namespace's forwarding is the operator's; the bridge plane warns about it.)
        await sysctlWrite(this.opts.netns, ['net/ipv6/conf/all/forwarding=1']);
      }
      this.started = true;
      return fn();
    });
    this.chain = next.catch(() => {});
    return next;
  }
}
