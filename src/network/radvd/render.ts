// Pure: turns the router advertisements metald wants into radvd.conf text.
// radvd's grammar has no quoting, so a name or address that slipped through
// unchecked could close a block and open another (`br0 { }; interface eth0 {`).
// Every value is therefore validated (names.ts, ipv6.ts, DNS labels) and
// re-printed in canonical form; numbers are checked against the ranges radvd
// and RFC 4861/8106 accept, so the text this returns passes `radvd -c` and
// the supervisor's check only ever catches a broken radvd, not our input.

import { isDnsName } from '../../config/schema-common.js';
import { addressScope, formatIpv6, formatPrefix, parseIpv6, parsePrefix } from '../../core/net/ipv6.js';
import { assertIfName } from '../../kernel/names.js';

export interface RadvdPrefix {
  /** e.g. "fd00:6d74::/64" (no host bits). */
  prefix: string;
  /** Default true: hosts treat the prefix as on-link (bridged subnet). */
  onLink?: boolean;
  /** Default true: hosts form SLAAC addresses in it (needs a /64). */
  autonomous?: boolean;
  /** Default true, as in the guide (sets the R flag; harmless without Mobile IPv6). */
  routerAddr?: boolean;
  /** Seconds; default 3600 (guide step 1.3). */
  validLifetime?: number;
  /** Seconds; default 1800 (guide step 1.3). */
  preferredLifetime?: number;
}

export interface RadvdInterface {
  /** Interface radvd advertises on: a bridge, or a VM's host-side port/tap. */
  name: string;
  prefixes: readonly RadvdPrefix[];
  /** Seconds; default 30 (guide). radvd: 3 .. 0.75 * max. */
  minRtrAdvInterval?: number;
  /** Seconds; default 60 (guide). radvd: 4 .. 1800. */
  maxRtrAdvInterval?: number;
  /** Router lifetime in seconds; 0 = "not a default router". Default 3 * max (RFC 4861). */
  defaultLifetime?: number;
  /** AdvLinkMTU; omitted (0, "unspecified") when absent. */
  mtu?: number;
  /** RDNSS, in preference order (ipv6.dns.servers). */
  rdnss?: readonly string[];
  /**
   * Default 2 * max: radvd's default, and radvd 2.19 warns above it (RFC 6106's
   * bound; RFC 8106 later suggests 3 * max, but a warning on every reload is noise).
   */
  rdnssLifetime?: number;
  /** DNSSL, in search order (ipv6.dns.search_domain). */
  dnssl?: readonly string[];
  dnsslLifetime?: number;
  /**
   * Link-local addresses to unicast RAs to. When present and non-empty, radvd
   * stops multicasting on this interface and ignores RSs from anyone else.
   */
  clients?: readonly string[];
}

export interface RadvdInput {
  interfaces: readonly RadvdInterface[];
}

export const RADVD_DEFAULTS = {
  minRtrAdvInterval: 30,
  maxRtrAdvInterval: 60,
  validLifetime: 3600,
  preferredLifetime: 1800,
} as const;

const U32_MAX = 0xffff_ffff;
/** radvd caps AdvDefaultLifetime at 9000 s (RFC 4861 6.2.1). */
const MAX_ROUTER_LIFETIME = 9000;
/** radvd refuses more than 3 addresses in one RDNSS block ("too many addresses in RDNSS section"). */
const RDNSS_PER_OPTION = 3;

// radvd's scanner (flex, caseless) turns these words into keywords, digits
// into numbers and "1.5" into a decimal; an interface name or DNS label that
// lexes as one of them is a syntax error, so it is refused here with a reason.
const RADVD_WORDS = new Set(
  ('interface prefix route rdnss dnssl clients lowpanco abro nat64prefix advrasrcaddress ignoreifmissing advsendadvert '
    + 'maxrtradvinterval minrtradvinterval advmanagedflag advotherconfigflag advlinkmtu advramtu advreachabletime '
    + 'advretranstimer advcurhoplimit advdefaultlifetime advdefaultpreference advsourcelladdress removeadvonexit advonlink '
    + 'advautonomous advvalidlifetime advpreferredlifetime deprecateprefix decrementlifetimes advrouteraddr '
    + 'advhomeagentflag advintervalopt advhomeagentinfo unicastonly unrestrictedunicast advrasolicitedunicast '
    + 'advcaptiveportalapi base6interface base6to4interface homeagentpreference homeagentlifetime advroutepreference '
    + 'advroutelifetime removeroute advrdnsspreference advrdnssopen advrdnsslifetime flushrdnss advdnssllifetime flushdnssl '
    + 'mindelaybetweenras advmobrtrsupportflag advcontextlength advcontextcompressionflag advcontextid advlifetime '
    + 'advcontextprefix advversionlow advversionhigh advvalidlifetime adv6lbraddress infinity on off low medium high').split(' '),
);

/** Whether radvd reads `s` as one plain word (its STRING token). */
function lexesAsWord(s: string): boolean {
  return !RADVD_WORDS.has(s.toLowerCase()) && !/^-?[0-9]+$/.test(s) && !/^[0-9]+\.[0-9]+$/.test(s);
}

export const RADVD_HEADER = [
  '# radvd.conf written by metald. metald owns this file: it rewrites it (and',
  '# reloads radvd) whenever bridges, prefixes or DNS settings change, so any',
  '# edit made here is lost. Change the metald configuration instead.',
];

/** The caller skips radvd (RadvdSupervisor.stop) instead: radvd refuses a file without an interface. */
export function radvdInputIsEmpty(input: RadvdInput): boolean {
  return input.interfaces.length === 0;
}

export function renderRadvdConf(input: RadvdInput): string {
  if (radvdInputIsEmpty(input)) {
    throw new Error('nothing to advertise: radvd refuses a config without an interface; stop radvd instead');
  }
  const seen = new Set<string>();
  const blocks: string[] = [];
  const ifaces = input.interfaces.map((i, n) => normalise(i, `interfaces[${n}]`));
  for (const iface of ifaces) {
    // radvd refuses two stanzas for one interface ("duplicate interface definition").
    if (seen.has(iface.name)) throw new Error(`interface ${iface.name} is listed twice; radvd allows one stanza per interface`);
    seen.add(iface.name);
  }
  // Sorted so that the same set of interfaces always gives the same bytes
  // (the supervisor reloads radvd only when the bytes change).
  ifaces.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const iface of ifaces) blocks.push(renderInterface(iface));
  return `${RADVD_HEADER.join('\n')}\n\n${blocks.join('\n')}`;
}

type Normalised = Required<Omit<RadvdInterface, 'mtu' | 'prefixes'>> & {
  mtu: number | undefined;
  prefixes: (Required<Omit<RadvdPrefix, 'prefix'>> & { prefix: string; sortKey: bigint })[];
};

function integer(value: number | undefined, fallback: number, min: number, max: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new Error(`${what} must be an integer from ${min} to ${max}, got ${String(v)}`);
  return v;
}

function lifetimeAtLeastMax(value: number, max: number, what: string): number {
  // radvd only warns, but a DNS lifetime shorter than the RA interval makes
  // guests drop the server between two RAs.
  if (value !== 0 && value < max) throw new Error(`${what} must be 0 or at least MaxRtrAdvInterval (${max}), got ${value}`);
  return value;
}

function normalise(i: RadvdInterface, at: string): Normalised {
  const name = assertIfName(i.name);
  if (!lexesAsWord(name)) throw new Error(`${at}.name: radvd cannot read an interface named ${JSON.stringify(name)} (a keyword or number in its grammar)`);
  const max = integer(i.maxRtrAdvInterval, RADVD_DEFAULTS.maxRtrAdvInterval, 4, 1800, `${at}.maxRtrAdvInterval`);
  const min = integer(i.minRtrAdvInterval, Math.min(RADVD_DEFAULTS.minRtrAdvInterval, Math.floor(0.75 * max)), 3, Math.floor(0.75 * max), `${at}.minRtrAdvInterval`);
  const defaultLifetime = integer(i.defaultLifetime, 3 * max, 0, MAX_ROUTER_LIFETIME, `${at}.defaultLifetime`);
  if (defaultLifetime !== 0 && defaultLifetime < max) {
    throw new Error(`${at}.defaultLifetime must be 0 or at least MaxRtrAdvInterval (${max}), got ${defaultLifetime}`);
  }
  const mtu = i.mtu === undefined ? undefined : integer(i.mtu, 0, 1280, 65535, `${at}.mtu`);
  const rdnss = unique(
    (i.rdnss ?? []).map((a, n) => unicastAddress(a, `${at}.rdnss[${n}]`)),
    `${at}.rdnss`,
  );
  const dnssl = unique(
    (i.dnssl ?? []).map((d, n) => {
      if (typeof d !== 'string' || !isDnsName(d)) throw new Error(`${at}.dnssl[${n}]: ${JSON.stringify(d)} is not a DNS name`);
      const name = d.replace(/\.$/, '').toLowerCase();
      if (!lexesAsWord(name)) throw new Error(`${at}.dnssl[${n}]: radvd cannot read ${JSON.stringify(d)} (a keyword or number in its grammar)`);
      return name;
    }),
    `${at}.dnssl`,
  );
  const clients = unique(
    (i.clients ?? []).map((a, n) => {
      const v = parseIpv6(a);
      // RSs come from link-local sources, and radvd matches clients against them.
      if (addressScope(v) !== 'link-local') throw new Error(`${at}.clients[${n}]: ${a} is not a link-local address`);
      return v;
    }),
    `${at}.clients`,
  )
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map(formatIpv6);
  const prefixes = i.prefixes.map((p, n) => normalisePrefix(p, `${at}.prefixes[${n}]`));
  unique(prefixes.map((p) => p.prefix), `${at}.prefixes`);
  prefixes.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  return {
    name,
    minRtrAdvInterval: min,
    maxRtrAdvInterval: max,
    defaultLifetime,
    mtu,
    rdnss,
    rdnssLifetime: lifetimeAtLeastMax(integer(i.rdnssLifetime, 2 * max, 0, U32_MAX, `${at}.rdnssLifetime`), max, `${at}.rdnssLifetime`),
    dnssl,
    dnsslLifetime: lifetimeAtLeastMax(integer(i.dnsslLifetime, 2 * max, 0, U32_MAX, `${at}.dnsslLifetime`), max, `${at}.dnsslLifetime`),
    clients,
    prefixes,
  };
}

function normalisePrefix(p: RadvdPrefix, at: string): Normalised['prefixes'][number] {
  const prefix = parsePrefix(p.prefix);
  const scope = addressScope(prefix.network);
  if (scope === 'link-local' || scope === 'multicast' || scope === 'loopback' || scope === 'unspecified' || prefix.length === 0) {
    throw new Error(`${at}: ${p.prefix} cannot be advertised as an on-link/SLAAC prefix`);
  }
  const autonomous = p.autonomous ?? true;
  // Hosts ignore an autonomous PIO whose length + 64-bit interface id != 128.
  if (autonomous && prefix.length !== 64) throw new Error(`${at}: SLAAC (autonomous) needs a /64, got /${prefix.length}`);
  const validLifetime = integer(p.validLifetime, RADVD_DEFAULTS.validLifetime, 0, U32_MAX, `${at}.validLifetime`);
  const preferredLifetime = integer(p.preferredLifetime, RADVD_DEFAULTS.preferredLifetime, 0, U32_MAX, `${at}.preferredLifetime`);
  if (preferredLifetime > validLifetime) {
    throw new Error(`${at}: preferredLifetime (${preferredLifetime}) must not exceed validLifetime (${validLifetime})`);
  }
  return {
    prefix: formatPrefix(prefix),
    sortKey: (prefix.network << 8n) | BigInt(prefix.length),
    onLink: p.onLink ?? true,
    autonomous,
    routerAddr: p.routerAddr ?? true,
    validLifetime,
    preferredLifetime,
  };
}

function unicastAddress(a: string, at: string): string {
  const v = parseIpv6(a);
  const scope = addressScope(v);
  if (scope === 'multicast' || scope === 'unspecified' || scope === 'loopback') throw new Error(`${at}: ${a} is not a unicast address`);
  return formatIpv6(v);
}

function unique<T>(values: T[], at: string): T[] {
  const seen = new Set<T>();
  for (const v of values) {
    if (seen.has(v)) throw new Error(`${at}: ${String(typeof v === 'bigint' ? formatIpv6(v) : v)} is listed twice`);
    seen.add(v);
  }
  return values;
}

const onOff = (b: boolean) => (b ? 'on' : 'off');

function renderInterface(i: Normalised): string {
  const out: string[] = [`interface ${i.name} {`];
  const opt = (s: string) => out.push(`    ${s};`);
  opt('AdvSendAdvert on');
  // Bridges and VM ports come and go while radvd runs; radvd picks them up.
  opt('IgnoreIfMissing on');
  // No DHCPv6 server: addresses by SLAAC, DNS by RDNSS/DNSSL (RFC 8106).
  opt('AdvManagedFlag off');
  opt('AdvOtherConfigFlag off');
  opt(`MinRtrAdvInterval ${i.minRtrAdvInterval}`);
  opt(`MaxRtrAdvInterval ${i.maxRtrAdvInterval}`);
  opt(`AdvDefaultLifetime ${i.defaultLifetime}`);
  if (i.mtu !== undefined) opt(`AdvLinkMTU ${i.mtu}`);
  for (const p of i.prefixes) {
    out.push('', `    prefix ${p.prefix} {`);
    out.push(`        AdvOnLink ${onOff(p.onLink)};`);
    out.push(`        AdvAutonomous ${onOff(p.autonomous)};`);
    out.push(`        AdvRouterAddr ${onOff(p.routerAddr)};`);
    out.push(`        AdvValidLifetime ${p.validLifetime};`);
    out.push(`        AdvPreferredLifetime ${p.preferredLifetime};`);
    out.push('    };');
  }
  for (let n = 0; n < i.rdnss.length; n += RDNSS_PER_OPTION) {
    out.push('', `    RDNSS ${i.rdnss.slice(n, n + RDNSS_PER_OPTION).join(' ')} {`);
    out.push(`        AdvRDNSSLifetime ${i.rdnssLifetime};`);
    out.push('    };');
  }
  if (i.dnssl.length > 0) {
    out.push('', `    DNSSL ${i.dnssl.join(' ')} {`);
    out.push(`        AdvDNSSLLifetime ${i.dnsslLifetime};`);
    out.push('    };');
  }
  if (i.clients.length > 0) {
    out.push('', '    clients {');
    for (const c of i.clients) out.push(`        ${c};`);
    out.push('    };');
  }
  out.push('};', '');
  return out.join('\n');
}
