import { allBridges, type MetaldConfig } from '../config/schema.js';
import type { VmRecord } from '../core/vm/record.js';
import { renderTables } from '../firewall/render-tables.js';
import { radvdInput, type RadvdBridge, type RadvdOptions } from '../network/radvd/input.js';
import { radvdInputIsEmpty, renderRadvdConf } from '../network/radvd/render.js';
import { firewallOptions, routedFirewallOptions } from './firewall-from-config.js';

// `metald render`: what metald would load for a config, without touching the
// kernel — the same pure renderers the daemon applies.

export function radvdSettings(cfg: MetaldConfig): { bridges: RadvdBridge[]; options: RadvdOptions } {
  return {
    bridges: allBridges(cfg).map((b) => ({ name: b.name, address: b.ipv6_address, mtu: b.mtu })),
    options: { dnsServers: cfg.ipv6.dns.servers, searchDomain: cfg.ipv6.dns.search_domain },
  };
}

export function renderAll(cfg: MetaldConfig, vms: readonly VmRecord[] = []): { nft: string; radvd: string } {
  const managed = cfg.ipv6.enabled && allBridges(cfg).length > 0;
  const routed = allBridges(cfg).some((b) => b.mode === 'routed');
  const nft = managed && cfg.ipv6.security.enable_firewall_integration
    ? renderTables(firewallOptions(cfg), vms) + (routed ? renderTables(routedFirewallOptions(cfg), vms) : '')
    : '';
  const r = radvdSettings(cfg);
  const input = radvdInput(r.bridges, vms, r.options);
  return { nft, radvd: managed && !radvdInputIsEmpty(input) ? renderRadvdConf(input) : '' };
}
