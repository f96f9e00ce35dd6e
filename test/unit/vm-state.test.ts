import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MetaldError } from '../../src/core/errors.js';
import { VM_STATES } from '../../src/core/vm/record.js';
import { allTransitions, assertOperation, assertTransition, canTransition, OPERATION_FROM, STATE_LABEL } from '../../src/core/vm/state.js';

describe('VM state machine', () => {
  const allowed = allTransitions();

  it('accepts every allowed transition', () => {
    assert.ok(allowed.length >= 20);
    for (const [from, to] of allowed) assert.doesNotThrow(() => assertTransition('vm-1', from, to), `${from} -> ${to}`);
  });

  it('refuses every transition not in the table, naming both states', () => {
    let refused = 0;
    for (const from of VM_STATES) {
      for (const to of VM_STATES) {
        if (allowed.some(([a, b]) => a === from && b === to)) continue;
        refused++;
        assert.throws(() => assertTransition('vm-1', from, to), (e: unknown) =>
          e instanceof MetaldError && e.kind === 'failed_precondition' &&
          e.message === `VM vm-1 cannot go from ${STATE_LABEL[from]} to ${STATE_LABEL[to]}`);
      }
    }
    assert.ok(refused > 40, `refused ${refused}`);
  });

  it('samples of refused transitions', () => {
    for (const [from, to] of [['creating', 'running'], ['shutdown', 'paused'], ['deleting', 'running'], ['failed', 'running'], ['created', 'paused']] as const) {
      assert.equal(canTransition(from, to), false, `${from}->${to}`);
    }
  });

  it('operation preconditions name the current and the needed states', () => {
    assert.throws(() => assertOperation('vm-1', 'pause', 'created'), {
      message: 'cannot pause VM vm-1: it is created (pause needs running)',
    });
    assert.throws(() => assertOperation('vm-1', 'resume', 'running'), {
      message: 'cannot resume VM vm-1: it is running (resume needs paused)',
    });
    assert.throws(() => assertOperation('vm-1', 'boot', 'running'), /it is running \(boot needs created or shut down or failed\)/);
    assert.throws(() => assertOperation('vm-1', 'isolate', 'deleting'), /cannot isolate/);
  });

  it('every operation start state leads somewhere legal', () => {
    const target: Record<string, string> = { boot: 'booting', shutdown: 'shutting_down', pause: 'paused', resume: 'running', reboot: 'booting', delete: 'deleting' };
    for (const [op, froms] of Object.entries(OPERATION_FROM)) {
      if (!target[op]) continue;
      for (const from of froms) assert.ok(canTransition(from, target[op] as never), `${op} from ${from}`);
    }
  });
});
