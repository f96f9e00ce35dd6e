// Error texts of the allocator. Each says what is wrong, with which value, and
// what to do instead; none names another tenant's VM.

import { MetaldError, invalidArgument, resourceExhausted } from '../errors.js';
import { formatIpv6 } from '../net/ipv6.js';
import { isoOf } from './fast-format.js';
import type { Entry, PoolState } from './pool-state.js';
import type { AllocationRequest } from './types.js';

export const alreadyExists = (field: string, msg: string) => new MetaldError('already_exists', msg, field);

/** "tenant t may use: a 2600::/48, b 2601::/48" (or that it may use none). */
export function tenantPoolsText(pools: readonly PoolState[], tenantId: string): string {
  const usable = pools.filter((p) => p.tenantAllowed(tenantId)).map((p) => `${p.spec.id} ${p.prefixText}`);
  return usable.length ? `tenant ${tenantId} may use: ${usable.join(', ')}` : `no pool is available to tenant ${tenantId}`;
}

/** The holder of `e`, as far as this tenant may know it. */
function holder(e: Entry, req: AllocationRequest): string {
  if (e.a.tenantId !== req.tenantId) return '';
  if (e.a.vmId) return ` to VM ${e.a.vmId}${e.a.vmId === req.vmId ? ` (NIC ${e.a.nicId})` : ''}`;
  if (e.a.owner) return ` to ${e.a.owner}`;
  return '';
}

/** `what` (an address or /64) is held by `e` (in use or quarantined). */
export function taken(field: string, what: string, e: Entry, req: AllocationRequest, quarantineMs: number): MetaldError {
  const inside = e.a.key === what || e.a.key.startsWith(`${what}/`) ? '' : ` lies in ${e.a.key}, which`;
  if (!Number.isNaN(e.releasedMs)) {
    const until = isoOf(e.releasedMs + quarantineMs);
    return alreadyExists(field, `${what}${inside} is in quarantine until ${until} after its release; ask for another address or retry after that time`);
  }
  return alreadyExists(field, `${what}${inside} is already allocated${holder(e, req)}`);
}

export function privacyAdvice(pool: PoolState): string {
  return (
    'a NIC with privacy extensions under strict source validation needs a /64 of its own (its source guard matches the whole /64): ' +
    `ask for an address in a /64 of pool ${pool.spec.id} that holds nothing else (or leave the address empty to get a free /64), ` +
    'use a prefix-mode pool, or turn off privacy extensions or strict source validation for this NIC'
  );
}

export function tooSmallForWhole(req: AllocationRequest, pool: PoolState): MetaldError {
  return invalidArgument(
    `${req.field}.enable_privacy_extensions`,
    `pool ${pool.spec.id} (${pool.prefixText}) is smaller than a /64, so it cannot give this NIC a /64 of its own; ${privacyAdvice(pool)}`,
  );
}

export function poolFull(pool: PoolState, where: string): MetaldError {
  return resourceExhausted(`pool ${pool.spec.id} is full (${where}); release addresses or use another pool`);
}

/** A rate-limit refusal; `waitMs` is Infinity for a limit of 0. */
export function rateRefusal(pool: PoolState, nowMs: number, waitMs: number, limit: number, count: number, tenantId?: string): MetaldError {
  const who = tenantId === undefined ? `pool ${pool.spec.id}` : `tenant ${tenantId} in pool ${pool.spec.id}`;
  if (!Number.isFinite(waitMs)) {
    const msg = tenantId === undefined
      ? `pool ${pool.spec.id} is draining (rate_limit 0): it hands out no new allocations`
      : `${who} may make no allocations (tenant rate limit 0)`;
    return resourceExhausted(msg, { retryAfterSeconds: 3600 });
  }
  const secs = Math.max(1, Math.ceil(waitMs / 1000));
  return resourceExhausted(
    `${who} is limited to ${limit} allocations per rolling hour and made ${count} in the last hour; ` +
      `try again in ${secs} s (after ${isoOf(nowMs + secs * 1000)})`,
    { retryAfterSeconds: secs },
  );
}

export function anycast(field: string, addr: bigint): MetaldError {
  const net = formatIpv6(addr);
  return alreadyExists(field, `${net} is the subnet-router anycast address of ${net}/64 (all host bits zero) and is never handed out`);
}
