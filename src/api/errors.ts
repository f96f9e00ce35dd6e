import { Code, ConnectError } from '@connectrpc/connect';
import { MetaldError, type ErrorKind } from '../core/errors.js';
import { StoreConflictError } from '../store/store.js';

const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

/** Domain error → Connect error; anything unexpected becomes internal without leaking details. */
export function toConnectError(err: unknown, onInternal: (e: unknown) => void): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof MetaldError) {
    const metadata = new Headers();
    if (err.field) metadata.set('metald-field', err.field);
    for (const [k, v] of Object.entries(err.detail ?? {})) metadata.set(`metald-${k.toLowerCase()}`, String(v));
    return new ConnectError(err.message, CODES[err.kind], metadata);
  }
  if (err instanceof StoreConflictError) {
    return new ConnectError('the VM changed concurrently; retry', Code.Aborted);
  }
  onInternal(err);
  return new ConnectError('internal error (see metald logs)', Code.Internal);
}
