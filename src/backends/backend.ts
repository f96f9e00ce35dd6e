import type { GuestNetworkDocument } from '../core/guest/network-config.js';
import type { Json } from '../core/vm/record.js';

/** Opaque, JSON-serialisable state a backend keeps per VM (stored with the VM). */
export type BackendHandle = { [k: string]: Json };

export interface BackendNicSpec {
  /** NIC id from the request; the guest-side interface name for sandbox VMs. */
  id: string;
  /** Host-side device name (<= 15 chars, validated). */
  hostDevice: string;
  mac: string;
  mtu: number;
  /** "addr/len" or "" */
  ipv6Address: string;
  ipv6Gateway: string;
}

export interface BackendVmSpec {
  id: string;
  vcpuCount: number;
  memoryBytes: bigint;
  kernelPath: string;
  kernelArgs: string;
  initrdPath: string;
  drives: { id: string; path: string; readOnly: boolean; isRoot: boolean }[];
  nics: BackendNicSpec[];
  /** What the guest is told about its network (MMDS document; kernel args derive from it). */
  guest?: GuestNetworkDocument;
}

/** What the backend sees of a VM's process right now. */
export type BackendStatus = 'running' | 'paused' | 'stopped' | 'absent';

export interface ShutdownOptions {
  force: boolean;
  timeoutMs: number;
}

/**
 * A VMM. Every method is idempotent and safe to retry after a crash: the
 * daemon's reconciler calls them again with the stored handle.
 */
export interface VmBackend {
  readonly name: string;
  /** Kind of host NIC this VMM attaches to. */
  readonly nicKind: 'tap' | 'veth';
  /** Allocate everything the VM needs short of running it. Cleans up after itself on failure. */
  create(spec: BackendVmSpec): Promise<BackendHandle>;
  boot(spec: BackendVmSpec, handle: BackendHandle): Promise<BackendHandle>;
  shutdown(handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle>;
  pause(handle: BackendHandle): Promise<BackendHandle>;
  resume(handle: BackendHandle): Promise<BackendHandle>;
  reboot(spec: BackendVmSpec, handle: BackendHandle, opts: ShutdownOptions): Promise<BackendHandle>;
  /** Remove every trace of the VM; must succeed on a half-created VM and on one already gone. */
  delete(vmId: string, handle: BackendHandle | undefined): Promise<void>;
  status(handle: BackendHandle): Promise<BackendStatus>;
  /** Ids of VMs the backend has host artifacts for (namespaces, processes, jails): finds orphans. */
  listResidues(): Promise<string[]>;
  /** Called once at daemon start (e.g. create the data-plane namespace) and stop. */
  start(): Promise<void>;
  stop(): Promise<void>;
}
