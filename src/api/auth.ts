import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
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

interface Grant { principal: Principal; methods: readonly string[]; expiresAtMs: number }

export class Authenticator {
  private readonly entries: { digest: Buffer; principal: Principal }[];
  /** Short-lived tokens metald hands to its incident hook (by token digest, hex). */
  private readonly grants = new Map<string, Grant>();

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

  /**
   * A token valid only for `methods`, as `principal`, until `ttlMs` has passed or the returned revoke is
   * called: what the incident hook gets, so a token it leaks (e.g. a .curlrc header sent elsewhere) can do
   * little and not for long.
   */
  grant(principal: Principal, methods: readonly string[], ttlMs: number): { token: string; revoke: () => void } {
    const token = randomBytes(24).toString('base64url');
    const key = createHash('sha256').update(token).digest('hex');
    this.grants.set(key, { principal, methods, expiresAtMs: Date.now() + ttlMs });
    return { token, revoke: () => this.grants.delete(key) };
  }

  /** `authorization` header value → principal, or unauthenticated. `method` is checked against granted tokens' scope. */
  authenticate(header: string | null | undefined, method?: string): Principal {
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
    if (!found && this.grants.size > 0) found = this.granted(digest, method);
    if (!found) {
      this.onFailure({ reason: 'unknown token' });
      throw new MetaldError('unauthenticated', 'invalid bearer token');
    }
    return found;
  }

  private granted(digest: Buffer, method: string | undefined): Principal | undefined {
    const key = digest.toString('hex');
    const g = this.grants.get(key);
    if (!g) return undefined;
    if (g.expiresAtMs < Date.now()) {
      this.grants.delete(key);
      return undefined;
    }
    if (method === undefined || !g.methods.includes(method)) {
      this.onFailure({ reason: `incident hook token used for ${method ?? 'an unscoped call'}` });
      throw new MetaldError('permission_denied', `this token may only call ${g.methods.join(', ')}`);
    }
    return g.principal;
  }
}
