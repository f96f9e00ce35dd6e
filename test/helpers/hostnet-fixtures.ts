import type { NicRecord, VmRecord, VmStateName } from '../../src/core/vm/record.js';
import type { BridgeSpec } from '../../src/network/desired.js';

// Small factories for the host-networking tests and the netsetup bench.

export function bridge(name: string, over: Partial<BridgeSpec> = {}): BridgeSpec {
  return {
    name, mtu: 1500, stp: false, forwardDelaySec: 15, mldSnooping: true, querier: true, ageingTimeSec: 30, addresses: [],
    ...over,
  };
}

export interface NicInput {
  hostDevice: string;
  bridge: string;
  /** "addr/len" or "" */
  address?: string;
  gateway?: string;
  id?: string;
  mac?: string;
}

export function nicRecord(n: NicInput): NicRecord {
  return {
    id: n.id ?? 'eth0', hostDevice: n.hostDevice, mac: n.mac ?? '52:54:00:00:00:01', bridge: n.bridge, vlanId: null,
    ipv6Address: n.address ?? '', ipv6Gateway: n.gateway ?? '', ipv6Allocation: '',
  };
}

export function vmRecord(id: string, nics: NicInput[], state: VmStateName = 'running'): VmRecord {
  return {
    id, tenantId: 't1', state, isolated: false, isolationReason: '', isolatedAt: null, config: {}, backend: 'sandbox',
    backendState: {}, failureReason: '', nics: nics.map(nicRecord), createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z', revision: 1,
  };
}
