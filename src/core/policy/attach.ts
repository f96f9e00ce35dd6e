// PURE: which section-2 policy and which tenant isolation a VM's NIC gets
// (docs/decisions/0024). A policy names the security profiles it implements
// (`profiles: [high]` in the config); a VM's profile is the stricter of the
// one it asks for and its pool's (or `default_security_profile`), so a tenant
// can ask for more isolation than the operator set, never less.

export const PROFILES = ['low', 'medium', 'high'] as const;
export type Profile = (typeof PROFILES)[number];
export type IsolationLevel = 'strict' | 'moderate' | 'none';

/** The stricter of the requested profile ('' = none asked) and the pool's. */
export function effectiveProfile(requested: Profile | '', pool: Profile): Profile {
  if (requested === '') return pool;
  return PROFILES.indexOf(requested) > PROFILES.indexOf(pool) ? requested : pool;
}

/** tenant_isolation_level when the NIC does not set one. */
export function defaultIsolation(profile: Profile): IsolationLevel {
  return profile === 'high' ? 'strict' : profile === 'medium' ? 'moderate' : 'none';
}

/**
 * The NIC's level. Unset: the default of the VM's (effective) profile. Set:
 * as asked, but never weaker than the default of the pool's profile, which is
 * the operator's floor; a tenant's own profile is only a default it may refine.
 */
export function effectiveIsolation(requested: IsolationLevel | '', vmProfile: Profile, poolProfile: Profile): IsolationLevel {
  if (requested === '') return defaultIsolation(vmProfile);
  const order: IsolationLevel[] = ['none', 'moderate', 'strict'];
  const floor = defaultIsolation(poolProfile);
  return order.indexOf(requested) >= order.indexOf(floor) ? requested : floor;
}

export interface PolicyRef {
  id: string;
  profiles: readonly Profile[];
}

/** The policy attached to `profile`, if any (the config allows at most one per profile). */
export function policyForProfile<P extends PolicyRef>(policies: readonly P[], profile: Profile): P | undefined {
  return policies.find((p) => p.profiles.includes(profile));
}
