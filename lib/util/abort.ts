// AbortSignal support: the error an aborted operation rejects with, and a race of a promise against a signal.

/** What an aborted operation rejects with: name 'AbortError' and code 'ABORT_ERR', as Node's own APIs; the signal's reason is its cause. */
export class AbortError extends Error {
  /** Always 'ABORT_ERR'. */
  readonly code = 'ABORT_ERR';
  /**
   * An AbortError.
   * @param message - what was aborted.
   * @param options - cause: the signal's reason.
   * @example
   * ```ts
   * signal.addEventListener('abort', () => reject(new AbortError('my work was aborted', { cause: signal.reason })));
   * ```
   */
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/** Throws an AbortError (whose cause is the signal's reason) if the signal has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
}

/**
 * `promise`, or a rejection with an AbortError as soon as `signal` aborts, whichever comes first.
 * The promise is left running; a rejection of it after the abort is ignored.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return promise;
  promise.catch(() => {});
  if (signal.aborted) return Promise.reject(new AbortError(`${what} was aborted`, { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError(`${what} was aborted`, { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
