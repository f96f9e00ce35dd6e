import { Code, ConnectError } from '@connectrpc/connect';

// Exit codes a script can branch on (documented in README).
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  denied: 5,
  unavailable: 6,
  exhausted: 7,
} as const;

export function exitCodeFor(err: unknown): number {
  if (!(err instanceof ConnectError)) return EXIT.error;
  switch (err.code) {
    case Code.InvalidArgument:
      return EXIT.usage;
    case Code.NotFound:
      return EXIT.notFound;
    case Code.AlreadyExists:
    case Code.FailedPrecondition:
    case Code.Aborted:
      return EXIT.conflict;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return EXIT.denied;
    case Code.Unavailable:
      return EXIT.unavailable;
    case Code.ResourceExhausted:
      return EXIT.exhausted;
    default:
      return EXIT.error;
  }
}
