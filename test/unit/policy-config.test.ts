// The rule languages where operators and tenants meet them: the config file
// (YAML path, line and the column of the bad token in the file) and CreateVm
// validation (field path and column inside the rule).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { planCreate, type ValidationContext } from '../../src/core/vm/validate.js';
import { MetaldError } from '../../src/core/errors.js';
import { VmConfigSchema } from '../../src/gen/vmprovisioner/v1/vm_pb.js';

const GUIDE2 = readFileSync(new URL('../fixtures/config/guide-section2.yaml', import.meta.url), 'utf8');

function configError(yaml: string): ConfigError {
  try {
    parseConfig(yaml, 'test.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  assert.fail('expected a ConfigError');
}

test('guide section 2 policies load; a malformed rule fails with path, line and the file column of the token', () => {
  assert.equal(parseConfig(GUIDE2, 'guide').config.ipv6.security_policies[0]?.rules[4], 'RATE-LIMIT nd 50pps per-vm');
  const bad = GUIDE2.replace('"RATE-LIMIT nd 50pps per-vm"', '"RATE-LIMIT nd 50 per-vm"');
  assert.equal(configError(bad).message, 'ipv6.security_policies[0].rules[4] (line 59, col 26): expected a rate like 50pps, got "50"');
  // Plain and single-quoted scalars, and escapes in double quotes, keep the column on the token.
  const plain = GUIDE2.replace('"RATE-LIMIT nd 50pps per-vm"', 'RATE-LIMIT nd 50 per-vm');
  assert.equal(configError(plain).message, 'ipv6.security_policies[0].rules[4] (line 59, col 25): expected a rate like 50pps, got "50"');
  const escaped = GUIDE2.replace('"RATE-LIMIT nd 50pps per-vm"', '"RATE-LIMIT\\tnd\\x20 50 per-vm"');
  assert.equal(configError(escaped).message, 'ipv6.security_policies[0].rules[4] (line 59, col 31): expected a rate like 50pps, got "50"');
  const single = GUIDE2.replace('"RATE-LIMIT nd 50pps per-vm"', "'RATE-LIMIT nd 50 per-vm'");
  assert.equal(configError(single).message, 'ipv6.security_policies[0].rules[4] (line 59, col 26): expected a rate like 50pps, got "50"');
});

const POLICY = (rules: string[], extra = '') => `ipv6:
  pools: [{ id: shared-services, prefix: "2600:beef:1010::/48" }]
  security_policies:
    - id: a
      profiles: [high]${extra}
      rules:
${rules.map((r) => `        - "${r}"`).join('\n')}
`;

test('config cross-checks: segments name pools, one policy per profile, no conflicting rules', () => {
  assert.equal(configError(POLICY(['ALLOW ipv6 to shared-servces vlan 999'])).message,
    'ipv6.security_policies[0].rules[0] (line 7, col 26): expected the id of a configured pool, got "shared-servces" (pools: shared-services)');
  assert.equal(configError(POLICY(['RATE-LIMIT nd 5pps per-vm', 'RATE-LIMIT nd 6pps per-vm'])).message,
    'ipv6.security_policies[0].rules[1] (line 8): nd is already limited by rules[0]');
  const two = `${POLICY(['DENY ipv6 between vlans'])}    - id: b\n      profiles: [medium, high]\n      rules: ["ALLOW ipv6 between vlans"]\n`;
  assert.equal(configError(two).message, 'ipv6.security_policies[1].profiles[1] (line 9): profile high already has a policy (security_policies[0]); a VM gets one policy');
  assert.deepEqual(parseConfig(POLICY(['ALLOW ipv6 to shared-services vlan 999']), 't').config.ipv6.security_policies[0]?.profiles, ['high']);
});

const CTX: ValidationContext = { bridges: [{ name: 'br0', mtu: 1500 }], enableVlans: false, defaultVlan: undefined, managementVlan: undefined, poolPrefixes: [], defaultSourceGuard: true };
const vm = (ingress: string[], egress: string[] = []) =>
  create(VmConfigSchema, { tenantId: 't1', network: [{ id: 'eth0', securityPolicy: { ingressRules: ingress, egressRules: egress } }] });

test('CreateVm: rules parsed into the plan, warnings for denies the essential ICMPv6 ignores', () => {
  const plan = planCreate(vm(['allow tcp from any to any port 80,443', 'deny all from any to any'], ['allow all from any to any']), CTX);
  const p = plan.nics[0]!.policy;
  assert.equal(p.ingress.length, 2);
  assert.equal(p.egress[0]?.protocol, 'all');
  assert.deepEqual(p.warnings.map((w) => w.split(':')[0]), ['config.network[0].security_policy.ingress_rules[1]']);
});

test('CreateVm: a malformed rule is invalid_argument naming the rule and the column', () => {
  const cases: [ReturnType<typeof vm>, string, string][] = [
    [vm(['allow tcp from any to any port 80,443', 'allow tcp from any to any port 70000']), 'config.network[0].security_policy.ingress_rules[1]', 'column 32: ports are 1-65535, got 70000'],
    [vm([], ['allow tcp from 2600:beef:1000:mgmt::/64 to any']), 'config.network[0].security_policy.egress_rules[0]', 'column 16: expected "any", an IPv6 address or a prefix like 2600:beef::/64, got "2600:beef:1000:mgmt::/64"'],
    [vm(['  ']), 'config.network[0].security_policy.ingress_rules[0]', 'empty rule'],
    [vm(['allow tcp from any to any port 1,'.padEnd(600, ' ')]), 'config.network[0].security_policy.ingress_rules[0]', 'column 513: a rule is at most 512 characters'],
  ];
  for (const [config, field, message] of cases) {
    assert.throws(() => planCreate(config, CTX), (e: unknown) => {
      assert.ok(e instanceof MetaldError);
      assert.equal(e.kind, 'invalid_argument');
      assert.equal(e.field, field);
      assert.equal(e.message, `${field}: ${message}`);
      return true;
    });
  }
});
