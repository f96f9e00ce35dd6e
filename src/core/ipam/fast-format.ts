// The allocator's hot path formats one address and one timestamp per call.
// formatIpv6 (bigint shifts) and Date#toISOString cost ~0.5 µs each, a
// quarter of the per-allocation budget, so these produce the same text from
// plain numbers. test/unit/ipam-props.test.ts checks them against formatIpv6
// and toISOString.

import { formatIpv6 } from '../net/ipv6.js';

/** The eight 16-bit groups of an address, most significant first. */
export function groupsOf(n: bigint): number[] {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  return g;
}

const scratch = [0, 0, 0, 0, 0, 0, 0, 0];

/**
 * RFC 5952 text of `base | off` where `base` holds the groups of a network
 * whose host bits are zero and `off` < 2^53 is an offset into it. Same output
 * as formatIpv6(network + BigInt(off)).
 */
export function formatWithOffset(base: readonly number[], off: number): string {
  const g = scratch;
  for (let i = 0; i < 8; i++) g[i] = base[i]!;
  // Low four groups from the offset (an offset < 2^53 spans at most four groups).
  let rest = off;
  for (let i = 7; i >= 4 && rest > 0; i--) {
    const q = Math.floor(rest / 65536);
    g[i] = g[i]! + (rest - q * 65536);
    rest = q;
  }
  return formatGroups(g);
}

/**
 * The text of `base | off` up to its last ':' for any off in [1, 2^16) that
 * keeps the last group non-zero: the zero runs, and so the compression, are
 * the same for all of them. '' when that shortcut does not apply.
 */
export function lastGroupPrefix(base: readonly number[]): string {
  const g = [...base];
  const mapped = g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
  if (mapped) return '';
  g[7] = g[7]! | 1;
  const text = formatGroups(g);
  return text.slice(0, text.lastIndexOf(':') + 1);
}

/** RFC 5952 text of eight 16-bit groups (same as formatIpv6). */
export function formatGroups(g: readonly number[]): string {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    // IPv4-mapped keeps its dotted quad: leave that to the reference formatter.
    let n = 0n;
    for (const x of g) n = (n << 16n) | BigInt(x);
    return formatIpv6(n);
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) {
    let s = g[0]!.toString(16);
    for (let i = 1; i < 8; i++) s += ':' + g[i]!.toString(16);
    return s;
  }
  let s = '';
  for (let i = 0; i < bestStart; i++) s += (i === 0 ? '' : ':') + g[i]!.toString(16);
  s += '::';
  for (let i = bestStart + bestLen; i < 8; i++) s += (i === bestStart + bestLen ? '' : ':') + g[i]!.toString(16);
  return s;
}

let isoSecond = NaN;
let isoPrefix = '';
const MILLIS = Array.from({ length: 1000 }, (_, i) => `${String(i).padStart(3, '0')}Z`);

/** Same as new Date(ms).toISOString(), caching the text up to the second. */
export function isoOf(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    const full = new Date(second * 1000).toISOString();
    // Years outside 0000-9999 are written with six digits and a sign: not cached.
    if (full.length !== 24) return new Date(ms).toISOString();
    isoSecond = second;
    isoPrefix = full.slice(0, 20);
  }
  return isoPrefix + MILLIS[ms - second * 1000]!;
}
