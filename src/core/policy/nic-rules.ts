// PURE: the per-NIC rule language of `security_policy.ingress_rules` and
// `egress_rules` (guide step 3.2), parsed by hand (recursive descent over the
// tokens of src/core/policy/lexer.ts; docs/decisions/0024):
//
//   rule      = action protocol "from" endpoint "to" endpoint
//   action    = "allow" | "deny"
//   protocol  = "tcp" | "udp" | "icmpv6" | "all" | "ipv6"      ("ipv6" = "all")
//   endpoint  = addresses [ "port" ports ]                      (ports: tcp and udp only)
//   addresses = "any" | address { "," address }                 (address: IPv6 or IPv6/len)
//   ports     = port { "," port }                               (port: N or N-M, 1-65535)
//
// Keywords are case-insensitive. The AST is canonical (prefixes without host
// bits, single addresses as /128, "ipv6" as "all"), so two spellings of one
// rule compile to the same class.

import { formatIpv6, formatPrefix, parseIpv6, parsePrefix, type Prefix } from '../net/ipv6.js';
import { Cursor, ParseError, tokenize, type Token } from './lexer.js';

export const PROTOCOLS = ['tcp', 'udp', 'icmpv6', 'all'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export interface PortRange {
  from: number;
  to: number;
}

export interface Endpoint {
  /** 'any', or the prefixes (a single address is a /128), in the order written. */
  addresses: 'any' | Prefix[];
  /** null: any port (and the only choice for icmpv6 and all). */
  ports: PortRange[] | null;
}

export interface NicRule {
  action: 'allow' | 'deny';
  protocol: Protocol;
  from: Endpoint;
  to: Endpoint;
}

/** More than this many addresses or ports in one rule is almost surely a paste error; it also bounds the nft text. */
export const MAX_LIST = 64;

const IPV4_LIKE = /^\d{1,3}(\.\d{1,3}){3}(\/\d+)?$/;
const PORT_ITEM = /^(\d{1,5})(?:-(\d{1,5}))?$/;

export function parseNicRule(rule: string): NicRule {
  const c = new Cursor(tokenize(rule), rule.length);
  const action = c.oneOf(['allow', 'deny'] as const, '"allow" or "deny"').word;
  const proto = c.oneOf(['tcp', 'udp', 'icmpv6', 'all', 'ipv6'] as const, 'a protocol: "tcp", "udp", "icmpv6" or "all"').word;
  const protocol: Protocol = proto === 'ipv6' ? 'all' : proto;
  if (!c.accept('from')) throw c.fail('"from" (rules read like: allow tcp from any to any port 443)');
  const from = endpoint(c, protocol, 'to');
  if (!c.accept('to')) throw c.fail(from.ports === null && takesPorts(protocol) ? '"port" or "to"' : '"to"');
  const to = endpoint(c, protocol, null);
  c.end(to.ports === null && takesPorts(protocol) ? '"port" or the end of the rule' : 'the end of the rule');
  return { action, protocol, from, to };
}

const takesPorts = (p: Protocol) => p === 'tcp' || p === 'udp';

function endpoint(c: Cursor, protocol: Protocol, nextKeyword: string | null): Endpoint {
  const addresses = addressList(c);
  const portTok = c.accept('port');
  if (!portTok) return { addresses, ports: null };
  if (!takesPorts(protocol)) {
    throw new ParseError(`ports need tcp or udp (this rule is for ${protocol})`, portTok.column, nextKeyword ? `"${nextKeyword}"` : 'the end of the rule');
  }
  return { addresses, ports: portList(c) };
}

function addressList(c: Cursor): 'any' | Prefix[] {
  if (c.accept('any')) return 'any';
  const out: Prefix[] = [];
  do {
    const t = c.peek();
    if (!t || t.kind !== 'word' || !/^[0-9a-fA-F:.]+(\/\d+)?$/.test(t.text) || !t.text.includes(':') && !IPV4_LIKE.test(t.text)) {
      throw c.fail(out.length === 0 ? '"any", an IPv6 address or a prefix like 2600:beef::/64' : 'an IPv6 address or prefix');
    }
    c.next();
    out.push(address(t));
    if (out.length > MAX_LIST) throw new ParseError(`at most ${MAX_LIST} addresses in one rule`, t.column);
  } while (c.acceptComma());
  return out;
}

function address(t: Token): Prefix {
  if (IPV4_LIKE.test(t.text)) throw new ParseError(`${t.text} is IPv4: metald's VM networks are IPv6 only`, t.column, 'an IPv6 address or prefix');
  try {
    if (t.text.includes('/')) return parsePrefix(t.text);
    return { network: parseIpv6(t.text), length: 128 };
  } catch (e) {
    // parsePrefix explains host bits ("did you mean ...?"); keep its words.
    throw new ParseError((e as Error).message, t.column, 'an IPv6 address or prefix');
  }
}

function portList(c: Cursor): PortRange[] {
  const out: PortRange[] = [];
  do {
    const t = c.peek();
    const m = t?.kind === 'word' ? PORT_ITEM.exec(t.text) : null;
    if (!t || !m) throw c.fail('a port like 443 or a range like 8000-8080');
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from < 1 || from > 65535 || to < 1 || to > 65535) throw new ParseError(`ports are 1-65535, got ${t.text}`, t.column, 'a port from 1 to 65535');
    if (to < from) throw new ParseError(`the range ${t.text} ends before it starts`, t.column, 'a range low-high');
    c.next();
    out.push({ from, to });
    if (out.length > MAX_LIST) throw new ParseError(`at most ${MAX_LIST} ports or ranges in one rule`, t.column);
  } while (c.acceptComma());
  return out;
}

/** Canonical text of a rule; parseNicRule(printNicRule(r)) equals r. */
export function printNicRule(r: NicRule): string {
  const ep = (e: Endpoint) =>
    `${e.addresses === 'any' ? 'any' : e.addresses.map(printAddress).join(',')}${e.ports ? ` port ${e.ports.map(printPort).join(',')}` : ''}`;
  return `${r.action} ${r.protocol} from ${ep(r.from)} to ${ep(r.to)}`;
}

export function printAddress(p: Prefix): string {
  return p.length === 128 ? formatIpv6(p.network) : formatPrefix(p);
}

export function printPort(p: PortRange): string {
  return p.from === p.to ? String(p.from) : `${p.from}-${p.to}`;
}

/** Re-throws anything but a ParseError as a bug; used where a caller wants `ParseError | NicRule`. */
export function tryParseNicRule(rule: string): NicRule | ParseError {
  try {
    return parseNicRule(rule);
  } catch (e) {
    if (e instanceof ParseError) return e;
    throw e;
  }
}
