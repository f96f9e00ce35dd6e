import { formatIpv6 } from '../core/net/ipv6.js';
import { admissionKeys, hexMark, MASK, zoneMark } from '../core/policy/zones.js';
import { PORT_ZONE_MAP } from '../core/policy/compile.js';
import { classSet, DROP_REASONS, IN_COUNTER_SETS } from './guard-names.js';
import { RATE_KINDS, type PortGuard } from './port-guard.js';

// PURE: the set elements that carry one port's guards. The same text goes
// into the whole-table render and into per-VM `add/delete element` updates.

/** Set name -> its elements. */
export type ElementMap = Map<string, string[]>;

const q = (s: string) => JSON.stringify(s);
const hex = (v: bigint, bits: number) => `0x${v.toString(16).padStart(bits / 4, '0')}`;

/** Policy class chain -> its id in pol_chains (the firewall plane assigns them). */
export type ClassIds = ReadonlyMap<string, number>;

/** The policy classes a port uses (their chains must exist before its elements name their ids). */
export const portClasses = (p: PortGuard) => [p.policy.egress, p.policy.ingress, p.policy.explicit].filter((c) => c !== null);

export function portElements(p: PortGuard, ids: ClassIds = new Map()): ElementMap {
  const d = q(p.device);
  const m: ElementMap = new Map();
  const put = (set: string, ...els: string[]) => {
    let a = m.get(set);
    if (!a) m.set(set, (a = []));
    a.push(...els);
  };
  put('vm_ports', d);
  put('known_ports', d);
  put('port_mac', `${d} . ${p.mac}`);
  put('port_lla', `${d} . 0x${p.mac.replaceAll(':', '')}`);
  put('src128', ...p.sources128.map((a) => `${d} . ${formatIpv6(a)}`));
  put('na128', ...p.sources128.map((a) => `${d} . ${hex(a, 128)}`));
  put('src64', ...p.sources64.map((u) => `${d} . ${hex(u, 64)}`));
  put('na64', ...p.sources64.map((u) => `${d} . ${hex(u, 64)}`));
  put('ra_allowed', ...p.raSources.map((a) => `${d} . ${formatIpv6(a)}`));
  const mark = zoneMark(p.zone);
  const m32 = hexMark(mark);
  put(PORT_ZONE_MAP, `${d} : ${m32}`);
  const { egress, ingress, explicit } = p.policy;
  if (p.isolated) put('isolated', d);
  else {
    // The fast paths (one lookup for port, MAC and exact source, which also marks the packet with its
    // sender; one for delivery) skip isolated ports and the directions a rule list filters.
    // The next header is part of the key: TCP and UDP only, so a packet with an extension header takes the full checks.
    put(egress ? 'fast_pol' : 'fast', ...p.sources128.flatMap((a) => ['tcp', 'udp'].map((proto) => `${d} . ${p.mac} . ${formatIpv6(a)} . ${proto} : ${m32}`)));
    // From its own tenant and VLAN (unless microsegmented), and from what is not a VM (mark 0).
    if (!p.reception.microsegmentation) put(ingress ? 'rx_zone_pol' : 'rx_zone', `${hexMark(mark & MASK.segment)} . ${d}`);
    if (!ingress) put('rx_fast', d);
  }
  for (const [set, keys] of admissionKeys(p.zone, p.reception)) put(set, ...keys.map((k) => `${hexMark(k)} . ${d}`));
  const id = (c: { chain: string }) => {
    const v = ids.get(c.chain);
    if (v === undefined) throw new Error(`policy class ${c.chain} has no id`); // the plane assigns ids before elements
    return hexMark(v);
  };
  if (egress) put('pol_out', `${d} : ${id(egress)}`);
  if (ingress) put('pol_in', `${d} : ${id(ingress)}`);
  if (explicit) put('pol_in_x', `${d} : ${id(explicit)}`);
  if (p.policy.log) put('policy_log', d);
  if (p.raGuard) put('ra_guard', d);
  if (p.sourceGuard) put('src_guard', d);
  if (p.blockHopByHop) put(p.allowMldHopByHop ? 'block_hbh' : 'block_hbh_all', d);
  if (p.blockRouting) put('block_rt', d);
  if (p.blockFragment) put('block_frag', d);
  if (p.blockDestinationOptions) put('block_dst', d);
  for (const k of RATE_KINDS) put(classSet(k, p.rates[k]), d);
  for (const r of DROP_REASONS) put(`d_${r}`, d);
  for (const set of IN_COUNTER_SETS) put(set, d);
  return m;
}

/** All ports' elements per set (linear: each list is appended in place). */
export function mergeElements(ports: readonly PortGuard[], trusted: readonly string[], ids: ClassIds = new Map()): ElementMap {
  const all: ElementMap = new Map();
  const put = (set: string, els: readonly string[]) => {
    let a = all.get(set);
    if (!a) all.set(set, (a = []));
    for (const e of els) a.push(e);
  };
  for (const p of ports) for (const [set, els] of portElements(p, ids)) put(set, els);
  put('known_ports', trusted.map(q));
  return all;
}

/** Lines that take the kernel from `had` to `want` for one port: only elements that differ. `ref` is "<family> <table>". */
export function elementDelta(ref: string, had: ElementMap, want: ElementMap): string[] {
  const lines: string[] = [];
  for (const [set, els] of had) {
    const keep = new Set(want.get(set) ?? []);
    const gone = els.filter((e) => !keep.has(e));
    if (gone.length) lines.push(`delete element ${ref} ${set} { ${gone.join(', ')} }`);
  }
  for (const [set, els] of want) {
    const have = new Set(had.get(set) ?? []);
    const added = els.filter((e) => !have.has(e));
    if (added.length) lines.push(`add element ${ref} ${set} { ${added.join(', ')} }`);
  }
  return lines;
}
