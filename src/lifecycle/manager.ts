import { fromJson, toJson } from '@bufbuild/protobuf';
import type { BackendHandle, BackendVmSpec, VmBackend } from '../backends/backend.js';
import { invalidArgument, MetaldError, notFound, resourceExhausted } from '../core/errors.js';
import { canSee, type Principal } from '../core/principal.js';
import { deriveMac, generateVmId, hostDeviceName, validateVmId } from '../core/vm/ids.js';
import type { NicRecord, VmRecord, VmStateName } from '../core/vm/record.js';
import { assertOperation, assertTransition, type VmOperation } from '../core/vm/state.js';
import { planCreate, type ValidationContext } from '../core/vm/validate.js';
import { VmConfigSchema, type VmConfig } from '../gen/vmprovisioner/v1/vm_pb.js';
import type { NetworkPlane } from '../network/plane.js';
import { VM_PORTS_PER_CONFIGURED_BRIDGE } from '../network/shards.js';
import type { Store, VmQuery } from '../store/store.js';
import { KeyedMutex } from './keyed-mutex.js';
import { assignAddresses } from './addressing.js';
import { guestNetworkDocument, type GuestDns } from '../core/guest/network-config.js';
import type { Ipam } from '../core/ipam/allocator.js';
import type { BridgeSubnet } from '../core/ipam/types.js';
import type { Mutation } from '../store/store.js';
import { annotate, inSpan, inSpanSync } from '../observability/spans.js';

/** Not a valid VM id, so it can never collide with one. */
const CAPACITY_KEY = '#capacity';
/**
 * VM ports one configured bridge takes. The kernel's limit is 1023 per Linux
 * bridge; the network plane shards a configured bridge transparently past it
 * (decision 0020), so the limit here is the shards' total.
 */
export const MAX_BRIDGE_PORTS = VM_PORTS_PER_CONFIGURED_BRIDGE;

export interface ManagerOptions {
  instanceName: string;
  /** Address manager; undefined when the host has no IPv6 pools. */
  ipam?: Ipam;
  /** Bridges' on-link subnets (gateways for NICs on them). */
  bridgeSubnets?: BridgeSubnet[];
  /** Routed attachments (config bridges with mode: routed): /128 or /64 with gateway fe80::1. */
  routedAttachments?: string[];
  /** DNS settings handed to guests (ipv6.dns). */
  guestDns?: GuestDns;
  maxVms: number;
  /** VM ports per configured bridge; default MAX_BRIDGE_PORTS (tests lower it). */
  maxBridgePorts?: number;
  defaultShutdownTimeoutMs: number;
  validation: ValidationContext;
  now?: () => Date;
}

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/**
 * The VM lifecycle: validates, records every step durably before and after
 * touching the backend and the network plane, and serialises calls per VM.
 */
export class VmManager {
  private readonly lock = new KeyedMutex();
  private readonly usedHostDevices = new Set<string>();
  /** MACs in use: a copied MAC would let one VM take another's traffic on a shared bridge. */
  private readonly usedMacs = new Set<string>();
  private readonly staleAllocationRows = new Set<string>();
  /** VM ports per configured bridge (all its shards together). */
  private readonly bridgePorts = new Map<string, number>();
  private readonly now: () => Date;

  constructor(
    private readonly store: Store,
    private readonly backend: VmBackend,
    private readonly network: NetworkPlane,
    private readonly opts: ManagerOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /** Index host device names already in use (call once after recovery). */
  async loadIndexes(): Promise<void> {
    this.usedHostDevices.clear();
    this.usedMacs.clear();
    this.bridgePorts.clear();
    const { vms } = await this.store.listVms({});
    for (const vm of vms) {
      for (const n of vm.nics) {
        this.usedHostDevices.add(n.hostDevice);
        this.usedMacs.add(n.mac);
      }
      this.countPorts(vm, 1);
    }
  }

  async create(principal: Principal, requestedId: string, config: VmConfig | undefined): Promise<VmRecord> {
    return (await this.createWithWarnings(principal, requestedId, config)).vm;
  }

  /** create(), and what the caller should be told about the accepted request (rule lists that do less than they say). */
  async createWithWarnings(principal: Principal, requestedId: string, config: VmConfig | undefined): Promise<{ vm: VmRecord; warnings: string[] }> {
    const { id, plan } = inSpanSync('validate', {}, () => {
      const id = requestedId ? validateVmId(requestedId) : generateVmId();
      if (principal.kind === 'tenant' && config && config.tenantId === '') config.tenantId = principal.tenantId;
      const plan = planCreate(config, this.opts.validation);
      if (principal.kind === 'tenant' && plan.tenantId !== principal.tenantId) {
        throw new MetaldError('permission_denied', `tenant ${principal.tenantId} may not create VMs for tenant ${plan.tenantId}`, 'config.tenant_id');
      }
      return { id, plan };
    });
    annotate({ vm_id: id, tenant_id: plan.tenantId });
    const vm = await this.lock.run(id, async () => {
      if (await this.store.getVm(id)) throw new MetaldError('already_exists', `VM ${id} already exists`, 'vm_id');
      return this.createLocked(id, plan, config!);
    });
    const warnings = plan.nics.flatMap((n) => n.policy.warnings);
    if (warnings.length) this.log.warn({ vm_id: id, tenant_id: vm.tenantId, warnings }, 'VM created with warnings');
    return { vm, warnings };
  }

  private async createLocked(id: string, plan: ReturnType<typeof planCreate>, config: VmConfig): Promise<VmRecord> {
    const ts = this.now();
    let vm: VmRecord = {
      id,
      tenantId: plan.tenantId,
      state: 'creating',
      isolated: false,
      isolationReason: '',
      isolatedAt: null,
      config: toJson(VmConfigSchema, config, { useProtoFieldName: true }) as VmRecord['config'],
      backend: this.backend.name,
      backendState: {},
      failureReason: '',
      nics: [],
      createdAt: ts.toISOString(),
      updatedAt: ts.toISOString(),
      revision: 1,
    };
    // Recorded, with its addresses, before any kernel work: a crash from here
    // on is found and rolled back by recovery. Capacity check, address
    // allocation and insert are one critical section across all VMs so
    // concurrent creates can overshoot neither max_vms nor a pool.
    await inSpan('ipam.allocate', { vm_id: id, nic_count: plan.nics.length }, () => this.lock.run(CAPACITY_KEY, async () => {
      const count = await this.store.countVms();
      if (count >= this.opts.maxVms) {
        throw resourceExhausted(`max_vms (${this.opts.maxVms}) reached`, { limit: this.opts.maxVms });
      }
      plan.nics.forEach((n, i) => {
        if (n.mac && (this.usedMacs.has(n.mac) || plan.nics.some((m, j) => j < i && m.mac === n.mac))) {
          throw new MetaldError('already_exists', `${n.mac} is already in use`, `config.network[${i}].mac_address`);
        }
        const ports = (this.bridgePorts.get(n.bridge) ?? 0) + plan.nics.slice(0, i).filter((m) => m.bridge === n.bridge).length;
        const limit = this.opts.maxBridgePorts ?? MAX_BRIDGE_PORTS;
        if (n.bridge && ports >= limit) {
          throw new MetaldError('resource_exhausted', `bridge ${n.bridge} has ${limit} VM ports, the most one configured bridge takes with all its shards; attach the NIC to another bridge`, `config.network[${i}].bridge_name`);
        }
      });
      this.collectExpired(ts);
      const { allocations, addressing } = assignAddresses(this.opts.ipam, this.opts.bridgeSubnets ?? [], plan.nics, { vmId: id, tenantId: plan.tenantId }, ts, this.opts.routedAttachments);
      vm = {
        ...vm,
        nics: plan.nics.map((n, i) => ({
          id: n.id,
          hostDevice: this.claimHostDevice(id, n.id),
          mac: n.mac || deriveMac(this.opts.instanceName, id, n.id),
          bridge: n.bridge,
          vlanId: n.vlanId,
          ...addressing[i]!,
        })),
      };
      try {
        await this.commitAllocations([
          { op: 'putVm', vm },
          ...allocations.map((allocation): Mutation => ({ op: 'putAllocation', allocation, create: true })),
        ]);
        this.countPorts(vm, 1);
        for (const n of vm.nics) this.usedMacs.add(n.mac);
      } catch (err) {
        for (const a of allocations) this.opts.ipam?.unreserve(a.key);
        for (const n of vm.nics) this.usedHostDevices.delete(n.hostDevice);
        throw err;
      }
      annotate({ ipv6_addresses: vm.nics.map((n) => n.ipv6Address).filter(Boolean) });
    }));
    let handle: BackendHandle | undefined;
    try {
      handle = await inSpan('backend.create', { vm_id: id, backend: this.backend.name }, () => this.backend.create(this.specOf(vm)));
      await this.network.ensureVm(vm);
      vm = await this.write(vm, { state: 'created', backendState: handle });
      this.log.info({ vm_id: id, tenant_id: vm.tenantId }, 'vm created');
      return vm;
    } catch (err) {
      await inSpan('rollback', { vm_id: id }, () => this.rollbackCreate(vm, handle)).catch((e) =>
        this.log.error({ vm_id: id, err: String(e) }, 'rollback of failed create incomplete; recovery will retry'),
      );
      throw err;
    }
  }

  /** Undo a create that did not finish: no tap, rule, address or row remains. */
  async rollbackCreate(vm: VmRecord, handle: BackendHandle | undefined): Promise<void> {
    await this.network.removeVm(vm);
    await this.backend.delete(vm.id, handle ?? vm.backendState);
    // Never reached a running guest: the addresses go back without quarantine.
    await this.lock.run(CAPACITY_KEY, async () => {
      const allocs = this.opts.ipam?.ofVm(vm.id) ?? [];
      await this.commitAllocations([
        { op: 'deleteVm', id: vm.id },
        ...allocs.map((a): Mutation => ({ op: 'deleteAllocation', key: a.key })),
      ]);
      for (const a of allocs) this.opts.ipam!.unreserve(a.key);
    });
    this.countPorts(vm, -1);
    for (const n of vm.nics) {
      this.usedHostDevices.delete(n.hostDevice);
      this.usedMacs.delete(n.mac);
    }
  }

  /**
   * IPAM forgets allocations whose quarantine is over as soon as they are
   * due, and may hand the key out again at once; their store rows must be
   * gone no later than the commit that re-uses the key. Call under the
   * allocation lock, before allocating.
   */
  collectExpired(now: Date): void {
    for (const key of this.opts.ipam?.expire(now) ?? []) this.staleAllocationRows.add(key);
  }

  /** Commit allocation changes together with the deletion of expired rows (under the allocation lock). */
  async commitAllocations(mutations: Mutation[]): Promise<void> {
    const deletes = [...this.staleAllocationRows].map((key): Mutation => ({ op: 'deleteAllocation', key }));
    await this.store.commit([...deletes, ...mutations]);
    this.staleAllocationRows.clear();
  }

  /** Drop allocations whose quarantine is over (periodic). */
  async expireQuarantine(): Promise<number> {
    if (!this.opts.ipam) return 0;
    return this.lock.run(CAPACITY_KEY, async () => {
      this.collectExpired(this.now());
      const n = this.staleAllocationRows.size;
      if (n) await this.commitAllocations([]);
      return n;
    });
  }

  private countPorts(vm: VmRecord, d: 1 | -1): void {
    for (const n of vm.nics) if (n.bridge) this.bridgePorts.set(n.bridge, Math.max(0, (this.bridgePorts.get(n.bridge) ?? 0) + d));
  }

  private claimHostDevice(vmId: string, nicId: string): string {
    for (let salt = 0; ; salt++) {
      const name = hostDeviceName(this.opts.instanceName, vmId, nicId, salt);
      if (!this.usedHostDevices.has(name)) {
        this.usedHostDevices.add(name);
        return name;
      }
    }
  }

  specOf(vm: VmRecord): BackendVmSpec {
    const config = this.configOf(vm);
    return {
      id: vm.id,
      vcpuCount: config.cpu?.vcpuCount || 1,
      memoryBytes: config.memory?.sizeBytes || 128n * 1024n * 1024n,
      kernelPath: config.boot?.kernelPath ?? '',
      kernelArgs: config.boot?.kernelArgs ?? '',
      initrdPath: config.boot?.initrdPath ?? '',
      drives: config.storage.map((d, i) => ({ id: d.id || `drive${i}`, path: d.path, readOnly: d.readOnly, isRoot: d.isRootDevice })),
      nics: vm.nics.map((n) => ({
        id: n.id,
        hostDevice: n.hostDevice,
        mac: n.mac,
        mtu: this.opts.validation.bridges.find((b) => b.name === n.bridge)?.mtu ?? 1500,
        ipv6Address: n.ipv6Address,
        ipv6Gateway: n.ipv6Gateway,
      })),
      guest: guestNetworkDocument(vm, this.opts.guestDns ?? { servers: [], dnssec: false, dnsOverTls: false }),
    };
  }

  configOf(vm: VmRecord): VmConfig {
    return fromJson(VmConfigSchema, vm.config, { ignoreUnknownFields: true });
  }

  get ipam(): Ipam | undefined {
    return this.opts.ipam;
  }

  /** Run fn inside the section that serialises capacity and address allocation. */
  withAllocationLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(CAPACITY_KEY, fn);
  }

  async get(principal: Principal, id: string): Promise<VmRecord> {
    validateVmId(id);
    const vm = await this.store.getVm(id);
    if (!vm || !canSee(principal, vm.tenantId)) throw notFound(`VM ${id}`);
    return vm;
  }

  async list(principal: Principal, q: { tenantId?: string; states?: VmStateName[]; afterId?: string; limit: number }) {
    const query: VmQuery = { states: q.states, afterId: q.afterId, limit: q.limit };
    if (principal.kind === 'tenant') {
      if (q.tenantId && q.tenantId !== principal.tenantId) {
        throw new MetaldError('permission_denied', 'a tenant may only list its own VMs', 'tenant_id');
      }
      query.tenantId = principal.tenantId;
    } else if (q.tenantId) query.tenantId = q.tenantId;
    return this.store.listVms(query);
  }

  boot(p: Principal, id: string) {
    return this.step(p, id, 'boot', async (vm) => {
      vm = await this.write(vm, { state: 'booting', failureReason: '' });
      const handle = await this.failOnError(vm, 'boot', () => this.backend.boot(this.specOf(vm), vm.backendState));
      return this.write(vm, { state: 'running', backendState: handle });
    });
  }

  shutdown(p: Principal, id: string, force: boolean, timeoutMs: number) {
    return this.step(p, id, 'shutdown', async (vm) => {
      vm = await this.write(vm, { state: 'shutting_down' });
      const t = timeoutMs || this.opts.defaultShutdownTimeoutMs;
      const handle = await this.failOnError(vm, 'shutdown', () => this.backend.shutdown(vm.backendState, { force, timeoutMs: t }));
      return this.write(vm, { state: 'shutdown', backendState: handle });
    });
  }

  pause(p: Principal, id: string) {
    return this.step(p, id, 'pause', async (vm) =>
      this.write(vm, { state: 'paused', backendState: await this.backendStep(vm, 'pause', () => this.backend.pause(vm.backendState)) }));
  }

  resume(p: Principal, id: string) {
    return this.step(p, id, 'resume', async (vm) =>
      this.write(vm, { state: 'running', backendState: await this.backendStep(vm, 'resume', () => this.backend.resume(vm.backendState)) }));
  }

  reboot(p: Principal, id: string, force: boolean) {
    return this.step(p, id, 'reboot', async (vm) => {
      vm = await this.write(vm, { state: 'booting' });
      const handle = await this.failOnError(vm, 'reboot', () =>
        this.backend.reboot(this.specOf(vm), vm.backendState, { force, timeoutMs: this.opts.defaultShutdownTimeoutMs }));
      return this.write(vm, { state: 'running', backendState: handle });
    });
  }

  delete(p: Principal, id: string) {
    return this.step(p, id, 'delete', async (vm) => {
      vm = await this.write(vm, { state: 'deleting' });
      await this.finishDelete(vm);
      return vm;
    });
  }

  /** Used by delete and by recovery of an interrupted delete. */
  async finishDelete(vm: VmRecord): Promise<void> {
    await this.network.removeVm(vm);
    await this.backendStep(vm, 'delete', () => this.backend.delete(vm.id, vm.backendState));
    // Addresses enter quarantine in the same commit that removes the VM.
    const ipam = this.opts.ipam;
    await inSpan('ipam.release', { vm_id: vm.id }, () => this.lock.run(CAPACITY_KEY, async () => {
      const now = this.now();
      const released = (ipam?.ofVm(vm.id) ?? []).filter((a) => !a.releasedAt).map((a) => ipam!.release(a.key, now));
      await this.commitAllocations([
        { op: 'deleteVm', id: vm.id },
        ...released.map((allocation): Mutation => ({ op: 'putAllocation', allocation, create: false })),
      ]);
    }));
    this.countPorts(vm, -1);
    for (const n of vm.nics) {
      this.usedHostDevices.delete(n.hostDevice);
      this.usedMacs.delete(n.mac);
    }
    this.log.info({ vm_id: vm.id, tenant_id: vm.tenantId }, 'vm deleted');
  }

  isolate(p: Principal, id: string, reason: string) {
    return this.step(p, id, 'isolate', async (vm) => {
      if (reason.length > 1024) throw invalidArgument('reason', 'longer than 1024 characters');
      if (vm.isolated) {
        // Already isolated (e.g. the guide's incident script after metald's own response): keep why, when and
        // by whom unless a reason is given; an administrator's call makes it an administrator's isolation.
        const by = vm.isolatedBy === 'admin' || p.kind === 'admin' ? 'admin' : 'tenant';
        if (reason || by !== vm.isolatedBy) vm = await this.write(vm, { isolationReason: reason || vm.isolationReason, isolatedBy: by });
        await this.network.applyIsolation(vm);
        return vm;
      }
      // Durable intent first: if enforcing fails, reconcile keeps retrying it.
      vm = await this.write(vm, { isolated: true, isolationReason: reason || 'unspecified', isolatedAt: this.now().toISOString(), isolatedBy: p.kind });
      await this.network.applyIsolation(vm);
      this.log.warn({ vm_id: id, tenant_id: vm.tenantId, reason: vm.isolationReason, security_event: 'vm_isolated' }, 'vm isolated');
      return vm;
    });
  }

  unisolate(p: Principal, id: string) {
    return this.step(p, id, 'unisolate', async (vm) => {
      if (vm.isolated && vm.isolatedBy === 'admin' && p.kind !== 'admin') {
        throw new MetaldError('permission_denied', `VM ${id} was isolated by an administrator; only an administrator can lift it`);
      }
      vm = await this.write(vm, { isolated: false, isolationReason: '', isolatedAt: null, isolatedBy: undefined });
      await this.network.applyIsolation(vm);
      this.log.warn({ vm_id: id, tenant_id: vm.tenantId, security_event: 'vm_unisolated' }, 'vm unisolated');
      return vm;
    });
  }

  private step(p: Principal, id: string, op: VmOperation, fn: (vm: VmRecord) => Promise<VmRecord>): Promise<VmRecord> {
    validateVmId(id);
    annotate({ vm_id: id });
    return this.lock.run(id, async () => {
      const vm = await this.get(p, id);
      annotate({ tenant_id: vm.tenantId });
      assertOperation(id, op, vm.state);
      return fn(vm);
    });
  }

  /** A call to the backend, in its own span. */
  private backendStep<T>(vm: VmRecord, op: string, fn: () => Promise<T>): Promise<T> {
    return inSpan(`backend.${op}`, { vm_id: vm.id, backend: this.backend.name }, fn);
  }

  /** Runs a backend step; a failure leaves the VM FAILED with the reason, then rethrows. */
  private async failOnError<T>(vm: VmRecord, op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await this.backendStep(vm, op, fn);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      await this.write(vm, { state: 'failed', failureReason: reason.slice(0, 2000) });
      throw new MetaldError('internal', `backend failed: ${reason}`);
    }
  }

  /** Commit a new revision of the VM (durable before returning). */
  async write(vm: VmRecord, patch: Partial<VmRecord>): Promise<VmRecord> {
    if (patch.state && patch.state !== vm.state) assertTransition(vm.id, vm.state, patch.state);
    const next: VmRecord = { ...vm, ...patch, revision: vm.revision + 1, updatedAt: this.now().toISOString() };
    await this.store.commit([{ op: 'putVm', vm: next }]);
    return next;
  }

  /** Run fn under the VM's lock (recovery and reconcile use it too). */
  withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.lock.run(id, fn);
  }
}

