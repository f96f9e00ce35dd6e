// The firewall plane's bookkeeping, pure: the set diff it writes after a full check (ports written
// meanwhile left alone), the structural check of a listed guard table, and the per-VM ledger that
// decides what a write must change and which VMs a pass rewrites.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { VmRecord } from '../../src/core/vm/record.js';
import type { NftObject } from '../../src/kernel/nft.js';
import { guardTableMatches, syncLines } from '../../src/firewall/kernel-view.js';
import { PortLedger } from '../../src/firewall/port-ledger.js';

test('syncLines: deletes before adds, nothing when equal, elements of kept-out ports untouched', () => {
  const have = [{ set: { elem: [{ concat: ['p1', 'fd00::1'] }, { concat: ['p2', 'fd00::2'] }] } }];
  assert.deepEqual(syncLines('bridge t', 's', have, ['"p1" . fd00::1', '"p3" . fd00::3']),
    ['delete element bridge t s { "p2" . fd00::2 }', 'add element bridge t s { "p3" . fd00::3 }']);
  assert.deepEqual(syncLines('bridge t', 's', have, ['"p1" . fd00::1', '"p2" . fd00::2']), []);
  const notP2orP3 = (el: string) => !el.includes('"p2"') && !el.includes('"p3"');
  assert.deepEqual(syncLines('bridge t', 's', have, ['"p1" . fd00::1', '"p3" . fd00::3'], notP2orP3), []);
});

test('guardTableMatches: rule counts, one rule per rate class set, only policy classes besides', () => {
  const want = new Map([['prerouting', 2], ['rate_nd', 0]]);
  const table = (extra: NftObject[] = []): NftObject[] => [
    { chain: { name: 'prerouting' } }, { rule: { chain: 'prerouting' } }, { rule: { chain: 'prerouting' } },
    { chain: { name: 'rate_nd' } }, { set: { name: 'rlp_nd_1000' } }, { rule: { chain: 'rate_nd' } }, ...extra,
  ];
  assert.equal(guardTableMatches(table(), want, new Map()), true);
  assert.equal(guardTableMatches(table([{ set: { name: 'rlp_nd_50' } }]), want, new Map()), false, 'a class set without its rule');
  assert.equal(guardTableMatches(table([{ rule: { chain: 'prerouting' } }]), want, new Map()), false, 'a rule too many');
  assert.equal(guardTableMatches(table([{ chain: { name: 'stray' } }]), want, new Map()), false, 'a chain we do not render');
  const pc = [{ chain: { name: 'pc_1' } }, { rule: { chain: 'pc_1' } }];
  assert.equal(guardTableMatches(table(pc), want, new Map()), true, 'a policy class nobody knows yet may be there');
  assert.equal(guardTableMatches(table(pc), want, new Map([['pc_1', 2]])), false, 'a known class must have all its rules');
});

const rec = (id: string, revision: number, dev = `p${id}`) => ({ id, revision, nics: [{ hostDevice: dev }] }) as unknown as VmRecord;
const els = (x: string) => new Map([['s', [x]]]);

test('PortLedger: a write records what and from which revision; forget returns what was there', () => {
  const l = new PortLedger();
  const a = rec('a', 1);
  assert.equal(l.stale(a), true);
  assert.equal(l.forget('a'), undefined);
  l.record(a, els('g'), els('h'));
  assert.equal(l.stale(a), false);
  assert.equal(l.stale(rec('a', 2)), true);
  assert.deepEqual(l.forget('a'), { guard: els('g'), host: els('h') });
  assert.equal(l.has('a'), false);
  assert.equal(l.stale(a), true);
});

test('PortLedger: a whole-table reset records every VM, except VMs written meanwhile, which keep their own record', () => {
  const l = new PortLedger();
  const [a, b] = [rec('a', 1), rec('b', 1)];
  l.record(a, els('old-a'), new Map());
  // b's write during the listing failed: it never got a record, and must stay stale to be retried.
  l.resetGuard([rec('a', 2), b], (v) => els(`new-${v.id}`), (v) => v.id === 'b');
  assert.deepEqual(l.guardOf('a'), els('new-a'));
  assert.equal(l.stale(rec('a', 2)), false);
  assert.equal(l.stale(b), true);
  assert.deepEqual(l.guardOf('b'), new Map());
});
