// gRPC status codes as ttrpc carries them in Response.status (google.rpc.Status).
export enum Code {
  OK = 0,
  Canceled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

/** An error with a status code; thrown by handlers and raised by clients for non-OK responses. */
export class TtrpcError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
    this.name = 'TtrpcError';
  }

  override toString(): string {
    return `${Code[this.code] ?? this.code}: ${this.message}`;
  }
}

export function isTtrpcError(e: unknown, code?: Code): e is TtrpcError {
  return e instanceof TtrpcError && (code === undefined || e.code === code);
}

/** Node errno codes mapped as containerd/ttrpc maps Go's os errors, so handlers can just throw them. */
const ERRNO_CODES: Record<string, Code> = {
  ENOENT: Code.NotFound,
  EEXIST: Code.AlreadyExists,
  EACCES: Code.PermissionDenied,
  EPERM: Code.PermissionDenied,
  EINVAL: Code.InvalidArgument,
};

/** The status a thrown value is answered with: its own code for a TtrpcError, a mapped one for errno errors. */
export function statusOf(e: unknown): { code: Code; message: string } {
  if (e instanceof TtrpcError) return { code: e.code, message: e.message };
  if (e instanceof Error) {
    const errno = (e as NodeJS.ErrnoException).code;
    return { code: (errno && ERRNO_CODES[errno]) || Code.Unknown, message: e.message };
  }
  return { code: Code.Unknown, message: String(e) };
}
