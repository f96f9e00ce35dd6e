// bench/api: GetVmInfo and ListVms (page of 100) calls per second with
// 10 000 VMs in the SQLite store, side by side with a bare node:http handler
// returning the same JSON. Target: metald ÷ bare ≥ 0.5 for both.
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { encodePageToken } from '../src/api/convert.js';
import type { VmRecord } from '../src/core/vm/record.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

const VMS = 10_000;
const TOKEN = 'bench-admin-token-0123456789';
const GET = '/vmprovisioner.v1.VmService/GetVmInfo';
const LIST = '/vmprovisioner.v1.VmService/ListVms';

export function record(i: number): VmRecord {
  const id = `vm-${String(i).padStart(6, '0')}`;
  const ts = new Date(1_700_000_000_000 + i * 1000).toISOString();
  return {
    id, tenantId: `tenant-${i % 50}`, state: i % 3 ? 'running' : 'created', isolated: false, isolationReason: '', isolatedAt: null,
    config: {
      cpu: { vcpu_count: 1 }, memory: { size_bytes: '134217728' },
      boot: { kernel_path: '/opt/vm-assets/vmlinux', kernel_args: 'console=ttyS0 reboot=k panic=1 pci=off' },
      storage: [{ path: '/opt/vm-assets/rootfs.ext4' }],
      network: [{ id: 'eth0', interface_type: 'virtio-net', bridge_name: 'br-prod', vlan_id: '100',
        ipv6: { address: `2600:beef:1000:100::${(i + 16).toString(16)}/64`, gateway: '2600:beef:1000:100::1',
          security: { enable_ra_guard: true, enable_source_guard: true, nd_rate_limit: 100 } },
        security_policy: { ingress_rules: ['allow tcp from any to any port 80,443', 'deny all from any to any'], tenant_isolation_level: 'strict' } }],
      tenant_id: `tenant-${i % 50}`,
      security_profile: { profile_name: 'high' },
    },
    backend: 'fake', backendState: { pid: 1000 + i }, failureReason: '',
    nics: [{ id: 'eth0', hostDevice: `mbch${String(i).padStart(11, '0')}`, mac: '02:00:00:00:00:01', bridge: 'br-prod', vlanId: 100,
      ipv6Address: `2600:beef:1000:100::${(i + 16).toString(16)}/64`, ipv6Gateway: '2600:beef:1000:100::1', ipv6Allocation: `2600:beef:1000:100::${(i + 16).toString(16)}/128` }],
    createdAt: ts, updatedAt: ts, revision: 1,
  };
}

function startChild(kind: string, arg: string): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(new URL('./_api-servers.ts', import.meta.url), [kind, arg], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve({ child, port: m.port }));
    child.once('exit', (c) => reject(new Error(`${kind} server exited ${c}`)));
  });
}

async function load(port: number, path: string, bodies: string[], seconds: number): Promise<number> {
  let n = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 16,
    duration: seconds,
    requests: [{
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      setupRequest: (req) => ({ ...req, body: bodies[n++ % bodies.length]! }),
    }],
  });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${path}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result.requests.average;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function main(args: string[]): Promise<void> {
  const rounds = Number(args[0] ?? 3);
  const seconds = Number(args[1] ?? 4);
  const dir = mkdtempSync(join(tmpdir(), 'metald-bench-api-'));
  const children: ChildProcess[] = [];
  try {
    const store = SqliteStore.open(dir);
    for (let i = 0; i < VMS; i += 1000) {
      await store.commit(Array.from({ length: 1000 }, (_, k) => ({ op: 'putVm' as const, vm: record(i + k) })));
    }
    await store.close();

    const metald = await startChild('metald', dir);
    children.push(metald.child);
    const getBodies = Array.from({ length: 200 }, (_, k) => JSON.stringify({ vm_id: record((k * 53) % VMS).id }));
    // Pages across the whole keyspace, as a client paging through would ask.
    const listBodies = Array.from({ length: 100 }, (_, k) =>
      JSON.stringify(k === 0 ? { page_size: 100 } : { page_size: 100, page_token: encodePageToken(record(k * 100 - 1).id) }));
    // The bare server answers with the exact bytes metald gives for one call of each kind.
    const sample = async (path: string, body: string) => {
      const r = await fetch(`http://127.0.0.1:${metald.port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body });
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
      return r.text();
    };
    const getSample = await sample(GET, getBodies[0]!);
    const listSample = await sample(LIST, listBodies[0]!);
    const bare = await startChild('bare', JSON.stringify({ [GET]: getSample, [LIST]: listSample }));
    children.push(bare.child);
    console.log(`${VMS} VMs in SQLite; GetVmInfo answer ${getSample.length} B, ListVms page ${listSample.length} B (${JSON.parse(listSample).vms.length} VMs)`);

    const fig: Record<string, number[]> = { get: [], getBare: [], list: [], listBare: [] };
    for (let r = 0; r < rounds; r++) {
      // Interleaved so drift in machine load hits both sides alike.
      fig.get!.push(await load(metald.port, GET, getBodies, seconds));
      fig.getBare!.push(await load(bare.port, GET, getBodies, seconds));
      fig.list!.push(await load(metald.port, LIST, listBodies, seconds));
      fig.listBare!.push(await load(bare.port, LIST, listBodies, seconds));
      console.log(`round ${r + 1}: GetVmInfo ${fig.get!.at(-1)!.toFixed(0)} vs bare ${fig.getBare!.at(-1)!.toFixed(0)} req/s; ListVms ${fig.list!.at(-1)!.toFixed(0)} vs bare ${fig.listBare!.at(-1)!.toFixed(0)} req/s`);
    }
    const m = Object.fromEntries(Object.entries(fig).map(([k, v]) => [k, median(v)])) as Record<string, number>;
    const getRatio = m.get! / m.getBare!;
    const listRatio = m.list! / m.listBare!;
    console.log(`median of ${rounds} rounds x ${seconds}s, 16 connections`);
    console.log(`GetVmInfo: metald ${m.get!.toFixed(0)} req/s, bare ${m.getBare!.toFixed(0)} req/s, ratio ${getRatio.toFixed(2)}`);
    console.log(`ListVms(100): metald ${m.list!.toFixed(0)} req/s, bare ${m.listBare!.toFixed(0)} req/s, ratio ${listRatio.toFixed(2)}`);
    const met = getRatio >= 0.5 && listRatio >= 0.5;
    console.log(`BENCH api get_rps=${m.get!.toFixed(0)} get_bare_rps=${m.getBare!.toFixed(0)} get_ratio=${getRatio.toFixed(2)} list_rps=${m.list!.toFixed(0)} list_bare_rps=${m.listBare!.toFixed(0)} list_ratio=${listRatio.toFixed(2)} target ratio>=0.5 ${met ? 'met' : 'missed'}`);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
