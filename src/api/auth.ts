import { createHash, timingSafeEqual } from 'node:crypto';
import { MetaldError } from '../core/errors.js';
import { ANONYMOUS_ADMIN, type Principal } from '../core/principal.js';

// Bearer tokens from config, compared as SHA-256 digests in constant time so
// neither the token nor its length leaks through timing.

export interface TokenEntry {
  /** Plain token or its SHA-256 hex. */
  token?: string;
  token_sha256?: string;
  tenant_id?: string;
  role?: 'admin';
  name?: string;
}

export interface AuthFailure {
  reason: string;
}

export class Authenticator {
  private readonly entries: { digest: Buffer; principal: Principal }[];

  constructor(
    private readonly mode: 'tokens' | 'none',
    tokens: readonly TokenEntry[],
    private readonly onFailure: (f: AuthFailure) => void = () => {},
  ) {
    this.entries = tokens.map((t, i) => {
      const digest = t.token_sha256
        ? Buffer.from(t.token_sha256, 'hex')
        : createHash('sha256').update(t.token ?? '').digest();
      const name = t.name ?? `token[${i}]`;
      const principal: Principal = t.role === 'admin'
        ? { kind: 'admin', name }
        : { kind: 'tenant', tenantId: t.tenant_id ?? '', name };
      return { digest, principal };
    });
  }

  get enabled(): boolean {
    return this.mode === 'tokens';
  }

  /** `authorization` header value → principal, or unauthenticated. */
  authenticate(header: string | null | undefined): Principal {
    if (this.mode === 'none') return ANONYMOUS_ADMIN;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) {
      this.onFailure({ reason: header ? 'malformed authorization header' : 'missing bearer token' });
      throw new MetaldError('unauthenticated', 'missing or malformed bearer token (Authorization: Bearer <token>)');
    }
    const digest = createHash('sha256').update(m[1]!).digest();
    let found: Principal | undefined;
    for (const e of this.entries) {
      // Check every entry so timing does not reveal which one matched.
      if (timingSafeEqual(e.digest, digest)) found = e.principal;
    }
    if (!found) {
      this.onFailure({ reason: 'unknown token' });
      throw new MetaldError('unauthenticated', 'invalid bearer token');
    }
    return found;
  }
}
