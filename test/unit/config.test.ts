import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QUICKSTART_CONFIG_YAML } from '../../src/config/defaults.js';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfigFile, parseConfig, resolveConfigPath } from '../../src/config/load.js';
import { ConfigSchema, allBridges, allPools, formatDuration, parseDuration, sha256Hex, type RuleParser } from '../../src/config/schema.js';

const fixture = (name: string) => new URL(`../fixtures/config/${name}`, import.meta.url).pathname;
const root = new URL('../../', import.meta.url).pathname;

function errorOf(yaml: string, ruleParser?: RuleParser): ConfigError {
  try {
    parseConfig(yaml, 'test.yaml', { ruleParser });
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  assert.fail(`expected a ConfigError for:\n${yaml}`);
}

test('guide section 1 (production) loads unchanged', () => {
  const { config, warnings } = loadConfigFile(fixture('guide-section1.yaml'));
  const pool = config.ipv6.default_pool!;
  assert.equal(pool.prefix, '2600:beef:1000::/44');
  assert.equal(pool.reserved.length, 5);
  assert.equal(pool.security_profile, 'high');
  assert.equal(config.ipv6.bridge?.name, 'br-prod');
  assert.equal(config.ipv6.bridge?.mtu, 1500);
  assert.equal(config.ipv6.bridge?.ipv6_address, '2600:beef:1000::1/64');
  assert.equal(config.ipv6.default_vlan, 100);
  assert.equal(config.ipv6.management_vlan, 1);
  assert.equal(config.ipv6.security.log_level, 'info');
  assert.equal(config.ipv6.security.syslog_facility, 'local0');
  assert.equal(config.metrics_collection_interval, 100);
  assert.equal(config.billing.collection_interval, 100);
  assert.equal(config.otel.sampling_rate, 0.1);
  assert.equal(config.max_vms, 50000);
  assert.equal(config.backend, 'firecracker');
  assert.deepEqual(config.ipv6.dns.servers.slice(0, 1), ['2001:4860:4860::8888']);
  assert.deepEqual(allPools(config).map((p) => p.id), ['production']);
  assert.ok(warnings.includes('ipv6.bridge.enable_stp (line 23): bridge br-prod runs STP: new VM ports wait 2×forward_delay = 20 s before forwarding'), warnings.join('\n'));
});

test('guide section 2 (multi-tenant) loads unchanged', () => {
  const { config } = loadConfigFile(fixture('guide-section2.yaml'));
  assert.deepEqual(allPools(config).map((p) => [p.id, p.prefix, p.security_profile, p.rate_limit]), [
    ['tier1-customers', '2600:beef:1000::/48', 'high', 1000],
    ['tier2-customers', '2600:beef:1001::/48', 'medium', 500],
    ['shared-services', '2600:beef:1010::/48', 'high', undefined],
  ]);
  const bridges = allBridges(config);
  assert.deepEqual(bridges.map((b) => [b.name, b.mtu]), [['br-tier1', 1500], ['br-tier2', 1500], ['br-shared', 9000]]);
  assert.deepEqual(bridges[0]?.allowed_ra_sources, ['2600:beef:1000::1']);
  assert.equal(bridges[2]?.enable_mld_snooping, true);
  assert.equal(config.ipv6.security_policies[0]?.rules.length, 5);
  assert.equal(config.ha.heartbeat_interval, 1000);
  assert.equal(config.ha.failover_timeout, 30_000);
  assert.deepEqual(config.ha.secondary_nodes, ['node2.company.com', 'node3.company.com']);
});

const GUIDE = '/work/shared/seed/ipv6-deployment-guide.md';
test('fixtures are the guide text, byte for byte', { skip: !existsSync(GUIDE) && 'guide not on this machine' }, () => {
  const guide = readFileSync(GUIDE, 'utf8');
  for (const name of ['guide-section1.yaml', 'guide-section2.yaml']) {
    assert.ok(guide.includes('```yaml\n' + readFileSync(fixture(name), 'utf8') + '```'), name);
  }
  // The incident script the security-ops test runs unchanged.
  assert.ok(guide.includes(`incident-response.sh << 'EOF'\n${readFileSync(join(root, 'test/fixtures/guide-incident-response.sh'), 'utf8')}EOF\n`));
});

test('quickstart: embedded default equals config/quickstart.yaml and loads', () => {
  assert.equal(readFileSync(join(root, 'config/quickstart.yaml'), 'utf8'), QUICKSTART_CONFIG_YAML);
  const { config, warnings } = parseConfig(QUICKSTART_CONFIG_YAML, 'quickstart');
  assert.equal(config.backend, 'sandbox');
  assert.equal(config.auth.mode, 'none');
  assert.equal(config.dataplane.netns, 'metald-dp');
  assert.equal(config.data_dir, './.metald/data');
  assert.equal(config.max_vms, 1000);
  assert.equal(config.ipv6.default_pool?.prefix, 'fd00:6d74::/48');
  assert.ok(config.ipv6.default_pool?.reserved.includes('fd00:6d74::1'));
  assert.equal(config.ipv6.bridge?.name, 'br-metald');
  assert.deepEqual(config.ipv6.dns.servers, ['fd00:6d74::53']);
  assert.deepEqual(warnings, ['auth.mode (line 16): API authentication is off: anyone who can reach port 8080 is an admin']);
});

test('an empty file is all defaults', () => {
  const { config, warnings } = parseConfig('', 'empty');
  assert.equal(config.instance_name, 'metald');
  assert.equal(config.backend, 'firecracker');
  assert.equal(config.port, 8080);
  assert.equal(config.listen_address, '127.0.0.1');
  assert.equal(config.metrics_address, '127.0.0.1:9464');
  assert.equal(config.shutdown_timeout, 30_000);
  assert.equal(config.ipv6.enabled, false);
  assert.equal(config.ipv6.quarantine, 600_000);
  assert.equal(config.ipv6.security.firewall_backend, 'nftables');
  assert.deepEqual(config.sandbox.guest_command, ['sleep', 'infinity']);
  assert.deepEqual(config.qemu, {
    binary: 'qemu-system-x86_64', machine: 'microvm', accel: 'auto',
    kernel_path: '/var/cache/metald/guest/current/vmlinuz', initrd_path: '/var/cache/metald/guest/current/initramfs.cpio.gz',
    image_dirs: ['/var/cache/metald/guest', '/var/lib/metald/images'], boot_timeout: 120_000, readiness: 'marker',
  });
  assert.equal(config.tls, undefined);
  assert.deepEqual(warnings, ['auth.tokens: mode is tokens (the default) but no tokens are configured: metald serve will refuse to start until tokens are added or auth.mode: none is set']);
});

test('values are normalised', () => {
  const { config } = parseConfig(
    [
      'listen_address: "::1"',
      'metrics_address: "[0:0::1]:9000"',
      'auth:',
      '  tokens:',
      '    - token: "0123456789abcdef-admin"',
      '      role: admin',
      '    - token_sha256: "' + 'AB'.repeat(32) + '"',
      '      tenant_id: acme',
      'ipv6:',
      '  quarantine: 1h30m',
      '  pools: [{ id: p, prefix: "2600:BEEF:0::/48", mode: prefix }]',
      '  security: { log_level: WARNING, default_security_profile: low }',
    ].join('\n'),
    't',
  );
  assert.equal(config.metrics_address, '[::1]:9000');
  assert.deepEqual(config.auth.tokens, [
    { role: 'admin', token_sha256: sha256Hex('0123456789abcdef-admin') },
    { tenant_id: 'acme', token_sha256: 'ab'.repeat(32) },
  ]);
  assert.equal(config.ipv6.quarantine, 90 * 60_000);
  assert.equal(config.ipv6.pools[0]?.prefix, '2600:beef::/48');
  assert.equal(config.ipv6.pools[0]?.security_profile, 'low');
  assert.equal(config.ipv6.security.log_level, 'warn');
});

test('durations', () => {
  const cases: [string, number][] = [['100ms', 100], ['1s', 1000], ['30s', 30_000], ['10m', 600_000], ['1h', 3_600_000], ['1h30m', 5_400_000], ['1.5s', 1500], ['0s', 0]];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
  for (const bad of ['', '10', '10 s', '10parsecs', '1d', '-1s', 's', '1.s', '0.5ms', 'ms']) {
    assert.throws(() => parseDuration(bad), /is not a (duration|whole number of milliseconds)/, bad);
  }
  assert.deepEqual([100, 1000, 90_000, 3_600_000].map(formatDuration), ['100ms', '1s', '90s', '1h']);
});

test('resolveConfigPath: flag, then environment, then /etc', () => {
  const env = { UNKEY_METALD_CONFIG: '/env/config.yaml' };
  assert.equal(resolveConfigPath('/cli.yaml', env), '/cli.yaml');
  assert.equal(resolveConfigPath(undefined, env), '/env/config.yaml');
  assert.equal(resolveConfigPath('', env), '/env/config.yaml');
  assert.equal(resolveConfigPath(undefined, {}), DEFAULT_CONFIG_PATH);
  assert.equal(resolveConfigPath(undefined, { UNKEY_METALD_CONFIG: '' }), '/etc/metald/config.yaml');
});

test('loadConfigFile reports an unreadable file without a position', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metald-config-'));
  assert.throws(() => loadConfigFile(join(dir, 'nope.yaml')), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.issues[0]?.line, 0);
    assert.match(e.message, /cannot read config file .*nope\.yaml: ENOENT \(pass --config or set UNKEY_METALD_CONFIG\)/);
    return true;
  });
  try {
    writeFileSync(join(dir, 'ok.yaml'), 'backend: qemu\n');
    assert.equal(loadConfigFile(join(dir, 'ok.yaml')).config.backend, 'qemu');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('issues carry path, line and column; message has one line per issue', () => {
  const e = errorOf('port: 0\nipv6:\n  default_vlan: 0\n');
  assert.deepEqual(e.issues, [
    { path: 'port', line: 1, column: 7, message: 'must be an integer from 1 to 65535, got 0' },
    { path: 'ipv6.default_vlan', line: 3, column: 17, message: 'must be an integer from 1 to 4094, got 0' },
  ]);
  assert.equal(e.message, 'port (line 1): must be an integer from 1 to 65535, got 0\nipv6.default_vlan (line 3): must be an integer from 1 to 4094, got 0');
});

test('warnings: STP default delay, disabled ipv6 section, not-implemented features', () => {
  const { warnings } = parseConfig(
    ['ipv6:', '  enabled: false', '  bridges:', '    - name: br0', '      enable_stp: true', 'ha:', '  enabled: true', '  primary_node: a.example', 'auth:', '  mode: none', '  tokens: [{ token: "0123456789abcdef", role: admin }]'].join('\n'),
    't',
  );
  assert.deepEqual(warnings, [
    'ipv6.enabled (line 2): IPv6 is disabled: the pools and bridges in this section are not used',
    'auth.mode (line 10): API authentication is off: anyone who can reach port 8080 is an admin',
    'auth.tokens (line 11): tokens are ignored while auth.mode is none',
    'ha.enabled (line 7): high availability is accepted and validated but not implemented yet: this node runs standalone',
  ]);
  const stp = parseConfig('ipv6:\n  pools: [{id: a, prefix: "2600::/48"}]\n  bridge: { name: br0, enable_stp: true }\n', 't').warnings;
  assert.deepEqual(stp.filter((w) => w.includes('STP')), ['ipv6.bridge.enable_stp (line 3): bridge br0 runs STP: new VM ports wait 2×forward_delay = 30 s before forwarding']);
});

test('security policy rules go through the rule parser hook with positions inside the rule', () => {
  const parser: RuleParser = (rule) => {
    const i = rule.indexOf('BOGUS');
    return i < 0 ? null : { message: `unknown word BOGUS at column ${i + 1}`, column: i + 1 };
  };
  const yaml = ['ipv6:', '  security_policies:', '    - id: p', '      rules:', '        - "DENY ipv6 between vlans"', '        - "ALLOW BOGUS"'].join('\n');
  const e = errorOf(yaml, parser);
  assert.deepEqual(e.issues, [{ path: 'ipv6.security_policies[0].rules[1]', line: 6, column: 18, message: 'unknown word BOGUS at column 7', exact: true }]);
  assert.equal(e.message, 'ipv6.security_policies[0].rules[1] (line 6, col 18): unknown word BOGUS at column 7');
});

const POOLS = `ipv6:
  enabled: true
  pools:
    - id: "tier1-customers"
      prefix: "2600:BEEF:1000::/48"
      reserved: ["2600:BEEF:1000::1", "2600:beef:2000::1"]
    - id: "tier2-customers"
      prefix: "2600:BEEF:1001::/48"
`;

// [name, yaml, exact ConfigError.message]
const BAD: [string, string, string][] = [
  ['unknown top-level key with suggestion', 'backend: sandbox\nportt: 8080\n', 'portt (line 2): unknown key, did you mean "port"?'],
  ['unknown top-level key', 'colour: blue\n', 'colour (line 1): unknown key'],
  ['unknown nested key with suggestion', 'ipv6:\n  bridge:\n    name: br0\n    enable_ra_gaurd: true\n', 'ipv6.bridge.enable_ra_gaurd (line 4): unknown key, did you mean "enable_ra_guard"?'],
  ['key in the wrong section', 'security:\n  seccomp_enabled: true\n  enable_source_guard: true\n', 'security.enable_source_guard (line 3): unknown key here (it belongs in ipv6.security)'],
  ['wrong type: string for number', 'port: "8080"\n', 'port (line 1): expected a number, got "8080"'],
  ['wrong type: yes is not a boolean in YAML 1.2', 'ipv6:\n  enabled: yes\n', 'ipv6.enabled (line 2): expected true or false, got "yes"'],
  ['wrong type: mapping for list', 'ipv6:\n  pools:\n    id: a\n', 'ipv6.pools (line 2): expected a list, got a mapping'],
  ['missing required key', 'ipv6:\n  default_pool:\n    id: a\n', 'ipv6.default_pool.prefix (line 2): missing required key'],
  ['bad prefix length /480', POOLS.replace(', "2600:beef:2000::1"', '').replace('2600:BEEF:1001::/48', '2600:BEEF:1001::/480'), 'ipv6.pools[1].prefix (line 8): "2600:BEEF:1001::/480" is not an IPv6 prefix'],
  ['guide management prefix with "mgmt"', 'ipv6:\n  management_prefixes:\n    - "2600:beef:1000:mgmt::/64"\n', 'ipv6.management_prefixes[0] (line 3): "2600:beef:1000:mgmt::/64" is not an IPv6 prefix'],
  ['prefix with host bits', 'ipv6:\n  default_pool: { id: a, prefix: "2600:beef:1000::1/48" }\n', 'ipv6.default_pool.prefix (line 2): "2600:beef:1000::1/48" has host bits set, did you mean 2600:beef:1000::/48?'],
  ['reserved address outside its pool', POOLS, 'ipv6.pools[0].reserved[1] (line 6): 2600:beef:2000::1 is outside pool tier1-customers (2600:beef:1000::/48)'],
  ['overlapping pools', 'ipv6:\n  default_pool:\n    id: production\n    prefix: "2600:BEEF:1000::/44"\n  pools:\n    - id: tier1\n      prefix: "2600:beef:1001::/48"\n', 'ipv6.pools[0].prefix (line 7): pool tier1 (2600:beef:1001::/48) overlaps pool production (2600:beef:1000::/44)'],
  ['duplicate pool id', POOLS.replace('tier2-customers', 'tier1-customers').replace(', "2600:beef:2000::1"', ''), 'ipv6.pools[1].id (line 7): duplicate pool id "tier1-customers" (also ipv6.pools[0].id)'],
  ['pool larger than /32', 'ipv6:\n  pools:\n    - id: big\n      prefix: "2600::/28"\n', 'ipv6.pools[0].prefix (line 4): pool prefix length must be /32 to /120 for an address-mode pool, got /28'],
  ['address pool smaller than /120', 'ipv6:\n  pools:\n    - id: small\n      prefix: "2600:beef::/124"\n', 'ipv6.pools[0].prefix (line 4): pool prefix length must be /32 to /120 for an address-mode pool, got /124'],
  ['prefix pool smaller than /64', 'ipv6:\n  pools:\n    - id: small\n      mode: prefix\n      prefix: "2600:beef::/80"\n', 'ipv6.pools[0].prefix (line 5): pool prefix length must be /32 to /64, got /80'],
  ['link-local pool', 'ipv6:\n  pools: [{ id: ll, prefix: "fe80::/64" }]\n', 'ipv6.pools[0].prefix (line 2): fe80::/64 is a link-local prefix and cannot be a VM address pool'],
  ['prefix-mode pool of one /64', 'ipv6:\n  pools:\n    - id: p\n      prefix: "2600:beef::/64"\n      mode: prefix\n', 'ipv6.pools[0].mode (line 5): a prefix-mode pool hands out /64s, so its prefix must be shorter than /64 (got 2600:beef::/64)'],
  ['negative rate_limit', 'ipv6:\n  pools:\n    - id: p\n      prefix: "2600:beef::/48"\n      rate_limit: -5\n', 'ipv6.pools[0].rate_limit (line 5): must be an integer ≥ 0, got -5'],
  ['bad security profile', 'ipv6:\n  pools: [{ id: p, prefix: "2600::/48", security_profile: extreme }]\n', 'ipv6.pools[0].security_profile (line 2): must be one of "high", "medium", "low", got "extreme"'],
  ['vlan 0', 'ipv6:\n  default_vlan: 0\n', 'ipv6.default_vlan (line 2): must be an integer from 1 to 4094, got 0'],
  ['vlan 4095', 'ipv6:\n  management_vlan: 4095\n', 'ipv6.management_vlan (line 2): must be an integer from 1 to 4094, got 4095'],
  ['default vlan equals management vlan', 'ipv6:\n  default_vlan: 7\n  management_vlan: 7\n', 'ipv6.default_vlan (line 2): default_vlan and management_vlan are both 7; tenant VMs must not share the management VLAN'],
  ['mtu 100', 'ipv6:\n  bridge:\n    name: br0\n    mtu: 100\n', 'ipv6.bridge.mtu (line 4): must be an integer from 1280 to 9216, got 100'],
  ['forward_delay out of range', 'ipv6:\n  bridge: { name: br0, forward_delay: 1 }\n', 'ipv6.bridge.forward_delay (line 2): must be an integer from 2 to 30, got 1'],
  ['bridge name of 16 chars', 'ipv6:\n  bridges:\n    - name: br-0123456789abc\n', 'ipv6.bridges[0].name (line 3): "br-0123456789abc" is not a valid interface name (1-15 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit)'],
  ['bridge names unique across bridge and bridges', 'ipv6:\n  bridge: { name: br0 }\n  bridges:\n    - name: br1\n    - name: br0\n', 'ipv6.bridges[1].name (line 5): duplicate bridge name "br0" (also ipv6.bridge.name)'],
  ['routed attachment with an address', 'ipv6:\n  bridges:\n    - name: rt0\n      mode: routed\n      ipv6_address: "2600::1/64"\n', 'ipv6.bridges[0].ipv6_address (line 5): a routed attachment has no bridge to put 2600::1/64 on: each VM\'s gateway is the host\'s link-local fe80::1 (remove ipv6_address, or use mode: bridged)'],
  ['bad attachment mode', 'ipv6:\n  bridge: { name: br0, mode: bonded }\n', 'ipv6.bridge.mode (line 2): must be one of "bridged", "routed", got "bonded"'],
  ['bridge address without length', 'ipv6:\n  bridge: { name: br0, ipv6_address: "2600::1" }\n', 'ipv6.bridge.ipv6_address (line 2): "2600::1" is not an IPv6 address with prefix length (like "2600:beef::1/64")'],
  ['multicast DNS server', 'ipv6:\n  dns:\n    servers: ["ff02::fb"]\n', 'ipv6.dns.servers[0] (line 3): "ff02::fb" is a multicast address, not a unicast IPv6 address'],
  ['bad search domain', 'ipv6:\n  dns: { search_domain: "-bad-.example" }\n', 'ipv6.dns.search_domain (line 2): "-bad-.example" is not a DNS name'],
  ['bad duration', 'metrics_collection_interval: "10 parsecs"\n', 'metrics_collection_interval (line 1): "10 parsecs" is not a duration (use e.g. "100ms", "30s", "10m", "1h")'],
  ['zero interval', 'shutdown_timeout: 0s\n', 'shutdown_timeout (line 1): must be at least 1ms, got "0s"'],
  ['firewall backend iptables', 'ipv6:\n  security:\n    firewall_backend: "iptables"\n', 'ipv6.security.firewall_backend (line 3): "iptables" is not supported: metald only supports the nftables firewall backend'],
  ['guards without firewall integration', 'ipv6:\n  security:\n    enable_ra_guard: false\n    enable_firewall_integration: false\n', 'ipv6.security.enable_firewall_integration (line 4): the port guards are enforced with nftables; with firewall integration off, enable_source_guard, enable_extension_header_filtering would be silently unenforced (turn those off too, or keep this on)'],
  ['bad log level', 'ipv6:\n  security: { log_level: VERBOSE }\n', 'ipv6.security.log_level (line 2): "VERBOSE" is not a log level (use one of debug, info, warn, error)'],
  ['bad syslog facility', 'ipv6:\n  security: { syslog_facility: local9 }\n', 'ipv6.security.syslog_facility (line 2): "local9" is not a syslog facility (use one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0, local1, local2, local3, local4, local5, local6, local7)'],
  ['nd rate limit 0', 'ipv6:\n  security: { global_nd_rate_limit: 0 }\n', 'ipv6.security.global_nd_rate_limit (line 2): must be an integer ≥ 1, got 0'],
  ['tls half-given', 'tls:\n  cert_file: /etc/metald/cert.pem\n', 'tls.key_file (line 1): required when tls.cert_file is set (give both or neither)'],
  ['token too short (value not echoed)', 'auth:\n  tokens:\n    - token: "short"\n      tenant_id: acme\n', 'auth.tokens[0].token (line 3): must be at least 16 characters, got 5 (generate one with: openssl rand -hex 32)'],
  ['token with tenant_id and role', 'auth:\n  tokens:\n    - token: "0123456789abcdef"\n      tenant_id: acme\n      role: admin\n', 'auth.tokens[0] (line 3): give exactly one of tenant_id or role: admin, not both'],
  ['token with neither tenant nor role', 'auth:\n  tokens:\n    - token_sha256: "' + '0'.repeat(64) + '"\n', 'auth.tokens[0] (line 3): needs tenant_id (a tenant token) or role: admin'],
  ['same token twice, once hashed', `auth:\n  tokens:\n    - { token: "0123456789abcdef", role: admin }\n    - { token_sha256: "${sha256Hex('0123456789abcdef')}", tenant_id: t }\n`, 'auth.tokens[1] (line 4): same token as auth.tokens[0]'],
  ['bad auth mode', 'auth: { mode: open }\n', 'auth.mode (line 1): must be one of "tokens", "none", got "open"'],
  ['duplicate YAML key', 'port: 8080\nbackend: qemu\nport: 9090\n', 'port (line 3): duplicate key, first given at line 1'],
  ['YAML syntax error: tab indentation', 'ipv6:\n\tenabled: true\n', 'line 2, column 1: Tabs are not allowed as indentation'],
  ['YAML syntax error: nested compact mapping', 'port: 8080\nbackend: sandbox: qemu\n', 'line 2, column 10: Nested mappings are not allowed in compact mappings'],
  ['duplicate key in a flow mapping', 'ipv6: { enabled: true, enabled: false }\n', 'ipv6.enabled (line 1): duplicate key, first given at line 1'],
  ['two YAML documents', 'port: 1\n---\nport: 2\n', 'line 2, column 1: a config file holds one YAML document, found another after "---"'],
  ['dangling alias', 'ipv6:\n  pools:\n    - { id: a, prefix: "2600::/48" }\n    - *other\n', 'ipv6.pools[1] (line 4): alias *other has no anchor &other before it'],
  ['complex mapping key', '? [port, backend]\n: 1\n', 'line 1, column 3: keys must be plain names, not lists or mappings'],
  ['not a mapping', '- a\n- b\n', 'line 1, column 1: the configuration must be a YAML mapping of keys to values'],
  ['sampling_rate 1.5', 'otel:\n  sampling_rate: 1.5\n', 'otel.sampling_rate (line 2): must be between 0 and 1, got 1.5'],
  ['otel enabled without endpoint', 'otel:\n  enabled: true\n', 'otel.endpoint (line 1): required when otel.enabled is true'],
  ['billing endpoint not a URL', 'billing:\n  billaged_endpoint: "billing.company.com"\n', 'billing.billaged_endpoint (line 2): "billing.company.com" is not a URL'],
  ['port 70000', 'port: 70000\n', 'port (line 1): must be an integer from 1 to 65535, got 70000'],
  ['max_vms 0', 'max_vms: 0\n', 'max_vms (line 1): must be an integer ≥ 1, got 0'],
  ['fractional max_vms', 'max_vms: 2.5\n', 'max_vms (line 1): must be an integer ≥ 1, got 2.5'],
  ['bad backend', 'backend: docker\n', 'backend (line 1): must be one of "firecracker", "qemu", "sandbox", got "docker"'],
  ['bad instance name', 'instance_name: Metald_1\n', 'instance_name (line 1): "Metald_1" is not a valid instance name (1-16 chars of a-z 0-9 -, starting with a letter)'],
  ['instance name clashing with VM namespaces', 'instance_name: a-vm-b\n', 'instance_name (line 1): may not contain "-vm" (it would clash with VM namespace names of another instance)'],
  ['bad netns name', 'dataplane:\n  netns: "../etc"\n', 'dataplane.netns (line 2): "../etc" is not a valid network namespace name (1-63 chars of A-Z a-z 0-9 _ . -)'],
  ['bad listen address', 'listen_address: localhost\n', 'listen_address (line 1): "localhost" is not an IP address'],
  ['metrics port collides with API', 'listen_address: "::"\nport: 9464\n', 'metrics_address: 127.0.0.1:9464 collides with the API listener :: port 9464'],
  ['ha failover shorter than heartbeat', 'ha:\n  heartbeat_interval: 5s\n  failover_timeout: 2s\n', 'ha.failover_timeout (line 3): must be longer than heartbeat_interval (2s <= 5s)'],
  ['qemu path with a comma', 'qemu:\n  kernel_path: /img/a,b\n', 'qemu.kernel_path (line 2): "/img/a,b" must be an absolute path without commas or line breaks'],
  ['qemu accel unknown', 'qemu:\n  accel: hvf\n', 'qemu.accel (line 2): must be one of "auto", "kvm", "tcg", got "hvf"'],
  ['qemu boot timeout too short', 'qemu:\n  boot_timeout: 10ms\n', 'qemu.boot_timeout (line 2): must be at least 1s, got "10ms"'],
  ['empty guest command', 'sandbox:\n  guest_command: []\n', 'sandbox.guest_command (line 2): needs at least the program to run'],
  ['policy without rules', 'ipv6:\n  security_policies:\n    - id: p\n      rules: []\n', 'ipv6.security_policies[0].rules (line 4): a policy needs at least one rule'],
  ['empty rule string', 'ipv6:\n  security_policies:\n    - id: p\n      rules: ["  "]\n', 'ipv6.security_policies[0].rules[0] (line 4): must not be empty'],
];

for (const [name, yaml, want] of BAD) {
  test(`bad config: ${name}`, () => {
    assert.equal(errorOf(yaml).message, want);
  });
}

test('docs/config.md mentions every key of the schema', () => {
  type Def = { type: string; shape?: Record<string, unknown>; element?: unknown; innerType?: unknown; in?: unknown };
  const def = (s: unknown) => (s as { _zod: { def: Def } })._zod.def;
  const keys = new Set<string>();
  const walk = (s: unknown): void => {
    const d = def(s);
    if (d.innerType) return walk(d.innerType);
    if (d.type === 'pipe') return walk(d.in);
    if (d.type === 'array') return walk(d.element);
    if (d.type !== 'object') return;
    for (const [k, v] of Object.entries(d.shape ?? {})) {
      keys.add(k);
      walk(v);
    }
  };
  walk(ConfigSchema);
  assert.ok(keys.size > 80, `walked only ${keys.size} keys`);
  const doc = readFileSync(join(root, 'docs/config.md'), 'utf8');
  const missing = [...keys].filter((k) => !new RegExp(`\\\`(?:[a-z_.]+\\.)?${k}(?:\\[\\])?\\\``).test(doc));
  assert.deepEqual(missing, []);
});

test('at least 25 bad configs are covered', () => {
  assert.ok(BAD.length >= 25);
});
