import type { SecurityEvent } from '../security-events.js';
import type { EventDraft } from '../nflog/log-events.js';

// PURE: when does a VM's misbehaviour become critical? No guard reason is
// critical by itself (a guest with a broken radvd sends a few RAs); a VM whose
// high-severity drops (rogue RAs, spoofing, ND poisoning, rogue DHCPv6) reach
// `packets` within `windowMs` is attacking: one attack_detected event
// (critical) per VM and window. Counted from guard_drop events only, whose
// counts are the kernel's exact deltas (decision 0028).

export interface EscalationOptions {
  packets: number;
  windowMs: number;
}

interface Seen { t: number; n: number; reason: string }

export class Escalation {
  private readonly perVm = new Map<string, { seen: Seen[]; firedMs: number }>();

  constructor(private readonly opts: EscalationOptions) {}

  observe(e: SecurityEvent, nowMs: number): EventDraft | undefined {
    if (e.type !== 'guard_drop' || e.severity !== 'high' || e.vm_id === '' || e.count <= 0) return undefined;
    let s = this.perVm.get(e.vm_id);
    if (!s) this.perVm.set(e.vm_id, (s = { seen: [], firedMs: -Infinity }));
    s.seen.push({ t: nowMs, n: e.count, reason: e.reason });
    const from = nowMs - this.opts.windowMs;
    while (s.seen.length > 0 && s.seen[0]!.t < from) s.seen.shift();
    const byReason = new Map<string, number>();
    let total = 0;
    for (const x of s.seen) {
      total += x.n;
      byReason.set(x.reason, (byReason.get(x.reason) ?? 0) + x.n);
    }
    if (total < this.opts.packets || nowMs - s.firedMs < this.opts.windowMs) return undefined;
    s.firedMs = nowMs;
    const top = [...byReason].sort((a, b) => b[1] - a[1])[0]![0];
    return {
      type: 'attack_detected', severity: 'critical', vm_id: e.vm_id, tenant_id: e.tenant_id, nic: e.nic, port: e.port,
      reason: top, count: total, time: new Date(nowMs).toISOString(),
      detail: `${total} packets dropped by high-severity guards within ${this.opts.windowMs / 1000}s (${[...byReason].map(([r, n]) => `${r}=${n}`).join(', ')})`,
    };
  }

  /** Forget VMs without drops in the window (bounded memory). */
  prune(nowMs: number): void {
    for (const [vm, s] of this.perVm) if ((s.seen.at(-1)?.t ?? -Infinity) < nowMs - this.opts.windowMs) this.perVm.delete(vm);
  }
}
