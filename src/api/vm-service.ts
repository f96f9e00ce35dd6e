import type { ConnectRouter, HandlerContext } from '@connectrpc/connect';
import { invalidArgument, MetaldError } from '../core/errors.js';
import type { Principal } from '../core/principal.js';
import { VmService } from '../gen/vmprovisioner/v1/vm_pb.js';
import type { VmManager } from '../lifecycle/manager.js';
import { stateToProto, toVmInfo } from './convert.js';
import type { RpcEnvelope } from './envelope.js';
import { VmReads } from './vm-reads.js';

/** Told about CreateVm calls refused for their security settings (security events). */
export interface PolicyAudit {
  policyRefused(r: { principal: Principal; vmId: string; tenantId: string; field: string; message: string }): void;
}

/** Request fields whose refusal is a refused security policy, not a typo in a size. */
const POLICY_FIELD = /(^|\.)(security_policy|security_profile|security)(\.|\[|$)/;

export function registerVmService(router: ConnectRouter, manager: VmManager, envelope: RpcEnvelope, audit?: PolicyAudit): void {
  const reads = new VmReads(manager);
  const wrap = <Req, Res>(method: string, fn: (req: Req, p: Principal) => Promise<Res>) =>
    (req: Req, ctx: HandlerContext): Promise<Res> =>
      envelope.run(method, ctx.requestHeader.get('authorization'), (p) => fn(req, p), ctx.requestHeader);

  router.service(VmService, {
    createVm: wrap('CreateVm', async (req, p) => {
      try {
        const { vm, warnings } = await manager.createWithWarnings(p, req.vmId, req.config);
        return { vmId: vm.id, state: stateToProto(vm.state), vm: toVmInfo(vm), warnings };
      } catch (err) {
        if (audit && err instanceof MetaldError && err.kind === 'invalid_argument' && POLICY_FIELD.test(err.field ?? '')) {
          // A tenant's refusal is its own, whatever tenant_id it wrote (it must not show up in another's events).
          const tenantId = p.kind === 'tenant' ? p.tenantId : (req.config?.tenantId ?? '');
          audit.policyRefused({ principal: p, vmId: req.vmId, tenantId, field: err.field!, message: err.message });
        }
        throw err;
      }
    }),
    bootVm: wrap('BootVm', async (req, p) => {
      const vm = await manager.boot(p, req.vmId);
      return { success: true, state: stateToProto(vm.state) };
    }),
    shutdownVm: wrap('ShutdownVm', async (req, p) => {
      if (req.timeoutSeconds > 3600) throw invalidArgument('timeout_seconds', 'at most 3600');
      const vm = await manager.shutdown(p, req.vmId, req.force, req.timeoutSeconds * 1000);
      return { success: true, state: stateToProto(vm.state) };
    }),
    pauseVm: wrap('PauseVm', async (req, p) => {
      const vm = await manager.pause(p, req.vmId);
      return { success: true, state: stateToProto(vm.state) };
    }),
    resumeVm: wrap('ResumeVm', async (req, p) => {
      const vm = await manager.resume(p, req.vmId);
      return { success: true, state: stateToProto(vm.state) };
    }),
    rebootVm: wrap('RebootVm', async (req, p) => {
      const vm = await manager.reboot(p, req.vmId, req.force);
      return { success: true, state: stateToProto(vm.state) };
    }),
    deleteVm: wrap('DeleteVm', async (req, p) => {
      await manager.delete(p, req.vmId);
      return { success: true };
    }),
    getVmInfo: wrap('GetVmInfo', async (req, p) => ({ vm: toVmInfo(await reads.get(p, req.vmId)) })),
    listVms: wrap('ListVms', async (req, p) => {
      const r = await reads.list(p, req);
      return { vms: r.vms.map(toVmInfo), nextPageToken: r.nextPageToken, totalCount: r.totalCount };
    }),
    isolateVm: wrap('IsolateVm', async (req, p) => {
      const vm = await manager.isolate(p, req.vmId, req.reason);
      return { success: true, isolated: vm.isolated, state: stateToProto(vm.state) };
    }),
    unisolateVm: wrap('UnisolateVm', async (req, p) => {
      const vm = await manager.unisolate(p, req.vmId);
      return { success: true, isolated: vm.isolated, state: stateToProto(vm.state) };
    }),
  });
}
