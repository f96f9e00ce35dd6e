// A stand-in for the `firecracker` VMM, started by the fake jailer exactly as
// the real jailer starts the real one. It serves the API on the Unix socket
// and checks EVERY request against the OpenAPI spec (spec-validator.mjs) and
// against Firecracker's rules the spec only states in prose:
//  - pre-boot only: machine-config, boot-source, drives, network-interfaces,
//    mmds/config, cpu-config, vsock, entropy, logger, metrics, balloon, serial,
//    pmem (PUT); post-boot only: PATCH /vm, PATCH drives/network-interfaces,
//    SendCtrlAltDel, FlushMetrics; InstanceStart once, and only with a boot
//    source and a root drive or an initrd;
//  - ids in the path equal the ids in the body; one root drive; unique tap
//    names and guest MACs; MMDS only on interfaces that exist;
//  - files named in requests are resolved inside the chroot and must be
//    readable (and writable for read-write drives) by this process, which
//    runs as the jail user; taps must exist in this process's network
//    namespace, be taps with vnet_hdr and belong to the jail user.
// Errors are Firecracker-shaped: 400 {"fault_message": "..."}.
// Every request, with its status, goes to $FC_DOUBLE_LOG_DIR/<id>.requests.jsonl.
// FC_DOUBLE_FAULT="[<vm id>:]METHOD /path[;...]" makes that request fail (400) to test error paths
// (for every VM, or only for the VM with that id);
// FC_DOUBLE_CTRL_ALT_DEL=ignore makes the "guest" ignore SendCtrlAltDel.
// The "guest" writes a console to PUT /serial's file after InstanceStart, but only
// when its boot args carry console=ttyS0 (as a real kernel would): a few kernel
// lines, then guest/init's METALD-READY. FC_DOUBLE_CONSOLE="<vm id>=panic|silent[;...]"
// makes that VM's guest panic (console line, then Firecracker exits, as with
// panic=1 reboot=k) or print nothing.

import { execFileSync } from 'node:child_process';
import { accessSync, appendFileSync, constants, statSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import http from 'node:http';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Spec } from './spec-validator.mjs';

const SPEC_FILE = process.env.FC_DOUBLE_SPEC
  ?? join(fileURLToPath(new URL('.', import.meta.url)), '../../fixtures/firecracker/firecracker-api-v1.16.1.yaml');
const chroot = process.env.FC_DOUBLE_CHROOT;
const logDir = process.env.FC_DOUBLE_LOG_DIR;

// ---- command line (firecracker's own arg parser: unknown arguments are fatal) ----
const FLAGS = new Set(['no-seccomp', 'show-level', 'show-log-origin', 'boot-timer', 'no-api']);
const VALUED = new Set(['id', 'start-time-us', 'start-time-cpu-us', 'parent-cpu-time-us', 'api-sock', 'seccomp-filter', 'level', 'log-path', 'module', 'http-api-max-payload-size', 'mmds-size-limit']);
const opts = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const name = argv[i].startsWith('--') ? argv[i].slice(2) : undefined;
  if (name !== undefined && FLAGS.has(name)) opts[name] = true;
  else if (name !== undefined && VALUED.has(name) && argv[i + 1] !== undefined) opts[name] = argv[++i];
  else {
    process.stderr.write(`Arguments parsing error: Found argument '${argv[i]}' which wasn't expected\n`);
    process.exit(1);
  }
}
if (!opts.id || !chroot) {
  process.stderr.write('fake firecracker: --id and FC_DOUBLE_CHROOT are required\n');
  process.exit(1);
}
const id = opts.id;
if (logDir) {
  writeFileSync(join(logDir, `${id}.firecracker.json`), JSON.stringify({
    argv, uid: process.getuid(), gid: process.getgid(), seccomp: !opts['no-seccomp'], pid: process.pid, cwd: process.cwd(),
  }));
}

const spec = new Spec(SPEC_FILE);
const faults = new Set((process.env.FC_DOUBLE_FAULT ?? '').split(';').filter((f) => f !== ''));
const vm = {
  state: 'Not started',
  machine: { vcpu_count: 1, mem_size_mib: 128, smt: false },
  bootSource: undefined,
  drives: new Map(),
  nics: new Map(),
  mmdsConfig: undefined,
  mmds: undefined,
  serialOut: undefined,
};
const consoleModes = new Map((process.env.FC_DOUBLE_CONSOLE ?? '').split(';').filter((e) => e.includes('=')).map((e) => e.split('=', 2)));

const PRE_BOOT = new Set(['PUT /machine-config', 'PATCH /machine-config', 'PUT /boot-source', 'PUT /drives/{drive_id}',
  'PUT /network-interfaces/{iface_id}', 'PUT /mmds/config', 'PUT /cpu-config', 'PUT /vsock', 'PUT /entropy', 'PUT /logger',
  'PUT /metrics', 'PUT /balloon', 'PUT /serial', 'PUT /pmem/{id}', 'PUT /snapshot/load']);
const POST_BOOT = new Set(['PATCH /vm', 'PATCH /drives/{drive_id}', 'PATCH /network-interfaces/{iface_id}', 'PUT /snapshot/create',
  'PATCH /balloon', 'PATCH /balloon/statistics', 'PUT /hotplug/memory', 'PATCH /hotplug/memory']);

class Fault extends Error {}

/** An in-jail path resolved on the host; never leaves the chroot. */
function inJail(p) {
  const host = normalize(join(chroot, p));
  if (!p.startsWith('/') || (host !== chroot && !host.startsWith(`${chroot}/`))) throw new Fault(`path ${p} is outside the jail`);
  return host;
}

function usableFile(p, write, what) {
  const host = inJail(p);
  try {
    if (!statSync(host).isFile()) throw new Fault(`${what} ${p} is not a file`);
    accessSync(host, write ? constants.R_OK | constants.W_OK : constants.R_OK);
  } catch (e) {
    if (e instanceof Fault) throw e;
    throw new Fault(`Unable to open ${what} ${p}: ${e.code ?? e.message}`);
  }
}

function checkTap(name) {
  let info;
  try {
    // Runs in this process's network namespace, as the jail user.
    info = JSON.parse(execFileSync('/usr/sbin/ip', ['-details', '-json', 'link', 'show', 'dev', name], { encoding: 'utf8', stdio: 'pipe' }))[0];
  } catch {
    throw new Fault(`Could not create the network device: Open tap device failed: Error while creating ifreq structure: No such device (os error 19). Invalid TUN/TAP Backend provided by ${name}.`);
  }
  const d = info?.linkinfo?.info_data ?? {};
  if (info?.linkinfo?.info_kind !== 'tun' || d.type !== 'tap') throw new Fault(`${name} is not a tap device`);
  if (!d.vnet_hdr) throw new Fault(`Open tap device failed: Invalid argument (os error 22): ${name} was created without vnet_hdr`);
  const uid = process.getuid();
  const gid = process.getgid();
  if (uid !== 0 && d.user !== uid && d.group !== gid) throw new Fault(`Open tap device failed: Operation not permitted (os error 1): ${name} belongs to ${d.user}:${d.group}, not ${uid}:${gid}`);
}

function handle(method, route, params, body) {
  const key = `${method} ${route}`;
  if (vm.state === 'Not started' && POST_BOOT.has(key)) throw new Fault('The requested operation is not supported before starting the microVM.');
  if (vm.state !== 'Not started' && PRE_BOOT.has(key)) throw new Fault('The requested operation is not supported after starting the microVM.');
  switch (key) {
    case 'GET /':
      return { status: 200, body: { app_name: 'Firecracker', id, state: vm.state, vmm_version: '1.16.1' } };
    case 'GET /version':
      return { status: 200, body: { firecracker_version: '1.16.1' } };
    case 'GET /machine-config':
      return { status: 200, body: vm.machine };
    case 'PUT /machine-config':
      if (body.smt && body.vcpu_count !== 1 && body.vcpu_count % 2 !== 0) throw new Fault('The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.');
      if (body.mem_size_mib < 1) throw new Fault('The memory size (MiB) is invalid.');
      vm.machine = { smt: false, ...body };
      return { status: 204 };
    case 'PUT /boot-source':
      usableFile(body.kernel_image_path, false, 'kernel');
      if (body.initrd_path !== undefined) usableFile(body.initrd_path, false, 'initrd');
      vm.bootSource = body;
      return { status: 204 };
    case 'PUT /drives/{drive_id}': {
      if (params.drive_id !== body.drive_id) throw new Fault('The id from the path does not match the id from the body!');
      if (body.path_on_host === undefined) throw new Fault('path_on_host is required for a virtio-block drive');
      usableFile(body.path_on_host, body.is_read_only !== true, 'drive');
      if (body.is_root_device && [...vm.drives.values()].some((d) => d.is_root_device && d.drive_id !== body.drive_id)) {
        throw new Fault('A root block device already exists!');
      }
      vm.drives.set(body.drive_id, body);
      return { status: 204 };
    }
    case 'PUT /network-interfaces/{iface_id}': {
      if (params.iface_id !== body.iface_id) throw new Fault('The id from the path does not match the id from the body!');
      if (body.guest_mac !== undefined && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(body.guest_mac)) throw new Fault(`Invalid MAC address: ${body.guest_mac}`);
      for (const n of vm.nics.values()) {
        if (n.iface_id === body.iface_id) continue;
        if (n.host_dev_name === body.host_dev_name) throw new Fault(`The host device name ${body.host_dev_name} is already in use.`);
        if (body.guest_mac && n.guest_mac === body.guest_mac) throw new Fault(`The guest MAC address ${body.guest_mac} is already in use.`);
      }
      checkTap(body.host_dev_name);
      vm.nics.set(body.iface_id, body);
      return { status: 204 };
    }
    case 'PUT /mmds/config':
      for (const n of body.network_interfaces) if (!vm.nics.has(n)) throw new Fault(`The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface: ${n}`);
      if (body.network_interfaces.length === 0) throw new Fault('The list of network interface IDs that allow forwarding MMDS requests is empty.');
      vm.mmdsConfig = body;
      return { status: 204 };
    case 'PUT /mmds':
      vm.mmds = body;
      return { status: 204 };
    case 'PUT /serial':
      if (body.serial_out_path !== undefined) {
        const host = inJail(body.serial_out_path);
        try {
          appendFileSync(host, ''); // opened for writing as the jail user, as Firecracker does
        } catch (e) {
          throw new Fault(`Unable to open serial output ${body.serial_out_path}: ${e.code ?? e.message}`);
        }
        vm.serialOut = host;
      }
      return { status: 204 };
    case 'GET /mmds':
      if (vm.mmds === undefined) throw Object.assign(new Fault('The MMDS data store is not initialized.'), { status: 404 });
      return { status: 200, body: vm.mmds };
    case 'PUT /actions':
      return action(body.action_type);
    case 'PATCH /vm':
      vm.state = body.state === 'Paused' ? 'Paused' : 'Running';
      return { status: 204 };
    default:
      throw new Fault(`fake firecracker: ${key} is valid per the spec but not modelled by the test double`);
  }
}

function action(type) {
  if (type === 'InstanceStart') {
    if (vm.state !== 'Not started') throw new Fault('The requested operation is not supported after starting the microVM.');
    if (!vm.bootSource) throw new Fault('Cannot start microvm without kernel configuration.');
    const root = [...vm.drives.values()].some((d) => d.is_root_device);
    if (!root && vm.bootSource.initrd_path === undefined) throw new Fault('Cannot start microvm without a root block device or an initrd.');
    vm.state = 'Running';
    void guestConsole();
    return { status: 204 };
  }
  if (vm.state === 'Not started') throw new Fault('The requested operation is not supported before starting the microVM.');
  if (type === 'SendCtrlAltDel') {
    // The guest (reboot=k) resets through the keyboard controller; Firecracker then exits.
    if (process.env.FC_DOUBLE_CTRL_ALT_DEL !== 'ignore') setTimeout(() => process.exit(0), 50);
    return { status: 204 };
  }
  return { status: 204 }; // FlushMetrics
}

/** What the guest prints on its serial console (see the header). */
async function guestConsole() {
  if (!vm.serialOut || !/(^| )console=ttyS0( |$)/.test(vm.bootSource.boot_args ?? '')) return;
  const mode = consoleModes.get(id) ?? 'ready';
  if (mode === 'silent') return;
  const out = (line) => appendFileSync(vm.serialOut, `${line}\r\n`);
  await sleep(30);
  out('[    0.000000] Linux version 6.1.0 (firecracker double)');
  out(`[    0.000000] Command line: ${vm.bootSource.boot_args}`);
  await sleep(30);
  if (mode === 'panic') {
    out('[    0.100000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)');
    await sleep(50);
    process.exit(0);
  }
  out('METALD-INIT uptime=0.10');
  out('METALD-READY');
}

function log(entry) {
  if (logDir) appendFileSync(join(logDir, `${id}.requests.jsonl`), `${JSON.stringify(entry)}\n`);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    const path = (req.url ?? '/').split('?')[0];
    let body;
    let out;
    try {
      if (text !== '') {
        try { body = JSON.parse(text); } catch { throw new Fault(`Invalid JSON body: ${text.slice(0, 100)}`); }
      }
      const r = spec.route(req.method, path);
      if (r.error) throw new Fault(r.error);
      const errs = [...spec.validateParams(r.op, r.params), ...spec.validateBody(r.op, body, text !== '')];
      if (errs.length) throw new Fault(`Bad request (per the API spec): ${errs.join('; ')}`);
      if (faults.has(`${req.method} ${path}`) || faults.has(`${id}:${req.method} ${path}`)) throw new Fault(`injected fault for ${req.method} ${path}`);
      out = handle(req.method, r.template, r.params, body);
    } catch (e) {
      if (!(e instanceof Fault)) throw e;
      out = { status: e.status ?? 400, body: { fault_message: e.message } };
    }
    log({ method: req.method, path, body, status: out.status, fault: out.body?.fault_message, state: vm.state });
    const payload = out.body === undefined ? '' : JSON.stringify(out.body);
    res.writeHead(out.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  });
});

// cwd is the chroot (the fake jailer's stand-in for pivot_root), so the relative
// path is the in-jail path and short enough for sun_path.
const sock = (opts['api-sock'] ?? '/run/firecracker.socket').replace(/^\/+/, '');
server.listen(sock);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
