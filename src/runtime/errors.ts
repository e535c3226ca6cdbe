// Errors the runtime raises with containerd's meaning attached; the shim turns the kind into a ttrpc status code.

export type ErrorKind =
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'InvalidArgument'
  | 'Unimplemented'
  | 'Unavailable'
  | 'DeadlineExceeded'
  | 'Internal';

export class RuntimeError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'RuntimeError';
  }
}

export const notFound = (what: string) => new RuntimeError('NotFound', what);
export const alreadyExists = (what: string) => new RuntimeError('AlreadyExists', what);
export const failedPrecondition = (what: string) => new RuntimeError('FailedPrecondition', what);

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Wraps an error with what was being done, keeping its kind (and ttrpc code) when it has one. */
export function withContext(e: unknown, doing: string): Error {
  const msg = `${doing}: ${errorMessage(e)}`;
  if (e instanceof RuntimeError) return new RuntimeError(e.kind, msg, { cause: e });
  const code = (e as { code?: unknown } | undefined)?.code;
  const err = new Error(msg, { cause: e });
  if (typeof code === 'number') Object.assign(err, { code });
  if (e instanceof Error && e.name !== 'Error') err.name = e.name;
  return err;
}

/**
 * Runs tear-down steps that must all be tried even when one fails; each failure is kept as "what: message".
 * The caller decides what the failures mean (throw them together, keep state for a retry).
 */
export function attempts(): {
  errors: string[];
  run(what: string, fn: () => Promise<unknown>): Promise<void>;
} {
  const errors: string[] = [];
  return {
    errors,
    run: async (what, fn) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${errorMessage(e)}`);
      }
    },
  };
}
