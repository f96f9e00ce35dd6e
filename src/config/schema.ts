// The whole config file. Every object is strict: a misspelt key is an error,
// never a silently ignored setting (a typo in `enable_ra_guard` must not turn
// a guard off). Defaults are chosen so that an absent key is the safe choice.

import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import {
  dnsName,
  duration,
  formatDuration,
  hostPort,
  httpUrl,
  intIn,
  ipAddress,
  netnsName,
  nonEmpty,
  type SchemaOptions,
} from './schema-common.js';
import { ipv6Schema } from './schema-ipv6.js';
import { incidentResponseSchema, securityEventsSchema } from './schema-events.js';

export { SECURITY_PROFILES, SYSLOG_FACILITIES, POOL_MIN_LENGTH, POOL_MAX_LENGTH } from './schema-ipv6.js';
export { parseDuration, formatDuration, formatPath, type RuleParser, type RuleSyntaxError, type SchemaOptions } from './schema-common.js';

import { TENANT_ID_PATTERN } from '../core/vm/ids.js';

export const BACKENDS = ['firecracker', 'qemu', 'sandbox'] as const;
export const INSTANCE_NAME = /^[a-z][a-z0-9-]{0,15}$/;
export const MIN_TOKEN_LENGTH = 16;

const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

// Messages about tokens never quote the value: config errors end up in logs.
const token = z
  .strictObject({
    name: nonEmpty.optional(),
    token: z
      .string()
      .refine((s) => s.length >= MIN_TOKEN_LENGTH, {
        error: (iss) =>
          `must be at least ${MIN_TOKEN_LENGTH} characters, got ${(iss.input as string).length} (generate one with: openssl rand -hex 32)`,
      })
      .optional(),
    token_sha256: z.string().refine((s) => SHA256_HEX.test(s), { error: 'must be 64 hex digits (sha256 of the token)' }).optional(),
    tenant_id: z
      .string()
      .refine((s) => TENANT_ID_PATTERN.test(s), { error: (iss) => `${JSON.stringify(iss.input)} is not a valid tenant id` })
      .optional(),
    role: z.literal('admin').optional(),
  })
  .superRefine((t, ctx) => {
    if ((t.token === undefined) === (t.token_sha256 === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of token or token_sha256' });
    }
    if ((t.tenant_id === undefined) === (t.role === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: t.role ? 'give exactly one of tenant_id or role: admin, not both' : 'needs tenant_id (a tenant token) or role: admin',
      });
    }
  })
  // Only the hash is kept in memory: the API compares hashes, and a heap dump or
  // `config show` cannot leak a usable token.
  .transform(({ token: plain, token_sha256, ...rest }) => ({
    ...rest,
    token_sha256: plain !== undefined ? sha256Hex(plain) : (token_sha256 as string).toLowerCase(),
  }));

const auth = z
  .strictObject({
    mode: z.enum(['tokens', 'none']).default('tokens'),
    tokens: z.array(token).default([]),
  })
  .superRefine((a, ctx) => {
    const hashes = new Map<string, number>();
    const names = new Map<string, number>();
    a.tokens.forEach((t, i) => {
      const first = hashes.get(t.token_sha256);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['tokens', i], message: `same token as auth.tokens[${first}]` });
      else hashes.set(t.token_sha256, i);
      if (t.name === undefined) return;
      const named = names.get(t.name);
      if (named !== undefined) ctx.addIssue({ code: 'custom', path: ['tokens', i, 'name'], message: `duplicate token name ${JSON.stringify(t.name)} (also auth.tokens[${named}].name)` });
      else names.set(t.name, i);
    });
  });

const tls = z
  .strictObject({ cert_file: nonEmpty.optional(), key_file: nonEmpty.optional() })
  .superRefine((t, ctx) => {
    if (t.cert_file !== undefined && t.key_file === undefined) ctx.addIssue({ code: 'custom', path: ['key_file'], message: 'required when tls.cert_file is set (give both or neither)' });
    if (t.key_file !== undefined && t.cert_file === undefined) ctx.addIssue({ code: 'custom', path: ['cert_file'], message: 'required when tls.key_file is set (give both or neither)' });
  })
  .transform((t) => (t.cert_file !== undefined && t.key_file !== undefined ? { cert_file: t.cert_file, key_file: t.key_file } : undefined));

const hostName = z.string().refine((s) => isIP(s) !== 0 || dnsName.safeParse(s).success, {
  error: (iss) => `${JSON.stringify(iss.input)} is not a host name or IP address`,
});

const billing = z
  .strictObject({
    enabled: z.boolean().default(false),
    billaged_endpoint: httpUrl.optional(),
    collection_interval: duration().prefault('1m'),
  })
  .superRefine((b, ctx) => {
    if (b.enabled && !b.billaged_endpoint) ctx.addIssue({ code: 'custom', path: ['billaged_endpoint'], message: 'required when billing.enabled is true' });
  });

const otel = z
  .strictObject({
    enabled: z.boolean().default(false),
    sampling_rate: z
      .number()
      .refine((n) => n >= 0 && n <= 1, { error: (iss) => `must be between 0 and 1, got ${String(iss.input)}` })
      .default(1),
    endpoint: httpUrl.optional(),
  })
  .superRefine((o, ctx) => {
    if (o.enabled && !o.endpoint) ctx.addIssue({ code: 'custom', path: ['endpoint'], message: 'required when otel.enabled is true' });
  });

const hostSecurity = z.strictObject({
  enable_process_isolation: z.boolean().default(true),
  jailer_enabled: z.boolean().default(true),
  seccomp_enabled: z.boolean().default(true),
});

// Firecracker through its jailer (decision 0019). The VMM runs as uid/gid, never root.
const jailId = intIn(1, 4294967294);
const perSecond = intIn(1).optional();
const firecracker = z.strictObject({
  binary_path: nonEmpty.default('/usr/local/bin/firecracker'),
  jailer_path: nonEmpty.default('/usr/local/bin/jailer'),
  uid: jailId.default(10000),
  gid: jailId.default(10000),
  chroot_base_dir: nonEmpty.default('/srv/jailer'),
  boot_timeout: duration({ min: 1000 }).prefault('60s'),
  readiness: z.enum(['marker', 'vmm']).default('marker'),
  nic_rate_limit: z
    .strictObject({
      rx_bytes_per_sec: perSecond,
      tx_bytes_per_sec: perSecond,
      rx_packets_per_sec: perSecond,
      tx_packets_per_sec: perSecond,
    })
    .prefault({}),
});

const ha = z
  .strictObject({
    enabled: z.boolean().default(false),
    primary_node: hostName.optional(),
    secondary_nodes: z.array(hostName).default([]),
    heartbeat_interval: duration().prefault('1s'),
    failover_timeout: duration().prefault('30s'),
  })
  .superRefine((h, ctx) => {
    if (h.enabled && !h.primary_node) ctx.addIssue({ code: 'custom', path: ['primary_node'], message: 'required when ha.enabled is true' });
    if (h.failover_timeout <= h.heartbeat_interval) {
      ctx.addIssue({
        code: 'custom',
        path: ['failover_timeout'],
        message: `must be longer than heartbeat_interval (${formatDuration(h.failover_timeout)} <= ${formatDuration(h.heartbeat_interval)})`,
      });
    }
    const i = h.primary_node === undefined ? -1 : h.secondary_nodes.indexOf(h.primary_node);
    if (i >= 0) ctx.addIssue({ code: 'custom', path: ['secondary_nodes', i], message: `${h.primary_node} is already the primary_node` });
  });

/** An absolute path qemu can take inside its comma-separated options. */
const qemuPath = z.string().refine((s) => s.startsWith('/') && !/[,\n\r\0]/.test(s), {
  error: (iss) => `${JSON.stringify(iss.input)} must be an absolute path without commas or line breaks`,
});

// backend: qemu (docs/decisions/0023). The default image paths are where
// scripts/build-guest-image.sh puts its latest build.
const qemuSchema = z.strictObject({
  binary: nonEmpty.default('qemu-system-x86_64'),
  machine: z.enum(['microvm', 'q35']).default('microvm'),
  accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  kernel_path: qemuPath.default('/var/cache/metald/guest/current/vmlinuz'),
  initrd_path: qemuPath.default('/var/cache/metald/guest/current/initramfs.cpio.gz'),
  image_dirs: z.array(qemuPath).default(['/var/cache/metald/guest', '/var/lib/metald/images']),
  /** Default /run/metald/<instance_name>/qemu. */
  state_dir: qemuPath.optional(),
  boot_timeout: duration({ min: 1000 }).prefault('120s'),
  readiness: z.enum(['marker', 'vmm']).default('marker'),
});

/** Does a listener on `a` collide with one on `b` (same port assumed)? */
function hostsCollide(a: string, b: string): boolean {
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::';
  return a === b || wildcard(a) || wildcard(b);
}

export function configSchema(opts: SchemaOptions = {}) {
  return z
    .strictObject({
      // Prefixes kernel object names (taps, nft tables, netns) so instances can share a host.
      instance_name: z
        .string()
        .refine((s) => INSTANCE_NAME.test(s), {
          error: (iss) => `${JSON.stringify(iss.input)} is not a valid instance name (1-16 chars of a-z 0-9 -, starting with a letter)`,
        })
        // VM namespaces are "<instance>-vm-<id>": an instance "a-vm-b" would
        // own the namespaces of instance "a".
        .refine((s) => !s.includes('-vm'), { error: 'may not contain "-vm" (it would clash with VM namespace names of another instance)' })
        .default('metald'),
      backend: z.enum(BACKENDS).default('firecracker'),
      data_dir: nonEmpty.default('/var/lib/metald'),
      listen_address: ipAddress.prefault('127.0.0.1'),
      port: intIn(1, 65535).default(8080),
      metrics_address: hostPort.prefault('127.0.0.1:9464'),
      max_vms: intIn(1).default(50000),
      metrics_collection_interval: duration().prefault('100ms'),
      // Per-VM labels (vm_id, tenant_id) on metrics while there are at most this many VMs; 0 = never.
      metrics_per_vm_label_limit: intIn(0).default(1000),
      security_events: securityEventsSchema,
      incident_response: incidentResponseSchema,
      shutdown_timeout: duration().prefault('30s'),
      auth: auth.prefault({}),
      tls: tls.optional(),
      dataplane: z.strictObject({ netns: netnsName.optional() }).prefault({}),
      firecracker: firecracker.prefault({}),
      sandbox: z
        .strictObject({
          guest_command: z
            .array(nonEmpty)
            .refine((a) => a.length > 0, { error: 'needs at least the program to run' })
            .default(['sleep', 'infinity']),
        })
        .prefault({}),
      qemu: qemuSchema.prefault({}),
      // No ipv6 section at all: metald runs VMs without IPv6 and touches no host networking.
      ipv6: ipv6Schema(opts).prefault({ enabled: false }),
      billing: billing.prefault({}),
      otel: otel.prefault({}),
      security: hostSecurity.prefault({}),
      ha: ha.prefault({}),
    })
    .superRefine((c, ctx) => {
      if (c.backend === 'firecracker') {
        // Without the jailer or process isolation the VMM would run as root on the host: refused, not run unsafely.
        for (const key of ['jailer_enabled', 'enable_process_isolation'] as const) {
          if (!c.security[key]) ctx.addIssue({ code: 'custom', path: ['security', key], message: 'must be true with backend: firecracker (the VMM always runs under the jailer, as an unprivileged user)' });
        }
        if (!/firecracker[^/]*$/.test(c.firecracker.binary_path)) {
          ctx.addIssue({ code: 'custom', path: ['firecracker', 'binary_path'], message: 'the file name must contain "firecracker" (the jailer refuses any other)' });
        }
        for (const key of ['binary_path', 'jailer_path', 'chroot_base_dir'] as const) {
          if (!c.firecracker[key].startsWith('/')) ctx.addIssue({ code: 'custom', path: ['firecracker', key], message: 'must be an absolute path' });
        }
      }
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(c.metrics_address);
      if (m && Number(m[2]) === c.port && hostsCollide(m[1] as string, c.listen_address)) {
        ctx.addIssue({ code: 'custom', path: ['metrics_address'], message: `${c.metrics_address} collides with the API listener ${c.listen_address} port ${c.port}` });
      }
    });
}

export const ConfigSchema = configSchema();

/** The validated, defaulted, normalised configuration (durations in ms, canonical IPv6 text). */
export type MetaldConfig = z.output<typeof ConfigSchema>;
export type Ipv6Config = MetaldConfig['ipv6'];
export type PoolConfig = NonNullable<Ipv6Config['default_pool']>;
export type BridgeConfig = NonNullable<Ipv6Config['bridge']>;
export type AuthTokenConfig = MetaldConfig['auth']['tokens'][number];

/** default_pool first, then pools, in file order. */
export function allPools(cfg: MetaldConfig): PoolConfig[] {
  return [...(cfg.ipv6.default_pool ? [cfg.ipv6.default_pool] : []), ...cfg.ipv6.pools];
}

/** bridge first, then bridges, in file order. */
export function allBridges(cfg: MetaldConfig): BridgeConfig[] {
  return [...(cfg.ipv6.bridge ? [cfg.ipv6.bridge] : []), ...cfg.ipv6.bridges];
}
