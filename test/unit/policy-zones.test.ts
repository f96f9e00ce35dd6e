// The isolation lookups (masked mark . port) decide exactly what the rules of
// decision 0027 say, for every combination of sender and receiver settings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admissionKeys, admit, decide, zoneMark, MASK, TENANT_OF_MARK, type Reception, type Zone } from '../../src/core/policy/zones.js';
import type { IsolationLevel, Profile } from '../../src/core/policy/attach.js';
import type { HostPolicy } from '../../src/core/policy/host-policy.js';

const LEVELS: IsolationLevel[] = ['strict', 'moderate', 'none'];
const BETWEEN: HostPolicy['betweenVlans'][] = ['deny', 'same-tenant', 'explicit-policy', 'allow'];
const PROFILES: (Profile | null)[] = [null, 'low', 'high'];

test('admit (the kernel lookups) equals decide (the rules written out) for every combination', () => {
  let cases = 0;
  const counts = { pass: 0, explicit: 0, deny: 0 };
  for (const sTenant of [1, 2]) for (const sVlan of [100, 200]) for (const sl of LEVELS) for (const sb of BETWEEN) for (const sp of PROFILES) {
    const s: Zone = { tenant: sTenant, vlan: sVlan, level: sl, between: sb, policyProfile: sp };
    for (const rl of LEVELS) for (const rb of BETWEEN) for (const micro of [false, true]) for (const granted of [[], ['high']] as Profile[][]) for (const refused of [[], ['low']] as Profile[][]) {
      const r: Zone = { tenant: 1, vlan: 100, level: rl, between: rb, policyProfile: 'high' };
      const rx: Reception = { microsegmentation: micro, grantedBy: granted, refusedBy: refused };
      const want = decide(s, r, rx);
      assert.equal(admit(s, r, rx), want, JSON.stringify({ s, r, rx }));
      counts[want]++;
      cases++;
    }
  }
  assert.ok(cases > 10_000);
  assert.ok(counts.pass > 0 && counts.explicit > 0 && counts.deny > 0);
});

test('the guide defaults: same tenant and VLAN pass; other tenants are cut at strict; VLANs separate', () => {
  const z = (tenant: number, vlan: number, level: IsolationLevel = 'strict'): Zone => ({ tenant, vlan, level, between: 'same-tenant', policyProfile: 'high' });
  const rx: Reception = { microsegmentation: false, grantedBy: [], refusedBy: [] };
  assert.equal(decide(z(1, 100), z(1, 100), rx), 'pass');
  assert.equal(decide(z(1, 200), z(1, 100), rx), 'pass', 'DENY ipv6 between vlans except same-tenant');
  assert.equal(decide(z(2, 100), z(1, 100), rx), 'deny');
  assert.equal(decide(z(2, 100, 'moderate'), z(1, 100, 'moderate'), rx), 'explicit');
  assert.equal(decide(z(2, 100), z(1, 999), { ...rx, grantedBy: ['high'] }), 'pass', 'ALLOW ipv6 to shared-services vlan 999');
});

test('mark layout: fields do not overlap, masks select them, the tenant reads back', () => {
  const m = zoneMark({ tenant: 16_383, vlan: 4094, level: 'none', between: 'allow', policyProfile: 'high' });
  assert.equal(m, 0xfbff_fffe);
  assert.equal(TENANT_OF_MARK(m), 16_383);
  assert.equal((m & MASK.segment) >>> 0, 0x03ff_fffe);
  assert.throws(() => zoneMark({ tenant: 0, vlan: 1, level: 'none', between: 'allow', policyProfile: null }));
  assert.notEqual(zoneMark({ tenant: 1, vlan: 0, level: 'strict', between: 'deny', policyProfile: null }), 0, 'a VM never has mark 0');
});

test('a receiver holds a bounded number of admission elements', () => {
  for (const level of LEVELS) for (const between of BETWEEN) {
    const keys = admissionKeys({ tenant: 5, vlan: 7, level, between, policyProfile: 'low' }, { microsegmentation: false, grantedBy: ['low', 'medium', 'high'], refusedBy: [] });
    const n = [...keys.values()].reduce((a, v) => a + v.length, 0);
    assert.ok(n <= 14, `${level}/${between}: ${n}`);
  }
});
