// The classes of one guard table (decisions 0017, 0024): rate classes (a port set, a limiter set
// and a rule per distinct rate) and policy classes (a chain per distinct rule list, reached through
// its id in `pol_chains`). What the kernel table has, which ids the policy classes carry, the
// commands that add what ports need, and which classes no port uses any more. No I/O: the plane
// lists and writes.
import { classElement } from '../core/policy/plan.js';
import type { NftObject } from '../kernel/nft.js';
import { classSet, parseClassSet } from './guard-names.js';
import { classIdsFor, policyClassCommands, policyClasses, rateClassCommands, rateClasses } from './guard-table.js';
import { classTargets } from './kernel-view.js';
import type { PortGuard, RateKind } from './port-guard.js';

export class ClassBook {
  /** Rate classes ("nd/1000") the kernel table has. */
  private rates = new Set<string>();
  /** Policy class chain -> its id in pol_chains, as the kernel table has them. */
  private policyIds = new Map<string, number>();

  constructor(private readonly ref: string, private readonly defaultRates: Record<RateKind, number>) {}

  get ids(): ReadonlyMap<string, number> {
    return this.policyIds;
  }

  /** Commands that add the rate and policy classes `ports` need and the table lacks (ids assigned here). */
  missing(ports: readonly PortGuard[]): string[] {
    const out: string[] = [];
    for (const [k, r] of rateClasses(ports, this.defaultRates)) {
      if (this.rates.has(`${k}/${r}`)) continue;
      out.push(...rateClassCommands(this.ref, k, r));
      this.rates.add(`${k}/${r}`);
    }
    const ids = classIdsFor(ports, this.policyIds);
    for (const c of policyClasses(ports)) {
      if (this.policyIds.has(c.chain)) continue;
      const id = ids.get(c.chain)!;
      out.push(...policyClassCommands(this.ref, c, id));
      this.policyIds.set(c.chain, id);
    }
    return out;
  }

  /** Policy class ids of a table we keep (its `pol_chains` listing), so a restarted metald names the same classes. */
  adoptIds(vmap: readonly NftObject[]): void {
    for (const [id, chain] of classTargets(vmap)) this.policyIds.set(chain, id);
  }

  /** The rate classes the kernel table has (from its class set names), so none is added twice. */
  adoptRates(setNames: readonly (string | undefined)[]): void {
    this.rates = new Set(setNames.map((n) => (n ? parseClassSet(n) : undefined)).filter((c) => c !== undefined).map(([k, r]) => `${k}/${r}`));
  }

  /** Ids for a table about to be loaded whole with `ports`. */
  resetIds(ports: readonly PortGuard[]): void {
    this.policyIds = classIdsFor(ports);
  }

  /** The rate classes a table just loaded whole with `ports` has. */
  resetRates(ports: readonly PortGuard[]): void {
    this.rates = new Set(rateClasses(ports, this.defaultRates).map(([k, r]) => `${k}/${r}`));
  }

  /** Port sets of the rate classes the table has. */
  rateSetNames(): string[] {
    return [...this.rates].map((c) => c.split('/')).map(([k, r]) => classSet(k as RateKind, Number(r)));
  }

  /** Dispatch elements to want: one per known policy class, plus `extra` (listed ones left to a removal). */
  dispatch(extra: readonly string[] = []): string[] {
    return [...[...this.policyIds].map(([chain, id]) => classElement(chain, id)), ...extra];
  }

  /** Forgets policy classes outside `inUse` (after `missing`, so no id is reused in the transaction that frees it). */
  forgetPolicy(inUse: ReadonlySet<string>): void {
    for (const c of [...this.policyIds.keys()]) if (!inUse.has(c)) this.policyIds.delete(c);
  }

  /** Rate classes `ports` no longer use (the defaults always are), by kind. */
  unusedRates(ports: readonly PortGuard[]): [RateKind, number][] {
    const inUse = new Set(rateClasses(ports, this.defaultRates).map(([k, r]) => `${k}/${r}`));
    return [...this.rates].filter((c) => !inUse.has(c)).map((c) => c.split('/')).map(([k, r]) => [k as RateKind, Number(r)]);
  }

  /** Forgets rate classes once their removal is written. */
  forgetRates(removed: readonly [RateKind, number][]): void {
    for (const [k, r] of removed) this.rates.delete(`${k}/${r}`);
  }
}
