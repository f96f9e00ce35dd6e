import { isIpv6, formatIpv6, parseIpv6 } from '../core/net/ipv6.js';
import type { NftObject } from '../kernel/nft.js';
import { CLASS_VMAP, classElement } from '../core/policy/plan.js';
import { classSet, limiterSet, parseClassSet } from './guard-names.js';
import type { RateKind } from './port-guard.js';

// PURE: reading `nft -j` output back into the terms the renderer writes, so
// the plane can diff the kernel against the desired tables.

/** Rules per chain in a `nft -j -t list table` dump. */
export function ruleCounts(objs: readonly NftObject[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of objs) {
    const chain = o['chain'] as { name?: string } | undefined;
    if (chain?.name) counts.set(chain.name, counts.get(chain.name) ?? 0);
    const rule = o['rule'] as { chain?: string } | undefined;
    if (rule?.chain) counts.set(rule.chain, (counts.get(rule.chain) ?? 0) + 1);
  }
  return counts;
}

/** One element part in a form both sides share: names bare, addresses canonical, integers as hex. */
function canonPart(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'bigint') return `0x${BigInt(v).toString(16)}`;
  if (typeof v !== 'string') return JSON.stringify(v);
  if (/^0x[0-9a-f]+$/i.test(v) || /^\d+$/.test(v)) return `0x${BigInt(v).toString(16)}`;
  if (/^".*"$/.test(v)) return v.slice(1, -1);
  if (v.includes(':') && isIpv6(v)) return formatIpv6(parseIpv6(v));
  return v.toLowerCase();
}

/** Key of an element as the renderer writes it: `"p" . 1.2::3`, `"p" : jump c`. */
export function textKey(el: string): string {
  const [key, value] = el.split(' : ');
  return key!.split(' . ').map(canonPart).join(' . ') + (value ? ` : ${/^0x[0-9a-f]+$|^\d+$/i.test(value) ? canonPart(value) : value}` : '');
}

/** A map element's value as the renderer writes it: a mark, or `jump c` / `goto c`. */
function jsonValue(v: unknown): string | undefined {
  if (typeof v === 'number' || typeof v === 'string') return canonPart(v);
  const o = v as { jump?: { target?: string }; goto?: { target?: string } } | undefined;
  if (o?.jump?.target) return `jump ${o.jump.target}`;
  if (o?.goto?.target) return `goto ${o.goto.target}`;
  return undefined;
}

/** Key and value of an element from `nft -j list set|map`. */
function jsonKey(el: unknown): string {
  const e = (el as { elem?: { val?: unknown } })?.elem?.val ?? el;
  const concat = typeof e === 'object' && e !== null ? (e as { concat?: unknown }).concat : undefined;
  const parts = Array.isArray(concat) ? concat : [e];
  return parts.map(canonPart).join(' . ');
}

/** Interface names are quoted; marks, addresses, MACs and protocol names are not (metald never names a port "tcp"). */
function jsonText(key: string): string {
  return key
    .split(' . ')
    .map((p) => (/^0x[0-9a-f]+$/.test(p) || p.includes(':') || p === 'tcp' || p === 'udp' ? p : JSON.stringify(p)))
    .join(' . ');
}

/** What to add and delete so the kernel set/map holds exactly `want` (keys compared; map values follow the key). */
export function elementDiff(have: readonly NftObject[], want: readonly string[]): { add: string[]; remove: string[] } {
  const obj = have.find((o) => 'set' in o || 'map' in o);
  const body = (obj?.['set'] ?? obj?.['map']) as { elem?: unknown[] } | undefined;
  const haveKeys = new Map<string, string>();
  for (const el of body?.elem ?? []) {
    // A map element is [key, value]; the value is part of what must match.
    const k = jsonKey(Array.isArray(el) ? el[0] : el);
    const value = Array.isArray(el) ? jsonValue(el[1]) : undefined;
    haveKeys.set(value ? `${k} : ${value}` : k, jsonText(k));
  }
  const wantKeys = new Map(want.map((w) => [textKey(w), w]));
  return {
    add: [...wantKeys].filter(([k]) => !haveKeys.has(k)).map(([, w]) => w),
    remove: [...haveKeys].filter(([k]) => !wantKeys.has(k)).map(([, t]) => t),
  };
}

/** Rules per chain as rendered, from the rendered text of one table. */
export function expectedCounts(family: string, table: string, text: string): Map<string, number> {
  const start = text.indexOf(`table ${family} ${table} {`);
  const counts = new Map<string, number>();
  if (start < 0) return counts;
  let chain: string | undefined;
  for (const line of text.slice(start).split('\n').slice(1)) {
    if (line === '}') break;
    const m = /^\tchain (\S+) \{$/.exec(line);
    if (m) {
      chain = m[1]!;
      counts.set(chain, 0);
    } else if (line === '\t}') chain = undefined;
    else if (chain && line.startsWith('\t\t') && !line.includes(' hook ')) counts.set(chain, counts.get(chain)! + 1);
  }
  return counts;
}

export function sameCounts(have: Map<string, number>, want: Map<string, number>): boolean {
  if (have.size !== want.size) return false;
  for (const [k, v] of want) if (have.get(k) !== v) return false;
  return true;
}

/** Chains and sets a rendered table declares, as "chain x" / "set y". */
export function declaredNames(family: string, table: string, text: string): string[] {
  const start = text.indexOf(`table ${family} ${table} {`);
  if (start < 0) return [];
  const end = text.indexOf('\n}\n', start);
  return [...text.slice(start, end).matchAll(/^\t(chain|set) (\S+) \{/gm)].map((m) => `${m[1]} ${m[2]}`);
}

/** [key, value] of each element of a `nft -j list map` answer. */
export function mapEntries(objs: readonly NftObject[]): [unknown, unknown][] {
  const body = objs.find((o) => 'map' in o)?.['map'] as { elem?: unknown[] } | undefined;
  return (body?.elem ?? []).filter((e): e is [unknown, unknown] => Array.isArray(e) && e.length === 2);
}

/** [id, chain] of each policy class dispatch element in a `nft -j list map … pol_chains` answer. */
export function classTargets(vmap: readonly NftObject[]): [number, string][] {
  const out: [number, string][] = [];
  for (const [id, target] of mapEntries(vmap)) {
    const chain = (target as { goto?: { target?: string } })?.goto?.target;
    if (typeof id === 'number' && chain) out.push([id, chain]);
  }
  return out;
}

/**
 * Policy class chains (`pc_…`, compile.ts) of `table` that no VM uses, from the `pol_chains` vmap
 * and `nft -j list chains` listings: their dispatch elements (as listed, so an element diff can
 * leave them out) and the commands that remove both, elements first in the same transaction (the
 * kernel refuses to delete a chain still referenced).
 */
export function unusedClasses(ref: string, vmap: readonly NftObject[], chainList: readonly NftObject[], table: string, inUse: ReadonlySet<string>):
  { elements: string[]; lines: string[]; chains: number } {
  const elements = classTargets(vmap).filter(([, chain]) => !inUse.has(chain)).map(([id, chain]) => classElement(chain, id));
  const chains = chainList.map((o) => o['chain'] as { table?: string; name?: string } | undefined)
    .filter((c) => c?.table === table && c.name?.startsWith('pc_') === true && !inUse.has(c.name)).map((c) => c!.name!);
  const lines = [
    ...(elements.length ? [`delete element ${ref} ${CLASS_VMAP} { ${elements.map((e) => e.split(' : ')[0]).join(', ')} }`] : []),
    ...chains.flatMap((c) => [`flush chain ${ref} ${c}`, `delete chain ${ref} ${c}`]),
  ];
  return { elements, lines, chains: chains.length };
}

/**
 * Commands that remove rate class `kind`/`rate` (decision 0017) from table `ref`: its rule in chain
 * rate_<kind> (found by handle in `rateChain`, an `nft -j -a list chain` answer), then its port set
 * and limiter set, in that order in one transaction.
 */
export function rateClassRemoval(ref: string, rateChain: readonly NftObject[], kind: RateKind, rate: number): string[] {
  const ref_ = `"@${classSet(kind, rate)}"`;
  const rules = rateChain.map((o) => o['rule'] as { handle?: number; expr?: unknown } | undefined)
    .filter((r) => r?.handle !== undefined && JSON.stringify(r.expr).includes(ref_))
    .map((r) => `delete rule ${ref} rate_${kind} handle ${r!.handle}`);
  return [...rules, `delete set ${ref} ${classSet(kind, rate)}`, `delete set ${ref} ${limiterSet(kind, rate)}`];
}

/**
 * The commands that make set `name` of table `ref` hold exactly `want` (deletes first); elements
 * `keep` refuses are left alone both ways (ports written since `have` was listed).
 */
export function syncLines(ref: string, name: string, have: readonly NftObject[], want: readonly string[], keep: (el: string) => boolean = () => true): string[] {
  const diff = elementDiff(have, want);
  const [add, remove] = [diff.add.filter(keep), diff.remove.filter(keep)];
  return [
    ...(remove.length ? [`delete element ${ref} ${name} { ${remove.join(', ')} }`] : []),
    ...(add.length ? [`add element ${ref} ${name} { ${add.join(', ')} }`] : []),
  ];
}

/**
 * Whether a listed guard table (`nft -j -t`) has the rendered layout: every fixed chain with its
 * rule count, each rate chain one rule per class set the kernel has, and no chain but policy
 * classes (`pc_…`) besides; a class in `bodies` (chain → rule count) must have all its rules, others
 * may be there or not (they are added as ports need them).
 */
export function guardTableMatches(have: readonly NftObject[], want: ReadonlyMap<string, number>, bodies: ReadonlyMap<string, number>): boolean {
  const counts = ruleCounts(have);
  const kernelClasses = have.map((o) => (o['set'] as { name?: string } | undefined)?.name).map((n) => (n ? parseClassSet(n) : undefined)).filter((c) => c !== undefined);
  for (const [chain, n] of want) {
    const expected = chain.startsWith('rate_') ? kernelClasses.filter(([k]) => `rate_${k}` === chain).length : n;
    if (counts.get(chain) !== expected) return false;
  }
  for (const [chain, n] of counts) {
    if (want.has(chain)) continue;
    if (!chain.startsWith('pc_')) return false;
    if (bodies.has(chain) && bodies.get(chain) !== n) return false;
  }
  return true;
}
