import { isIP } from 'node:net';
import { z } from 'zod';
import { duration, intIn, isDnsName, nonEmpty } from './schema-common.js';

// security_events and incident_response (issue 7; docs/config.md, decisions 0027, 0028).

/** "host:port" with a DNS name or an IP literal (IPv6 in brackets): a SIEM is usually named. */
const collector = z.string().transform((s, ctx) => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(s);
  const host = m ? (m[1] ?? m[2]!) : '';
  const port = m ? Number(m[3]) : 0;
  const hostOk = m?.[1] !== undefined ? isIP(host) === 6 : isIP(host) === 4 || isDnsName(host);
  if (!m || !hostOk || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(s)} is not host:port (like "siem.example.com:6514", "192.0.2.7:514" or "[2001:db8::7]:514")` });
    return z.NEVER;
  }
  return { host, port };
});

const SEVERITY_KEYS = ['critical', 'high', 'medium', 'low'] as const;
const action = z.enum(['isolate', 'enhanced_monitoring', 'log', 'none']);

export const securityEventsSchema = z
  .strictObject({
    retention: duration({ min: 1000 }).prefault('24h'),
    max_events: intIn(1, 10_000_000).default(100_000),
    // Guard samples and host denies from the nflog groups (decision 0028).
    nflog: z
      .strictObject({
        enabled: z.boolean().default(true),
        max_events_per_second: intIn(1, 100_000).default(100),
        per_port_interval: duration().prefault('1s'),
        max_records_per_second: intIn(1, 1_000_000).default(2000),
      })
      .prefault({}),
    // A VM whose high-severity drops reach `packets` within `window` raises a critical attack_detected.
    escalation: z
      .strictObject({
        packets: intIn(1).default(1000),
        window: duration({ min: 1000 }).prefault('10s'),
      })
      .prefault({}),
    // On while ipv6.security.enable_security_logging is true, with ipv6.security.syslog_facility.
    syslog: z
      .strictObject({
        socket: z.string().default('/dev/log'),
        // local: syslog(3)'s "<PRI>Mmm dd hh:mm:ss metald[pid]: msg" (journald, rsyslog); rfc3164 adds the
        // host name; rfc5424 for a local rsyslog that takes it (journald does not parse it, systemd#19251).
        format: z.enum(['local', 'rfc3164', 'rfc5424']).default('local'),
        max_buffered: intIn(1, 1_000_000).default(10_000),
        remote: z
          .strictObject({
            address: collector,
            protocol: z.enum(['tcp', 'udp']).default('tcp'),
            max_buffered: intIn(1, 1_000_000).default(10_000),
          })
          .optional(),
      })
      .prefault({}),
  })
  .prefault({});

export const incidentResponseSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    actions: z
      .strictObject({
        critical: action.default('isolate'),
        high: action.default('enhanced_monitoring'),
        medium: action.default('log'),
        low: action.default('none'),
      })
      .prefault({}),
    enhanced_monitoring_duration: duration({ min: 1000 }).prefault('15m'),
    // The same action (or hook run) for the same VM/tenant at most once per cooldown.
    cooldown: duration().prefault('1m'),
    hook: nonEmpty
      .refine((s) => s.startsWith('/'), { error: 'must be an absolute path (e.g. /opt/metald/security/incident-response.sh)' })
      .optional(),
    hook_severities: z.array(z.enum(SEVERITY_KEYS)).default(['critical', 'high', 'medium']),
    hook_timeout: duration({ min: 100 }).prefault('30s'),
    hook_rate_limit: intIn(1, 10_000).default(30),
  })
  .prefault({});
