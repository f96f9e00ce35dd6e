// bench/netsetup: what the host side of one more VM costs with N VMs already
// there — sandbox backend create (namespace, veth pair, guest addresses and
// route) plus BridgeNetworkPlane.ensureVm (port on the bridge, gateway
// address) — at N = 0, 1k and 10k. Targets: p50 <= 5 ms; p50 at 10k <= 1.2 x p50 at 1k.
//
//   npm run bench -- netsetup [--quick] [--shared]
//     --quick: N = 0 and 1k only; --shared: VMs in their bridge's own /64 instead of a /64 each
//
// Needs root. Everything lives in namespaces made here (`mtdbench-hn-<hex>`,
// `mtdbn<hex>-vm-*`) and is deleted at the end, also on failure or Ctrl-C.
// By default each VM gets a /64 of its own (prefix mode, the heaviest case: one
// gateway address and route per VM on the bridge, SPEC-NOTES 7). A Linux bridge takes at
// most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved), so VMs are spread over
// one bridge per 1000.
import { randomBytes } from 'node:crypto';
import type { BackendVmSpec } from '../src/backends/backend.js';
import { SandboxBackend } from '../src/backends/sandbox/sandbox-backend.js';
import type { VmRecord } from '../src/core/vm/record.js';
import { run } from '../src/kernel/exec.js';
import { ipBatch, ipIn, netnsAdd, netnsDelete, netnsList } from '../src/kernel/netns.js';
import { BridgeNetworkPlane } from '../src/network/bridge-plane.js';
import type { BridgeSpec } from '../src/network/desired.js';
import { bridge, vmRecord } from '../test/helpers/hostnet-fixtures.js';
import { memoryLog } from '../test/helpers/hostnet-kernel.js';

const PORTS_PER_BRIDGE = 1000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const label = (n: number) => (n === 0 ? '0' : n % 1000 === 0 ? `${n / 1000}k` : String(n));

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const shared = args.includes('--shared');
  const levels = quick ? [0, 1000] : [0, 1000, 10_000];
  const samples = quick ? 40 : 100;
  const tag = randomBytes(2).toString('hex');
  const inst = `mtdbn${tag}`;
  const dp = `mtdbench-hn-${randomBytes(3).toString('hex')}`;
  const mine = (ns: string) => ns === dp || ns.startsWith(`${inst}-`);
  const total = levels[levels.length - 1]! + samples * levels.length;
  const bridges: BridgeSpec[] = Array.from({ length: Math.ceil(total / PORTS_PER_BRIDGE) }, (_, k) =>
    bridge(`nb${tag}${k.toString(36)}`, { addresses: [`fd00:b0:0:${k.toString(16)}::1/64`] }));
  const { log, lines: warnings } = memoryLog();
  const backend = new SandboxBackend({ instanceName: inst, dataplaneNetns: dp });
  const plane = new BridgeNetworkPlane({ netns: dp, bridges, log });
  const records: VmRecord[] = [];
  let next = 0;
  /**
   * VM number i, on bridge i / 1000: its own /64 fd00:b1:<hi>:<lo>::/64 (gateway ::1 added to the
   * bridge), or with --shared an address in the bridge's own /64 (the bridge address is the gateway).
   */
  const vmOf = (i: number, prefix: string) => {
    const k = Math.floor(i / PORTS_PER_BRIDGE);
    const net = shared ? `fd00:b0:0:${k.toString(16)}` : `fd00:b1:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
    const mac = `52:54:00:${[(i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    return vmRecord(`${prefix}${i}`, [{
      hostDevice: `${prefix}${tag}${i.toString(36)}`, bridge: bridges[k]!.name,
      address: shared ? `${net}::${(0x100 + i).toString(16)}/64` : `${net}::10/64`, gateway: `${net}::1`, mac,
    }]);
  };

  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    // The data plane first: its teardown unregisters every host veth end (and so
    // every peer) in one kernel batch, leaving the VM namespaces empty and quick
    // to delete. Deleting VM namespaces first tears down one veth pair per
    // namespace and takes minutes at 10k.
    await netnsDelete(dp);
    const names = (await netnsList()).filter(mine);
    for (let i = 0; i < names.length; i += 500) {
      const lines = names.slice(i, i + 500).map((n) => `netns delete ${n}`).join('\n');
      await run('ip', ['-force', '-batch', '-'], { input: `${lines}\n`, timeoutMs: 600_000 }).catch((e: unknown) => console.error(String(e)));
    }
    const left = (await netnsList()).filter(mine);
    if (left.length) console.error(`left behind: ${left.join(' ')}`);
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results = new Map<number, { total: number[]; create: number[]; ensure: number[]; reconcileMs: number; fillMs: number }>();
  const started = performance.now();
  try {
    await netnsAdd(dp);
    await ipIn(dp, ['link', 'set', 'lo', 'up']);
    await plane.reconcile([]);
    /** p50 of a process that does nothing: what any `ip` call costs before the kernel does work. */
    const idle = async (file: string, argv: string[]) => {
      const xs: number[] = [];
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        await run(file, argv);
        xs.push(performance.now() - t);
      }
      return pct(xs, 50);
    };

    for (const n of levels) {
      // Fill up to n existing VMs in bulk (not what is measured): namespaces and veth
      // pairs by `ip -batch`, ports and gateway addresses by one plane reconcile.
      const t0 = performance.now();
      const fill: VmRecord[] = [];
      while (next < n) fill.push(vmOf(next++, 'f'));
      for (let i = 0; i < fill.length; i += 2000) {
        const chunk = fill.slice(i, i + 2000);
        await ipBatch(undefined, chunk.map((v) => `netns add ${backend.vmNetns(v.id)}`));
        await ipBatch(dp, chunk.map((v) => `link add ${v.nics[0]!.hostDevice} mtu 1500 up type veth peer name eth0 netns ${backend.vmNetns(v.id)}`));
      }
      records.push(...fill);
      const t1 = performance.now();
      await plane.reconcile(records);
      const reconcileMs = performance.now() - t1;
      const r = { total: [] as number[], create: [] as number[], ensure: [] as number[], reconcileMs, fillMs: t1 - t0 };
      const bare = await idle('ip', ['-V']);
      const nsenter = await idle('nsenter', [`--net=/run/netns/${dp}`, '--', 'ip', '-V']);
      const ipn = await idle('ip', ['-n', dp, 'link', 'show', 'dev', 'lo']);
      for (let s = 0; s < samples; s++) {
        const vm = vmOf(next++, 's');
        const nic = vm.nics[0]!;
        const spec: BackendVmSpec = {
          id: vm.id, vcpuCount: 1, memoryBytes: 128n << 20n, kernelPath: '', kernelArgs: '', initrdPath: '', drives: [],
          nics: [{ id: 'eth0', hostDevice: nic.hostDevice, mac: nic.mac, mtu: 1500, ipv6Address: nic.ipv6Address, ipv6Gateway: nic.ipv6Gateway }],
        };
        const a = performance.now();
        vm.backendState = await backend.create(spec);
        const b = performance.now();
        await plane.ensureVm(vm);
        const c = performance.now();
        records.push(vm);
        r.create.push(b - a);
        r.ensure.push(c - b);
        r.total.push(c - a);
      }
      results.set(n, r);
      console.log(`N=${label(n).padEnd(4)} next VM: total p50 ${pct(r.total, 50).toFixed(2)} p99 ${pct(r.total, 99).toFixed(2)} ms`
        + ` | backend create p50 ${pct(r.create, 50).toFixed(2)} | ensureVm p50 ${pct(r.ensure, 50).toFixed(2)} p99 ${pct(r.ensure, 99).toFixed(2)} ms`
        + ` | fill ${(r.fillMs / 1000).toFixed(1)} s, full reconcile of ${records.length - samples} VMs ${r.reconcileMs.toFixed(0)} ms`);
      console.log(`       idle processes p50: \`ip -V\` ${bare.toFixed(2)} ms, \`nsenter --net ip -V\` ${nsenter.toFixed(2)} ms, \`ip -n <dp> link show lo\` ${ipn.toFixed(2)} ms`
        + ` (node RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB)`);
    }
    const t2 = performance.now();
    await plane.reconcile(records);
    console.log(`steady-state reconcile of ${records.length} VMs on ${bridges.length} bridges: ${(performance.now() - t2).toFixed(0)} ms, wrote ${plane.lastApplied.length} steps`);
    if (warnings.length) console.log(`plane warnings: ${warnings.slice(0, 5).join(' | ')}`);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  console.log(`wall time ${((performance.now() - started) / 1000).toFixed(0)} s; ports spread over ${bridges.length} bridges (<= ${PORTS_PER_BRIDGE} each)`);

  const p50 = (n: number) => pct(results.get(n)!.total, 50);
  const top = levels[levels.length - 1]!;
  const ratio = levels.includes(10_000) ? p50(10_000) / p50(1000) : p50(1000) / p50(0);
  const ratioName = levels.includes(10_000) ? 'ratio_10k_1k' : 'ratio_1k_0';
  const figures = levels.map((n) => `p50_ms_${label(n)}=${p50(n).toFixed(2)} p99_ms_${label(n)}=${pct(results.get(n)!.total, 99).toFixed(2)}`);
  const ensure = levels.map((n) => `ensure_p50_ms_${label(n)}=${pct(results.get(n)!.ensure, 50).toFixed(2)}`);
  const met = levels.every((n) => p50(n) <= 5) && ratio <= 1.2 && top >= 1000;
  console.log(`BENCH netsetup ${shared ? 'mode=shared ' : ''}${figures.join(' ')} ${ensure.join(' ')} ${ratioName}=${ratio.toFixed(2)} target p50<=5ms,ratio<=1.2 ${met ? 'met' : 'missed'}`);
}
