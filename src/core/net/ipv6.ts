// Pure IPv6 arithmetic on bigint. Everything that reaches the kernel, the store
// or a config message goes through parse/format here, so the whole daemon agrees
// on one canonical spelling (RFC 5952) and one notion of "inside a prefix".

export const IPV6_BITS = 128;
export const IPV6_MAX = (1n << 128n) - 1n;

export interface Prefix {
  /** Network address; never has host bits set. */
  network: bigint;
  length: number;
}

export interface InterfaceAddress {
  address: bigint;
  length: number;
}

export type AddressScope =
  | 'unspecified'
  | 'loopback'
  | 'multicast'
  | 'link-local'
  | 'ula'
  | 'documentation'
  | 'ipv4-mapped'
  | 'global';

const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;
// No leading zeros: "010" is octal to some parsers and decimal to others.
const IPV4_OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;
const PREFIX_LEN = /^(0|[1-9][0-9]{0,2})$/;
// The longest legal text form is 45 chars (mixed notation); a bound keeps a
// hostile config or API value from costing more than a few comparisons.
const MAX_TEXT = 45;

function invalidAddress(s: string): Error {
  return new Error(`${JSON.stringify(s)} is not an IPv6 address`);
}

function parseIpv4Tail(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0n;
  for (const p of parts) {
    if (!IPV4_OCTET.test(p)) return undefined;
    n = (n << 8n) | BigInt(Number(p));
  }
  return n;
}

/** Parses one side of a "::" (or the whole address) into 16-bit groups. */
function parseGroups(side: string, allowIpv4Tail: boolean): bigint[] | undefined {
  if (side === '') return [];
  const parts = side.split(':');
  const groups: bigint[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as string;
    if (i === parts.length - 1 && allowIpv4Tail && p.includes('.')) {
      const v4 = parseIpv4Tail(p);
      if (v4 === undefined) return undefined;
      groups.push(v4 >> 16n, v4 & 0xffffn);
    } else {
      if (!HEX_GROUP.test(p)) return undefined;
      groups.push(BigInt(parseInt(p, 16)));
    }
  }
  return groups;
}

/** Parses textual IPv6 (any case, "::", IPv4 tail). Zone ids are refused: metald never stores one. */
export function parseIpv6(s: string): bigint {
  if (typeof s !== 'string' || s.length < 2 || s.length > MAX_TEXT) throw invalidAddress(String(s));
  const halves = s.split('::');
  if (halves.length > 2) throw invalidAddress(s);
  let groups: bigint[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0] as string, false);
    const tail = parseGroups(halves[1] as string, true);
    // "::" stands for at least one zero group (RFC 4291 2.2).
    if (!head || !tail || head.length + tail.length > 7) throw invalidAddress(s);
    groups = [...head, ...new Array<bigint>(8 - head.length - tail.length).fill(0n), ...tail];
  } else {
    const all = parseGroups(s, true);
    if (!all || all.length !== 8) throw invalidAddress(s);
    groups = all;
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | g;
  return n;
}

export function isIpv6(s: string): boolean {
  try {
    parseIpv6(s);
    return true;
  } catch {
    return false;
  }
}

function checkRange(n: bigint): void {
  if (typeof n !== 'bigint' || n < 0n || n > IPV6_MAX) throw new RangeError(`${String(n)} is not a 128-bit value`);
}

const MAPPED_PREFIX = 0xffffn << 32n;

/** RFC 5952 text: lowercase, no leading zeros, first longest run (>= 2) of zero groups as "::". */
export function formatIpv6(n: bigint): string {
  checkRange(n);
  // RFC 5952 section 5: IPv4-mapped addresses keep the dotted quad.
  if (n >> 32n === 0xffffn) {
    const v4 = n & 0xffffffffn;
    const octets = [24n, 16n, 8n, 0n].map((s) => String((v4 >> s) & 0xffn));
    return `::ffff:${octets.join('.')}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** All-ones in the top `length` bits. */
export function prefixMask(length: number): bigint {
  if (!Number.isInteger(length) || length < 0 || length > IPV6_BITS) throw new RangeError(`bad prefix length ${length}`);
  return length === 0 ? 0n : (IPV6_MAX >> BigInt(IPV6_BITS - length)) << BigInt(IPV6_BITS - length);
}

function splitSlash(s: string): { addr: string; length: number } | undefined {
  if (typeof s !== 'string') return undefined;
  const parts = s.split('/');
  if (parts.length !== 2) return undefined;
  const [addr, len] = parts as [string, string];
  if (!PREFIX_LEN.test(len)) return undefined;
  const length = Number(len);
  if (length > IPV6_BITS) return undefined;
  return { addr, length };
}

/** "net/len" with no host bits; a prefix written with host bits is almost always a typo, so it is refused. */
export function parsePrefix(s: string): Prefix {
  const split = splitSlash(s);
  const invalid = new Error(`${JSON.stringify(s)} is not an IPv6 prefix`);
  if (!split) throw invalid;
  let address: bigint;
  try {
    address = parseIpv6(split.addr);
  } catch {
    throw invalid;
  }
  const network = address & prefixMask(split.length);
  if (network !== address) {
    const suggestion = formatPrefix({ network, length: split.length });
    throw new Error(`${JSON.stringify(s)} has host bits set, did you mean ${suggestion}?`);
  }
  return { network, length: split.length };
}

/** "addr/len" as configured on an interface: host bits are the point. */
export function parseInterface(s: string): InterfaceAddress {
  const split = splitSlash(s);
  const invalid = new Error(`${JSON.stringify(s)} is not an IPv6 address with prefix length (like "2600:beef::1/64")`);
  if (!split) throw invalid;
  try {
    return { address: parseIpv6(split.addr), length: split.length };
  } catch {
    throw invalid;
  }
}

export function formatPrefix(p: Prefix): string {
  return `${formatIpv6(p.network)}/${p.length}`;
}

export function formatInterface(i: InterfaceAddress): string {
  return `${formatIpv6(i.address)}/${i.length}`;
}

/** The prefix an interface address lives in. */
export function interfacePrefix(i: InterfaceAddress): Prefix {
  return { network: i.address & prefixMask(i.length), length: i.length };
}

export function prefixLast(p: Prefix): bigint {
  return p.network | (IPV6_MAX ^ prefixMask(p.length));
}

export function prefixContains(p: Prefix, address: bigint): boolean {
  return (address & prefixMask(p.length)) === p.network;
}

/** True when `inner` lies entirely inside `outer`. */
export function prefixContainsPrefix(outer: Prefix, inner: Prefix): boolean {
  return inner.length >= outer.length && prefixContains(outer, inner.network);
}

/** Two CIDR blocks either nest or are disjoint, so overlap means one contains the other. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  return prefixContainsPrefix(a, b) || prefixContainsPrefix(b, a);
}

const p = (network: bigint, length: number): Prefix => ({ network, length });
const SCOPES: readonly [Prefix, AddressScope][] = [
  [p(MAPPED_PREFIX, 96), 'ipv4-mapped'],
  [p(0xffn << 120n, 8), 'multicast'],
  [p(0xfe80n << 112n, 10), 'link-local'],
  [p(0xfcn << 120n, 7), 'ula'],
  [p(0x20010db8n << 96n, 32), 'documentation'],
  [p(0x3fffn << 112n, 20), 'documentation'],
];

export function addressScope(n: bigint): AddressScope {
  checkRange(n);
  if (n === 0n) return 'unspecified';
  if (n === 1n) return 'loopback';
  for (const [prefix, scope] of SCOPES) if (prefixContains(prefix, n)) return scope;
  return 'global';
}
