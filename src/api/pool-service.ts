import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { ConnectRouter, HandlerContext } from '@connectrpc/connect';
import type { Ipam } from '../core/ipam/allocator.js';
import type { Allocation as AllocationRecord, PoolSpec } from '../core/ipam/types.js';
import { invalidArgument, MetaldError, notFound } from '../core/errors.js';
import { formatIpv6, parseInterface, parseIpv6 } from '../core/net/ipv6.js';
import type { Principal } from '../core/principal.js';
import { AllocationSchema, PoolSchema, PoolService, type Allocation, type Pool } from '../gen/vmprovisioner/v1/pool_pb.js';
import type { VmManager } from '../lifecycle/manager.js';
import type { Store } from '../store/store.js';
import type { RpcEnvelope } from './envelope.js';

// Pools and allocations. Reads are open to tenants (restricted to the pools
// they may use and to their own allocations); writes are admin only.

export function registerPoolService(
  router: ConnectRouter,
  deps: { manager: VmManager; store: Store; quarantineMs: number; now?: () => Date },
  envelope: RpcEnvelope,
): void {
  const now = deps.now ?? (() => new Date());
  const ipamOf = (): Ipam => {
    const ipam = deps.manager.ipam;
    if (!ipam) throw new MetaldError('failed_precondition', 'IPv6 is not enabled on this host (no pools are configured)');
    return ipam;
  };
  const wrap = <Req, Res>(method: string, fn: (req: Req, p: Principal) => Promise<Res>) =>
    (req: Req, ctx: HandlerContext): Promise<Res> =>
      envelope.run(method, ctx.requestHeader.get('authorization'), (p) => fn(req, p), ctx.requestHeader);
  const visible = (p: Principal, pool: PoolSpec) =>
    p.kind === 'admin' || pool.tenants.length === 0 || pool.tenants.includes(p.tenantId);
  const admin = (p: Principal, what: string) => {
    if (p.kind !== 'admin') throw new MetaldError('permission_denied', `${what} needs the admin role`);
  };
  const poolMsg = (ipam: Ipam, spec: PoolSpec): Pool => {
    const s = ipam.stats(spec.id, now());
    return create(PoolSchema, {
      id: spec.id,
      prefix: s.prefix,
      description: spec.description,
      mode: spec.mode,
      autoAssign: spec.autoAssign,
      reserved: spec.reserved.map(formatIpv6),
      securityProfile: spec.securityProfile ?? '',
      rateLimit: spec.rateLimit ?? 0,
      rateLimited: spec.rateLimit !== undefined,
      size: s.size.toString(),
      used: s.used.toString(),
      free: s.free.toString(),
      quarantined: s.quarantined.toString(),
      utilisation: s.utilisation,
      allocationsLastHour: s.allocationsLastHour,
      unit: spec.mode === 'prefix' ? '/64' : '/128',
    });
  };
  const allocMsg = (a: AllocationRecord): Allocation =>
    create(AllocationSchema, {
      prefix: a.prefix,
      address: a.address,
      poolId: a.poolId,
      kind: a.kind,
      vmId: a.vmId,
      nicId: a.nicId,
      tenantId: a.tenantId,
      owner: a.owner,
      allocatedAt: timestampFromDate(new Date(a.allocatedAt)),
      releasedAt: a.releasedAt ? timestampFromDate(new Date(a.releasedAt)) : undefined,
      quarantinedUntil: a.releasedAt ? timestampFromDate(new Date(Date.parse(a.releasedAt) + deps.quarantineMs)) : undefined,
    });
  const findPool = (ipam: Ipam, p: Principal, id: string): PoolSpec => {
    if (!id) throw invalidArgument('pool_id', 'required');
    const spec = ipam.pools().find((x) => x.id === id);
    if (!spec || !visible(p, spec)) throw notFound(`pool ${id}`);
    return spec;
  };

  router.service(PoolService, {
    listPools: wrap('ListPools', async (_req, p) => {
      const ipam = ipamOf();
      return { pools: ipam.pools().filter((s) => visible(p, s)).map((s) => poolMsg(ipam, s)) };
    }),
    getPool: wrap('GetPool', async (req, p) => {
      const ipam = ipamOf();
      return { pool: poolMsg(ipam, findPool(ipam, p, req.poolId)) };
    }),
    listAllocations: wrap('ListAllocations', async (req, p) => {
      const ipam = ipamOf();
      if (p.kind === 'tenant' && req.tenantId && req.tenantId !== p.tenantId) {
        throw new MetaldError('permission_denied', 'a tenant may only list its own allocations', 'tenant_id');
      }
      if (req.poolId) findPool(ipam, p, req.poolId);
      const list = ipam.list({
        poolId: req.poolId || undefined,
        tenantId: p.kind === 'tenant' ? p.tenantId : req.tenantId || undefined,
        vmId: req.vmId || undefined,
        includeQuarantined: req.includeQuarantined,
      });
      return { allocations: list.map(allocMsg) };
    }),
    allocateAddress: wrap('AllocateAddress', async (req, p) => {
      admin(p, 'AllocateAddress');
      const ipam = ipamOf();
      findPool(ipam, p, req.poolId);
      if (!req.owner.trim()) throw invalidArgument('owner', 'required: say who holds the address');
      let address: { address: bigint; length: number } | undefined;
      if (req.address) {
        try {
          address = req.address.includes('/') ? parseInterface(req.address) : { address: parseIpv6(req.address), length: 128 };
        } catch {
          throw invalidArgument('address', `${JSON.stringify(req.address)} is not an IPv6 address`);
        }
      }
      const allocation = await deps.manager.withAllocationLock(async () => {
        deps.manager.collectExpired(now());
        const a = ipam.allocate({ tenantId: req.tenantId, vmId: '', nicId: '', owner: req.owner, field: 'request', poolId: req.poolId, address, wholePrefix: req.wholePrefix }, now());
        try {
          await deps.manager.commitAllocations([{ op: 'putAllocation', allocation: a, create: true }]);
        } catch (err) {
          ipam.unreserve(a.key);
          throw err;
        }
        return a;
      }).catch(stripRequestField);
      return { allocation: allocMsg(allocation) };
    }),
    releaseAddress: wrap('ReleaseAddress', async (req, p) => {
      admin(p, 'ReleaseAddress');
      const ipam = ipamOf();
      if (!req.prefix) throw invalidArgument('prefix', 'required');
      const found = ipam.get(req.prefix) ?? ipam.list({ includeQuarantined: true }).find((a) => a.address === req.prefix || a.prefix === req.prefix);
      if (!found) throw notFound(`allocation ${req.prefix}`);
      if (found.vmId) {
        throw new MetaldError('failed_precondition', `${found.prefix} belongs to VM ${found.vmId}; it is released when the VM is deleted`, 'prefix');
      }
      if (found.releasedAt) throw new MetaldError('failed_precondition', `${found.prefix} is already released (in quarantine)`, 'prefix');
      const released = await deps.manager.withAllocationLock(async () => {
        const r = ipam.release(found.key, now());
        await deps.manager.commitAllocations([{ op: 'putAllocation', allocation: r, create: false }]);
        return r;
      });
      return { allocation: allocMsg(released) };
    }),
  });
}

/** IPAM names fields of a VM NIC ("<field>.address"); here they are top-level request fields. */
function stripRequestField(err: unknown): never {
  if (err instanceof MetaldError && err.field?.startsWith('request.')) {
    throw new MetaldError(err.kind, err.message.slice(err.field.length + 2), err.field.slice('request.'.length), err.detail);
  }
  throw err;
}
