// `metald doctor`: is this host ready for metald? Sysctls are checked in the
// data-plane namespace (or, only with an explicit --root, the host's own);
// kernel features in a scratch namespace; binaries on PATH. --fix writes the
// sysctl baseline into the target and checks again. Start-up runs the same
// checks (startupCheck) and refuses with the same message.

import { existsSync } from 'node:fs';
import { CONFIG_ENV, DEFAULT_CONFIG_PATH, loadConfigFile, parseConfig } from '../config/load.js';
import type { MetaldConfig } from '../config/schema.js';
import { assertNetnsName } from '../kernel/names.js';
import { netnsExists } from '../kernel/netns.js';
import { buildChecks, doctorContext, type Target } from './checks.js';
import { probeChecks, writeSysctls } from './probe.js';
import { mustHaveFailures, mustHaveMessage, renderJson, renderText, type DoctorReport } from './report.js';

export { mustHaveFailures, mustHaveMessage, type DoctorReport } from './report.js';
export type { CheckResult, Target } from './checks.js';

export interface DoctorOptions {
  config: MetaldConfig;
  /** Overrides `dataplane.netns`. */
  netns?: string;
  /** Check (and with `fix`, write) the root namespace. Never implied. */
  root?: boolean;
  fix?: boolean;
}

/** A problem with the flags (exit 2), not with the host. */
export class DoctorUsageError extends Error {
  override name = 'DoctorUsageError';
}

export function resolveTarget(o: DoctorOptions): Target {
  if (o.netns !== undefined && o.root) throw new DoctorUsageError('--netns and --root exclude each other');
  if (o.root) return { kind: 'root' };
  const name = o.netns ?? o.config.dataplane.netns;
  if (name === undefined) {
    throw new DoctorUsageError(
      'the config has no dataplane.netns: pass --netns NS for the data-plane namespace, or --root to check the host\'s own namespace',
    );
  }
  try {
    return { kind: 'netns', name: assertNetnsName(name) };
  } catch (err) {
    throw new DoctorUsageError((err as Error).message);
  }
}

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const target = resolveTarget(o);
  const checks = buildChecks(doctorContext(o.config, target));
  const probeOpts = { target, instance: o.config.instance_name };
  const results = await probeChecks(checks, probeOpts);
  const ok = (rs: typeof results) => mustHaveFailures(rs).length === 0;
  if (!o.fix) return { ok: ok(results), target, applied: [], results };

  // The namespace is not created here: it is metald's to create (with its lo
  // up and its owner's lifetime), and a typo in --netns must not leave one behind.
  if (target.kind === 'netns' && !(await netnsExists(target.name))) {
    return { ok: ok(results), target, applied: [], results, before: results };
  }
  const pairs = checks.flatMap((c, i) => {
    const r = results[i]!;
    const fixable = c.probe.kind === 'sysctl' && (r.status === 'fail' || r.status === 'warn') && r.found !== 'missing';
    return fixable && c.probe.kind === 'sysctl' ? [{ key: c.probe.key, value: c.probe.want }] : [];
  });
  await writeSysctls(target, pairs);
  const again = await probeChecks(checks.filter((c) => c.probe.kind === 'sysctl'), probeOpts);
  const byId = new Map(again.map((r) => [r.id, r]));
  const after = results.map((r) => byId.get(r.id) ?? r);
  return { ok: ok(after), target, applied: pairs.map((p) => `${p.key}=${p.value}`), results: after, before: results };
}

/**
 * Daemon start-up. metald owns its data-plane namespace, so it applies the
 * baseline there (what `metald doctor --fix` does); the root namespace is only
 * read. Throws the must-have message when the host cannot run metald.
 */
export async function startupCheck(cfg: MetaldConfig): Promise<DoctorReport> {
  const dp = cfg.dataplane.netns;
  const report = await runDoctor({ config: cfg, netns: dp, root: dp === undefined, fix: dp !== undefined });
  const failures = mustHaveFailures(report.results);
  if (failures.length > 0) throw new Error(mustHaveMessage(failures, report.target));
  return report;
}

export interface DoctorCommandOptions {
  configPath?: string;
  netns?: string;
  root?: boolean;
  fix?: boolean;
  json?: boolean;
}

export interface DoctorIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env?: NodeJS.ProcessEnv;
}

const STDIO: DoctorIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** --config, else $UNKEY_METALD_CONFIG, else /etc/metald/config.yaml, else the built-in defaults. */
export function loadDoctorConfig(configPath: string | undefined, io: DoctorIo = STDIO): MetaldConfig {
  const env = io.env ?? process.env;
  const path = configPath || env[CONFIG_ENV] || (existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : undefined);
  if (path) return loadConfigFile(path).config;
  io.err(`note: no config file (${DEFAULT_CONFIG_PATH} missing): checking against the built-in defaults\n`);
  return parseConfig('', '<defaults>').config;
}

/** `metald doctor`: prints the report; returns the exit code (0 ready, 1 not ready, 2 usage). */
export async function doctorCommand(o: DoctorCommandOptions, io: DoctorIo = STDIO): Promise<number> {
  const config = loadDoctorConfig(o.configPath, io);
  let report: DoctorReport;
  try {
    report = await runDoctor({ config, netns: o.netns, root: o.root === true, fix: o.fix === true });
  } catch (err) {
    if (!(err instanceof DoctorUsageError)) throw err;
    io.err(`error: ${err.message}\n`);
    return 2;
  }
  io.out(o.json ? renderJson(report) : renderText(report));
  if (o.fix && report.target.kind === 'netns' && report.applied.length === 0 && !(await netnsExists(report.target.name))) {
    io.err(`error: namespace ${report.target.name} does not exist; nothing fixed. Start metald (it creates the data-plane namespace) or pass --netns NS\n`);
  }
  return report.ok ? 0 : 1;
}
