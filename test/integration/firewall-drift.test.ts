// FirewallPlane against a real nftables in a namespace of the test's own:
// start-up load, per-VM element updates, and drift repair (a deleted element,
// rule or table comes back; a check that finds nothing writes nothing).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { FirewallPlane } from '../../src/firewall/firewall-plane.js';
import { nftList } from '../../src/kernel/nft.js';
import { UnmanagedNetworkPlane } from '../../src/network/plane.js';
import { memoryLog } from '../helpers/hostnet-kernel.js';
import { vmRecord } from '../helpers/hostnet-fixtures.js';

const ns = `mtdtest-fw-${randomBytes(3).toString('hex')}`;
execFileSync('ip', ['netns', 'add', ns]);
after(() => execFileSync('ip', ['netns', 'del', ns]));
const nft = (script: string) => execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script });

const vm = (id: string, dev: string, mac: string, addr: string) => vmRecord(id, [{ hostDevice: dev, bridge: 'br0', address: addr, mac }]);
const A = vm('a', 'vpa', '52:54:00:00:00:0a', 'fd00:10::a/64');
const B = vm('b', 'vpb', '52:54:00:00:00:0b', 'fd00:10::b/64');
const C = vm('c', 'vpc', '52:54:00:00:00:0c', 'fd00:10::c/64');

const opts = {
  netns: ns, guardTable: 'fwt_guard', hostTable: 'fwt_security', guardLogGroup: 2, elementCheckEvery: 1, log: memoryLog().log,
  defaults: { raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
    bridges: new Map([['br0', { raGuard: true, allowedRaSources: [], mldSnooping: true }]]) },
  host: { vmBridges: ['br0'], vmRanges: ['fd00:10::/48'], managementPrefixes: [], managementPorts: [22, 8080], allowedRaSources: [], ndRate: 1000, icmpRate: 1000, icmpErrorRate: 100, logGroup: 1 },
};
const plane = new FirewallPlane(new UnmanagedNetworkPlane(), opts);

async function elements(set: string): Promise<string[]> {
  const [o] = await nftList(ns, ['set', 'bridge', 'fwt_guard', set]);
  return ((o?.['set'] as { elem?: unknown[] })?.elem ?? []).map((e) => JSON.stringify(e));
}

test('start-up loads both tables once; a second check writes nothing', async () => {
  await plane.reconcile([A, B]);
  assert.equal(plane.stats.fullApplies, 1);
  assert.equal((await elements('vm_ports')).length, 2);
  const writes = plane.stats.writes;
  await plane.reconcile([A, B]);
  assert.equal(plane.stats.writes, writes, 'no-op check wrote');
  assert.equal(plane.stats.driftRepairs, 0);
});

test('a VM added and removed changes only elements', async () => {
  const before = plane.stats.fullApplies;
  await plane.ensureVm(C);
  assert.ok((await elements('port_mac')).some((e) => e.includes('vpc')));
  await plane.removeVm(C);
  assert.ok(!(await elements('port_mac')).some((e) => e.includes('vpc')));
  assert.ok(!(await elements('d_source_guard')).some((e) => e.includes('vpc')), 'its counters go too');
  assert.equal(plane.stats.fullApplies, before);
});

test('drift: a deleted element, a deleted rule and a deleted table are restored by the next check', async () => {
  nft('delete element bridge fwt_guard src128 { "vpa" . fd00:10::a }\n');
  await plane.reconcile([A, B]);
  assert.ok((await elements('src128')).some((e) => e.includes('fd00:10::a')));
  assert.equal(plane.stats.driftRepairs, 1);

  const chain = await nftList(ns, ['chain', 'bridge', 'fwt_guard', 'vm_in']);
  const handle = chain.map((o) => o['rule'] as { handle?: number } | undefined).find((r) => r?.handle)!.handle!;
  nft(`delete rule bridge fwt_guard vm_in handle ${handle}\n`);
  await plane.reconcile([A, B]);
  const rules = (await nftList(ns, ['chain', 'bridge', 'fwt_guard', 'vm_in'])).filter((o) => 'rule' in o).length;
  assert.equal(rules, chain.filter((o) => 'rule' in o).length);
  assert.equal(plane.stats.driftRepairs, 2);
  assert.equal((await elements('vm_ports')).length, 2, 'the replaced table carries every VM');

  nft('delete table ip6 fwt_security\n');
  await plane.reconcile([A, B]);
  assert.equal((await nftList(ns, ['table', 'ip6', 'fwt_security'], { terse: true })).length > 0, true);
  assert.equal(plane.stats.driftRepairs, 3);
});

test('a new plane (a restarted metald) adopts the loaded table on its first ensureVm: no rate class twice, nothing replaced', async () => {
  const fresh = new FirewallPlane(new UnmanagedNetworkPlane(), { ...opts, elementCheckEvery: 1 });
  await fresh.ensureVm(C);
  assert.equal(fresh.stats.fullApplies, 0);
  await fresh.reconcile([A, B, C]);
  assert.equal(fresh.stats.fullApplies, 0, 'the structure still matches: no class rule was added twice');
  await fresh.removeVm(C);
  await plane.reconcile([A, B]);
});

test('isolation is an element of the isolated set, added and lifted', async () => {
  await plane.applyIsolation({ ...A, isolated: true });
  assert.ok((await elements('isolated')).some((e) => e.includes('vpa')));
  await plane.applyIsolation({ ...A, isolated: false });
  assert.deepEqual(await elements('isolated'), []);
});

test('between full checks (every 6th pass) a cheap check still finds a deleted table or chain', async () => {
  const cheap = new FirewallPlane(new UnmanagedNetworkPlane(), {
    netns: ns, guardTable: 'fwc_guard', hostTable: 'fwc_security', guardLogGroup: 2, log: memoryLog().log,
    defaults: { raGuard: true, sourceGuard: true, extensionHeaderFiltering: true, rates: { nd: 1000, icmp: 1000, mcast: 500, ra: 10 },
      bridges: new Map([['br0', { raGuard: true, allowedRaSources: [], mldSnooping: true }]]) },
    host: undefined,
  });
  await cheap.reconcile([A]);
  const writes = cheap.stats.writes;
  await cheap.reconcile([A]);
  assert.equal(cheap.stats.writes, writes, 'a cheap no-op check writes nothing');
  nft('delete table bridge fwc_guard\n');
  await cheap.reconcile([A]);
  assert.ok((await nftList(ns, ['set', 'bridge', 'fwc_guard', 'vm_ports'])).length > 0, 'table restored');
  assert.equal(cheap.stats.driftRepairs, 1);
  nft('delete table bridge fwc_guard\n');
});

test('rules and tenants: a restarted plane adopts class ids and tenant numbers and writes nothing; a lost class dispatch comes back', async () => {
  const withRules = (v: ReturnType<typeof vm>, tenant: string, ingress: string[]) => ({
    ...v, tenantId: tenant, config: { network: [{ id: 'eth0', security_policy: { ingress_rules: ingress, egress_rules: ['allow all from any to any'] } }] },
  });
  const D = withRules(vm('d', 'vpd', '52:54:00:00:00:0d', 'fd00:10::d/64'), 'tenant-z', ['allow tcp from any to any port 22']);
  const E = withRules(vm('e', 'vpe', '52:54:00:00:00:0e', 'fd00:10::e/64'), 'tenant-y', ['allow tcp from fd00:10::d to any port 80']);
  const all = [A, B, D, E];
  await plane.reconcile(all);
  const zones = async () => JSON.stringify((await nftList(ns, ['map', 'bridge', 'fwt_guard', 'port_zone']))[0]);
  const vmap = async () => JSON.stringify((await nftList(ns, ['map', 'bridge', 'fwt_guard', 'pol_chains']))[0]);
  const [z1, v1] = [await zones(), await vmap()];
  assert.match(v1, /pc_[0-9a-f]{16}/);
  // A new metald process: same tenants in a different order must not renumber anything.
  const again = new FirewallPlane(new UnmanagedNetworkPlane(), opts);
  await again.reconcile([E, D, B, A]);
  assert.equal(again.stats.writes, 0, 'the adopted table needed no write');
  assert.equal(await zones(), z1);
  assert.equal(await vmap(), v1);
  const id = (JSON.parse(v1) as { map: { elem: [number, unknown][] } }).map.elem[0]![0];
  nft(`delete element bridge fwt_guard pol_chains { ${id} }\n`);
  await again.reconcile(all);
  assert.equal(await vmap(), v1, 'the class dispatch was restored');
  // Lost while no metald ran: a new process adopts the ids without it and adds the class anew, its chain
  // still in the kernel; the chain ends up with its rules once, not twice.
  const chain = (JSON.parse(v1) as { map: { elem: [number, { goto: { target: string } }][] } }).map.elem[0]![1].goto.target;
  const rules = async () => (await nftList(ns, ['chain', 'bridge', 'fwt_guard', chain])).filter((o) => 'rule' in o).length;
  const count = await rules();
  nft(`delete element bridge fwt_guard pol_chains { ${id} }\n`);
  await new FirewallPlane(new UnmanagedNetworkPlane(), opts).reconcile(all);
  assert.equal(await rules(), count, 'the class chain holds its rules once');
  assert.match(await vmap(), new RegExp(chain));
});

test('policy classes no VM uses any more are removed by the next full check (chain and dispatch), and come back when used again', async () => {
  const own = (v: ReturnType<typeof vm>, port: number) => ({
    ...v, config: { network: [{ id: 'eth0', security_policy: { ingress_rules: [`allow tcp from any to any port ${port}`] } }] },
  });
  const F = own(vm('f', 'vpf', '52:54:00:00:00:0f', 'fd00:10::f/64'), 7001);
  const G = own(vm('g', 'vpg', '52:54:00:00:00:10', 'fd00:10::10/64'), 7002);
  await plane.reconcile([A, B]);
  const chains = async () => (await nftList(ns, ['chains', 'bridge'])).map((o) => o['chain'] as { table?: string; name?: string })
    .filter((c) => c?.table === 'fwt_guard' && c.name?.startsWith('pc_')).map((c) => c.name!).sort();
  const targets = async () => ((await nftList(ns, ['map', 'bridge', 'fwt_guard', 'pol_chains']))[0]?.['map'] as { elem?: [number, { goto: { target: string } }][] })
    .elem?.map(([, v]) => v.goto.target).sort() ?? [];
  assert.deepEqual(await chains(), [], 'classes of VMs gone before this test were removed');
  await plane.ensureVm(F);
  const ofF = await chains();
  await plane.ensureVm(G);
  const both = await chains();
  assert.equal(both.length, ofF.length + 1, 'G brings a class of its own');
  await plane.removeVm(F);
  assert.deepEqual(await chains(), both, 'a delete leaves the class to the next full check');
  const [repairs, removed] = [plane.stats.driftRepairs, plane.stats.classesRemoved];
  await plane.reconcile([A, B, G]);
  const ofG = both.filter((c) => !ofF.includes(c));
  assert.deepEqual(await chains(), ofG, "only F's class went");
  assert.deepEqual(await targets(), ofG, 'its dispatch element went with it');
  assert.equal(plane.stats.classesRemoved, removed + 1);
  assert.equal(plane.stats.driftRepairs, repairs, 'removing an unused class is no drift repair');
  const writes = plane.stats.writes;
  await plane.reconcile([A, B, G]);
  assert.equal(plane.stats.writes, writes, 'the next full check finds nothing');
  // F again: its class is added anew (with a rule body, not an empty chain) and dispatched.
  await plane.ensureVm(F);
  assert.deepEqual(await chains(), both);
  assert.deepEqual(await targets(), both);
  const body = (await nftList(ns, ['chain', 'bridge', 'fwt_guard', ofF[0]!])).filter((o) => 'rule' in o);
  assert.ok(body.length > 0, 'the class chain has its rules');
  await plane.removeVm(F);
  await plane.removeVm(G);
  await plane.reconcile([A, B]);
  assert.deepEqual(await chains(), []);
});

test('a rate class no port uses any more goes with the next full check (rule, port set, limiter set); the defaults stay', async () => {
  const H = { ...vm('h', 'vph', '52:54:00:00:00:11', 'fd00:10::11/64'), config: { network: [{ id: 'eth0', ipv6: { security: { nd_rate_limit: 77 } } }] } };
  await plane.reconcile([A, B]);
  const sets = async () => (await nftList(ns, ['sets', 'bridge'])).map((o) => o['set'] as { table?: string; name?: string })
    .filter((x) => x?.table === 'fwt_guard' && /^(rlp|lim)_nd_/.test(x.name ?? '')).map((x) => x.name!).sort();
  const rules = async () => (await nftList(ns, ['chain', 'bridge', 'fwt_guard', 'rate_nd'])).filter((o) => 'rule' in o).length;
  const [before, ruleCount] = [await sets(), await rules()];
  await plane.ensureVm(H);
  assert.deepEqual(await sets(), [...before, 'lim_nd_77', 'rlp_nd_77'].sort());
  assert.equal(await rules(), ruleCount + 1);
  await plane.removeVm(H);
  const [repairs, removed] = [plane.stats.driftRepairs, plane.stats.classesRemoved];
  await plane.reconcile([A, B]);
  assert.deepEqual(await sets(), before, 'its port and limiter sets went');
  assert.equal(await rules(), ruleCount, 'its rule went');
  assert.equal(plane.stats.classesRemoved, removed + 1);
  assert.equal(plane.stats.driftRepairs, repairs);
  // The structure check still holds (one rule per class set): nothing is replaced, and H can come back.
  const full = plane.stats.fullApplies;
  await plane.reconcile([A, B]);
  await plane.ensureVm(H);
  assert.equal(await rules(), ruleCount + 1);
  await plane.removeVm(H);
  await plane.reconcile([A, B]);
  assert.equal(plane.stats.fullApplies, full);
});

test('a table of the earlier layout (fixed-size sets, 1 s GC, no layout chain) is replaced whole by the next check', async () => {
  await plane.reconcile([A, B]);
  const sets = async () => (await nftList(ns, ['sets', 'bridge'])).map((o) => o['set'] as { name: string; table: string; size?: number; 'gc-interval'?: number; flags?: string[] })
    .filter((s) => s?.table === 'fwt_guard');
  const loaded = await sets();
  // What the kernel holds: sets only metald writes have no size (a resizable hash whose memory
  // follows its elements); every set the packet path writes has a cap and a long sweep interval.
  // (`nft -j` lists `dynamic,timeout` as flags ["timeout"]; every set the packet path writes has it.)
  const dynamic = loaded.filter((s) => s.flags?.includes('timeout'));
  assert.ok(dynamic.length >= 16, `dynamic sets: ${dynamic.length}`);
  for (const s of dynamic) {
    assert.ok(s.size, `${s.name} has a cap`);
    assert.ok((s['gc-interval'] ?? 0) >= 30, `${s.name} sweeps at most every 30 s (gc-interval ${s['gc-interval']})`);
  }
  for (const s of loaded.filter((x) => !x.flags?.includes('timeout'))) assert.equal(s.size, undefined, `${s.name} has no fixed size`);
  // Simulate a table of the earlier layout: it has no layout chain.
  nft('delete chain bridge fwt_guard layout_2\n');
  const repairs = plane.stats.driftRepairs;
  await plane.reconcile([A, B]);
  assert.equal(plane.stats.driftRepairs, repairs + 1);
  assert.ok((await nftList(ns, ['chain', 'bridge', 'fwt_guard', 'layout_2'])).length > 0, 'the layout chain is back');
});

test('a full check lists the sets outside the lock: a VM added and one removed meanwhile are not kept waiting, and nothing is undone', async () => {
  await plane.reconcile([A, B]);
  const order: string[] = [];
  const full = plane.reconcile([A, B]).then(() => order.push('full check'));
  // The listing (one `nft -j list` per set) is under way; these run between its start and its diff.
  await new Promise((r) => setTimeout(r, 30));
  await plane.ensureVm(C).then(() => order.push('ensureVm'));
  await plane.removeVm(B).then(() => order.push('removeVm'));
  await full;
  assert.deepEqual(order, ['ensureVm', 'removeVm', 'full check']);
  assert.ok((await elements('port_mac')).some((e) => e.includes('vpc')), 'C stays');
  assert.ok(!(await elements('port_mac')).some((e) => e.includes('vpb')), 'B stays gone');
  const writes = plane.stats.writes;
  await plane.reconcile([A, C]);
  assert.equal(plane.stats.writes, writes, 'the next full check finds nothing to repair');
  await plane.removeVm(C);
  await plane.ensureVm(B);
});

test('two reconciles at once: the second checks cheaply while the first lists, so neither undoes what was written meanwhile', async () => {
  await plane.reconcile([A, B]);
  const { log, lines } = memoryLog();
  const watched = new FirewallPlane(new UnmanagedNetworkPlane(), { ...opts, log });
  await watched.reconcile([A, B]);
  await watched.ensureVm(C);
  const first = watched.reconcile([A, B, C]);
  // The first lists the sets (one `nft -j list` each); meanwhile C goes and the daemon's next pass starts.
  await new Promise((r) => setTimeout(r, 30));
  await watched.removeVm(C);
  const second = watched.reconcile([A, B]);
  await Promise.all([first, second]);
  assert.deepEqual(lines, [], 'no failed write, no repair');
  assert.equal(watched.stats.driftRepairs, 0);
  assert.ok(!(await elements('port_mac')).some((e) => e.includes('vpc')), 'C stays gone');
  const writes = watched.stats.writes;
  await watched.reconcile([A, B]);
  await watched.reconcile([A, B]);
  assert.equal(watched.stats.writes, writes, 'later checks, full ones included, find nothing to do');
});
