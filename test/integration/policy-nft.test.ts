// The compiled policy fragment is real nft: the guide's step 3.2 classes,
// their maps and flow sets, the reply rules and the dispatch load into a
// bridge table of a namespace made for this test (and removed after it).
// Packet-level behaviour comes with the guard table wiring (issue 6).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { compilePolicy, DISPATCH_RULE, markText, REPLY_RULES, renderPolicyFragment } from '../../src/core/policy/plan.js';
import { parseNicRule } from '../../src/core/policy/nic-rules.js';

const rules = (...r: string[]) => r.map(parseNicRule);

test('policy fragment loads into a real bridge table', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, (t) => {
  const ns = `pol-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.after(() => execFileSync('ip', ['netns', 'del', ns]));
  const plan = compilePolicy([
    { port: 'vm1', ingress: rules('allow icmpv6 from any to any', 'allow tcp from any to any port 80,443', 'deny all from any to any'), egress: rules('allow tcp from any to any port 53,80,443', 'allow icmpv6 from any to any', 'deny all from any to any'), logSecurityEvents: true },
    { port: 'vm2', ingress: rules('allow tcp from 2600:beef:1000::/64 to any port 22', 'allow udp from 2600::53 port 53 to any port 1024-65535', 'allow all from 2600::/16 to any'), egress: [], logSecurityEvents: false },
  ]);
  const fragment = renderPolicyFragment(plan, { logGroup: 3, logRate: 20, counterSet: 'd_policy_deny' });
  const text = [
    'table bridge poltest {',
    '\tset vm_ports { type ifname; elements = { "vm1", "vm2" } }',
    '\tset d_policy_deny { type ifname; flags dynamic; counter; }',
    ...fragment.split('\n').filter((l) => l !== '').map((l) => `\t${l}`),
    '\tchain vm_in {', ...[...REPLY_RULES, DISPATCH_RULE.egress].map((r) => `\t\t${r}`), '\t}',
    '\tchain vm_out {', ...[...REPLY_RULES, DISPATCH_RULE.ingress].map((r) => `\t\t${r}`), '\t}',
    '\tchain prerouting { type filter hook prerouting priority -200; policy accept; iifname @vm_ports jump vm_in; }',
    '\tchain forward { type filter hook forward priority -200; policy accept; oifname @vm_ports jump vm_out; }',
    '}',
  ].join('\n');
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: text });
  const listed = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'bridge', 'poltest'], { encoding: 'utf8' });
  for (const c of plan.classes) assert.ok(listed.includes(`chain ${c.chain} {`), `${c.chain} loaded`);
  const vm1In = markText(plan.classIds.get(plan.ports[0]!.ingress!)!);
  assert.ok(listed.includes(`"vm1" : ${vm1In}`), 'vm1 bound to its ingress class');
  assert.ok(listed.includes(`${vm1In} : goto ${plan.ports[0]!.ingress}`), 'class id dispatches to its chain');
  assert.match(listed, /meta mark set iifname map @pol_out meta mark vmap @pol_chains/);
});
