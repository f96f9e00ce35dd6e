// bench/boot: (1) metald's own time from CreateVm to the VMM start request —
// VmManager.create + boot with the real SQLite store, IPAM, bridge plane and
// qemu backend (tap created in the data plane), stopped at the moment qemu
// would be exec'd (the backend's launcher hook records the time instead).
// Target: p50 <= 10 ms. Measured side by side, alternating per sample, with
// the backend's taps made through the long-lived `ip -batch` session (the
// default, DataPlaneTaps) and through an `ip` process per call (what the
// backend did before), and split into tap, bridge plane and the rest (store,
// IPAM, lifecycle). (2) create -> guest network up: the same path with a
// real qemu under TCG, until the guest prints METALD-READY (its IPv6 address
// and route are configured); recorded, no target.
//
//   npm run bench -- boot [--quick]
//
// Needs root, qemu-system-x86 and apt (the guest image). Everything lives in a
// namespace (`mtdbench-bt-<hex>`) and a temp dir made here, removed at the end.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { create } from '@bufbuild/protobuf';
import { dataPlaneNics, type HostNics } from '../src/backends/qemu/host-nics.js';
import { launchQemu, QemuBackend } from '../src/backends/qemu/qemu-backend.js';
import { parseConfig } from '../src/config/load.js';
import { validationContext } from '../src/daemon/daemon.js';
import { bridgeSubnets, ipamFromConfig } from '../src/daemon/ipam-from-config.js';
import { VmConfigSchema } from '../src/gen/vmprovisioner/v1/vm_pb.js';
import { ipBatch, ipIn, linkDelete, linkShow, netnsAdd } from '../src/kernel/netns.js';
import { VmManager } from '../src/lifecycle/manager.js';
import { BridgeNetworkPlane } from '../src/network/bridge-plane.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { bridge } from '../test/helpers/hostnet-fixtures.js';
import { memoryLog, pinBridgeNetfilterOff, removeNamespaces } from '../test/helpers/hostnet-kernel.js';
import { guestImage, killMentioning } from '../test/helpers/qemu-guests.js';

const ADMIN = { kind: 'admin', name: 'bench' } as const;
const silent = { info() {}, warn() {}, error() {} };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

class LaunchRecorded extends Error {}

/** The backend's taps before DataPlaneTaps: one `nsenter … ip -batch` process per tap. */
function processTaps(netns: string): HostNics {
  return {
    ensureTap: async (name, { mtu }) => {
      await ipBatch(netns, [`tuntap add dev ${name} mode tap vnet_hdr`, `link set dev ${name} mtu ${mtu} up`]);
    },
    removeTap: (name) => linkDelete(netns, name),
    hasTap: async (name) => (await linkShow(netns, name)) !== undefined,
  };
}

/** Wraps `obj[method]` so that each call's duration lands in `into`. */
function timed<T extends object>(obj: T, method: keyof T & string, into: { ms: number }): void {
  const orig = (obj[method] as (...a: unknown[]) => Promise<unknown>).bind(obj);
  (obj as Record<string, unknown>)[method] = async (...a: unknown[]) => {
    const t0 = performance.now();
    try {
      return await orig(...a);
    } finally {
      into.ms += performance.now() - t0;
    }
  };
}

interface Sample { total: number; tap: number; plane: number }

function summary(name: string, xs: Sample[]): string {
  const f = (k: keyof Sample) => pct(xs.map((x) => x[k]), 50).toFixed(2);
  return `${name}: p50 ${f('total')} ms (tap ${f('tap')}, bridge plane ${f('plane')}, rest ${pct(xs.map((x) => x.total - x.tap - x.plane), 50).toFixed(2)}), `
    + `p90 ${pct(xs.map((x) => x.total), 90).toFixed(2)} ms, p99 ${pct(xs.map((x) => x.total), 99).toFixed(2)} ms (n=${xs.length})`;
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const samples = quick ? 30 : 100;
  const guests = quick ? 3 : 5;
  const tag = randomBytes(3).toString('hex');
  const dp = `mtdbench-bt-${tag}`;
  const br = `bt${tag}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'mtdbench-boot-'));
  const image = await guestImage();
  const { config } = parseConfig([
    'backend: qemu',
    'ipv6:',
    '  default_pool: {id: bench, prefix: "fd00:b7::/48"}',
    `  bridge: {name: ${br}, ipv6_address: "fd00:b7::1/64"}`,
  ].join('\n'), 'bench');
  let launchedAt = 0;
  let fake = true;
  const backendOpts = {
    dataplaneNetns: dp, binary: 'qemu-system-x86_64', machine: 'microvm' as const, accel: 'tcg' as const,
    kernelPath: image.kernel, initrdPath: image.initrd, imageDirs: [image.dir], stateDir: path.join(dir, 'qemu'),
    bootTimeoutMs: 120_000, readiness: 'marker' as const,
  };
  const launcher = async (file: string, argv: string[]) => {
    launchedAt = performance.now();
    if (fake) throw new LaunchRecorded('launch recorded');
    await launchQemu(file, argv); // the network-up figure: launched for real
  };
  const cost = { tap: { ms: 0 }, plane: { ms: 0 } };
  const session = dataPlaneNics(dp);
  const perProcess = processTaps(dp);
  timed(session, 'ensureTap', cost.tap);
  timed(perProcess, 'ensureTap', cost.tap);
  const backend = new QemuBackend({ ...backendOpts, launcher, hostNics: session });
  const oldBackend = new QemuBackend({ ...backendOpts, launcher, hostNics: perProcess });
  const store = SqliteStore.open(path.join(dir, 'data'));
  const { log } = memoryLog();
  const plane = new BridgeNetworkPlane({ netns: dp, bridges: [bridge(br, { addresses: ['fd00:b7::1/64'] })], log });
  const ipam = ipamFromConfig(config);
  timed(plane, 'ensureVm', cost.plane);
  const settings = {
    instanceName: `bt${tag}`, ipam, bridgeSubnets: bridgeSubnets(config), maxVms: 100_000,
    defaultShutdownTimeoutMs: 5_000, validation: validationContext(config),
  };
  const manager = new VmManager(store, backend, plane, settings, silent);
  const oldManager = new VmManager(store, oldBackend, plane, settings, silent);
  const vmConfig = () => create(VmConfigSchema, { tenantId: 'bench', network: [{ id: 'eth0', bridgeName: br }] });
  try {
    await netnsAdd(dp);
    await ipIn(dp, ['link', 'set', 'lo', 'up']);
    await pinBridgeNetfilterOff(dp);
    await backend.start();
    await plane.reconcile([]);

    // (1) CreateVm -> VMM start request, the two tap paths alternating. The failed boot (launch refused) is then deleted.
    const own: Sample[] = [];
    const old: Sample[] = [];
    for (let i = 0; i < 2 * (samples + 5); i++) {
      const id = `b${i}`;
      const m = i % 2 === 0 ? manager : oldManager;
      cost.tap.ms = 0;
      cost.plane.ms = 0;
      const t0 = performance.now();
      await m.create(ADMIN, id, vmConfig());
      await m.boot(ADMIN, id).catch((err: unknown) => {
        if (!String(err).includes('launch recorded')) throw err;
      });
      // The first few warm up the JIT, the store and the ip session.
      if (i >= 10) (m === manager ? own : old).push({ total: launchedAt - t0, tap: cost.tap.ms, plane: cost.plane.ms });
      await m.delete(ADMIN, id);
    }
    const p50 = pct(own.map((x) => x.total), 50);
    const oldP50 = pct(old.map((x) => x.total), 50);
    console.log(`create -> VMM start request (side by side, alternating):`);
    console.log(`  ${summary('taps through the ip -batch session (default)', own)}`);
    console.log(`  ${summary('taps through an ip process per call (before)', old)}`);

    // (2) create -> guest network up under TCG (one guest at a time).
    fake = false;
    const up: number[] = [];
    for (let i = 0; i < guests; i++) {
      const id = `g${i}`;
      const t0 = performance.now();
      await manager.create(ADMIN, id, vmConfig());
      await manager.boot(ADMIN, id);
      up.push(performance.now() - t0);
      await manager.delete(ADMIN, id);
    }
    const upP50 = pct(up, 50);
    console.log(`create -> guest network up (TCG, microvm): p50 ${(upP50 / 1000).toFixed(2)} s, max ${(Math.max(...up) / 1000).toFixed(2)} s (n=${up.length})`);
    console.log(`BENCH boot own_p50_ms=${p50.toFixed(2)} own_p99_ms=${pct(own.map((x) => x.total), 99).toFixed(2)} process_taps_p50_ms=${oldP50.toFixed(2)} net_up_tcg_p50_s=${(upP50 / 1000).toFixed(2)} target own_p50<=10ms ${p50 <= 10 ? 'met' : 'missed'}`);
  } finally {
    await killMentioning(dir);
    await removeNamespaces((ns) => ns === dp);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
