// A stand-in for Firecracker's `jailer`, run as a real executable (through the
// sh wrapper install.ts writes). It checks its command line argument by
// argument the way the real jailer does (firecracker src/jailer: arg parser,
// Env::new, cgroup builder), builds the same chroot layout, and starts the
// fake firecracker as the jail user in the given network namespace.
//
// What it cannot do like the real one (and so does not pretend to):
//  - pivot_root: the fake firecracker is told its chroot (FC_DOUBLE_CHROOT)
//    and resolves every in-jail path under it, refusing escapes;
//  - a new PID namespace: with --new-pid-ns the VMM is started in a new
//    session and its host pid recorded in <chroot>/firecracker.pid, exactly
//    where the real jailer records it;
//  - cgroup v2 cpu/memory on this host (those controllers sit in v1 here):
//    with FC_DOUBLE_CGROUP_ROOT set, that directory stands in for the cgroup2
//    mount (cgroup.controllers listing the available controllers).
// The environment is cleared like the real jailer does, except FC_DOUBLE_*.
// Every invocation appends its argv and outcome to $FC_DOUBLE_LOG_DIR/jailer.jsonl.

import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, realpathSync, statSync, writeFileSync, closeSync } from 'node:fs';
import { basename, join, isAbsolute } from 'node:path';

const argv = process.argv.slice(2);
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('FC_DOUBLE_')));
const logDir = env.FC_DOUBLE_LOG_DIR;

function record(entry) {
  if (logDir) appendFileSync(join(logDir, 'jailer.jsonl'), `${JSON.stringify({ argv, ...entry })}\n`);
}

function fail(msg) {
  record({ ok: false, error: msg });
  // The real jailer prints parse errors on stdout and the rest on stderr.
  process.stderr.write(`${msg}\n`);
  process.exit(1);
}

// ---- argument parsing (utils::arg_parser semantics) ----
const SPEC = {
  id: { value: true, required: true },
  'exec-file': { value: true, required: true },
  uid: { value: true, required: true },
  gid: { value: true, required: true },
  'chroot-base-dir': { value: true, default: '/srv/jailer' },
  netns: { value: true },
  daemonize: { value: false },
  'new-pid-ns': { value: false },
  cgroup: { value: true, multiple: true },
  'resource-limit': { value: true, multiple: true },
  'cgroup-version': { value: true, default: '1' },
  'parent-cgroup': { value: true },
  version: { value: false },
};

const args = {};
let extra = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--') { extra = argv.slice(i + 1); break; }
  if (!a.startsWith('--')) fail(`Arguments parsing error: Found argument '${a}' which wasn't expected, or isn't valid in this context.`);
  const name = a.slice(2);
  const spec = SPEC[name];
  if (!spec) fail(`Arguments parsing error: Found argument '${a}' which wasn't expected, or isn't valid in this context.`);
  if (!spec.value) {
    if (name in args) fail(`Arguments parsing error: The argument '${a}' was provided more than once.`);
    args[name] = true;
    continue;
  }
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) fail(`Arguments parsing error: The argument '${a}' requires a value, but none was supplied`);
  i++;
  if (spec.multiple) (args[name] ??= []).push(v);
  else if (name in args) fail(`Arguments parsing error: The argument '${a}' was provided more than once.`);
  else args[name] = v;
}
for (const [name, spec] of Object.entries(SPEC)) {
  if (spec.required && !(name in args)) fail(`Arguments parsing error: Argument '${name}' required, but not found.`);
  if (spec.default !== undefined && !(name in args)) args[name] = spec.default;
}

// ---- Env::new ----
const id = args.id;
if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) fail(`Invalid instance ID: ${id}`);
let execFile;
try { execFile = realpathSync(args['exec-file']); } catch (e) { fail(`Failed to canonicalize path ${args['exec-file']}: ${e.code}`); }
if (!statSync(execFile).isFile()) fail(`${execFile} is not a file`);
const execName = basename(execFile);
if (!execName.includes('firecracker')) fail(`Invalid filename. The filename of \`--exec-file\` option must contain "firecracker": ${execName}`);
let chrootBase;
try { chrootBase = realpathSync(args['chroot-base-dir']); } catch (e) { fail(`Failed to canonicalize path ${args['chroot-base-dir']}: ${e.code}`); }
if (!statSync(chrootBase).isDirectory()) fail(`${chrootBase} is not a directory`);
const chroot = join(chrootBase, execName, id, 'root');
const u32 = (s) => /^\d+$/.test(s) && Number(s) <= 0xffffffff;
if (!u32(args.uid)) fail(`Invalid uid: ${args.uid}`);
if (!u32(args.gid)) fail(`Invalid gid: ${args.gid}`);
const uid = Number(args.uid);
const gid = Number(args.gid);
const parentCgroup = args['parent-cgroup'] ?? execName;
if (isAbsolute(parentCgroup) || parentCgroup.split('/').some((c) => c === '.' || c === '..')) {
  fail("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'");
}
if (!/^\d+$/.test(args['cgroup-version']) || !['1', '2'].includes(args['cgroup-version'])) fail(`${args['cgroup-version']} is an invalid cgroup version specifier`);
const cgroups = (args.cgroup ?? []).map((cg) => {
  const parts = cg.split('=');
  if (parts.length !== 2 || parts[1] === '') fail(`Invalid format for cgroups: ${cg}`);
  const file = parts[0];
  if (file.split('.').length !== 2) fail(`Cgroup invalid file: ${file}`);
  return { file, controller: file.split('.')[0], value: parts[1] };
});
for (const rl of args['resource-limit'] ?? []) {
  const [name, value] = rl.split(/=(.*)/s);
  if (value === undefined) fail(`Invalid format for resources limits: ${rl}`);
  if (!/^\d+$/.test(value)) fail(`Invalid limit value for resource: ${value}`);
  if (!['fsize', 'no-file'].includes(name)) fail(`Invalid resource argument: ${name}`);
}
let cgroupRoot;
if (cgroups.length > 0) {
  if (args['cgroup-version'] !== '2') fail('fake jailer: only cgroup v2 is modelled');
  cgroupRoot = env.FC_DOUBLE_CGROUP_ROOT
    ?? readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  if (!cgroupRoot) fail('Hierarchy not found: No hierarchy found for this cgroup version.');
  const available = readFileSync(join(cgroupRoot, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
  for (const c of cgroups) if (!available.includes(c.controller)) fail(`Controller ${c.controller} is unavailable`);
}

// ---- Env::run ----
mkdirSync(chroot, { recursive: true });
copyFileSync(execFile, join(chroot, execName));
chmodSync(join(chroot, execName), 0o755);
if (args.netns !== undefined) {
  try { closeSync(openSync(args.netns, 'r')); } catch (e) { fail(`Failed to open file ${args.netns}: ${e.code}`); }
}
const cgroupDir = cgroupRoot ? join(cgroupRoot, parentCgroup, id) : undefined;
// In a real cgroupfs the control files are part of the directory and rmdir
// removes it; in the stand-in the directory stays empty (so rmdir works the
// same) and the values written go to the log instead.
const standIn = env.FC_DOUBLE_CGROUP_ROOT !== undefined;
const cgroupValues = {};
if (cgroupDir) {
  mkdirSync(cgroupDir, { recursive: true });
  for (const c of cgroups) {
    if (standIn) cgroupValues[c.file] = c.value;
    else writeFileSync(join(cgroupDir, c.file), `${c.value}\n`);
  }
}
for (const dir of ['', 'dev', 'dev/net', 'run']) {
  mkdirSync(join(chroot, dir), { recursive: true });
  chmodSync(join(chroot, dir), 0o700);
  chownSync(join(chroot, dir), uid, gid);
}
try {
  // mknod fails on an existing node, as in the real jailer: every start needs a fresh jail.
  execFileSync('mknod', ['-m', '600', join(chroot, 'dev/net/tun'), 'c', '10', '200'], { stdio: 'pipe' });
  execFileSync('mknod', ['-m', '600', join(chroot, 'dev/kvm'), 'c', '10', '232'], { stdio: 'pipe' });
} catch (e) {
  fail(`Failed to create /dev/net/tun via mknod inside the jail: ${String(e.stderr ?? e.message).trim()}`);
}
chownSync(join(chroot, 'dev/net/tun'), uid, gid);
chownSync(join(chroot, 'dev/kvm'), uid, gid);
if (args.daemonize) {
  // setsid() fails for a process-group leader: the caller must not spawn us detached.
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  if (pgrp === process.pid) fail('Failed to daemonize: setsid: Operation not permitted (os error 1)');
}

const now = BigInt(Date.now()) * 1000n;
const fcArgs = ['--id', id, '--start-time-us', String(now), '--start-time-cpu-us', '0', '--parent-cpu-time-us', '0', ...extra];
const target = join(chroot, execName);
const [file, fileArgs] = args.netns !== undefined
  ? ['nsenter', [`--net=${args.netns}`, `--setgid=${gid}`, `--setuid=${uid}`, '--', target, ...fcArgs]]
  : [target, fcArgs];
const child = spawn(file, fileArgs, {
  cwd: chroot,
  env: { ...env, FC_DOUBLE_CHROOT: chroot, FC_DOUBLE_UID: String(uid), FC_DOUBLE_GID: String(gid) },
  // The real jailer sends a daemonized VMM's stdio to /dev/null; the double keeps stderr for debugging.
  stdio: ['ignore', 'ignore', logDir ? openSync(join(logDir, `${id}.stderr`), 'a') : 'ignore'],
  detached: args.daemonize === true,
  ...(args.netns === undefined ? { uid, gid } : {}),
});
child.on('error', (e) => fail(`Failed to exec into Firecracker: ${e.message}`));
if (args['new-pid-ns']) {
  if (child.pid === undefined) fail('Failed cloning into a new child process');
  const pidFile = `${target}.pid`;
  if (existsSync(pidFile)) fail(`Failed to open file ${pidFile}: File exists (os error 17)`);
  writeFileSync(pidFile, String(child.pid), { flag: 'wx' });
  if (cgroupDir && !standIn) writeFileSync(join(cgroupDir, 'cgroup.procs'), `${child.pid}\n`);
  record({ ok: true, pid: child.pid, chroot, cgroupDir, cgroupValues });
  child.unref();
  process.exit(0);
} else {
  // Without a new PID namespace the real jailer execs: we wait and pass the exit status on.
  record({ ok: true, pid: child.pid, chroot, cgroupDir, cgroupValues });
  child.on('exit', (code) => process.exit(code ?? 1));
}
