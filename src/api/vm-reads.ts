import { invalidArgument } from '../core/errors.js';
import type { Principal } from '../core/principal.js';
import type { VmRecord } from '../core/vm/record.js';
import type { VmState } from '../gen/vmprovisioner/v1/vm_pb.js';
import type { VmManager } from '../lifecycle/manager.js';
import { decodePageToken, encodePageToken, stateFromProto } from './convert.js';

// GetVmInfo and ListVms in terms of records, shared by the Connect handlers
// and the JSON fast path so both answer the same thing.

const MAX_PAGE = 1000;
const DEFAULT_PAGE = 100;

export interface ListRequest {
  stateFilter: VmState[];
  pageSize: number;
  pageToken: string;
  tenantId: string;
}

export interface ListResult {
  vms: VmRecord[];
  nextPageToken: string;
  totalCount: number;
}

export class VmReads {
  constructor(private readonly manager: VmManager) {}

  get(p: Principal, vmId: string): Promise<VmRecord> {
    return this.manager.get(p, vmId);
  }

  async list(p: Principal, req: ListRequest): Promise<ListResult> {
    if (req.pageSize > MAX_PAGE) throw invalidArgument('page_size', `at most ${MAX_PAGE}`);
    const limit = req.pageSize || DEFAULT_PAGE;
    const states = req.stateFilter.map((s, i) => stateFromProto(s, `state_filter[${i}]`));
    const page = await this.manager.list(p, {
      tenantId: req.tenantId || undefined,
      states: states.length ? states : undefined,
      afterId: decodePageToken(req.pageToken),
      limit: limit + 1,
    });
    const more = page.vms.length > limit;
    const vms = more ? page.vms.slice(0, limit) : page.vms;
    return { vms, nextPageToken: more ? encodePageToken(vms[vms.length - 1]!.id) : '', totalCount: page.total };
  }
}
