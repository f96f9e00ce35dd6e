import { formatIpv6 } from '../../core/net/ipv6.js';

// PURE: a pcap byte stream of LINKTYPE_NFLOG (239) records, as
// `tcpdump -i nflog:<groups> -w -` writes it, parsed into logged packets.
// Format (pcap-linktype(7), "NFLOG"): a 4-byte header (address family,
// version, resource id = the nflog group, big-endian) then TLVs whose length
// and type are in the capturing host's byte order (the pcap magic tells it)
// and whose values are in network byte order, each padded to 4 bytes.

export const LINKTYPE_NFLOG = 239;

/** NFULA_* attribute types (linux/netfilter/nfnetlink_log.h). */
const T = { packetHdr: 1, indev: 4, outdev: 5, physindev: 6, physoutdev: 7, hwaddr: 8, payload: 9, prefix: 10 } as const;

export interface NflogRecord {
  /** ms since the epoch (the kernel's capture time). */
  timeMs: number;
  group: number;
  /** NFPROTO_*: 7 = bridge, 10 = ipv6. */
  family: number;
  prefix: string;
  /** Ethertype from the packet header TLV (0x86dd for IPv6). */
  hwProtocol: number;
  indev?: number;
  outdev?: number;
  physindev?: number;
  physoutdev?: number;
  /** Source MAC when the kernel had a link-layer header, "aa:bb:..". */
  hwaddr?: string;
  /** From the network header on (snap-length limited). */
  payload: Uint8Array;
}

/**
 * Incremental parser: feed() any chunk boundaries; each complete record is
 * decoded. Throws on a stream that is not pcap of LINKTYPE_NFLOG (the reader
 * restarts tcpdump then).
 */
export class PcapNflogParser {
  private buf: Buffer = Buffer.alloc(0);
  private le: boolean | undefined;
  private nanos = false;

  feed(chunk: Uint8Array, out: (r: NflogRecord) => void): void {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    let off = 0;
    if (this.le === undefined) {
      if (this.buf.length < 24) return;
      const magic = this.buf.readUInt32LE(0);
      if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) this.le = true;
      else if (this.buf.readUInt32BE(0) === 0xa1b2c3d4 || this.buf.readUInt32BE(0) === 0xa1b23c4d) this.le = false;
      else throw new Error(`not a pcap stream (magic 0x${magic.toString(16)})`);
      this.nanos = (this.le ? magic : this.buf.readUInt32BE(0)) === 0xa1b23c4d;
      const linktype = this.u32(20) & 0x0fffffff;
      if (linktype !== LINKTYPE_NFLOG) throw new Error(`pcap link type ${linktype}, expected NFLOG (${LINKTYPE_NFLOG})`);
      off = 24;
    }
    while (this.buf.length - off >= 16) {
      const caplen = this.u32(off + 8);
      if (caplen > 1 << 20) throw new Error(`pcap record of ${caplen} bytes: stream out of sync`);
      if (this.buf.length - off - 16 < caplen) break;
      const sec = this.u32(off);
      const frac = this.u32(off + 4);
      const rec = decodeNflog(this.buf.subarray(off + 16, off + 16 + caplen), this.le!);
      if (rec) out({ ...rec, timeMs: sec * 1000 + (this.nanos ? frac / 1e6 : frac / 1e3) });
      off += 16 + caplen;
    }
    // Keep only the unparsed tail (a copy, so the consumed chunk can be collected).
    this.buf = off === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(off));
  }

  private u32(off: number): number {
    return this.le ? this.buf.readUInt32LE(off) : this.buf.readUInt32BE(off);
  }
}

/** One NFLOG record (without the pcap header); undefined when it is too short to be one. */
export function decodeNflog(b: Buffer, le: boolean): Omit<NflogRecord, 'timeMs'> | undefined {
  if (b.length < 4) return undefined;
  const rec: Omit<NflogRecord, 'timeMs'> = { group: b.readUInt16BE(2), family: b[0]!, prefix: '', hwProtocol: 0, payload: new Uint8Array(0) };
  let off = 4;
  while (off + 4 <= b.length) {
    const len = le ? b.readUInt16LE(off) : b.readUInt16BE(off);
    // The top bits are netlink flags (nested, byte order), not part of the type.
    const type = (le ? b.readUInt16LE(off + 2) : b.readUInt16BE(off + 2)) & 0x3fff;
    if (len < 4) break;
    const end = Math.min(off + len, b.length);
    const v = b.subarray(off + 4, end);
    switch (type) {
      case T.packetHdr:
        if (v.length >= 2) rec.hwProtocol = v.readUInt16BE(0);
        break;
      case T.indev:
      case T.outdev:
      case T.physindev:
      case T.physoutdev:
        if (v.length >= 4) rec[IFACE[type]] = v.readUInt32BE(0);
        break;
      case T.hwaddr:
        if (v.length >= 4) {
          const n = Math.min(v.readUInt16BE(0), 8, v.length - 4);
          if (n > 0) rec.hwaddr = [...v.subarray(4, 4 + n)].map((x) => x.toString(16).padStart(2, '0')).join(':');
        }
        break;
      case T.payload:
        rec.payload = v;
        break;
      case T.prefix: {
        const nul = v.indexOf(0);
        rec.prefix = v.subarray(0, nul < 0 ? v.length : nul).toString('latin1');
        break;
      }
    }
    off += (len + 3) & ~3;
  }
  return rec;
}

const IFACE = { [T.indev]: 'indev', [T.outdev]: 'outdev', [T.physindev]: 'physindev', [T.physoutdev]: 'physoutdev' } as const;

/** What an event says about the dropped packet. */
export interface PacketSummary {
  /** "ipv6", or the ethertype in hex ("0x0806") for what is not IPv6. */
  proto: string;
  src?: string;
  dst?: string;
  /** Upper-layer protocol after the extension headers: "icmpv6", "tcp", "udp" or the number. */
  next?: string;
  /** Extension headers met on the way ("hbh", "rt", "frag", "dst"). */
  ext?: string[];
  icmp_type?: number;
  sport?: number;
  dport?: number;
  src_mac?: string;
  length: number;
}

const EXT: Record<number, string> = { 0: 'hbh', 43: 'rt', 44: 'frag', 60: 'dst' };
const L4: Record<number, string> = { 58: 'icmpv6', 6: 'tcp', 17: 'udp' };

/** Summary of the payload; IPv6 only when it starts with an IPv6 header. */
export function summarise(r: Pick<NflogRecord, 'payload' | 'hwProtocol' | 'hwaddr'>): PacketSummary {
  const p = r.payload;
  const base = { length: p.length, ...(r.hwaddr ? { src_mac: r.hwaddr } : {}) };
  if (p.length < 40 || p[0]! >> 4 !== 6) {
    return { ...base, proto: r.hwProtocol === 0x86dd ? 'ipv6' : `0x${r.hwProtocol.toString(16).padStart(4, '0')}` };
  }
  const s: PacketSummary = { ...base, proto: 'ipv6', src: ipv6Text(p.subarray(8, 24)), dst: ipv6Text(p.subarray(24, 40)) };
  let next = p[6]!;
  let off = 40;
  const ext: string[] = [];
  // Bounded walk: a crafted chain of headers must not loop.
  for (let i = 0; i < 8 && EXT[next] !== undefined && off + 8 <= p.length; i++) {
    ext.push(EXT[next]!);
    const len = next === 44 ? 8 : (p[off + 1]! + 1) * 8;
    next = p[off]!;
    off += len;
  }
  if (ext.length) s.ext = ext;
  s.next = L4[next] ?? String(next);
  if (next === 58 && off < p.length) s.icmp_type = p[off]!;
  if ((next === 6 || next === 17) && off + 4 <= p.length) {
    s.sport = (p[off]! << 8) | p[off + 1]!;
    s.dport = (p[off + 2]! << 8) | p[off + 3]!;
  }
  return s;
}

/** RFC 5952 text of 16 bytes. */
export function ipv6Text(b: Uint8Array): string {
  return formatIpv6(BigInt(`0x${Buffer.from(b).toString('hex')}`));
}
