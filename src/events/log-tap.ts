import type { EventRing, SecurityEventType } from './security-events.js';

// The lifecycle logs its security-relevant steps with a `security_event`
// field (vm_isolated, vm_unisolated). This logger passes every line on and
// also records those as events, so the manager needs no events dependency.

interface LineLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const TAPPED: Partial<Record<string, { type: SecurityEventType; severity: 'low' | 'medium' | 'high' }>> = {
  vm_isolated: { type: 'vm_isolated', severity: 'high' },
  vm_unisolated: { type: 'vm_unisolated', severity: 'medium' },
};

export function tapSecurityLog(log: LineLogger, ring: EventRing): LineLogger {
  const tap = (obj: object) => {
    const o = obj as { security_event?: string; vm_id?: string; tenant_id?: string; reason?: string };
    const t = o.security_event ? TAPPED[o.security_event] : undefined;
    if (t) ring.add({ ...t, vm_id: o.vm_id ?? '', tenant_id: o.tenant_id ?? '', nic: '', port: '', reason: o.reason ?? '', count: 1 });
  };
  return {
    info: (obj, msg) => { tap(obj); log.info(obj, msg); },
    warn: (obj, msg) => { tap(obj); log.warn(obj, msg); },
    error: (obj, msg) => { tap(obj); log.error(obj, msg); },
  };
}
