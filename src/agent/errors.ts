// Mapping agent failures to ttrpc status codes: the host must be able to tell bad requests
// (InvalidArgument), unknown ids (NotFound) and real failures (Internal) apart.
import { Code, TtrpcError } from '../protocols/ttrpc/index.js';
import { CrunError } from './crun.js';
import { SafePathError } from './safe-path.js';
import { StreamEofError } from './stdio.js';
import { StorageError } from './storage.js';

export function invalidArgument(message: string): TtrpcError {
  return new TtrpcError(Code.InvalidArgument, message);
}

export function notFound(message: string): TtrpcError {
  return new TtrpcError(Code.NotFound, message);
}

export function alreadyExists(message: string): TtrpcError {
  return new TtrpcError(Code.AlreadyExists, message);
}

export function failedPrecondition(message: string): TtrpcError {
  return new TtrpcError(Code.FailedPrecondition, message);
}

/** Any thrown value as a TtrpcError, prefixed with what the agent was doing. */
export function toTtrpcError(e: unknown, what: string): TtrpcError {
  if (e instanceof TtrpcError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  if (e instanceof SafePathError || e instanceof StorageError) {
    return new TtrpcError(Code.InvalidArgument, `${what}: ${msg}`);
  }
  if (e instanceof StreamEofError) return new TtrpcError(Code.OutOfRange, `${what}: ${msg}`);
  if (e instanceof CrunError) return new TtrpcError(Code.Internal, `${what}: ${msg}`);
  return new TtrpcError(Code.Internal, `${what}: ${msg}`);
}
