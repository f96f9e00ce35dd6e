import { create, fromJson } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { VM_STATES, type VmRecord, type VmStateName } from '../core/vm/record.js';
import { invalidArgument } from '../core/errors.js';
import { VM_ID_PATTERN } from '../core/vm/ids.js';
import {
  NetworkInterfaceStatusSchema,
  VmConfigSchema,
  VmInfoSchema,
  VmState,
  type VmInfo,
} from '../gen/vmprovisioner/v1/vm_pb.js';

// Between stored records and wire messages. The config is stored as the
// protobuf JSON it arrived as, so GetVmInfo returns every field as given.

const TO_PROTO: Record<VmStateName, VmState> = {
  creating: VmState.CREATING,
  created: VmState.CREATED,
  booting: VmState.BOOTING,
  running: VmState.RUNNING,
  paused: VmState.PAUSED,
  shutting_down: VmState.SHUTTING_DOWN,
  shutdown: VmState.SHUTDOWN,
  failed: VmState.FAILED,
  deleting: VmState.DELETING,
};

export function stateToProto(s: VmStateName): VmState {
  return TO_PROTO[s];
}

export function stateFromProto(s: VmState, field: string): VmStateName {
  const found = VM_STATES.find((name) => TO_PROTO[name] === s);
  if (!found) throw invalidArgument(field, `${s} is not a VM state`);
  return found;
}

export function toVmInfo(vm: VmRecord): VmInfo {
  return create(VmInfoSchema, {
    vmId: vm.id,
    state: TO_PROTO[vm.state],
    config: fromJson(VmConfigSchema, vm.config, { ignoreUnknownFields: true }),
    tenantId: vm.tenantId,
    isolated: vm.isolated,
    isolationReason: vm.isolationReason,
    isolatedAt: vm.isolatedAt ? timestampFromDate(new Date(vm.isolatedAt)) : undefined,
    createdAt: timestampFromDate(new Date(vm.createdAt)),
    updatedAt: timestampFromDate(new Date(vm.updatedAt)),
    backend: vm.backend,
    failureReason: vm.failureReason,
    networkStatus: vm.nics.map((n) =>
      create(NetworkInterfaceStatusSchema, {
        id: n.id,
        hostDevice: n.hostDevice,
        macAddress: n.mac,
        ipv6Address: n.ipv6Address,
        ipv6Gateway: n.ipv6Gateway,
      }),
    ),
  });
}

/** Page tokens are opaque to clients: the last id of the page, base64url. */
export function encodePageToken(lastId: string): string {
  return Buffer.from(`v1:${lastId}`).toString('base64url');
}

export function decodePageToken(token: string): string | undefined {
  if (!token) return undefined;
  const raw = Buffer.from(token, 'base64url').toString('utf8');
  const id = raw.startsWith('v1:') ? raw.slice(3) : '';
  if (!VM_ID_PATTERN.test(id)) throw invalidArgument('page_token', 'is not a token returned by ListVms');
  return id;
}
