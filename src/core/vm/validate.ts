import type { VmConfig } from '../../gen/vmprovisioner/v1/vm_pb.js';
import { invalidArgument, MetaldError } from '../errors.js';
import { addressScope, formatIpv6, parseInterface, parseIpv6 } from '../net/ipv6.js';
import { TENANT_ID_PATTERN, validateMac } from './ids.js';
import { ParseError } from '../policy/lexer.js';
import { parseNicRule, type NicRule } from '../policy/nic-rules.js';
import { classWarnings } from '../policy/compile.js';

// Checks a CreateVm config against the host's configuration before anything
// is allocated, so a bad request fails with the field path and leaves
// nothing behind. Pure: everything it needs comes in `ValidationContext`.

export interface BridgeInfo {
  name: string;
  mtu: number;
}

export interface ValidationContext {
  bridges: readonly BridgeInfo[];
  enableVlans: boolean;
  defaultVlan: number | undefined;
  managementVlan: number | undefined;
  /** Prefixes of configured pools: doc/ULA addresses are allowed only inside one. */
  poolPrefixes: readonly { network: bigint; length: number }[];
  /** ipv6.security.enable_source_guard: the default for a NIC's strict_source_validation. */
  defaultSourceGuard: boolean;
}

export interface PlannedNic {
  id: string;
  bridge: string;
  mtu: number;
  vlanId: number | null;
  /** Requested MAC (validated) or '' to derive one. */
  mac: string;
  /** Static address as requested (address + the prefix length written), if any. */
  staticAddress?: { address: bigint; length: number };
  /** Requested gateway (validated to lie in the static address's prefix), if any. */
  gateway?: bigint;
  /** Pool asked for by ipv6.pool_id ('' = choose). */
  poolId: string;
  /**
   * The guest picks its own addresses (privacy extensions) and the source
   * guard is strict, so it needs a /64 of its own (SPEC-NOTES 2).
   */
  wholePrefix: boolean;
  /** security_policy rules, parsed (src/core/policy), and what the operator should be told about them. */
  policy: { ingress: NicRule[]; egress: NicRule[]; warnings: string[] };
}

export interface CreatePlan {
  tenantId: string;
  vcpuCount: number;
  memoryBytes: bigint;
  nics: PlannedNic[];
}

const NIC_ID = /^[a-z][a-z0-9]{0,14}$/;
const ISOLATION_LEVELS = ['', 'strict', 'moderate', 'none'];
const PROFILES = ['', 'high', 'medium', 'low'];
const MIB = 1024n * 1024n;

export function planCreate(config: VmConfig | undefined, ctx: ValidationContext): CreatePlan {
  if (!config) throw invalidArgument('config', 'required');
  const tenantId = config.tenantId;
  if (!tenantId) throw invalidArgument('config.tenant_id', 'required');
  if (!TENANT_ID_PATTERN.test(tenantId)) {
    throw invalidArgument('config.tenant_id', `${JSON.stringify(tenantId)} is not a valid tenant id: 1-128 characters of A-Z a-z 0-9 _ . : @ -, starting with a letter or digit`);
  }

  const vcpuCount = config.cpu?.vcpuCount || 1;
  if (vcpuCount > 64) throw invalidArgument('config.cpu.vcpu_count', `${vcpuCount} exceeds the maximum of 64`);
  const maxV = config.cpu?.maxVcpuCount ?? 0;
  if (maxV !== 0 && maxV < vcpuCount) {
    throw invalidArgument('config.cpu.max_vcpu_count', `${maxV} is less than vcpu_count ${vcpuCount}`);
  }

  const memoryBytes = config.memory?.sizeBytes || 128n * MIB;
  if (memoryBytes % MIB !== 0n) {
    throw invalidArgument('config.memory.size_bytes', `${memoryBytes} is not a whole number of MiB (VMMs size memory in MiB)`);
  }
  if (memoryBytes < 16n * MIB) throw invalidArgument('config.memory.size_bytes', `${memoryBytes} is below the 16 MiB minimum`);
  if (memoryBytes > 1024n * 1024n * MIB) throw invalidArgument('config.memory.size_bytes', `${memoryBytes} exceeds 1 TiB`);

  checkPath(config.boot?.kernelPath ?? '', 'config.boot.kernel_path');
  checkPath(config.boot?.initrdPath ?? '', 'config.boot.initrd_path');
  if ((config.boot?.kernelArgs ?? '').length > 4096) {
    throw invalidArgument('config.boot.kernel_args', 'longer than 4096 characters');
  }
  const driveIds = new Set<string>();
  config.storage.forEach((d, i) => {
    const f = `config.storage[${i}]`;
    if (!d.path) throw invalidArgument(`${f}.path`, 'required');
    checkPath(d.path, `${f}.path`);
    const id = d.id || `drive${i}`;
    if (driveIds.has(id)) throw invalidArgument(`${f}.id`, `duplicate drive id ${JSON.stringify(id)}`);
    driveIds.add(id);
  });

  const profile = config.securityProfile?.profileName ?? '';
  if (!PROFILES.includes(profile)) {
    throw invalidArgument('config.security_profile.profile_name', `${JSON.stringify(profile)} is not one of high, medium, low`);
  }

  const seenIds = new Set<string>();
  const nics = config.network.map((nic, i) => planNic(nic, i, ctx, seenIds));
  return { tenantId, vcpuCount, memoryBytes, nics };
}

function checkPath(p: string, field: string): void {
  if (p === '') return;
  if (!p.startsWith('/')) throw invalidArgument(field, `${JSON.stringify(p)} must be an absolute path`);
  if (p.includes('\0') || p.split('/').includes('..')) {
    throw invalidArgument(field, `${JSON.stringify(p)} may not contain '..' or NUL`);
  }
}

function planNic(
  nic: VmConfig['network'][number],
  i: number,
  ctx: ValidationContext,
  seenIds: Set<string>,
): PlannedNic {
  const f = `config.network[${i}]`;
  const id = nic.id || `eth${i}`;
  if (!NIC_ID.test(id)) {
    throw invalidArgument(`${f}.id`, `${JSON.stringify(id)} is not a valid NIC id: 1-15 characters of a-z and 0-9, starting with a letter`);
  }
  if (seenIds.has(id)) throw invalidArgument(`${f}.id`, `duplicate NIC id ${JSON.stringify(id)}`);
  seenIds.add(id);

  if (nic.interfaceType && nic.interfaceType !== 'virtio-net') {
    throw invalidArgument(`${f}.interface_type`, `${JSON.stringify(nic.interfaceType)} is not supported (use "virtio-net")`);
  }

  const bridge = pickBridge(nic.bridgeName, `${f}.bridge_name`, ctx.bridges);
  const vlanId = pickVlan(nic.vlanId, `${f}.vlan_id`, ctx);
  const mac = nic.macAddress ? validateMac(nic.macAddress, `${f}.mac_address`) : '';

  let staticAddress: PlannedNic['staticAddress'];
  let gateway: bigint | undefined;
  const v6 = nic.ipv6;
  if (v6?.address) {
    const iface = parseField(() => parseInterface(v6.address), `${f}.ipv6.address`, v6.address, 'is not an IPv6 address with prefix length (addr/len)');
    checkScope(iface.address, `${f}.ipv6.address`, v6.address, ctx);
    staticAddress = iface;
    if (v6.gateway) {
      const gw = parseField(() => parseIpv6(v6.gateway), `${f}.ipv6.gateway`, v6.gateway, 'is not an IPv6 address');
      const hostBits = BigInt(128 - iface.length);
      if (gw >> hostBits !== iface.address >> hostBits) {
        throw invalidArgument(`${f}.ipv6.gateway`, `${JSON.stringify(v6.gateway)} is not in the VM's subnet ${formatIpv6((iface.address >> hostBits) << hostBits)}/${iface.length}`);
      }
      if (gw === iface.address) throw invalidArgument(`${f}.ipv6.gateway`, 'equals the VM\'s own address');
      gateway = gw;
    }
  } else if (v6?.gateway) {
    throw invalidArgument(`${f}.ipv6.gateway`, 'given without ipv6.address');
  }
  const strict = v6?.security?.strictSourceValidation ?? v6?.security?.enableSourceGuard ?? ctx.defaultSourceGuard;
  const wholePrefix = !!v6?.enablePrivacyExtensions && strict;

  for (const [j, src] of (v6?.security?.allowedRaSources ?? []).entries()) {
    parseField(() => parseIpv6(src), `${f}.ipv6.security.allowed_ra_sources[${j}]`, src, 'is not an IPv6 address');
  }

  const pol = nic.securityPolicy;
  let ingress: NicRule[] = [];
  let egress: NicRule[] = [];
  if (pol) {
    if (!ISOLATION_LEVELS.includes(pol.tenantIsolationLevel)) {
      throw invalidArgument(`${f}.security_policy.tenant_isolation_level`, `${JSON.stringify(pol.tenantIsolationLevel)} is not one of strict, moderate, none`);
    }
    ingress = parseRules(pol.ingressRules, `${f}.security_policy.ingress_rules`);
    egress = parseRules(pol.egressRules, `${f}.security_policy.egress_rules`);
  }
  const nicPolicy = { ingress, egress, warnings: [...ruleWarnings(ingress, `${f}.security_policy.ingress_rules`), ...ruleWarnings(egress, `${f}.security_policy.egress_rules`)] };
  return { id, bridge: bridge.name, mtu: bridge.mtu, vlanId, mac, staticAddress, gateway, poolId: v6?.poolId ?? '', wholePrefix, policy: nicPolicy };
}

function pickBridge(name: string, field: string, bridges: readonly BridgeInfo[]): BridgeInfo {
  if (bridges.length === 0) {
    if (name) throw invalidArgument(field, `${JSON.stringify(name)} is not a configured bridge (none are configured)`);
    return { name: '', mtu: 1500 };
  }
  if (!name) return bridges[0]!;
  const b = bridges.find((x) => x.name === name);
  if (!b) {
    throw invalidArgument(field, `${JSON.stringify(name)} is not a configured bridge (configured: ${bridges.map((x) => x.name).join(', ')})`);
  }
  return b;
}

function pickVlan(raw: string, field: string, ctx: ValidationContext): number | null {
  if (raw === '') return ctx.enableVlans ? (ctx.defaultVlan ?? null) : null;
  if (!/^\d{1,4}$/.test(raw)) throw invalidArgument(field, `${JSON.stringify(raw)} is not a VLAN id (1-4094)`);
  const v = Number(raw);
  if (v < 1 || v > 4094) throw invalidArgument(field, `${v} is out of range 1-4094`);
  if (ctx.managementVlan !== undefined && v === ctx.managementVlan) {
    throw invalidArgument(field, `VLAN ${v} is the management VLAN and is reserved for the host`);
  }
  return v;
}

function parseField<T>(fn: () => T, field: string, raw: string, what: string): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof MetaldError) throw e;
    throw invalidArgument(field, `${JSON.stringify(raw)} ${what}`);
  }
}

function checkScope(addr: bigint, field: string, raw: string, ctx: ValidationContext): void {
  const scope = addressScope(addr);
  if (scope === 'global') return;
  if (scope === 'documentation' || scope === 'ula') {
    const inPool = ctx.poolPrefixes.some((p) => addr >> BigInt(128 - p.length) === p.network >> BigInt(128 - p.length));
    if (inPool) return;
    throw invalidArgument(field, `${JSON.stringify(raw)} is a ${scope === 'ula' ? 'unique local (fc00::/7)' : 'documentation'} address and no configured pool contains it`);
  }
  throw invalidArgument(field, `${JSON.stringify(raw)} is a ${scope} address; a VM needs a global one`);
}

/** Each rule parsed; the first bad one fails the request with its index and the column inside it. */
function parseRules(rules: readonly string[], field: string): NicRule[] {
  return rules.map((r, j) => {
    if (!r.trim()) throw invalidArgument(`${field}[${j}]`, 'empty rule');
    try {
      return parseNicRule(r);
    } catch (e) {
      if (e instanceof ParseError) throw invalidArgument(`${field}[${j}]`, `column ${e.column}: ${e.message}`);
      throw e;
    }
  });
}

function ruleWarnings(rules: readonly NicRule[], field: string): string[] {
  return classWarnings(rules).map((w) => `${field}[${w.rule}]: ${w.message}`);
}
