import type { VmBackend } from '../backends/backend.js';
import { QemuBackend } from '../backends/qemu/qemu-backend.js';
import { SandboxBackend } from '../backends/sandbox/sandbox-backend.js';
import { firecrackerFromConfig } from '../backends/firecracker/from-config.js';
import { Authenticator } from '../api/auth.js';
import { ApiServer } from '../api/server.js';
import { RpcEnvelope, type RpcObserver } from '../api/envelope.js';
import { createFastReads } from '../api/fast-reads.js';
import { startupCheck } from '../doctor/doctor.js';
import { VmReads } from '../api/vm-reads.js';
import { registerVmService } from '../api/vm-service.js';
import { registerPoolService } from '../api/pool-service.js';
import { bridgeSubnets, ipamFromConfig } from './ipam-from-config.js';
import { allBridges, allPools, type MetaldConfig } from '../config/schema.js';
import { parsePrefix } from '../core/net/ipv6.js';
import type { ValidationContext } from '../core/vm/validate.js';
import { VmManager } from '../lifecycle/manager.js';
import { Reconciler } from '../lifecycle/reconciler.js';
import { join } from 'node:path';
import { BridgeNetworkPlane } from '../network/bridge-plane.js';
import { UnmanagedNetworkPlane, type NetworkPlane } from '../network/plane.js';
import { RadvdPlane } from '../network/radvd-plane.js';
import { FirewallPlane } from '../firewall/firewall-plane.js';
import { TenantIndex } from '../firewall/tenant-index.js';
import { firewallOptions, routedFirewallOptions } from './firewall-from-config.js';
import { radvdSettings } from './render.js';
import { RoutedNetworkPlane } from '../network/routed-plane.js';
import { AttachmentSplitPlane } from '../network/split-plane.js';
import { RadvdSupervisor } from '../network/radvd/supervisor.js';
import type { Logger } from '../observability/logger.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { EventRing } from '../events/security-events.js';
import { securityEventsRoute } from '../events/events-route.js';
import { tapSecurityLog } from '../events/log-tap.js';
import { Observability } from '../observability/observability.js';
import { SecurityOps } from './security-ops.js';
import { traced } from '../observability/spans.js';
import { Tracing } from '../observability/tracing.js';
import type { Store } from '../store/store.js';

// Wires the adapters to the core. Nothing here decides policy: it builds
// the pieces from config, reconciles once, then serves.

export interface DaemonOptions {
  /** Overrides config `port` (the blue-green `--port`). */
  port?: number;
  log: Logger;
  /** Periodic reconcile; 0 disables (tests drive it by hand). */
  reconcileIntervalMs?: number;
}

export class Daemon {
  private timer?: NodeJS.Timeout;

  private constructor(
    readonly config: MetaldConfig,
    readonly store: Store,
    readonly backend: VmBackend,
    readonly manager: VmManager,
    readonly reconciler: Reconciler,
    readonly network: NetworkPlane,
    readonly api: ApiServer,
    readonly address: { host: string; port: number },
    private readonly log: Logger,
    readonly observability: Observability,
    readonly security: SecurityOps,
    private readonly tracing: Tracing,
  ) {}

  static async start(cfg: MetaldConfig, opts: DaemonOptions): Promise<Daemon> {
    const events = new EventRing(cfg.security_events.max_events, cfg.security_events.retention);
    // Isolation on/off and repaired drift, logged by the manager, reconciler and firewall plane, are events too.
    const log = tapSecurityLog(opts.log, events);
    const auth = buildAuth(cfg, log, events);
    const backend = buildBackend(cfg, log);
    const store = SqliteStore.open(cfg.data_dir);
    // Before anything is built: the network plane is wrapped in spans only when tracing is on.
    const tracing = await Tracing.start({ enabled: cfg.otel.enabled, samplingRate: cfg.otel.sampling_rate, endpoint: cfg.otel.endpoint, instance: cfg.instance_name }, log);
    try {
      await backend.start();
      // Same checks as `metald doctor`: the data-plane namespace (which backend.start
      // just made sure exists) gets the sysctl baseline; the root namespace is only read.
      // Throws the doctor's must-have message when the host cannot run metald.
      const preflight = await startupCheck(cfg);
      if (preflight.applied.length > 0) {
        log.info({ netns: cfg.dataplane.netns, sysctls: preflight.applied }, 'applied the sysctl baseline to the data-plane namespace');
      }
      const advice = preflight.results.filter((r) => r.status === 'warn');
      if (advice.length > 0) log.warn({ checks: advice.map((r) => `${r.id}: ${r.found}`) }, 'doctor advice not followed (metald doctor for details)');
      const network = buildNetworkPlane(cfg, log);
      const ipam = ipamFromConfig(cfg);
      ipam?.load(await store.listAllocations());
      const manager = new VmManager(store, backend, network, {
        instanceName: cfg.instance_name,
        ipam,
        bridgeSubnets: bridgeSubnets(cfg),
        routedAttachments: allBridges(cfg).filter((b) => b.mode === 'routed').map((b) => b.name),
        guestDns: {
          servers: cfg.ipv6.dns.servers,
          searchDomain: cfg.ipv6.dns.search_domain,
          dnssec: cfg.ipv6.dns.enable_dnssec,
          dnsOverTls: cfg.ipv6.dns.dns_over_tls,
        },
        maxVms: cfg.max_vms,
        defaultShutdownTimeoutMs: cfg.shutdown_timeout,
        validation: validationContext(cfg),
      }, log);
      const reconciler = new Reconciler(store, backend, network, manager, log);
      const report = await reconciler.reconcileAll();
      log.info({ ...report }, 'start-up reconcile done');
      await manager.loadIndexes();

      const obs = new Observability(cfg, { store, manager, network, events, log });
      const security = new SecurityOps(cfg, { ring: events, store, manager, auth, log, api: { host: cfg.listen_address, port: opts.port ?? cfg.port } });
      security.registerMetrics(obs.metrics.registry);
      const observer: RpcObserver = {
        onRpc: (method, code, seconds) => obs.metrics.observeRpc(method, code, seconds),
        onInternalError: (method, err) => log.error({ method, err: err instanceof Error ? err.stack : String(err) }, 'internal error'),
      };
      const envelope = new RpcEnvelope(auth, observer);
      const api = new ApiServer({
        host: cfg.listen_address,
        port: opts.port ?? cfg.port,
        routes: (router) => {
          registerVmService(router, manager, envelope, security.audit);
          registerPoolService(router, { manager, store, quarantineMs: cfg.ipv6.quarantine }, envelope);
        },
        fastPath: createFastReads(new VmReads(manager), envelope),
        extra: securityEventsRoute(events, envelope),
        tls: cfg.tls ? { certFile: cfg.tls.cert_file, keyFile: cfg.tls.key_file } : undefined,
      });
      const address = await api.listen();
      security.start();
      await obs.start();
      const d = new Daemon(cfg, store, backend, manager, reconciler, network, api, address, log, obs, security, tracing);
      d.schedule(opts.reconcileIntervalMs ?? 10_000);
      log.info({ address, backend: backend.name, data_dir: cfg.data_dir, tls: !!cfg.tls }, 'metald serving');
      return d;
    } catch (err) {
      await store.close();
      await tracing.shutdown();
      throw err;
    }
  }

  private schedule(intervalMs: number): void {
    if (intervalMs <= 0) return;
    const tick = async () => {
      try {
        await this.reconciler.reconcileAll();
        await this.manager.expireQuarantine();
      } catch (err) {
        this.log.error({ err: String(err) }, 'periodic reconcile failed');
      }
      this.timer = setTimeout(tick, intervalMs).unref();
    };
    this.timer = setTimeout(tick, intervalMs).unref();
  }

  /** Stops serving; VMs (and radvd) keep running (the next start adopts them). */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.security.stop();
    await this.observability.stop();
    await this.api.close();
    if (this.network instanceof RadvdPlane || this.network instanceof FirewallPlane) await this.network.release();
    await this.backend.stop();
    await this.store.close();
    // Last: flushes the spans of everything above.
    await this.tracing.shutdown();
  }
}

/**
 * The host side of VM NICs: bridges and ports (with router advertisements)
 * when IPv6 bridges are configured, else only what the backend plumbs.
 */
function buildNetworkPlane(cfg: MetaldConfig, log: Logger): NetworkPlane {
  if (!cfg.ipv6.enabled || allBridges(cfg).length === 0) return new UnmanagedNetworkPlane();
  const bridges = allBridges(cfg).filter((b) => b.mode === 'bridged');
  const routed = allBridges(cfg).filter((b) => b.mode === 'routed');
  const netns = cfg.dataplane.netns;
  const plane = new BridgeNetworkPlane({
    netns,
    log,
    instanceName: cfg.instance_name,
    bridges: bridges.map((b) => ({
      name: b.name,
      mtu: b.mtu,
      stp: b.enable_stp,
      forwardDelaySec: b.forward_delay,
      mldSnooping: b.enable_mld_snooping,
      querier: b.enable_mld_snooping,
      ageingTimeSec: 30,
      addresses: b.ipv6_address ? [b.ipv6_address] : [],
    })),
  });
  const supervisor = new RadvdSupervisor({ netns, dir: join('/run/metald', cfg.instance_name), instance: cfg.instance_name, log });
  const inner = routed.length === 0 ? plane : new AttachmentSplitPlane(plane,
    new RoutedNetworkPlane({ netns, log, attachments: routed.map((b) => ({ name: b.name, mtu: b.mtu })) }), routed.map((b) => b.name));
  const r = radvdSettings(cfg);
  // With tracing on, spans network.* (ports, addresses, radvd) inside firewall.* (guards first, then the inner plane).
  const radvd = traced(new RadvdPlane(inner, supervisor, r.bridges, r.options, log), 'network', PLANE_STEPS);
  if (!cfg.ipv6.security.enable_firewall_integration) return radvd;
  // Routed NICs are not bridge ports: their guards live in an ip6 table (decision 0017).
  // One tenant numbering for both: a packet marked by one table is judged by the other (decision 0027).
  const tenants = new TenantIndex();
  const guarded = routed.length === 0 ? radvd : new FirewallPlane(radvd, { ...routedFirewallOptions(cfg), log, tenants });
  return traced(new FirewallPlane(guarded, { ...firewallOptions(cfg), log, tenants, trustedPorts: () => plane.possibleUplinkPorts() }), 'firewall', PLANE_STEPS);
}

const PLANE_STEPS = ['ensureVm', 'removeVm', 'applyIsolation'] as const;

function buildAuth(cfg: MetaldConfig, log: Logger, events: EventRing): Authenticator {
  if (cfg.auth.mode === 'none') {
    log.warn({ listen_address: cfg.listen_address }, 'authentication is DISABLED (auth.mode: none): every caller is admin');
  } else if (cfg.auth.tokens.length === 0) {
    throw new Error('auth.tokens is empty: add at least one token (see docs/config.md), or set auth.mode: none explicitly');
  }
  return new Authenticator(cfg.auth.mode, cfg.auth.tokens, (f) => {
    log.warn({ security_event: 'auth_failure', reason: f.reason }, 'authentication failed');
    events.add({ type: 'auth_failure', severity: 'medium', vm_id: '', tenant_id: '', nic: '', port: '', reason: f.reason, count: 1 });
  });
}

function buildBackend(cfg: MetaldConfig, log: Logger): VmBackend {
  switch (cfg.backend) {
    case 'firecracker':
      return firecrackerFromConfig(cfg, log);
    case 'sandbox':
      return new SandboxBackend({
        instanceName: cfg.instance_name,
        dataplaneNetns: cfg.dataplane?.netns,
        guestCommand: cfg.sandbox.guest_command,
      });
    case 'qemu': {
      const q = cfg.qemu;
      return new QemuBackend({
        dataplaneNetns: cfg.dataplane?.netns,
        binary: q.binary,
        machine: q.machine,
        accel: q.accel,
        kernelPath: q.kernel_path,
        initrdPath: q.initrd_path,
        imageDirs: q.image_dirs,
        stateDir: q.state_dir ?? join('/run/metald', cfg.instance_name, 'qemu'),
        bootTimeoutMs: q.boot_timeout,
        readiness: q.readiness,
      });
    }
    default:
      throw new Error(`unknown backend "${String(cfg.backend)}"`);
  }
}

export function validationContext(cfg: MetaldConfig): ValidationContext {
  return {
    bridges: allBridges(cfg).map((b) => ({ name: b.name, mtu: b.mtu })),
    enableVlans: cfg.ipv6.enable_vlans,
    defaultVlan: cfg.ipv6.default_vlan,
    managementVlan: cfg.ipv6.management_vlan,
    poolPrefixes: allPools(cfg).map((p) => parsePrefix(p.prefix)),
    defaultSourceGuard: cfg.ipv6.security.enable_source_guard,
  };
}
