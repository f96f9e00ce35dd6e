import assert from 'node:assert/strict';
import { it } from 'node:test';
import { decide } from '../../src/lifecycle/reconciler.js';

// What start-up and the periodic pass do with each stored state, given what
// the backend reports about the guest.

it('decides every stored state against every backend status', () => {
  const table: [Parameters<typeof decide>[0], Parameters<typeof decide>[1], string][] = [
    ['creating', 'absent', 'rollback'],
    ['deleting', 'running', 'finish-delete'],
    ['booting', 'running', 'set:running'],
    ['booting', 'stopped', 'set:failed'],
    ['running', 'running', 'none'],
    ['running', 'paused', 'set:paused'],
    ['running', 'stopped', 'set:failed'],
    ['running', 'absent', 'set:failed'],
    ['paused', 'paused', 'none'],
    ['paused', 'running', 'set:running'],
    ['shutting_down', 'running', 'set:shutdown'],
    ['shutting_down', 'stopped', 'set:shutdown'],
    ['created', 'absent', 'recreate'],
    ['created', 'stopped', 'none'],
    ['shutdown', 'absent', 'recreate'],
    ['failed', 'absent', 'none'],
  ];
  for (const [state, status, want] of table) {
    const d = decide(state, status);
    const got = d.action === 'set' ? `set:${d.state}` : d.action;
    assert.equal(got, want, `${state} + ${status}`);
  }
  const gone = decide('running', 'absent');
  assert.ok(gone.action === 'set' && /sandbox disappeared/.test(gone.reason ?? ''));
});
