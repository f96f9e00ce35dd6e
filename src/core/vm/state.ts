import { failedPrecondition } from '../errors.js';
import type { VmStateName } from './record.js';

// The lifecycle as data: which state may follow which, and which states an
// operation may start from. Everything that changes a VM's state asks here.

const NEXT: Record<VmStateName, readonly VmStateName[]> = {
  creating: ['created', 'failed'],
  // failed: its resources broke while it was not running (found by reconcile).
  created: ['booting', 'deleting', 'failed'],
  booting: ['running', 'failed'],
  running: ['paused', 'shutting_down', 'booting', 'deleting', 'failed', 'shutdown'],
  paused: ['running', 'shutting_down', 'deleting', 'failed', 'shutdown'],
  shutting_down: ['shutdown', 'failed'],
  shutdown: ['booting', 'deleting', 'failed'],
  failed: ['booting', 'deleting'],
  deleting: ['failed'],
};

export type VmOperation =
  | 'boot'
  | 'shutdown'
  | 'pause'
  | 'resume'
  | 'reboot'
  | 'delete'
  | 'isolate'
  | 'unisolate';

/** States each operation may start from. */
export const OPERATION_FROM: Record<VmOperation, readonly VmStateName[]> = {
  boot: ['created', 'shutdown', 'failed'],
  shutdown: ['running', 'paused'],
  pause: ['running'],
  resume: ['paused'],
  reboot: ['running'],
  delete: ['created', 'running', 'paused', 'shutdown', 'failed'],
  // Isolation is a flag on any state where the VM has (or may get) a port.
  isolate: ['created', 'booting', 'running', 'paused', 'shutting_down', 'shutdown', 'failed'],
  unisolate: ['created', 'booting', 'running', 'paused', 'shutting_down', 'shutdown', 'failed'],
};

export const STATE_LABEL: Record<VmStateName, string> = {
  creating: 'creating',
  created: 'created',
  booting: 'booting',
  running: 'running',
  paused: 'paused',
  shutting_down: 'shutting down',
  shutdown: 'shut down',
  failed: 'failed',
  deleting: 'deleting',
};

export function canTransition(from: VmStateName, to: VmStateName): boolean {
  return NEXT[from].includes(to);
}

export function assertTransition(vmId: string, from: VmStateName, to: VmStateName): void {
  if (!canTransition(from, to)) {
    throw failedPrecondition(
      `VM ${vmId} cannot go from ${STATE_LABEL[from]} to ${STATE_LABEL[to]}`,
    );
  }
}

/** Throws failed_precondition naming the current state and the states the operation needs. */
export function assertOperation(vmId: string, op: VmOperation, current: VmStateName): void {
  const allowed = OPERATION_FROM[op];
  if (!allowed.includes(current)) {
    const need = allowed.map((s) => STATE_LABEL[s]).join(' or ');
    throw failedPrecondition(
      `cannot ${op} VM ${vmId}: it is ${STATE_LABEL[current]} (${op} needs ${need})`,
    );
  }
}

export function allTransitions(): [VmStateName, VmStateName][] {
  return Object.entries(NEXT).flatMap(([from, tos]) =>
    tos.map((to) => [from as VmStateName, to] as [VmStateName, VmStateName]),
  );
}
