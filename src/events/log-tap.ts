import type { EventDraft } from './nflog/log-events.js';
import type { EventRing } from './security-events.js';

// The lifecycle logs its security-relevant steps with a `security_event`
// field (vm_isolated, vm_unisolated); the firewall plane and the reconciler
// log drift they repaired. This logger passes every line on and also records
// those as events, so neither needs an events dependency. Drift lines are
// matched by their message (test/unit/security-ops.test.ts checks that the
// sources still log them).

interface LineLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

type Fields = { security_event?: string; vm_id?: string; tenant_id?: string; reason?: string; [k: string]: unknown };
type Draft = Omit<EventDraft, 'time' | 'nic' | 'port' | 'count'>;

const BY_FIELD: Record<string, (o: Fields) => Draft> = {
  vm_isolated: (o) => ({ type: 'vm_isolated', severity: 'high', vm_id: o.vm_id ?? '', tenant_id: o.tenant_id ?? '', reason: o.reason ?? '' }),
  vm_unisolated: (o) => ({ type: 'vm_unisolated', severity: 'medium', vm_id: o.vm_id ?? '', tenant_id: o.tenant_id ?? '', reason: '' }),
};

/** Messages of drift repairs: someone (or something) changed metald's tables or VMs behind its back. */
export const DRIFT_MESSAGES: Record<string, (o: Fields) => Draft> = {
  'nftables drift repaired: table replaced': (o) => ({
    type: 'drift_repaired', severity: 'high', vm_id: '', tenant_id: '', reason: 'nft_table',
    detail: `replaced: ${[o['guard_table'] ? 'guard table' : '', o['host_table'] ? 'host table' : ''].filter(Boolean).join(', ') || 'table'}`,
  }),
  'nftables drift repaired: elements': (o) => ({
    type: 'drift_repaired', severity: 'medium', vm_id: '', tenant_id: '', reason: 'nft_elements', detail: `${String(o['lines'] ?? '?')} element lines rewritten`,
  }),
  'reconcile repaired drift': (o) => ({
    type: 'drift_repaired', severity: 'low', vm_id: '', tenant_id: '', reason: 'vm_state',
    detail: Object.entries(o).filter(([k, v]) => k !== 'checked' && Array.isArray(v) && v.length > 0).map(([k, v]) => `${k}: ${(v as string[]).join(',')}`).join('; ').slice(0, 500),
  }),
};

export function tapSecurityLog<L extends LineLogger>(log: L, ring: EventRing): L {
  const tap = (obj: object, msg: string | undefined) => {
    const o = obj as Fields;
    const make = (o.security_event ? BY_FIELD[o.security_event] : undefined) ?? (msg ? DRIFT_MESSAGES[msg] : undefined);
    if (make) ring.add({ nic: '', port: '', count: 1, ...make(o) });
  };
  const wrap = (level: 'info' | 'warn' | 'error') => (obj: object, msg?: string) => {
    tap(obj, msg);
    log[level](obj, msg);
  };
  const methods = { info: wrap('info'), warn: wrap('warn'), error: wrap('error') };
  // Everything else (debug, child, level...) is the logger's own.
  return new Proxy(log, {
    get: (t, k) => {
      if (k in methods) return methods[k as keyof typeof methods];
      const v: unknown = Reflect.get(t, k);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}
