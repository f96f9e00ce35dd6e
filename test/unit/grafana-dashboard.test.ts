// contrib/grafana/metald-security.json must not rot: every metric and label
// its queries name is one metald's registry really exposes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { EventRing } from '../../src/events/security-events.js';
import { Metrics } from '../../src/observability/metrics.js';

const DASHBOARD = new URL('../../contrib/grafana/metald-security.json', import.meta.url);
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['instance', 'job'];
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];

interface Panel {
  title?: string;
  type?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Metric name -> its label names, as the registry exposes it (histograms: _bucket/_sum/_count with `le` on _bucket). */
function exposed(): Map<string, Set<string>> {
  const m = new Metrics({ collector: undefined, ipam: () => undefined, events: new EventRing(10, 60_000), perVmLabelLimit: 1000 });
  const out = new Map<string, Set<string>>();
  for (const metric of m.registry.getMetricsAsArray()) {
    const labels = new Set([...((metric as unknown as { labelNames?: string[] }).labelNames ?? []), ...TARGET_LABELS]);
    if (String(metric.type) === 'histogram') {
      for (const s of HISTOGRAM_SUFFIXES) out.set(metric.name + s, s === '_bucket' ? new Set([...labels, 'le']) : labels);
    } else out.set(metric.name, labels);
  }
  return out;
}

/** Every PromQL expression in the dashboard: panel targets (rows included), annotations, template variable queries. */
function expressions(d: { panels: Panel[]; annotations?: { list: { expr?: string }[] }; templating: { list: { type: string; definition?: string }[] } }): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const a of d.annotations?.list ?? []) if (a.expr) out.push({ where: 'annotation', expr: a.expr });
  for (const v of d.templating.list) {
    // label_values(metric, label) is not PromQL: check it as the selector `metric{label=""}`.
    const lv = /^label_values\((\w+),\s*(\w+)\)$/.exec(v.definition ?? '');
    if (v.type === 'query') out.push({ where: `variable ${v.definition}`, expr: lv ? `${lv[1]}{${lv[2]}=""}` : v.definition ?? '' });
  }
  return out;
}

/** Problems with one expression: unknown metrics, selector labels a metric lacks, grouping labels none of its metrics has. */
function check(expr: string, metrics: Map<string, Set<string>>): string[] {
  const problems: string[] = [];
  const names = [...expr.matchAll(/\b(metald_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
  if (names.length === 0) problems.push('names no metald metric');
  for (const n of names) if (!metrics.has(n)) problems.push(`unknown metric ${n}`);
  for (const [, name, body] of expr.matchAll(/\b(metald_[a-z0-9_]+)\{([^}]*)\}/g)) {
    for (const [, label] of body!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
      if (metrics.has(name!) && !metrics.get(name!)!.has(label!)) problems.push(`${name} has no label ${label}`);
    }
  }
  const anyLabel = new Set(names.flatMap((n) => [...(metrics.get(n) ?? [])]));
  for (const [, list] of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
    for (const label of list!.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!anyLabel.has(label)) problems.push(`grouping label ${label} is on none of ${names.join(', ')}`);
    }
  }
  return problems;
}

test('every query of the Grafana dashboard names metrics and labels metald exposes', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const metrics = exposed();
  const exprs = expressions(dashboard);
  assert.ok(exprs.length >= 20, `only ${exprs.length} queries found`);
  const problems = exprs.flatMap(({ where, expr }) => check(expr, metrics).map((p) => `${where}: ${p} in ${expr}`));
  assert.deepEqual(problems, []);
  // The metrics each have a panel.
  const used = new Set(exprs.flatMap(({ expr }) => [...expr.matchAll(/\b(metald_[a-z0-9_]+)\b/g)].map((m) => m[1]!)));
  for (const want of [
    'metald_ipv6_ra_guard_blocks_total', 'metald_ipv6_source_guard_violations_total', 'metald_ipv6_extension_header_blocks_total',
    'metald_ipv6_rate_limit_exceeded_total', 'metald_network_security_events_total', 'metald_vms', 'metald_rpc_duration_seconds_bucket',
    'metald_ip_pool_utilisation', 'metald_nft_writes_total', 'metald_nft_drift_repairs_total', 'metald_vm_network_bytes_total',
    'metald_vm_network_packets_total',
  ]) assert.ok(used.has(want), `no panel shows ${want}`);
});

test('the checker itself catches a renamed metric, a wrong label and a wrong grouping', () => {
  const metrics = exposed();
  assert.deepEqual(check('sum(rate(metald_vms{state="running"}[5m]))', metrics), []);
  assert.deepEqual(check('rate(metald_ra_guard_blocks_total[5m])', metrics), ['unknown metric metald_ra_guard_blocks_total']);
  assert.deepEqual(check('metald_vms{tenant_id="a"}', metrics), ['metald_vms has no label tenant_id']);
  assert.deepEqual(check('sum by (pool) (metald_vms)', metrics), ['grouping label pool is on none of metald_vms']);
  assert.deepEqual(check('histogram_quantile(0.9, sum by (le) (rate(metald_rpc_duration_seconds_bucket[5m])))', metrics), []);
});
