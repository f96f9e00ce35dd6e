import { Code, ConnectError } from '@connectrpc/connect';
import { BadRequestSchema, RetryInfoSchema } from '../gen/google/rpc/error_details_pb.js';

type OutgoingDetail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];
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
    // The field path is in the message for people, and in a standard
    // BadRequest detail for programs; a retry delay goes into RetryInfo and
    // the HTTP Retry-After header.
    const metadata = new Headers();
    const details: OutgoingDetail[] = [];
    if (err.field) {
      details.push({ desc: BadRequestSchema, value: { fieldViolations: [{ field: err.field, description: err.message.slice(err.field.length + 2) }] } });
    }
    const retry = err.detail?.retryAfterSeconds;
    if (typeof retry === 'number') {
      metadata.set('retry-after', String(Math.ceil(retry)));
      details.push({ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.ceil(retry)) } } });
    }
    return new ConnectError(err.message, CODES[err.kind], metadata, details);
  }
  if (err instanceof StoreConflictError) {
    return new ConnectError('the VM changed concurrently; retry', Code.Aborted);
  }
  onInternal(err);
  return new ConnectError('internal error (see metald logs)', Code.Internal);
}
