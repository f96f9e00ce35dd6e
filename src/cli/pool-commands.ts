import { toJson } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { Command } from 'commander';
import { AllocationSchema, PoolSchema, type Allocation, type Pool } from '../gen/vmprovisioner/v1/pool_pb.js';
import { poolClient, type ClientOptions } from './client.js';
import { keyValues, table } from './format.js';

interface GlobalOpts extends ClientOptions {
  output: 'table' | 'json';
}

const pct = (u: number) => `${(u * 100).toFixed(u < 0.01 && u > 0 ? 4 : 1)}%`;
const ts = (t: Allocation['allocatedAt']) => (t ? timestampDate(t).toISOString() : '');

function print(o: GlobalOpts, json: unknown, human: () => string): void {
  process.stdout.write((o.output === 'json' ? JSON.stringify(json, null, 2) : human()) + '\n');
}

export function registerPoolCommands(program: Command, globals: () => GlobalOpts): void {
  const pool = program.command('pool').description('IPv6 address pools and allocations');
  const client = () => poolClient(globals());
  const poolJson = (p: Pool) => toJson(PoolSchema, p, { useProtoFieldName: true });
  const allocJson = (a: Allocation) => toJson(AllocationSchema, a, { useProtoFieldName: true });

  pool.command('list').description('list pools with their usage').action(async () => {
    const { pools } = await client().listPools({});
    print(globals(), { pools: pools.map(poolJson) }, () => table(
      ['POOL', 'PREFIX', 'MODE', 'AUTO', 'USED', 'FREE', 'QUARANTINED', 'UTIL', 'LAST HOUR'],
      pools.map((p) => [p.id, p.prefix, p.mode, p.autoAssign ? 'yes' : 'no', p.used, p.free, p.quarantined, pct(p.utilisation), String(p.allocationsLastHour)]),
    ));
  });

  pool.command('get <id>').description('show one pool').action(async (id: string) => {
    const { pool: p } = await client().getPool({ poolId: id });
    print(globals(), poolJson(p!), () => keyValues([
      ['id', p!.id], ['prefix', p!.prefix], ['description', p!.description], ['mode', `${p!.mode} (counts ${p!.unit}s)`],
      ['auto assign', p!.autoAssign ? 'yes' : 'no'], ['size', p!.size], ['used', p!.used], ['free', p!.free],
      ['quarantined', p!.quarantined], ['utilisation', pct(p!.utilisation)],
      ['rate limit', p!.rateLimited ? `${p!.rateLimit}/hour` : 'none'], ['allocations last hour', String(p!.allocationsLastHour)],
      ['reserved', p!.reserved.join(' ')], ['security profile', p!.securityProfile],
    ]));
  });

  pool.command('allocations').description('list allocations')
    .option('--pool <id>', 'only this pool')
    .option('--tenant <id>', 'only this tenant')
    .option('--vm <id>', 'only this VM')
    .option('--quarantined', 'include allocations in quarantine')
    .action(async (o) => {
      const { allocations } = await client().listAllocations({ poolId: o.pool ?? '', tenantId: o.tenant ?? '', vmId: o.vm ?? '', includeQuarantined: !!o.quarantined });
      print(globals(), { allocations: allocations.map(allocJson) }, () => table(
        ['PREFIX', 'ADDRESS', 'POOL', 'VM', 'NIC', 'TENANT', 'OWNER', 'ALLOCATED', 'QUARANTINED UNTIL'],
        allocations.map((a) => [a.prefix, a.address, a.poolId, a.vmId, a.nicId, a.tenantId, a.owner, ts(a.allocatedAt), ts(a.quarantinedUntil)]),
      ));
    });

  pool.command('allocate <pool>').description('allocate an address by hand (admin)')
    .requiredOption('--owner <text>', 'who holds it')
    .option('--address <addr>', 'a specific address (else the lowest free)')
    .option('--tenant <id>', 'tenant it is for')
    .option('--whole-prefix', 'a whole /64')
    .action(async (poolId: string, o) => {
      const { allocation } = await client().allocateAddress({ poolId, owner: o.owner, address: o.address ?? '', tenantId: o.tenant ?? '', wholePrefix: !!o.wholePrefix });
      print(globals(), allocJson(allocation!), () => `${allocation!.prefix} allocated to ${allocation!.owner}`);
    });

  pool.command('release <prefix>').description('release a manual allocation into quarantine (admin)').action(async (prefix: string) => {
    const { allocation } = await client().releaseAddress({ prefix });
    print(globals(), allocJson(allocation!), () => `${allocation!.prefix} released; quarantined until ${ts(allocation!.quarantinedUntil)}`);
  });
}
