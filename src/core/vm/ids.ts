import { createHash, randomBytes } from 'node:crypto';
import { invalidArgument } from '../errors.js';

// Identifiers that end up in kernel object names, file paths and URLs: a
// narrow charset keeps them safe everywhere without escaping.

export const VM_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Also used by the config schema for auth tokens' tenants: one rule everywhere. */
export const TENANT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;

export function validateVmId(id: string, field = 'vm_id'): string {
  if (!VM_ID_PATTERN.test(id)) {
    throw invalidArgument(
      field,
      `${JSON.stringify(id)} is not a valid VM id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit`,
    );
  }
  return id;
}

export function generateVmId(): string {
  // 80 random bits in base32: short enough to read, too many to collide.
  return `vm-${base32(randomBytes(10))}`;
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
export function base32(buf: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function digest(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\0')).digest();
}

/**
 * Host-side device name for one VM NIC: `m` + 3-char instance tag + 11-char
 * hash = 15 chars, the kernel's limit. The instance tag keeps two metald
 * instances on one host apart; `salt` is bumped by the caller on the
 * (astronomically rare) collision with an existing name.
 */
export function hostDeviceName(instance: string, vmId: string, nicId: string, salt = 0): string {
  const tag = base32(digest('instance', instance)).slice(0, 3);
  const h = base32(digest('nic', instance, vmId, nicId, String(salt))).slice(0, 11);
  return `m${tag}${h}`;
}

/** Locally administered, unicast MAC derived from the NIC's identity. */
export function deriveMac(instance: string, vmId: string, nicId: string, salt = 0): string {
  const d = digest('mac', instance, vmId, nicId, String(salt));
  const bytes = [0x02, d[0]!, d[1]!, d[2]!, d[3]!, d[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
export function validateMac(mac: string, field: string): string {
  if (!MAC_RE.test(mac)) throw invalidArgument(field, `${JSON.stringify(mac)} is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  const lower = mac.toLowerCase();
  const first = parseInt(lower.slice(0, 2), 16);
  if (first & 1) throw invalidArgument(field, `${lower} is a multicast MAC; a NIC needs a unicast one`);
  if (lower === '00:00:00:00:00:00') throw invalidArgument(field, 'the all-zero MAC is not usable');
  return lower;
}
