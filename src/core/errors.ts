// Domain errors: the core says what went wrong in API-neutral terms; the API
// layer maps each kind to its ConnectRPC code (see src/api/errors.ts).

export type ErrorKind =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'unauthenticated'
  | 'permission_denied'
  | 'unavailable'
  | 'internal';

export class MetaldError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** Dotted request path of the offending field, when there is one. */
    readonly field?: string,
    /** Extra machine-readable detail (e.g. retryAfterSeconds). */
    readonly detail?: Record<string, string | number>,
  ) {
    super(field ? `${field}: ${message}` : message);
    this.name = 'MetaldError';
  }
}

export const invalidArgument = (field: string, message: string) =>
  new MetaldError('invalid_argument', message, field);
export const notFound = (what: string) => new MetaldError('not_found', `${what} not found`);
export const failedPrecondition = (message: string) => new MetaldError('failed_precondition', message);
export const resourceExhausted = (message: string, detail?: Record<string, string | number>) =>
  new MetaldError('resource_exhausted', message, undefined, detail);
