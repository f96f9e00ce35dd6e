// PURE: parsers for the two kernel dumps a collection tick reads. Both run
// over up to a megabyte of text at 10k ports, so they scan the text in place
// (indexOf / charCodeAt) as it arrives and allocate only the port names: no
// JSON tree, no per-line arrays (bench/metrics, decision 0026).

/** Receives one counter set listing: its handle first (when printed), then each element. */
export interface CounterSink {
  handle(h: number): void;
  element(port: string, packets: number): void;
}

const ZERO = 48;

/** The number at s[i..] (decimal digits); a 64-bit count loses precision above 2^53 like any JS number. */
function digitsAt(s: string, i: number): number {
  let n = 0;
  for (let c = s.charCodeAt(i) - ZERO; c >= 0 && c <= 9; c = s.charCodeAt(++i) - ZERO) n = n * 10 + c;
  return n;
}

const VAL = '"val": "';
const JSON_PACKETS = '"packets": ';

/**
 * `nft -j list set <family> <table> <set>` for a set of ifnames with counters, one line of JSON:
 *
 *   {"nftables": [{"metainfo": {...}}, {"set": {"family": "bridge", "name": "d_ra_guard", "table": "t", "type": "ifname",
 *    "handle": 42, ..., "elem": [{"elem": {"val": "port1", "counter": {"packets": 3, "bytes": 270}}}, ...]}}]}
 *
 * fed in chunks as nft writes it (a chunk may end anywhere) and scanned for `"val"` and `"packets"` without
 * building the JSON tree: the tree (80k objects per full dump at 10k ports, and their garbage) was most of
 * metald's share of the collector's CPU. Only the unfinished element is carried over to the next chunk.
 */
export class CounterSetParser {
  private carry = '';
  private inElements = false;

  constructor(private readonly sink: CounterSink) {}

  push(chunk: string): void {
    let s = this.carry === '' ? chunk : this.carry + chunk;
    this.carry = '';
    if (!this.inElements) {
      const e = s.indexOf('"elem": [');
      if (e < 0) {
        this.carry = s;
        return;
      }
      this.header(s.slice(0, e));
      this.inElements = true;
      s = s.slice(e + 9);
    }
    // A complete element ends with "}}}" (counter, element, elem object); the rest waits for the next chunk.
    const last = s.lastIndexOf('}}}');
    if (last < 0) {
      this.carry = s;
      return;
    }
    const end = last + 3;
    let v = s.indexOf(VAL);
    while (v >= 0 && v < end) {
      const q = s.indexOf('"', v + VAL.length);
      const next = s.indexOf(VAL, q);
      const p = s.indexOf(JSON_PACKETS, q);
      const counted = p >= 0 && p < end && (next < 0 || p < next);
      this.sink.element(s.slice(v + VAL.length, q), counted ? digitsAt(s, p + JSON_PACKETS.length) : 0);
      v = next;
    }
    this.carry = s.slice(end);
  }

  /** The answer is complete: an empty set has no element list at all. */
  finish(): void {
    if (!this.inElements && this.carry !== '') this.header(this.carry);
    this.carry = '';
  }

  private header(h: string): void {
    const set = h.indexOf('{"set": ');
    const m = h.indexOf('"handle": ', set < 0 ? 0 : set);
    if (m >= 0) this.sink.handle(digitsAt(h, m + 10));
  }
}

export interface LinkCounters {
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

/** Skips spaces at s[i..]; returns the index of the next non-space. */
function skipSpaces(s: string, i: number): number {
  while (s.charCodeAt(i) === 32) i++;
  return i;
}

/** Skips the number at s[i..] (and the spaces before it). */
function skipField(s: string, i: number): number {
  i = skipSpaces(s, i);
  while (s.charCodeAt(i) > 32) i++;
  return i;
}

/**
 * /proc/net/dev of the data-plane namespace: "  name: rxbytes rxpackets errs drop fifo frame compressed multicast
 * txbytes txpackets ...". A quarter of the bytes of `ip -s -j link` and no process to spawn. `want` picks the
 * links whose counters are read (the VM ports): the others are skipped without parsing their numbers.
 */
export function scanProcNetDev(
  text: string,
  want: (name: string) => boolean,
  emit: (name: string, rxBytes: number, rxPackets: number, txBytes: number, txPackets: number) => void,
): void {
  let line = 0;
  const n = text.length;
  while (line < n) {
    let eol = text.indexOf('\n', line);
    if (eol < 0) eol = n;
    const colon = text.indexOf(':', line);
    if (colon > 0 && colon < eol) {
      const name = text.slice(skipSpaces(text, line), colon);
      if (name !== '' && !name.includes('|') && want(name)) {
        let i = skipSpaces(text, colon + 1);
        const rxBytes = digitsAt(text, i);
        i = skipSpaces(text, skipField(text, i));
        const rxPackets = digitsAt(text, i);
        for (let f = 0; f < 7; f++) i = skipField(text, i);
        i = skipSpaces(text, i);
        const txBytes = digitsAt(text, i);
        i = skipSpaces(text, skipField(text, i));
        if (i < eol) emit(name, rxBytes, rxPackets, txBytes, digitsAt(text, i));
      }
    }
    line = eol + 1;
  }
}

/** Every link of a /proc/net/dev text (tests, tools). */
export function parseProcNetDev(text: string): Map<string, LinkCounters> {
  const out = new Map<string, LinkCounters>();
  scanProcNetDev(text, () => true, (name, rxBytes, rxPackets, txBytes, txPackets) => out.set(name, { rxBytes, rxPackets, txBytes, txPackets }));
  return out;
}
