import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type {
  BackendHandle, BackendNicSpec, BackendStatus, BackendVmSpec, ShutdownOptions, VmBackend,
} from '../backend.js';
import { spawnDetached } from '../../kernel/exec.js';
import { resolvConf } from '../../core/guest/network-config.js';
import { liveGuest, readProcStat, sameFile, signal, waitFor, type Guest, type ProcStat } from './guest-process.js';
import { assertIfName, assertMac, assertNetnsName } from '../../kernel/names.js';
import {
  ipBatch, ipIn, ipJson, linkDelete, linkShow, netnsAdd, netnsDelete, netnsExists, netnsList, netnsPids,
  parseBatchJson,
} from '../../kernel/netns.js';

// A "VM" here is a network namespace whose NIC is the guest end of a veth pair,
// plus one long-lived process inside it standing in for the guest. Networking
// can then be tested for real, thousands at a time, without KVM.

export interface SandboxBackendOptions {
  instanceName: string;
  /** Where host veth ends live; undefined = the root namespace (production daemon only). */
  dataplaneNetns: string | undefined;
  /** The guest process; default `sleep infinity`. */
  guestCommand?: string[];
}

type SandboxHandle = {
  netns: string;
  hostNetns: string | null;
  nics: string[];
  /** ifindex of each host end, so a later delete never removes a reused device name. */
  hostIfindexes: number[];
  pid: number | null;
  /** Field 22 of /proc/<pid>/stat: tells our guest apart from a recycled pid after a restart. */
  startTime: number | null;
};

const VM_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MAX_NETNS = 63;
const HASH_HEX = 16;
const MAX_INSTANCE = MAX_NETNS - '-vmh-'.length - HASH_HEX - 2;
const BOOT_CHECK_MS = 5_000;
const SIGNAL_WAIT_MS = 2_000;
/** Longest boot() waits for the guest's addresses to leave DAD. */
const DAD_WAIT_MS = 5_000;
const KILL_WAIT_MS = 5_000;

function assertVmId(id: string): string {
  if (!VM_ID.test(id)) throw new Error(`invalid VM id ${JSON.stringify(id)}`);
  return id;
}

function assertIpv6(value: string, withPrefix: boolean): string {
  const [addr = '', len, extra] = value.split('/');
  // A zone index ("%eth0") would be free text inside an `ip -batch` line.
  const ok = !addr.includes('%') && isIP(addr) === 6 && extra === undefined
    && (withPrefix ? len !== undefined && /^\d{1,3}$/.test(len) && Number(len) <= 128 : len === undefined);
  if (!ok) throw new Error(`invalid IPv6 ${withPrefix ? 'address/len' : 'address'} ${JSON.stringify(value)}`);
  return value;
}

function validateNics(nics: BackendNicSpec[]): BackendNicSpec[] {
  const ids = new Set<string>();
  const hosts = new Set<string>();
  for (const nic of nics) {
    assertIfName(nic.id);
    assertIfName(nic.hostDevice);
    assertMac(nic.mac);
    // Below 1280 the kernel silently disables IPv6 on the link. The upper bound is
    // left to the kernel: it is device specific (65535 for veth).
    if (!Number.isInteger(nic.mtu) || nic.mtu < 1280) throw new Error(`invalid MTU ${nic.mtu} for NIC ${nic.id}`);
    if (nic.ipv6Address !== '') assertIpv6(nic.ipv6Address, true);
    if (nic.ipv6Gateway !== '') assertIpv6(nic.ipv6Gateway, false);
    if (nic.id === 'lo' || ids.has(nic.id)) throw new Error(`duplicate or reserved NIC id ${nic.id}`);
    if (hosts.has(nic.hostDevice)) throw new Error(`duplicate host device ${nic.hostDevice}`);
    ids.add(nic.id);
    hosts.add(nic.hostDevice);
  }
  return nics;
}

function isInt(v: unknown, min: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

function parseHandle(h: BackendHandle): SandboxHandle {
  const { netns, hostNetns, nics, hostIfindexes = [], pid = null, startTime = null } = h;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((n) => typeof n === 'string');
  const ok = typeof netns === 'string' && (hostNetns === null || typeof hostNetns === 'string') && strings(nics)
    && Array.isArray(hostIfindexes) && hostIfindexes.every((i) => isInt(i, 1))
    // pid 0 or 1 would turn kill(-pid) into "our own group" or "every process".
    && (pid === null ? startTime === null : isInt(pid, 2) && isInt(startTime, 0));
  if (!ok) throw new Error('malformed sandbox handle');
  assertNetnsName(netns);
  if (hostNetns !== null) assertNetnsName(hostNetns);
  nics.forEach(assertIfName);
  return {
    netns, hostNetns, nics, hostIfindexes: hostIfindexes as number[],
    pid: pid as number | null, startTime: startTime as number | null,
  };
}

/** Who the guest is: a pid alone is not enough, pids get recycled. */
export class SandboxBackend implements VmBackend {
  readonly name = 'sandbox';
  readonly nicKind = 'veth' as const;

  private readonly instanceName: string;
  private readonly dataplaneNetns: string | undefined;
  private readonly guestCommand: string[];

  constructor(opts: SandboxBackendOptions) {
    assertNetnsName(opts.instanceName);
    // Forbidding "-vm" keeps `<instance>-vm-` prefixes prefix-free across instances:
    // instance "a" can then never claim namespaces of an instance "a-vm-b".
    if (opts.instanceName.length > MAX_INSTANCE || opts.instanceName.includes('-vm')) {
      throw new Error(`invalid instance name ${JSON.stringify(opts.instanceName)}: at most ${MAX_INSTANCE} chars, no "-vm"`);
    }
    if (opts.dataplaneNetns !== undefined) assertNetnsName(opts.dataplaneNetns);
    const cmd = opts.guestCommand ?? ['sleep', 'infinity'];
    if (cmd.length === 0 || !cmd.every((a) => typeof a === 'string' && !a.includes('\0')) || cmd[0] === '') {
      throw new Error('invalid guest command');
    }
    this.instanceName = opts.instanceName;
    this.dataplaneNetns = opts.dataplaneNetns;
    this.guestCommand = [...cmd];
  }

  /**
   * `<instance>-vm-<id>`, or when that exceeds 63 chars
   * `<instance>-vmh-<sha256(id) first 16 hex>-<id truncated>`.
   */
  vmNetns(vmId: string): string {
    assertVmId(vmId);
    const direct = `${this.instanceName}-vm-${vmId}`;
    if (direct.length <= MAX_NETNS) return assertNetnsName(direct);
    const hash = createHash('sha256').update(vmId).digest('hex').slice(0, HASH_HEX);
    return assertNetnsName(`${this.instanceName}-vmh-${hash}-${vmId}`.slice(0, MAX_NETNS));
  }

  async start(): Promise<void> {
    const dp = this.dataplaneNetns;
    if (dp === undefined || (await netnsExists(dp))) return;
    await netnsAdd(dp);
    await ipIn(dp, ['link', 'set', 'lo', 'up']);
  }

  async stop(): Promise<void> {
    // Guests deliberately outlive the daemon: a restarted metald adopts them from their handles.
  }

  async create(spec: BackendVmSpec): Promise<BackendHandle> {
    const ns = this.vmNetns(spec.id);
    const nics = validateNics(spec.nics);
    // Leftovers of an interrupted attempt: start from nothing rather than patch them up.
    if (await netnsExists(ns)) await this.delete(spec.id, undefined);
    await netnsAdd(ns);
    try {
      // Creating the peer directly in the fresh VM namespace (where only `lo` exists)
      // avoids a temporary name and a move. The peer cannot be set up from here
      // (the kernel answers ENOTCONN), hence the second batch inside the VM namespace.
      const dpLines = nics.map((n) => `link add ${n.hostDevice} mtu ${n.mtu} up type veth `
        + `peer name ${n.id} netns ${ns} mtu ${n.mtu} address ${n.mac}`);
      const shown = parseBatchJson(await ipBatch(this.dataplaneNetns, [
        ...dpLines, ...nics.map((n) => `link show dev ${n.hostDevice}`),
      ], { json: true }));
      const hostIfindexes = nics.map((n) => {
        const idx = shown.find((o) => o['ifname'] === n.hostDevice)?.['ifindex'];
        if (!isInt(idx, 1)) throw new Error(`no ifindex for ${n.hostDevice}`);
        return idx;
      });
      // The lo alias records the VM id inside the namespace, for hashed names (see listResidues).
      const vmLines = [`link set lo up alias ${spec.id}`];
      nics.forEach((n, i) => {
        vmLines.push(`link set ${n.id} up`);
        if (n.ipv6Address !== '') vmLines.push(`addr add ${n.ipv6Address} dev ${n.id}`);
        // Distinct metrics, because a second default route with equal metric is rejected.
        if (n.ipv6Gateway !== '') vmLines.push(`route add default via ${n.ipv6Gateway} dev ${n.id} onlink metric ${1024 + i}`);
      });
      await ipBatch(ns, vmLines);
      // `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc, so the guest
      // sees the DNS settings of its network document as its resolv.conf.
      if (spec.guest && spec.guest.latest['meta-data'].dns.servers.length > 0) {
        await mkdir(`/etc/netns/${ns}`, { recursive: true });
        await writeFile(`/etc/netns/${ns}/resolv.conf`, resolvConf(spec.guest));
      }
      const hostNetns = this.dataplaneNetns ?? null;
      const devices = nics.map((n) => n.hostDevice);
      return { netns: ns, hostNetns, nics: devices, hostIfindexes, pid: null, startTime: null } satisfies SandboxHandle;
    } catch (err) {
      try {
        await this.delete(spec.id, undefined);
      } catch (cleanupErr) {
        throw new AggregateError([err, cleanupErr], `create ${spec.id} failed and so did its cleanup`);
      }
      throw err;
    }
  }

  async boot(spec: BackendVmSpec, handle: BackendHandle): Promise<BackendHandle> {
    const h = parseHandle(handle);
    if (h.netns !== this.vmNetns(spec.id)) throw new Error(`handle of ${h.netns} does not belong to VM ${spec.id}`);
    if (!(await netnsExists(h.netns))) throw new Error(`cannot boot ${spec.id}: namespace ${h.netns} is gone`);
    if (h.pid !== null && (await liveGuest(h)) && (await sameFile(`/proc/${h.pid}/ns/net`, `/run/netns/${h.netns}`))) return handle;
    // A guest whose pid was never recorded (metald died mid-boot) must not
    // run beside the new one.
    await this.killNamespaceProcesses(h.netns);
    // `ip netns exec` execs the command, so this pid is the guest's own.
    const pid = spawnDetached('ip', ['netns', 'exec', h.netns, ...this.guestCommand]);
    const st = await readProcStat(pid);
    if (st === undefined) throw new Error(`guest of ${spec.id} exited at once`);
    const booted: SandboxHandle = { ...h, pid, startTime: st.startTime };
    // The spawned `ip` sits in our namespace until it joins the VM's, and only
    // then execs the guest: wait for both, the exec showing as a new cmdline.
    const ipCmdline = ['ip', 'netns', 'exec', h.netns, ...this.guestCommand, ''].join('\0');
    const joined = await waitFor(async () => {
      if (!(await liveGuest(booted))) throw new Error(`guest of ${spec.id} exited during boot`);
      return await sameFile(`/proc/${pid}/ns/net`, `/run/netns/${h.netns}`)
        // An exited (zombie) process reads an empty cmdline: that is not an exec.
        && await readFile(`/proc/${pid}/cmdline`, 'utf8').then((c) => c !== '' && c !== ipCmdline, () => false);
    }, BOOT_CHECK_MS).catch((err: unknown) => err);
    if (joined === true) {
      // Ready like a guest that reports ready: its static addresses have
      // passed duplicate address detection (a tentative address cannot be
      // used as a source yet). Bounded: DAD normally takes ~1-2 s.
      await waitFor(async () => (await ipJson(h.netns, ['-6', 'addr', 'show', 'tentative'])).every((l) => !Array.isArray(l['addr_info']) || l['addr_info'].length === 0), DAD_WAIT_MS)
        .catch(() => false);
      return booted;
    }
    await this.kill(booted);
    throw joined instanceof Error ? joined : new Error(`guest of ${spec.id} did not enter namespace ${h.netns}`);
  }

  async status(handle: BackendHandle): Promise<BackendStatus> {
    const h = parseHandle(handle);
    if (!(await netnsExists(h.netns))) return 'absent';
    const st = await liveGuest(h);
    if (st === undefined) return 'stopped';
    return st.state === 'T' ? 'paused' : 'running';
  }

  async pause(handle: BackendHandle): Promise<BackendHandle> {
    const h = parseHandle(handle);
    const st = await liveGuest(h);
    if (st === undefined || h.pid === null) throw new Error(`cannot pause ${h.netns}: guest not running`);
    if (st.state === 'T') return handle;
    signal(h.pid, 'SIGSTOP', true);
    if (!(await waitFor(async () => (await liveGuest(h))?.state === 'T', SIGNAL_WAIT_MS))) {
      throw new Error(`guest of ${h.netns} did not stop`);
    }
    return handle;
  }

  async resume(handle: BackendHandle): Promise<BackendHandle> {
    const h = parseHandle(handle);
    const st = await liveGuest(h);
    if (st === undefined || h.pid === null) throw new Error(`cannot resume ${h.netns}: guest not running`);
    if (st.state !== 'T') return handle;
    signal(h.pid, 'SIGCONT', true);
    if (!(await waitFor(async () => (await liveGuest(h))?.state !== 'T', SIGNAL_WAIT_MS))) {
      throw new Error(`guest of ${h.netns} did not continue`);
    }
    return handle;
  }

  async shutdown(handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    const h = parseHandle(handle);
    const st = await liveGuest(h);
    if (st !== undefined && h.pid !== null) {
      let gone = false;
      if (!opts.force) {
        signal(h.pid, 'SIGTERM', true);
        // A stopped process keeps SIGTERM pending until it is continued.
        if (st.state === 'T') signal(h.pid, 'SIGCONT', true);
        gone = await waitFor(async () => !(await liveGuest(h)), Math.max(0, opts.timeoutMs));
      }
      if (!gone) await this.kill(h);
    }
    // Also whatever else runs in the VM's namespace: a guest started by a
    // boot that metald did not live to record.
    if (await netnsExists(h.netns)) await this.killNamespaceProcesses(h.netns);
    return { ...h, pid: null, startTime: null } satisfies SandboxHandle;
  }

  async reboot(spec: BackendVmSpec, handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle> {
    return this.boot(spec, await this.shutdown(handle, opts));
  }

  /**
   * Works from the VM id alone; the handle only adds the guest pid (in case its
   * namespace file vanished) and host-end ifindexes. The handle's netns is not
   * trusted: a corrupt handle must never make us delete another VM's namespace.
   */
  async delete(vmId: string, handle: BackendHandle | undefined): Promise<void> {
    const ns = this.vmNetns(vmId);
    let h: SandboxHandle | undefined;
    try {
      h = handle === undefined ? undefined : parseHandle(handle);
    } catch {
      h = undefined; // a half-written handle must not block deletion
    }
    if (h !== undefined && h.netns !== ns) h = undefined;
    if (h !== undefined) await this.kill(h);
    if (await netnsExists(ns)) {
      await this.killNamespaceProcesses(ns);
      // Deleting one end of a veth removes both at once; leaving it to namespace
      // teardown would let host ends linger, since the kernel frees namespaces asynchronously.
      const veths = (await ipJson(ns, ['link', 'show', 'type', 'veth']))
        .map((o) => o['ifname'])
        .filter((n): n is string => typeof n === 'string')
        .map((n) => assertIfName(n.split('@')[0] ?? n));
      if (veths.length > 0) await ipBatch(ns, veths.map((n) => `link delete dev ${n}`));
    }
    if (h !== undefined) {
      const hostNs = h.hostNetns ?? undefined;
      for (const [i, dev] of h.nics.entries()) {
        const link = await linkShow(hostNs, dev);
        // Only the device we created: the name may since have gone to another VM.
        if (link !== undefined && link['ifindex'] === h.hostIfindexes[i]) await linkDelete(hostNs, dev);
      }
    }
    await netnsDelete(ns);
    await rm(`/etc/netns/${ns}`, { recursive: true, force: true });
  }

  /**
   * VM ids that have a namespace of this instance. Hashed names are resolved
   * through the VM id stored as `lo`'s alias, checked against the hash since the
   * guest could rewrite it. A hashed namespace without a valid alias (creation
   * interrupted before its second `ip` batch, so the store still holds the VM as
   * 'creating' and the reconciler deletes it by id) is skipped: `delete` could
   * not take its name anyway.
   */
  async listResidues(): Promise<string[]> {
    const direct = `${this.instanceName}-vm-`;
    const hashed = `${this.instanceName}-vmh-`;
    const ids: string[] = [];
    for (const name of await netnsList()) {
      if (name.startsWith(direct)) {
        const id = name.slice(direct.length);
        if (VM_ID.test(id)) ids.push(id);
      } else if (name.startsWith(hashed)) {
        const alias = (await linkShow(name, 'lo'))?.['ifalias'];
        if (typeof alias === 'string' && VM_ID.test(alias) && this.vmNetns(alias) === name) ids.push(alias);
      }
    }
    return ids;
  }

  /** SIGKILL every process inside a VM namespace. */
  private async killNamespaceProcesses(ns: string): Promise<void> {
    const pids = (await netnsPids(ns)).filter((p) => p > 1 && p !== process.pid);
    const procs = (await Promise.all(pids.map(async (pid) => ({ pid, st: await readProcStat(pid) }))))
      .filter((p): p is { pid: number; st: ProcStat } => p.st !== undefined);
    await Promise.all(procs.map((p) => this.kill({ pid: p.pid, startTime: p.st.startTime }, false)));
  }

  /** SIGKILL the guest (and its process group) and wait until it is gone. */
  private async kill(g: Guest, group = true): Promise<void> {
    if (g.pid === null || !(await liveGuest(g))) return;
    signal(g.pid, 'SIGKILL', group);
    if (!(await waitFor(async () => !(await liveGuest(g)), KILL_WAIT_MS))) {
      throw new Error(`process ${g.pid} survived SIGKILL`);
    }
  }
}
