import type { SecurityEvent, Severity } from '../security-events.js';

// PURE: security events as syslog messages. PRI = facility * 8 + severity
// (RFC 5424 6.2.1); local0 is facility 16, so a critical event on local0 is
// <130>. The remote collector gets full RFC 5424 lines with the event as
// structured data; the local socket gets `<PRI>` + the text and `logger`
// adds the header the local daemon parses (decision 0028).

export const FACILITY_CODES: Record<string, number> = {
  kern: 0, user: 1, mail: 2, daemon: 3, auth: 4, syslog: 5, lpr: 6, news: 7, uucp: 8, cron: 9, authpriv: 10, ftp: 11,
  local0: 16, local1: 17, local2: 18, local3: 19, local4: 20, local5: 21, local6: 22, local7: 23,
};

/** Event severity -> syslog severity: crit, err, warning, notice. */
export const SYSLOG_SEVERITY: Record<Severity, number> = { critical: 2, high: 3, medium: 4, low: 5 };

export function pri(facility: string, severity: Severity): number {
  const f = FACILITY_CODES[facility];
  if (f === undefined) throw new Error(`unknown syslog facility ${JSON.stringify(facility)}`);
  return f * 8 + SYSLOG_SEVERITY[severity];
}

/** SD-ID of the event's structured data: the RFC 5612 documentation enterprise number (metald has no PEN of its own). */
export const SD_ID = 'metald@32473';

const FIELDS = ['seq', 'type', 'severity', 'vm_id', 'tenant_id', 'nic', 'port', 'reason', 'count'] as const;

/** One line of `key=value` pairs, greppable ("security_event type=guard_drop ..."); values with spaces are quoted. */
export function eventText(e: SecurityEvent): string {
  const kv = (k: string, v: string | number) => `${k}=${typeof v === 'string' && (v === '' || /[\s"=]/.test(v)) ? JSON.stringify(v) : v}`;
  const parts = FIELDS.map((k) => kv(k, e[k]));
  if (e.packet?.src) parts.push(kv('src', e.packet.src));
  if (e.packet?.dst) parts.push(kv('dst', e.packet.dst));
  if (e.detail) parts.push(kv('detail', e.detail));
  // One line: a newline would split the message at the local socket.
  return `security_event ${parts.join(' ')}`.replace(/[\r\n]+/g, ' ');
}

const sdValue = (v: string) => v.replace(/[\\"\]]/g, (c) => `\\${c}`);
/** PRINTUSASCII without space, at most `max` characters; "-" when empty (RFC 5424 NILVALUE). */
const token = (s: string, max: number) => s.replace(/[^\x21-\x7e]/g, '_').slice(0, max) || '-';

export interface Rfc5424Header {
  facility: string;
  hostname: string;
  appName: string;
  procId: string;
}

/** `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, MSGID = the event type. */
export function rfc5424(e: SecurityEvent, h: Rfc5424Header): string {
  const sd = [...FIELDS.map((k) => [k, String(e[k])] as const), ...(e.packet?.src ? [['src', e.packet.src] as const] : []), ...(e.packet?.dst ? [['dst', e.packet.dst] as const] : [])]
    .map(([k, v]) => `${k}="${sdValue(v)}"`).join(' ');
  return `<${pri(h.facility, e.severity)}>1 ${e.time} ${token(h.hostname, 255)} ${token(h.appName, 48)} ${token(h.procId, 128)} ${token(e.type, 32)} [${SD_ID} ${sd}] ${eventText(e)}`;
}

/** RFC 6587 octet counting: "<length in bytes> <message>" (TCP). */
export function octetCounted(msg: string): string {
  return `${Buffer.byteLength(msg)} ${msg}`;
}
