// The errors the library throws on purpose, one class per kind, each with a stable `code` that
// callers match on instead of message text. Option and model-format errors stay RangeErrors (and
// data errors plain Errors) so that older `instanceof RangeError` checks keep working.

/** The `code` of every error the library throws on purpose. */
export const ERROR_CODES = {
  /** a record or dataset is malformed ({@link DataError}) */
  data: 'ERR_JFA_DATA',
  /** an option is unknown, of the wrong type or out of range ({@link OptionError}) */
  option: 'ERR_JFA_OPTION',
  /** a model, adapter or pool folder cannot be read as what it claims to be ({@link ModelFormatError}) */
  modelFormat: 'ERR_JFA_MODEL_FORMAT',
  /** the native addon or libtorch cannot be loaded ({@link NativeLoadError}) */
  nativeLoad: 'ERR_JFA_NATIVE_LOAD',
  /** a data-parallel group failed to form or lost a rank ({@link DistributedError}) */
  distributed: 'ERR_JFA_DISTRIBUTED',
  /** a checkpoint is missing, incomplete or another run's ({@link CheckpointError}) */
  checkpoint: 'ERR_JFA_CHECKPOINT',
  /** a callback of the caller's (onStep, an evaluation hook) threw or rejected ({@link CallbackError}) */
  callback: 'ERR_JFA_CALLBACK',
  /** the work was cancelled through an AbortSignal ({@link AbortError}); Node's own code */
  abort: 'ABORT_ERR',
} as const;

/** One of {@link ERROR_CODES}' values. */
export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

/** An error of the library's: it has a stable code. */
export interface CodedError extends Error {
  /** one of {@link ERROR_CODES}' values */
  readonly code: ErrorCode;
}

/**
 * Whether `e` is an error the library threw on purpose, optionally of one code.
 * @param e - anything caught.
 * @param code - the code to match (any of the library's when omitted).
 * @returns true when `e` carries that code.
 * @example
 * ```ts
 * try {
 *   await train(model, tokenizer, { newTrain: [] }, { method: 'sft' });
 * } catch (e) {
 *   if (isJfaError(e, 'ERR_JFA_DATA')) console.error('fix the data:', e.message);
 * }
 * ```
 */
export function isJfaError(e: unknown, code?: ErrorCode): e is CodedError {
  const c = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && (code === undefined ? Object.values(ERROR_CODES).includes(c as ErrorCode) : c === code);
}

/**
 * An option that is unknown, of the wrong type or out of range. A RangeError, as before codes.
 * @example
 * ```ts
 * throw new OptionError('train: lr must be a finite number > 0, got NaN');
 * ```
 */
export class OptionError extends RangeError implements CodedError {
  /** always ERROR_CODES.option ('ERR_JFA_OPTION') */
  readonly code = ERROR_CODES.option;
  /**
   * An option error.
   * @param message - what went wrong, naming the option, file or rank
   * @param options - `cause`: the error underneath, if any
   * @example
   * ```ts
   * new OptionError('train: lr must be a finite number > 0, got NaN');
   * ```
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'OptionError';
  }
}

/**
 * Every problem found in a dataset or a list of records, one "where: what" per entry (the first 20
 * in the message).
 * @example
 * ```ts
 * throw new DataError(['data.jsonl:3: missing field \'output\'']);
 * ```
 */
export class DataError extends Error implements CodedError {
  /** always ERROR_CODES.data ('ERR_JFA_DATA') */
  readonly code = ERROR_CODES.data;
  /**
   * An error listing the problems (the first 20 in the message).
   * @param problems - one "where: what" per entry
   * @example
   * ```ts
   * new DataError(["train: data.newTrain[3]: field 'output' must be a string, got null"]);
   * ```
   */
  constructor(
    /** one "where: what" per problem found */
    readonly problems: string[],
  ) {
    const shown = problems.slice(0, 20);
    super(problems.length > shown.length ? `${shown.join('\n')}\n... and ${problems.length - shown.length} more` : shown.join('\n'));
    this.name = 'DataError';
  }
}

/**
 * The base of the library's coded errors that carry only a message and a cause: its name is its
 * class's (ModelFormatError, ...).
 * @example
 * ```ts
 * new ModelFormatError('x').name; // 'ModelFormatError'
 * ```
 */
export class NamedError extends Error {
  /**
   * An error named after its class.
   * @param message - what went wrong, naming the option, file or rank
   * @param options - `cause`: the error underneath, if any
   * @example
   * ```ts
   * new CheckpointError('train: nothing to resume in runs/a');
   * ```
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A model, adapter or latent-pool folder that cannot be read as one: a missing or malformed
 * config, weights that do not fit it. The native error is the cause. A RangeError, as the
 * loader's errors were before codes.
 * @example
 * ```ts
 * try { loadModel('not-a-model'); } catch (e) { if (e instanceof ModelFormatError) console.error(e.message); }
 * ```
 */
export class ModelFormatError extends RangeError implements CodedError {
  /** always ERROR_CODES.modelFormat ('ERR_JFA_MODEL_FORMAT') */
  readonly code = ERROR_CODES.modelFormat;
  /**
   * A model-format error.
   * @param message - what went wrong, naming the option, file or rank
   * @param options - `cause`: the error underneath, if any
   * @example
   * ```ts
   * new ModelFormatError('my-model/config.json: missing (not a Hugging Face model directory)');
   * ```
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ModelFormatError';
  }
}

/**
 * A data-parallel group that could not form, or that lost a rank (a closed connection, a timeout).
 * @example
 * ```ts
 * throw new DistributedError('rank 1: the connection to rank 0 closed at step 12');
 * ```
 */
export class DistributedError extends NamedError implements CodedError {
  /** always ERROR_CODES.distributed ('ERR_JFA_DISTRIBUTED') */
  readonly code = ERROR_CODES.distributed;
}

/**
 * A checkpoint to resume from that is missing, incomplete, or another run's.
 * @example
 * ```ts
 * throw new CheckpointError('train: nothing to resume in runs/a');
 * ```
 */
export class CheckpointError extends NamedError implements CodedError {
  /** always ERROR_CODES.checkpoint ('ERR_JFA_CHECKPOINT') */
  readonly code = ERROR_CODES.checkpoint;
}

/**
 * A callback of the caller's threw or rejected; the run stopped at a step boundary (with a
 * checkpoint when it has an output folder) and `cause` is the callback's error.
 * @example
 * ```ts
 * declare const data: TrainData;
 * try { await train(model, tokenizer, data, { method: 'sft', onStep: async () => { throw new Error('x'); } }); }
 * catch (e) { if (e instanceof CallbackError) console.error(e.step, e.cause); }
 * ```
 */
export class CallbackError extends Error implements CodedError {
  /** always ERROR_CODES.callback ('ERR_JFA_CALLBACK') */
  readonly code = ERROR_CODES.callback;
  /**
   * A callback error.
   * @param message - what failed, and after which step
   * @param step - the step after which the callback failed
   * @param options - `cause`: the callback's error
   * @example
   * ```ts
   * new CallbackError('train: onStep failed after step 3: boom', 3, { cause: new Error('boom') });
   * ```
   */
  constructor(
    message: string,
    /** the step after which the callback failed */
    readonly step: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'CallbackError';
  }
}

/**
 * Work cancelled through an AbortSignal: name 'AbortError' and code 'ABORT_ERR', as Node's own;
 * `cause` is the signal's reason.
 * @example
 * ```ts
 * declare const data: TrainData;
 * const controller = new AbortController();
 * setTimeout(() => controller.abort(), 60_000);
 * try { await train(model, tokenizer, data, { method: 'sft', outDir: 'runs/a', signal: controller.signal }); }
 * catch (e) { if (e instanceof AbortError) console.log('stopped; resume with { resume: true }'); }
 * ```
 */
export class AbortError extends NamedError implements CodedError {
  /** always ERROR_CODES.abort ('ABORT_ERR') */
  readonly code = ERROR_CODES.abort;
  /**
   * An abort error.
   * @param message - what was cancelled
   * @param options - `cause`: the signal's reason
   * @example
   * ```ts
   * new AbortError('train: stopped at step 8 of 20: aborted', { cause: new Error('deadline') });
   * ```
   */
  constructor(message = 'The operation was aborted', options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Throws an {@link AbortError} when `signal` has been aborted.
 * @param signal - the caller's signal, if any.
 * @param what - what was cancelled, for the message.
 * @throws AbortError with the signal's reason as the cause.
 * @example
 * ```ts
 * throwIfAborted(AbortSignal.timeout(1000), 'evaluation');
 * ```
 */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortError(`${what}: aborted`, { cause: signal.reason });
}

/**
 * `promise`, or a rejection with an AbortError as soon as `signal` aborts, whichever comes first.
 * The promise is left running; a rejection of it after the abort is ignored.
 * @param promise - the work.
 * @param signal - the caller's signal, if any.
 * @param what - what was cancelled, for the message.
 * @returns the work's result, unless aborted first.
 * @example
 * ```ts
 * const out = await abortable(model.generate(ids), AbortSignal.timeout(5000), 'generate');
 * ```
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return promise;
  promise.catch(() => {});
  if (signal.aborted) return Promise.reject(new AbortError(`${what}: aborted`, { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError(`${what}: aborted`, { cause: signal.reason }));
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

/**
 * A value as an error message names it: NaN, Infinity, null, undefined and functions by name, the
 * rest as JSON (cut at 60 characters).
 * @param v - any value.
 * @returns its description.
 * @example
 * ```ts
 * describeValue(Number.NaN); // 'NaN'
 * describeValue(null); // 'null'
 * ```
 */
export function describeValue(v: unknown): string {
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : String(v);
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'bigint') return `${v}n`;
  const json = JSON.stringify(v);
  if (json === undefined) return String(v);
  return json.length > 60 ? `${json.slice(0, 57)}...` : json;
}

/**
 * The known name nearest to `name` (edit distance, at most a third of its length), for "did you
 * mean" messages.
 * @param name - the unknown name.
 * @param known - the valid names.
 * @returns the nearest, or undefined when none is near.
 * @example
 * ```ts
 * nearestName('learningRate', ['lr', 'epochs']); // undefined
 * nearestName('epoch', ['lr', 'epochs']); // 'epochs'
 * ```
 */
export function nearestName(name: string, known: readonly string[]): string | undefined {
  const distance = (a: string, b: string): number => {
    const row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      let diagonal = row[0]!;
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const up = row[j]!;
        row[j] = Math.min(up + 1, row[j - 1]! + 1, diagonal + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
        diagonal = up;
      }
    }
    return row[b.length]!;
  };
  let best: { name: string; d: number } | undefined;
  const lower = name.toLowerCase();
  for (const k of known) {
    // A name that starts with a known one, or the reverse ('batchSize' for 'batch'), is near too.
    const prefixed = k.length >= 2 && (lower.startsWith(k.toLowerCase()) || k.toLowerCase().startsWith(lower));
    const d = Math.min(distance(name, k), prefixed ? 1 : Infinity);
    if (!best || d < best.d) best = { name: k, d };
  }
  return best && best.d <= Math.max(1, Math.floor(name.length / 3)) ? best.name : undefined;
}

/**
 * Refuses keys of `given` that are not in `known`, naming each and the nearest valid name.
 * @param where - the function, for the message ('train', 'generateText').
 * @param given - the caller's options object.
 * @param known - the valid option names.
 * @throws OptionError for a non-object or an unknown key.
 * @example
 * ```ts
 * checkKeys('train', { method: 'sft', epoch: 2 }, ['method', 'epochs']); // throws: unknown option 'epoch' (did you mean 'epochs'?)
 * ```
 */
export function checkKeys(where: string, given: unknown, known: readonly string[]): void {
  if (given === null || typeof given !== 'object' || Array.isArray(given)) throw new OptionError(`${where}: options must be an object, got ${describeValue(given)}`);
  const unknown = Object.keys(given).filter((k) => !known.includes(k));
  if (unknown.length === 0) return;
  const named = unknown.map((k) => {
    const near = nearestName(k, known);
    return `'${k}'${near ? ` (did you mean '${near}'?)` : ''}`;
  });
  throw new OptionError(`${where}: unknown option${unknown.length > 1 ? 's' : ''} ${named.join(', ')}`);
}
