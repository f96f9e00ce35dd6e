// PURE: tenant and VLAN isolation as packet marks and per-port set elements
// (docs/decisions/0027). A packet from a VM port carries a 32-bit mark that
// describes its sender; the receiving port owns a handful of elements that say
// which senders it admits. Every check is one masked lookup of
// `meta mark & MASK . oifname`, so the cost per packet and per VM does not
// grow with the number of VMs, tenants or VLANs.
//
// Mark layout (the sender's):
//   bits  0-11  VLAN id (0 when VLANs are off)
//   bits 12-25  tenant index on this host (1..16383; 0 never: mark 0 = not from a VM)
//   bits 26-27  tenant_isolation_level: 0 strict, 1 moderate, 2 none
//   bits 28-29  its policy's "between vlans": 0 deny, 1 same-tenant, 2 explicit, 3 allow
//   bits 30-31  its policy's profile: 0 none, 1 low, 2 medium, 3 high (segment grants)
//
// A decision for sender S and receiver R (both VM ports) has two layers, each
// judged on both sides; the weakest answer wins (deny < explicit < pass):
//   VLAN layer   same VLAN: pass; else allow: pass, same-tenant: pass if same
//                tenant else deny, explicit: explicit, deny: deny.
//   tenant layer same tenant: pass; else none: pass, moderate: explicit, strict: deny.
// "explicit" admits only what R's ingress rules allow from a named address or
// prefix (never `from any`). A segment rule of S's policy ("ALLOW ipv6 to
// shared-services vlan 999") admits R outright when R is on that segment; a
// DENY segment rule refuses it outright. A microsegmented R without ingress
// rules admits no other VM (its own tenant's neither) except explicitly.

import type { HostPolicy } from './host-policy.js';
import type { IsolationLevel, Profile } from './attach.js';

export const MAX_TENANTS = 16_383;

export const LEVEL_BITS: Record<IsolationLevel, number> = { strict: 0, moderate: 1, none: 2 };
export const BETWEEN_BITS: Record<HostPolicy['betweenVlans'], number> = { deny: 0, 'same-tenant': 1, 'explicit-policy': 2, allow: 3 };
export const PROFILE_BITS: Record<Profile, number> = { low: 1, medium: 2, high: 3 };

const VLAN_SHIFT = 0;
const TENANT_SHIFT = 12;
const LEVEL_SHIFT = 26;
const BETWEEN_SHIFT = 28;
const PROFILE_SHIFT = 30;

/** Masks of the lookups, named after what they compare. */
export const MASK = {
  /** Same tenant and VLAN. */
  segment: 0x03ff_ffff,
  /** Tenant and the sender's between-vlans rule. */
  tenantBetween: 0x33ff_f000,
  /** VLAN and the sender's isolation level. */
  vlanLevel: 0x0c00_0fff,
  /** The sender's level and between-vlans rule. */
  levelBetween: 0x3c00_0000,
  /** The sender's policy profile. */
  profile: 0xc000_0000,
} as const;

export interface Zone {
  /** 1..MAX_TENANTS. */
  tenant: number;
  /** 0 when VLANs are off. */
  vlan: number;
  level: IsolationLevel;
  between: HostPolicy['betweenVlans'];
  /** Profile whose policy the port follows, null when no policy applies. */
  policyProfile: Profile | null;
}

/** A receiving port's view of the segments: which policies grant or refuse it. */
export interface Reception {
  /** Network microsegmentation on a NIC with no ingress rules (with rules, the rules decide). */
  microsegmentation: boolean;
  /** Profiles whose policy's first matching segment rule for this port is ALLOW / DENY. */
  grantedBy: Profile[];
  refusedBy: Profile[];
}

export function zoneMark(z: Zone): number {
  if (!Number.isInteger(z.tenant) || z.tenant < 1 || z.tenant > MAX_TENANTS) throw new Error(`tenant index ${z.tenant} out of range`);
  const v =
    (z.vlan << VLAN_SHIFT) |
    (z.tenant << TENANT_SHIFT) |
    (LEVEL_BITS[z.level] << LEVEL_SHIFT) |
    (BETWEEN_BITS[z.between] << BETWEEN_SHIFT) |
    ((z.policyProfile ? PROFILE_BITS[z.policyProfile] : 0) << PROFILE_SHIFT);
  return v >>> 0;
}

export const hexMark = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;

/** The sets of the admission checks, in the order the table tries them. */
export const ADMISSION_SETS = {
  /** Pass: same tenant and VLAN. */
  same: 'peer_same',
  /** Pass: same tenant across VLANs, both sides allow it. */
  tenant: 'peer_tenant',
  /** Pass: another tenant on the same VLAN, both sides at level none. */
  vlan: 'peer_vlan',
  /** Pass: another tenant on another VLAN, both sides none and allow. */
  open: 'peer_open',
  /** Explicit: the same four situations where the answer is "explicit". */
  sameX: 'peer_same_x',
  tenantX: 'peer_tenant_x',
  vlanX: 'peer_vlan_x',
  openX: 'peer_open_x',
  /** A sender's policy grants / refuses this port's segment. */
  grant: 'seg_grant',
  refuse: 'seg_refuse',
} as const;

export type AdmissionSet = (typeof ADMISSION_SETS)[keyof typeof ADMISSION_SETS];

/** Mask of each set's key. */
export const ADMISSION_MASK: Record<AdmissionSet, number> = {
  peer_same: MASK.segment,
  peer_same_x: MASK.segment,
  peer_tenant: MASK.tenantBetween,
  peer_tenant_x: MASK.tenantBetween,
  peer_vlan: MASK.vlanLevel,
  peer_vlan_x: MASK.vlanLevel,
  peer_open: MASK.levelBetween,
  peer_open_x: MASK.levelBetween,
  seg_grant: MASK.profile,
  seg_refuse: MASK.profile,
};

const between = (b: number) => b << BETWEEN_SHIFT;
const level = (l: number) => l << LEVEL_SHIFT;

/**
 * The mark values (already masked) each admission set holds for receiver
 * `r`. Every sender side that the layer rules let through is enumerated, so a
 * lookup hit means both sides agree.
 */
export function admissionKeys(r: Zone, rx: Reception): Map<AdmissionSet, number[]> {
  const m = new Map<AdmissionSet, number[]>();
  const put = (set: AdmissionSet, vals: number[]) => {
    if (vals.length) m.set(set, [...(m.get(set) ?? []), ...vals.map((v) => v >>> 0)]);
  };
  const t = r.tenant << TENANT_SHIFT;
  const v = r.vlan << VLAN_SHIFT;
  const rb = BETWEEN_BITS[r.between];
  const rl = LEVEL_BITS[r.level];
  // Sender values that pass / are explicit on the VLAN layer (same tenant / other tenant).
  const sameTenantPass = [1, 3];
  const sameTenantOk = [1, 2, 3];
  const otherTenantPass = [3];
  const otherTenantOk = [2, 3];
  const levelPass = [2];
  const levelOk = [1, 2];

  const pass = !rx.microsegmentation;
  // Same tenant, same VLAN: always through both layers.
  put(pass ? ADMISSION_SETS.same : ADMISSION_SETS.sameX, [t | v]);
  // Same tenant, another VLAN: the VLAN layer on both sides.
  if (sameTenantOk.includes(rb)) {
    const bothPass = pass && sameTenantPass.includes(rb);
    if (bothPass) put(ADMISSION_SETS.tenant, sameTenantPass.map((s) => t | between(s)));
    put(ADMISSION_SETS.tenantX, sameTenantOk.filter((s) => !(bothPass && sameTenantPass.includes(s))).map((s) => t | between(s)));
  }
  // Another tenant, same VLAN: the tenant layer on both sides.
  if (levelOk.includes(rl)) {
    const bothPass = pass && levelPass.includes(rl);
    if (bothPass) put(ADMISSION_SETS.vlan, levelPass.map((s) => v | level(s)));
    put(ADMISSION_SETS.vlanX, levelOk.filter((s) => !(bothPass && levelPass.includes(s))).map((s) => v | level(s)));
  }
  // Another tenant, another VLAN: both layers on both sides.
  if (levelOk.includes(rl) && otherTenantOk.includes(rb)) {
    const rPass = pass && levelPass.includes(rl) && otherTenantPass.includes(rb);
    for (const sl of levelOk) {
      for (const sb of otherTenantOk) {
        const sPass = levelPass.includes(sl) && otherTenantPass.includes(sb);
        put(rPass && sPass ? ADMISSION_SETS.open : ADMISSION_SETS.openX, [level(sl) | between(sb)]);
      }
    }
  }
  put(ADMISSION_SETS.grant, rx.grantedBy.map((p) => PROFILE_BITS[p] << PROFILE_SHIFT));
  put(ADMISSION_SETS.refuse, rx.refusedBy.map((p) => PROFILE_BITS[p] << PROFILE_SHIFT));
  return m;
}

/** What the checks decide for sender mark `s` at receiver `r` (the same logic as the lookups; for tests and docs). */
export function admit(s: Zone, r: Zone, rx: Reception): 'pass' | 'explicit' | 'deny' {
  const keys = admissionKeys(r, rx);
  const mark = zoneMark(s);
  const hit = (set: AdmissionSet) => (keys.get(set) ?? []).includes((mark & ADMISSION_MASK[set]) >>> 0);
  if (s.policyProfile && hit(ADMISSION_SETS.refuse)) return 'deny';
  if (s.policyProfile && hit(ADMISSION_SETS.grant)) return 'pass';
  if (hit('peer_same') || hit('peer_tenant') || hit('peer_vlan') || hit('peer_open')) return 'pass';
  if (hit('peer_same_x') || hit('peer_tenant_x') || hit('peer_vlan_x') || hit('peer_open_x')) return 'explicit';
  return 'deny';
}

/** The decision from the rules in the header, written out directly: the reference `admit` is tested against. */
export function decide(s: Zone, r: Zone, rx: Reception): 'pass' | 'explicit' | 'deny' {
  if (s.policyProfile && rx.refusedBy.includes(s.policyProfile)) return 'deny';
  if (s.policyProfile && rx.grantedBy.includes(s.policyProfile)) return 'pass';
  const sameTenant = s.tenant === r.tenant;
  const sameVlan = s.vlan === r.vlan;
  const rank = { deny: 0, explicit: 1, pass: 2 } as const;
  const vlanLayer = (b: HostPolicy['betweenVlans']) =>
    sameVlan ? 'pass' : b === 'allow' ? 'pass' : b === 'same-tenant' ? (sameTenant ? 'pass' : 'deny') : b === 'explicit-policy' ? 'explicit' : 'deny';
  const tenantLayer = (l: IsolationLevel) => (sameTenant ? 'pass' : l === 'none' ? 'pass' : l === 'moderate' ? 'explicit' : 'deny');
  const answers = [vlanLayer(s.between), vlanLayer(r.between), tenantLayer(s.level), tenantLayer(r.level)] as const;
  let worst: 'pass' | 'explicit' | 'deny' = answers.reduce((a, b) => (rank[a] <= rank[b] ? a : b));
  if (worst === 'pass' && rx.microsegmentation) worst = 'explicit';
  return worst;
}

/** The tenant number a mark carries. */
export const TENANT_OF_MARK = (mark: number) => (mark >>> TENANT_SHIFT) & MAX_TENANTS;
