import { loadConfigFile, parseConfig } from '../config/load.js';
import { QUICKSTART_CONFIG_YAML } from '../config/defaults.js';
import type { MetaldConfig } from '../config/schema.js';
import { createLogger } from '../observability/logger.js';
import { Daemon } from './daemon.js';

/** `metald serve`: load config, start, stop cleanly on SIGINT/SIGTERM. */
export async function runDaemon(opts: { configPath: string; port?: number }): Promise<void> {
  const { config, warnings } = loadConfigFile(opts.configPath);
  await serve(config, warnings, opts.configPath, opts.port);
}

export interface QuickstartOptions {
  port?: number;
  dataDir?: string;
  netns?: string;
  instance?: string;
}

/** `metald quickstart`: the embedded default config, plus a curl call to try. */
export async function runQuickstart(o: QuickstartOptions): Promise<void> {
  const { config, warnings } = parseConfig(QUICKSTART_CONFIG_YAML, '<embedded quickstart config>');
  if (o.dataDir) config.data_dir = o.dataDir;
  if (o.netns) config.dataplane = { ...config.dataplane, netns: o.netns };
  if (o.instance) config.instance_name = o.instance;
  await serve(config, warnings, 'quickstart', o.port, (d) => process.stderr.write(quickstartBanner(d)));
}

async function serve(config: MetaldConfig, warnings: string[], source: string, port: number | undefined, onReady?: (d: Daemon) => void) {
  const log = createLogger(config.ipv6.security.log_level, config.instance_name);
  for (const w of warnings) log.warn({ config: source }, w);
  const daemon = await Daemon.start(config, { port, log });
  onReady?.(daemon);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping; VMs keep running and are adopted at the next start');
      daemon.stop().finally(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  log.flush();
}

/** A VM in the guide's step 3.2 shape, adapted to the quickstart's bridge and ULA pool. */
export function quickstartCreateBody(): object {
  return {
    config: {
      cpu: { vcpu_count: 1 },
      memory: { size_bytes: 134217728 },
      boot: { kernel_path: '/opt/vm-assets/vmlinux', kernel_args: 'console=ttyS0 reboot=k panic=1 pci=off' },
      storage: [{ path: '/opt/vm-assets/rootfs.ext4' }],
      network: [{
        id: 'eth0',
        interface_type: 'virtio-net',
        bridge_name: 'br-metald',
        vlan_id: '100',
        ipv6: {
          address: 'fd00:6d74:0:100::10/64',
          gateway: 'fd00:6d74:0:100::1',
          security: { enable_ra_guard: true, enable_source_guard: true, block_hop_by_hop: true, nd_rate_limit: 100 },
        },
        security_policy: {
          ingress_rules: ['allow icmpv6 from any to any', 'allow tcp from any to any port 80,443', 'deny all from any to any'],
          tenant_isolation_level: 'strict',
          log_security_events: true,
        },
      }],
      tenant_id: 'test-customer',
      security_profile: { profile_name: 'high', enable_network_microsegmentation: true },
    },
  };
}

function quickstartBanner(d: Daemon): string {
  const url = `http://${d.address.host}:${d.address.port}`;
  const body = JSON.stringify(quickstartCreateBody(), null, 2).split('\n').map((l, i) => (i ? `    ${l}` : l)).join('\n');
  return `
metald is running: sandbox VMs, data plane in network namespace "${d.config.dataplane?.netns}", state in ${d.config.data_dir}
API ${url} (no auth: quickstart only). Stop with Ctrl-C; VMs survive and are adopted at the next start.

Create a VM as the deployment guide does (step 3.2):

  curl -sS -X POST ${url}/vmprovisioner.v1.VmService/CreateVm \\
    -H "Content-Type: application/json" \\
    -d '${body}'

Then:  npx metald --api ${url} vm list
       npx metald --api ${url} vm boot <vm_id>
       npx metald --api ${url} vm get <vm_id> -o json

`;
}
