// Pure: doctor results → the aligned table people read, the JSON scripts
// read, and the one message start-up refuses with.

import { table } from '../cli/format.js';
import { describeTarget, HOST_WIDE_NOTE, type CheckResult, type Target } from './checks.js';

export const HEADERS = ['CHECK', 'STATUS', 'FOUND', 'EXPECTED', 'FIX'];

/** The must-have checks that failed: metald must not run while this is non-empty. */
export function mustHaveFailures(results: readonly CheckResult[]): CheckResult[] {
  return results.filter((r) => r.level === 'must' && r.status === 'fail');
}

export function summaryLine(results: readonly CheckResult[]): string {
  const must = results.filter((r) => r.level === 'must' && r.status !== 'n-a');
  const failed = mustHaveFailures(results);
  const warned = results.filter((r) => r.status === 'warn').length;
  const advice = warned === 0 ? '' : ` (${warned} advice warning${warned === 1 ? '' : 's'})`;
  if (failed.length === 0) return `ready: all ${must.length} must-have checks pass${advice}`;
  return `NOT ready: ${failed.length} of ${must.length} must-have checks fail: ${failed.map((r) => r.id).join(', ')}${advice}`;
}

export function renderTable(results: readonly CheckResult[], target: Target): string {
  const rows = results.map((r) => [r.id, r.status, r.found, r.expected, r.fix]);
  const lines = [`target: ${describeTarget(target)}`, table(HEADERS, rows), ''];
  if (results.some((r) => r.status === 'n-a')) lines.push(`n-a: ${HOST_WIDE_NOTE}`);
  lines.push(summaryLine(results));
  return `${lines.join('\n')}\n`;
}

export interface DoctorReport {
  ok: boolean;
  target: Target;
  /** `key=value` pairs --fix wrote (empty without --fix). */
  applied: string[];
  results: CheckResult[];
  /** With --fix: the results before fixing. */
  before?: CheckResult[];
}

export function renderJson(r: DoctorReport): string {
  const out = {
    ok: r.ok,
    target: r.target.kind === 'root' ? { kind: 'root' } : { kind: 'netns', name: r.target.name },
    must_have_failures: mustHaveFailures(r.results).map((f) => f.id),
    applied: r.applied,
    results: r.results,
    ...(r.before ? { before: r.before } : {}),
  };
  return `${JSON.stringify(out, null, 2)}\n`;
}

/** Human output; with --fix the table before, what was written, and the table after. */
export function renderText(r: DoctorReport): string {
  if (!r.before) return renderTable(r.results, r.target);
  const applied = r.applied.length === 0
    ? 'fix: nothing to apply\n'
    : `fix: applied in ${describeTarget(r.target)}: ${r.applied.join(' ')}\n`;
  return `${renderTable(r.before, r.target)}\n${applied}\nafter the fix:\n${renderTable(r.results, r.target)}`;
}

/** What `metald serve` refuses to start with (the same facts `metald doctor` shows). */
export function mustHaveMessage(failures: readonly CheckResult[], target: Target): string {
  const lines = failures.map((f) => `  ${f.id}: found ${f.found}, expected ${f.expected}${f.fix ? `; fix: ${f.fix}` : ''}`);
  return [
    `host not ready for metald (${describeTarget(target)}): ${failures.length} must-have check${failures.length === 1 ? '' : 's'} failed:`,
    ...lines,
    'run `metald doctor` for the full report',
  ].join('\n');
}
