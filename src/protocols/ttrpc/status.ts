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
