// Building blocks shared by the config schema files. Each validator produces a
// message that reads well after "path (line N): ", because that is how the
// operator sees it; values are normalised (canonical IPv6 text, milliseconds)
// so the rest of metald never re-interprets the operator's spelling.

import { isIP } from 'node:net';
import { z } from 'zod';
import { addressScope, formatInterface, formatIpv6, formatPrefix, parseInterface, parseIpv6, parsePrefix } from '../core/net/ipv6.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

/** "100ms", "30s", "1h30m" to milliseconds (Go's time.ParseDuration subset, which the guide's values come from). */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || !DURATION_WHOLE.test(text)) {
    throw new Error(`${JSON.stringify(text)} is not a duration (use e.g. "100ms", "30s", "10m", "1h")`);
  }
  let ms = 0;
  for (const m of text.matchAll(DURATION_PART)) ms += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number);
  // Timers take whole milliseconds; silently rounding "0.5ms" would change what was asked for.
  if (!Number.isSafeInteger(ms)) throw new Error(`${JSON.stringify(text)} is not a whole number of milliseconds`);
  return ms;
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** Parses `parse(value)`, turning a thrown Error into a zod issue with the same message. */
function parsed<T>(parse: (s: string) => T) {
  return z.string().transform((s, ctx) => {
    try {
      return parse(s);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message, input: s });
      return z.NEVER;
    }
  });
}

export function duration(opts: { min?: number; max?: number } = {}) {
  const { min = 1, max = Number.MAX_SAFE_INTEGER } = opts;
  return parsed((s) => {
    const ms = parseDuration(s);
    if (ms < min || ms > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `at least ${formatDuration(min)}` : `between ${formatDuration(min)} and ${formatDuration(max)}`;
      throw new Error(`must be ${range}, got ${JSON.stringify(s)}`);
    }
    return ms;
  });
}

/** Integer in [min, max]; one message for "not an integer" and "out of range" keeps errors predictable. */
export function intIn(min: number, max?: number) {
  return z.number().superRefine((n, ctx) => {
    if (Number.isInteger(n) && n >= min && (max === undefined || n <= max)) return;
    const range = max === undefined ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
    ctx.addIssue({ code: 'custom', message: `must be ${range}, got ${n}`, input: n });
  });
}

export const nonEmpty = z.string().refine((s) => s.trim() !== '', { error: 'must not be empty' });

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const identifier = z.string().refine((s) => ID.test(s), {
  error: (iss) => `${JSON.stringify(iss.input)} is not a valid id (1-63 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit)`,
});

// Same rule as the kernel (IFNAMSIZ-1 = 15) and src/kernel/names.ts, so a name
// the config accepts never fails later at `ip link add`.
const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
export const ifName = z.string().refine((s) => IFNAME.test(s), {
  error: (iss) => `${JSON.stringify(iss.input)} is not a valid interface name (1-15 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit)`,
});

const NETNS = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const netnsName = z.string().refine((s) => NETNS.test(s) && !s.includes('..'), {
  error: (iss) => `${JSON.stringify(iss.input)} is not a valid network namespace name (1-63 chars of A-Z a-z 0-9 _ . -)`,
});

const UNICAST_FORBIDDEN = new Set(['unspecified', 'multicast', 'ipv4-mapped']);

/** "an unspecified", "a multicast", "an IPv4-mapped": scopes read as adjectives in messages. */
export function withArticle(scope: string): string {
  const word = scope === 'ipv4-mapped' ? 'IPv4-mapped' : scope;
  return `${/^[aeiouIU]/.test(word) ? 'an' : 'a'} ${word}`;
}

/** A unicast IPv6 address, returned in canonical form. */
export const ipv6Address = parsed((s) => {
  const n = parseIpv6(s);
  const scope = addressScope(n);
  if (UNICAST_FORBIDDEN.has(scope)) throw new Error(`${JSON.stringify(s)} is ${withArticle(scope)} address, not a unicast IPv6 address`);
  return formatIpv6(n);
});

export const ipv6Prefix = parsed((s) => formatPrefix(parsePrefix(s)));

/** "addr/len" for an interface; only unicast addresses can be configured on one. */
export const ipv6InterfaceAddress = parsed((s) => {
  const i = parseInterface(s);
  const scope = addressScope(i.address);
  if (UNICAST_FORBIDDEN.has(scope) || scope === 'loopback') throw new Error(`${JSON.stringify(s)} is not a unicast address (${scope})`);
  if (i.length === 0) throw new Error(`${JSON.stringify(s)} has prefix length 0`);
  return formatInterface(i);
});

/** IPv4 or IPv6 literal; IPv6 comes back canonical. */
export const ipAddress = parsed((s) => {
  if (isIP(s) === 4) return s;
  if (isIP(s) === 6 && !s.includes('%')) return formatIpv6(parseIpv6(s));
  throw new Error(`${JSON.stringify(s)} is not an IP address`);
});

/** "host:port" where host is an IP literal, IPv6 in brackets: "[::1]:9464". */
export const hostPort = parsed((s) => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(s);
  const bad = new Error(`${JSON.stringify(s)} is not an address:port (like "127.0.0.1:9464" or "[::1]:9464")`);
  if (!m) throw bad;
  const host = m[1] ?? (m[2] as string);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw bad;
  if (m[1] !== undefined ? isIP(host) !== 6 || host.includes('%') : isIP(host) !== 4) throw bad;
  return m[1] !== undefined ? `[${formatIpv6(parseIpv6(host))}]:${port}` : s;
});

const LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
export function isDnsName(s: string): boolean {
  const name = s.endsWith('.') ? s.slice(0, -1) : s;
  return name.length > 0 && name.length <= 253 && name.split('.').every((l) => LABEL.test(l));
}
export const dnsName = z.string().refine(isDnsName, { error: (iss) => `${JSON.stringify(iss.input)} is not a DNS name` });

export const httpUrl = parsed((s) => {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new Error(`${JSON.stringify(s)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`${JSON.stringify(s)} must be an http:// or https:// URL`);
  return s;
});

/** Case-insensitive enum whose output is the lowercase spelling. */
export function lowerEnum<const T extends readonly [string, ...string[]]>(values: T, what: string, aliases: Record<string, T[number]> = {}) {
  return z.string().transform((s, ctx): T[number] => {
    const low = s.toLowerCase();
    if ((values as readonly string[]).includes(low)) return low as T[number];
    const alias = aliases[low];
    if (alias !== undefined) return alias;
    ctx.addIssue({ code: 'custom', input: s, message: `${JSON.stringify(s)} is not ${what} (use one of ${values.join(', ')})` });
    return z.NEVER;
  });
}

/** Issues found by a rule parser; `column` is 1-based inside the rule text. */
export interface RuleSyntaxError {
  message: string;
  column?: number;
}

/**
 * Hook for the security-policy rule language. Returns null when the rule is
 * valid. The config loader turns `column` into a file line/column so rule
 * errors point into the YAML like every other error.
 */
export type RuleParser = (rule: string) => RuleSyntaxError | null;

export interface SchemaOptions {
  ruleParser?: RuleParser;
}

/** Edit distance, for "did you mean" on misspelt keys. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

/** ["ipv6", "pools", 1, "prefix"] -> "ipv6.pools[1].prefix", the spelling every message uses. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : `${out === '' ? '' : '.'}${String(seg)}`;
  return out;
}
