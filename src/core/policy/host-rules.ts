// PURE: the rule language of the config's `ipv6.security_policies[].rules`
// (guide section 2), parsed by hand like the per-NIC rules
// (docs/decisions/0024):
//
//   rule     = ("ALLOW" | "DENY") "ipv6" target
//            | "RATE-LIMIT" traffic rate "per-vm"
//   target   = "between" "vlans" [ "except" "same-tenant"          (DENY only)
//                                | "with" "explicit" "policy" ]    (ALLOW only)
//            | "to" ( segment [ "vlan" vlan ] | "vlan" vlan )
//            | "extension-headers" header { "," header }           (DENY only)
//   traffic  = "icmpv6" | "nd" | "multicast"
//   rate     = N "pps"                                             (1 to 1000000)
//   header   = "hop-by-hop" | "routing" | "fragment" | "destination-options"
//   segment  = the id of a configured pool (checked by the config schema)
//
// Keywords are case-insensitive (the guide writes actions in capitals).

import { Cursor, orList, ParseError, tokenize } from './lexer.js';

export const EXT_HEADERS = ['hop-by-hop', 'routing', 'fragment', 'destination-options'] as const;
export type ExtHeader = (typeof EXT_HEADERS)[number];
export const RATE_TRAFFIC = ['icmpv6', 'nd', 'multicast'] as const;
export type RateTraffic = (typeof RATE_TRAFFIC)[number];
export const MAX_PPS = 1_000_000;

export type HostRule =
  /** Traffic between VMs on different VLANs. */
  | { kind: 'between-vlans'; action: 'allow' | 'deny'; exception: 'none' | 'same-tenant' | 'explicit-policy' }
  /** Traffic to a segment: a pool's addresses and/or the VMs on one VLAN. */
  | { kind: 'to'; action: 'allow' | 'deny'; segment: string | null; vlan: number | null }
  | { kind: 'extension-headers'; action: 'deny'; headers: ExtHeader[] }
  | { kind: 'rate-limit'; traffic: RateTraffic; pps: number; scope: 'per-vm' };

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const RATE = /^(\d{1,7})pps$/i;

export function parseHostRule(rule: string): HostRule {
  const c = new Cursor(tokenize(rule), rule.length);
  const { word: action, token: actionTok } = c.oneOf(['allow', 'deny', 'rate-limit'] as const, '"ALLOW", "DENY" or "RATE-LIMIT"');
  if (action === 'rate-limit') return rateLimit(c);
  if (!c.accept('ipv6')) throw c.fail('"ipv6"');
  const { word: target } = c.oneOf(['between', 'to', 'extension-headers'] as const, '"between", "to" or "extension-headers"');
  if (target === 'between') {
    c.oneOf(['vlans'] as const, '"vlans"');
    let exception: 'none' | 'same-tenant' | 'explicit-policy' = 'none';
    const qualifier = c.peek();
    if (c.accept('except')) {
      if (action !== 'deny') throw new ParseError('"except same-tenant" only qualifies DENY', qualifier!.column, '"with explicit policy" or the end of the rule');
      c.oneOf(['same-tenant'] as const, '"same-tenant"');
      exception = 'same-tenant';
    } else if (c.accept('with')) {
      if (action !== 'allow') throw new ParseError('"with explicit policy" only qualifies ALLOW', qualifier!.column, '"except same-tenant" or the end of the rule');
      c.oneOf(['explicit'] as const, '"explicit"');
      c.oneOf(['policy'] as const, '"policy"');
      exception = 'explicit-policy';
    }
    c.end(exception !== 'none' ? 'the end of the rule' : action === 'deny' ? '"except same-tenant" or the end of the rule' : '"with explicit policy" or the end of the rule');
    return { kind: 'between-vlans', action, exception };
  }
  if (target === 'to') {
    let segment: string | null = null;
    if (!c.accept('vlan')) {
      const t = c.peek();
      if (!t || t.kind !== 'word' || !SEGMENT.test(t.text)) throw c.fail('a pool id (like shared-services) or "vlan"');
      c.next();
      segment = t.text;
      if (!c.accept('vlan')) {
        c.end('"vlan" or the end of the rule');
        return { kind: 'to', action, segment, vlan: null };
      }
    }
    const vlan = vlanId(c);
    c.end();
    return { kind: 'to', action, segment, vlan };
  }
  if (action !== 'deny') {
    throw new ParseError('extension headers are allowed unless denied: only DENY ipv6 extension-headers is a rule', actionTok.column, '"DENY"');
  }
  const headers: ExtHeader[] = [];
  do {
    const { word } = c.oneOf(EXT_HEADERS, `an extension header: ${orList(EXT_HEADERS)}`);
    if (!headers.includes(word)) headers.push(word);
  } while (c.acceptComma());
  c.end('a comma or the end of the rule');
  return { kind: 'extension-headers', action: 'deny', headers };
}

function rateLimit(c: Cursor): HostRule {
  const { word: traffic } = c.oneOf(RATE_TRAFFIC, `the traffic to limit: ${orList(RATE_TRAFFIC)}`);
  const t = c.peek();
  const m = t?.kind === 'word' ? RATE.exec(t.text) : null;
  if (!t || !m) throw c.fail('a rate like 50pps');
  const pps = Number(m[1]);
  if (pps < 1 || pps > MAX_PPS) throw new ParseError(`a rate is 1 to ${MAX_PPS}pps, got ${t.text}`, t.column, 'a rate like 50pps');
  c.next();
  c.oneOf(['per-vm'] as const, '"per-vm"');
  c.end();
  return { kind: 'rate-limit', traffic, pps, scope: 'per-vm' };
}

function vlanId(c: Cursor): number {
  const t = c.peek();
  if (!t || t.kind !== 'word' || !/^\d{1,4}$/.test(t.text)) throw c.fail('a VLAN id (1-4094)');
  const v = Number(t.text);
  if (v < 1 || v > 4094) throw new ParseError(`VLAN ids are 1-4094, got ${t.text}`, t.column, 'a VLAN id (1-4094)');
  c.next();
  return v;
}

/** Canonical text (keywords as the guide writes them); parseHostRule(printHostRule(r)) equals r. */
export function printHostRule(r: HostRule): string {
  const act = r.kind === 'rate-limit' ? 'RATE-LIMIT' : r.action.toUpperCase();
  switch (r.kind) {
    case 'between-vlans':
      return `${act} ipv6 between vlans${r.exception === 'same-tenant' ? ' except same-tenant' : r.exception === 'explicit-policy' ? ' with explicit policy' : ''}`;
    case 'to':
      return `${act} ipv6 to ${[r.segment, r.vlan === null ? null : `vlan ${r.vlan}`].filter((x) => x !== null).join(' ')}`;
    case 'extension-headers':
      return `${act} ipv6 extension-headers ${r.headers.join(',')}`;
    case 'rate-limit':
      return `${act} ${r.traffic} ${r.pps}pps ${r.scope}`;
  }
}
