import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { foreignMarkSetters } from '../../src/doctor/foreign-marks.js';

// `nft -j list ruleset` of a namespace holding another table that marks packets and one of metald's.
const ruleset = JSON.parse(readFileSync(new URL('../fixtures/nft/foreign-marks.json', import.meta.url), 'utf8')) as unknown;

describe('doctor: other tables that set the packet mark', () => {
  it('names each chain of another table that sets meta mark (plain or through a map), not one that only reads it', () => {
    assert.deepEqual(foreignMarkSetters(ruleset, [{ family: 'bridge', name: 'mtd_guard' }]), ['inet other/pre', 'inet other/out']);
  });

  it('leaves out metald\'s own tables by family and name', () => {
    assert.deepEqual(foreignMarkSetters(ruleset, [{ family: 'inet', name: 'other' }]), ['bridge mtd_guard/c']);
    assert.deepEqual(foreignMarkSetters(ruleset, [{ family: 'ip6', name: 'mtd_guard' }, { family: 'inet', name: 'other' }]), ['bridge mtd_guard/c']);
  });

  it('counts iptables-nft MARK and CONNMARK targets, not other xt targets; an empty or odd answer names nothing', () => {
    const xt = (name: string) => ({ rule: { family: 'ip', table: 'mangle', chain: name, expr: [{ xt: { type: 'target', name } }] } });
    assert.deepEqual(foreignMarkSetters({ nftables: [xt('MARK'), xt('CONNMARK'), xt('TPROXY')] }, []), ['ip mangle/MARK', 'ip mangle/CONNMARK']);
    assert.deepEqual(foreignMarkSetters({}, []), []);
    assert.deepEqual(foreignMarkSetters(undefined, []), []);
  });
});
