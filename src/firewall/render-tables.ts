// Both tables of a firewall plane as one `nft -f` text, rendered from the VMs (pure):
// what start-up and a repair load, and what `metald render --nft` prints.
import type { VmRecord } from '../core/vm/record.js';
import type { FirewallPlaneOptions } from './firewall-plane.js';
import { renderGuardTable } from './guard-table.js';
import { renderHostTable } from './host-table.js';
import { portGuards } from './port-guard.js';
import { TenantIndex } from './tenant-index.js';

export function renderTables(
  opts: Pick<FirewallPlaneOptions, 'family' | 'guardTable' | 'hostTable' | 'defaults' | 'host' | 'guardLogGroup'>,
  vms: readonly VmRecord[],
  trusted: readonly string[] = [],
  tenants = new TenantIndex(),
  classIds: ReadonlyMap<string, number> = new Map(),
): string {
  const family = opts.family ?? 'bridge';
  const all = portGuards(vms, opts.defaults, (t) => tenants.get(t));
  const ports = all.filter((p) => p.routed === (family === 'ip6'));
  const guard = renderGuardTable({
    family, table: opts.guardTable, ports, trustedPorts: trusted, defaultRates: opts.defaults.rates, logGroup: opts.guardLogGroup, classIds,
  });
  const routed = all.filter((p) => p.routed).map((p) => p.device);
  return opts.host ? `${guard}${renderHostTable({ ...opts.host, table: opts.hostTable, routedDevices: routed })}` : guard;
}
