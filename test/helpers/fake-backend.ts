import type { BackendHandle, BackendStatus, BackendVmSpec, ShutdownOptions, VmBackend } from '../../src/backends/backend.js';

/**
 * In-memory VMM for tests of the lifecycle and API layers (the real
 * sandbox backend is exercised by the integration tests). Failures can be
 * injected per operation.
 */
export class FakeBackend implements VmBackend {
  readonly name = 'fake';
  readonly nicKind = 'veth' as const;
  readonly vms = new Map<string, BackendStatus>();
  readonly calls: string[] = [];
  /** When each call ran: [start, end] in ms since epoch, keyed like `calls`. */
  readonly spans = new Map<string, [number, number]>();
  failNext = new Map<string, Error>();
  delayMs = 0;

  private async op(name: string, id: string): Promise<void> {
    this.calls.push(`${name}:${id}`);
    const start = Date.now();
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.spans.set(`${name}:${id}`, [start, Date.now()]);
    const err = this.failNext.get(name);
    if (err) {
      this.failNext.delete(name);
      throw err;
    }
  }

  async create(spec: BackendVmSpec): Promise<BackendHandle> {
    await this.op('create', spec.id);
    this.vms.set(spec.id, 'stopped');
    return { id: spec.id };
  }
  async boot(spec: BackendVmSpec, h: BackendHandle): Promise<BackendHandle> {
    await this.op('boot', spec.id);
    this.vms.set(spec.id, 'running');
    return { ...h, pid: 1000 + this.calls.length };
  }
  async shutdown(h: BackendHandle, _o: ShutdownOptions): Promise<BackendHandle> {
    await this.op('shutdown', String(h.id));
    this.vms.set(String(h.id), 'stopped');
    return { id: h.id ?? null };
  }
  async pause(h: BackendHandle): Promise<BackendHandle> {
    await this.op('pause', String(h.id));
    this.vms.set(String(h.id), 'paused');
    return h;
  }
  async resume(h: BackendHandle): Promise<BackendHandle> {
    await this.op('resume', String(h.id));
    this.vms.set(String(h.id), 'running');
    return h;
  }
  async reboot(spec: BackendVmSpec, h: BackendHandle): Promise<BackendHandle> {
    await this.op('reboot', spec.id);
    this.vms.set(spec.id, 'running');
    return { ...h, pid: 2000 + this.calls.length };
  }
  async delete(vmId: string): Promise<void> {
    await this.op('delete', vmId);
    this.vms.delete(vmId);
  }
  async status(h: BackendHandle): Promise<BackendStatus> {
    return this.vms.get(String(h.id)) ?? 'absent';
  }
  async listResidues(): Promise<string[]> {
    return [...this.vms.keys()];
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}
