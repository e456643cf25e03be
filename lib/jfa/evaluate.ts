// Evaluation by generation: old tasks by exact answer or choice (accuracy), new tasks by ROUGE-L
// and exact match against their outputs. Greedy decoding, prompts formatted as in training; with a
// latent pool, each prompt's retrieved increments apply to its whole generation, as in training.
import { accuracy, autoScores, type FormatScores, newTaskScores } from '../data/metrics.js';
import { checkRecords } from '../data/jsonl.js';
import { type InstanceRecord, type OldRecord } from '../data/records.js';
import { AbortError, checkKeys, describeValue, OptionError, throwIfAborted } from '../errors.js';
import { generateContinuous } from '../model/continuous.js';
import { generateText } from '../model/generate.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { emptyCpuCache } from '../runtime.js';
import { promptText } from './examples.js';
import { type LatentPool } from './pool.js';

/** The generation settings {@link evaluateOld}, {@link evaluateNew}, `jfa eval` and train()'s evaluations use unless told. */
export const EVAL_DEFAULTS = {
  /** prompts generated together */
  batch: 16,
  /** tokens generated per prompt at most */
  maxNewTokens: 64,
} as const;

/** Options of {@link evaluateOld} and {@link evaluateNew}. */
export interface EvalOptions {
  /** prompts generated together (default 16) */
  batch?: number | undefined;
  /** tokens generated per prompt at most (default 64) */
  maxNewTokens?: number | undefined;
  /** apply the LoRA adapters (default true); false scores the base model */
  adapters?: boolean | undefined;
  /** a pool attached to this model (LatentPool.load, or train()'s result): retrieved per record */
  latent?: LatentPool | undefined;
  /** called as records are done (after each batch, or as they end with continuous batching) with the records done and the total */
  onBatch?: ((done: number, total: number) => void) | undefined;
  /** cancels the evaluation (between batches, or between decode steps with continuous batching): it rejects with an AbortError (code 'ABORT_ERR') */
  signal?: AbortSignal | undefined;
  /** keep the CPU allocator's cached blocks afterwards (default: they go back to the system) */
  keepCache?: boolean | undefined;
  /**
   * continuous batching (default true): `batch` prompts decode together and a prompt that ended
   * gives its slot to the next ({@link generateContinuous}); false: fixed batches of `batch`
   * prompts, each generated to its end ({@link generateText}), as before. The predictions are the same.
   */
  continuous?: boolean | undefined;
}

const EVAL_OPTION_NAMES = ['batch', 'maxNewTokens', 'adapters', 'latent', 'onBatch', 'signal', 'keepCache', 'continuous'] as const satisfies readonly (keyof EvalOptions)[];

/** The options and records of an evaluation, checked as train() checks its own (OptionError, DataError). */
function checkEval(records: unknown, o: EvalOptions): InstanceRecord[] {
  checkKeys('evaluate', o, EVAL_OPTION_NAMES);
  const positive = (name: string, v: unknown) => {
    if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 1)) throw new OptionError(`evaluate: ${name} must be a positive integer, got ${describeValue(v)}`);
  };
  positive('batch', o.batch);
  positive('maxNewTokens', o.maxNewTokens);
  for (const name of ['adapters', 'continuous'] as const)
    if (o[name] !== undefined && typeof o[name] !== 'boolean') throw new OptionError(`evaluate: ${name} must be a boolean, got ${describeValue(o[name])}`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new OptionError(`evaluate: signal must be an AbortSignal, got ${describeValue(o.signal)}`);
  return checkRecords('evaluate: records', records, 'instance');
}

async function predict(model: LlamaModel, tokenizer: Tokenizer, given: InstanceRecord[], o: EvalOptions): Promise<string[]> {
  const records = checkEval(given, o);
  try {
    return await predictChecked(model, tokenizer, records, o);
  } finally {
    if (!o.keepCache) emptyCpuCache();
  }
}

async function predictChecked(model: LlamaModel, tokenizer: Tokenizer, records: InstanceRecord[], o: EvalOptions): Promise<string[]> {
  const batch = o.batch ?? EVAL_DEFAULTS.batch;
  const prompts = records.map(promptText);
  // Prompts of similar length together: a left-padded batch (or refill) computes every row at its
  // longest prompt's length. Each prompt is generated alone in effect (its own mask and positions), so
  // the order changes what is computed, not the predictions; they are returned in the records' order.
  const lengths = prompts.map((p) => tokenizer.encode(p).length);
  const order = records.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  if (o.continuous ?? true) return predictContinuous(model, tokenizer, records, prompts, order, o);
  const out = new Array<string>(records.length);
  for (let i = 0; i < order.length; i += batch) {
    throwIfAborted(o.signal, `evaluate: stopped after ${i} of ${records.length} records`);
    const picked = order.slice(i, i + batch);
    const chunk = picked.map((j) => records[j]!);
    const latent = o.latent?.retrieve(model, tokenizer, chunk);
    try {
      const results = await generateText(model, tokenizer, picked.map((j) => prompts[j]!), { maxNewTokens: o.maxNewTokens ?? EVAL_DEFAULTS.maxNewTokens, adapters: o.adapters, latent });
      results.forEach((r, k) => (out[picked[k]!] = r.text));
    } finally {
      latent?.indices.dispose();
      latent?.weights.dispose();
    }
    o.onBatch?.(Math.min(i + batch, records.length), records.length);
  }
  return out;
}

/** predictChecked by continuous batching: the prompts in `order`, `batch` slots, each record's latent tasks retrieved alone (as in a batch). */
async function predictContinuous(model: LlamaModel, tokenizer: Tokenizer, records: InstanceRecord[], prompts: string[], order: number[], o: EvalOptions): Promise<string[]> {
  const latent = o.latent?.retrieve(model, tokenizer, order.map((j) => records[j]!));
  let done = 0;
  try {
    const results = await generateContinuous(model, tokenizer, order.map((j) => prompts[j]!), {
      slots: o.batch ?? EVAL_DEFAULTS.batch,
      maxNewTokens: o.maxNewTokens ?? EVAL_DEFAULTS.maxNewTokens,
      adapters: o.adapters,
      latent,
      signal: o.signal,
      onDone: (d, total) => {
        done = d;
        o.onBatch?.(d, total);
      },
    });
    const out = new Array<string>(records.length);
    results.forEach((r, k) => (out[order[k]!] = r.text));
    return out;
  } catch (e) {
    if (e instanceof AbortError) throw new AbortError(`evaluate: stopped after ${done} of ${records.length} records: aborted`, { cause: e.cause });
    throw e;
  } finally {
    latent?.indices.dispose();
    latent?.weights.dispose();
  }
}

/**
 * Accuracy on old-task records (each carries its `answer`), by greedy generation.
 * @param model - the model to score.
 * @param tokenizer - its tokenizer.
 * @param records - old-task records with answers.
 * @param o - batch size, length, adapters, latent pool, progress.
 * @returns a promise of `accuracy` (0 to 1) and each record's generated `predictions`.
 * @throws (rejects with) RangeError for no records or a bad option.
 * @example
 * ```ts
 * const old = readJsonl('old-eval.jsonl', 'instance').filter((r): r is OldRecord => r.answer !== undefined);
 * const { accuracy } = await evaluateOld(model, tokenizer, old, { maxNewTokens: 16 });
 * ```
 */
export async function evaluateOld(model: LlamaModel, tokenizer: Tokenizer, records: OldRecord[], o: EvalOptions = {}): Promise<{ accuracy: number; predictions: string[] }> {
  const predictions = await predict(model, tokenizer, records, o);
  return { accuracy: accuracy(records, predictions), predictions };
}

/**
 * ROUGE-L and exact match on new-task records, by greedy generation.
 * @param model - the model to score.
 * @param tokenizer - its tokenizer.
 * @param records - new-task records (their outputs are the references).
 * @param o - batch size, length, adapters, latent pool, progress.
 * @returns a promise of mean `rougeL` and `exactMatch` (0 to 1) and the generated `predictions`.
 * @throws (rejects with) RangeError for no records or a bad option.
 * @example
 * ```ts
 * const { rougeL, exactMatch } = await evaluateNew(model, tokenizer, readJsonl('new-eval.jsonl', 'instance'));
 * ```
 */
export async function evaluateNew(model: LlamaModel, tokenizer: Tokenizer, records: InstanceRecord[], o: EvalOptions = {}): Promise<{ rougeL: number; exactMatch: number; predictions: string[] }> {
  const predictions = await predict(model, tokenizer, records, o);
  return { ...newTaskScores(records.map((r) => r.output), predictions), predictions };
}

/**
 * Scores records of several formats in one pass, each with its paper's metric (metrics.ts
 * `autoScores`): accuracy for the old-task formats, ROUGE-L and BLEU-4 for SuperNI and chat.
 * `format` scores every record as that format instead of the one recorded on it. The records are
 * checked before anything is generated, so a missing answer or an unknown format fails at once.
 * @param model - the model to score.
 * @param tokenizer - its tokenizer.
 * @param records - records of any formats (their outputs, or answers, are the references).
 * @param o - batch size, length, adapters, latent pool, progress, and `format`, a format to score every record as.
 * @returns a promise of one score group per format (see `autoScores`) and each record's generated `predictions`.
 * @throws (rejects with) Error when a format scored by answer has a record without `answer` or `format` is
 * unknown; RangeError for a bad generation option.
 * @example
 * ```ts
 * const { formats } = await evaluateByFormat(model, tokenizer, readJsonl('eval-mixed.jsonl', 'instance'));
 * for (const s of formats) console.log(s.format, s.records, s.accuracy ?? s.rougeL);
 * ```
 */
export async function evaluateByFormat(
  model: LlamaModel,
  tokenizer: Tokenizer,
  records: InstanceRecord[],
  o: EvalOptions & {
    /** a format of metrics.ts FORMAT_SCORING that every record is scored as (default: each record's own) */
    format?: string;
  } = {},
): Promise<{
  /** the scores, one group per format in order of first appearance */
  formats: FormatScores[];
  /** the generated output of each record, in order */
  predictions: string[];
}> {
  // Checked before generating, so a missing answer fails at once.
  const { format, ...options } = o;
  autoScores(records, records.map(() => ''), format);
  const predictions = await predict(model, tokenizer, records, options);
  return { formats: autoScores(records, predictions, format), predictions };
}
