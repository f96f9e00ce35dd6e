import { readFileSync } from 'node:fs';
import { create, fromJson, toJson, type JsonValue } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { InvalidArgumentError, type Command } from 'commander';
import {
  CreateVmRequestSchema,
  VmInfoSchema,
  VmState,
  type VmInfo,
} from '../gen/vmprovisioner/v1/vm_pb.js';
import { vmClient } from './client.js';
import { keyValues, table } from './format.js';

interface GlobalOpts {
  api: string;
  token?: string;
  output: 'table' | 'json';
}

/** Integer option parser: bad numbers are usage errors (exit 2), not server faults. */
export function intArg(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected an integer ${min}-${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

const stateName = (s: VmState) => (VmState[s] ?? String(s)).toLowerCase();

function print(opts: GlobalOpts, json: unknown, human: () => string): void {
  process.stdout.write((opts.output === 'json' ? JSON.stringify(json, null, 2) : human()) + '\n');
}

function vmJson(vm: VmInfo): JsonValue {
  return toJson(VmInfoSchema, vm, { useProtoFieldName: true });
}

function vmRow(vm: VmInfo): string[] {
  const nic = vm.networkStatus[0];
  return [vm.vmId, vm.tenantId, stateName(vm.state), vm.isolated ? 'yes' : 'no', nic?.ipv6Address ?? '', nic?.hostDevice ?? ''];
}

const HEAD = ['VM ID', 'TENANT', 'STATE', 'ISOLATED', 'IPV6', 'HOST NIC'];

export function registerVmCommands(program: Command, globals: () => GlobalOpts): void {
  const vm = program.command('vm').description('manage VMs through the API');
  const client = () => vmClient(globals());

  vm.command('create')
    .description('create a VM (from a JSON CreateVm body, or from flags)')
    .option('-f, --file <path>', 'CreateVm request as JSON (the guide\'s curl body); - for stdin')
    .option('--id <id>', 'VM id (generated when omitted)')
    .option('--tenant <tenant>', 'tenant id')
    .option('--vcpus <n>', 'vCPUs', intArg(1, 64), 1)
    .option('--memory-mib <n>', 'memory in MiB', intArg(16, 1024 * 1024), 128)
    .option('--kernel <path>', 'kernel image path')
    .option('--bridge <name>', 'bridge for eth0')
    .option('--vlan <id>', 'VLAN id for eth0')
    .option('--ipv6 <addr/len>', 'static IPv6 address for eth0')
    .option('--gateway <addr>', 'IPv6 gateway for eth0')
    .action(async (o) => {
      let req;
      if (o.file) {
        const text = readFileSync(o.file === '-' ? 0 : o.file, 'utf8');
        try {
          req = fromJson(CreateVmRequestSchema, JSON.parse(text) as JsonValue);
        } catch (e) {
          throw new UsageError(`${o.file}: not a CreateVm request: ${e instanceof Error ? e.message : String(e)}`);
        }
        if (o.id) req.vmId = o.id;
      } else {
        req = create(CreateVmRequestSchema, {
          vmId: o.id ?? '',
          config: {
            tenantId: o.tenant ?? '',
            cpu: { vcpuCount: Number(o.vcpus) },
            memory: { sizeBytes: BigInt(o.memoryMib) * 1024n * 1024n },
            boot: { kernelPath: o.kernel ?? '' },
            network: [{ id: 'eth0', bridgeName: o.bridge ?? '', vlanId: o.vlan ?? '', ipv6: { address: o.ipv6 ?? '', gateway: o.gateway ?? '' } }],
          },
        });
      }
      const res = await client().createVm(req);
      for (const w of res.warnings) process.stderr.write(`warning: ${w}\n`);
      print(globals(), res.vm ? vmJson(res.vm) : { vm_id: res.vmId }, () => table(HEAD, res.vm ? [vmRow(res.vm)] : []));
    });

  vm.command('list')
    .description('list VMs')
    .option('--state <states>', 'comma-separated states (e.g. running,paused)')
    .option('--tenant <tenant>', 'only this tenant (admin)')
    .option('--page-size <n>', 'VMs per page', intArg(1, 1000), 100)
    .option('--page-token <token>', 'continue from a previous page')
    .option('--all', 'follow pages until the end')
    .action(async (o) => {
      const stateFilter = o.state
        ? String(o.state).split(',').map((s: string) => {
            const v = VmState[s.trim().toUpperCase() as keyof typeof VmState];
            if (v === undefined) throw new UsageError(`unknown state ${JSON.stringify(s)}`);
            return v;
          })
        : [];
      const vms: VmInfo[] = [];
      let token = o.pageToken ?? '';
      let total = 0;
      do {
        const res = await client().listVms({ stateFilter, pageSize: Number(o.pageSize), pageToken: token, tenantId: o.tenant ?? '' });
        vms.push(...res.vms);
        total = res.totalCount;
        token = res.nextPageToken;
      } while (o.all && token);
      print(globals(), { vms: vms.map(vmJson), next_page_token: token, total_count: total }, () =>
        `${table(HEAD, vms.map(vmRow))}\n(${vms.length} of ${total}${token ? `; next page: --page-token ${token}` : ''})`);
    });

  vm.command('get <id>').description('show one VM').action(async (id: string) => {
    const res = await client().getVmInfo({ vmId: id });
    const v = res.vm!;
    print(globals(), vmJson(v), () => keyValues([
      ['id', v.vmId],
      ['tenant', v.tenantId],
      ['state', stateName(v.state)],
      ['isolated', v.isolated ? `yes (${v.isolationReason})` : 'no'],
      ['backend', v.backend],
      ['created', v.createdAt ? timestampDate(v.createdAt).toISOString() : ''],
      ['failure', v.failureReason],
      ...v.networkStatus.map((n): [string, string] => [`nic ${n.id}`, `${n.hostDevice} ${n.macAddress} ${n.ipv6Address} gw ${n.ipv6Gateway}`]),
    ]));
  });

  const simple = (name: string, desc: string, call: (id: string, o: Record<string, unknown>) => Promise<{ state?: VmState }>) =>
    vm.command(`${name} <id>`).description(desc);

  simple('boot', 'boot a VM', async () => ({})).action(async (id: string) => report(id, await client().bootVm({ vmId: id })));
  simple('shutdown', 'stop a VM', async () => ({}))
    .option('--force', 'kill at once')
    .option('--timeout <s>', 'seconds to wait before forcing', intArg(0, 3600), 0)
    .action(async (id: string, o) => report(id, await client().shutdownVm({ vmId: id, force: !!o.force, timeoutSeconds: Number(o.timeout) })));
  simple('pause', 'pause a VM', async () => ({})).action(async (id: string) => report(id, await client().pauseVm({ vmId: id })));
  simple('resume', 'resume a VM', async () => ({})).action(async (id: string) => report(id, await client().resumeVm({ vmId: id })));
  simple('reboot', 'reboot a VM', async () => ({}))
    .option('--force', 'hard reset')
    .action(async (id: string, o) => report(id, await client().rebootVm({ vmId: id, force: !!o.force })));
  simple('delete', 'delete a VM', async () => ({})).action(async (id: string) => {
    await client().deleteVm({ vmId: id });
    print(globals(), { vm_id: id, deleted: true }, () => `${id} deleted`);
  });
  simple('isolate', 'cut every network path of a VM but metald\'s', async () => ({}))
    .option('--reason <text>', 'why', '')
    .action(async (id: string, o) => {
      const r = await client().isolateVm({ vmId: id, reason: String(o.reason) });
      print(globals(), { vm_id: id, isolated: r.isolated, state: stateName(r.state) }, () => `${id} isolated`);
    });
  simple('unisolate', 'restore a VM\'s network', async () => ({})).action(async (id: string) => {
    const r = await client().unisolateVm({ vmId: id });
    print(globals(), { vm_id: id, isolated: r.isolated, state: stateName(r.state) }, () => `${id} no longer isolated`);
  });

  function report(id: string, r: { state: VmState }): void {
    print(globals(), { vm_id: id, state: stateName(r.state) }, () => `${id} ${stateName(r.state)}`);
  }
}

export class UsageError extends Error {}
