// Continuous batching (core/continuous_session.h): many prompts generated greedily through a fixed
// number of slots, a slot whose sequence ended taking the next prompt, so that the batch stays full
// until the queue is empty. Evaluation generates this way.
import { abortable, OptionError, throwIfAborted } from '../errors.js';
import { h, tensor } from '../tensor.js';
import { type GeneratedText } from './generate.js';
import { checkGenerateOptions, type GenerateOptions, shown } from './generate-options.js';
import { type LlamaModel, modelHandle } from './llama.js';
import { type Tokenizer } from './tokenizer.js';

/** Options of {@link generateContinuous}. */
export interface ContinuousOptions {
  /** Prompts decoded at once (default 16). */
  slots?: number | undefined;
  /** Tokens to generate per prompt at most (default 32). */
  maxNewTokens?: number | undefined;
  /** As {@link GenerateOptions.repetitionPenalty} (default 1: off). */
  repetitionPenalty?: number | undefined;
  /** Apply LoRA adapters (default true). */
  adapters?: boolean | undefined;
  /** Latent-task increments, one row per prompt: (prompts, k) indices and weights, as {@link GenerateOptions.latent}. */
  latent?: GenerateOptions['latent'];
  /** Aborting rejects with an AbortError (code 'ABORT_ERR') and frees the native state. */
  signal?: AbortSignal | undefined;
  /** Called as prompts end, with how many have ended and the total. */
  onDone?: ((done: number, total: number) => void) | undefined;
}

const CONTINUOUS_OPTION_NAMES = ['slots', 'maxNewTokens', 'repetitionPenalty', 'adapters', 'latent', 'signal', 'onDone'] as const satisfies readonly (keyof ContinuousOptions)[];

/** Decode steps per call into the addon: few round trips, and an abort ends the running one after its current step. */
const STEPS_PER_CALL = 16;

/**
 * Generates a greedy continuation of each prompt by continuous batching: `slots` prompts decode
 * together, and a slot whose sequence ended (the tokenizer's end-of-sequence token, or maxNewTokens)
 * is refilled with the next waiting prompt, prefilled while the others wait one step. Each prompt
 * gets the tokens it gets alone ({@link generateText} with one prompt): its own positions, its own
 * keys in the cache, its own latent tasks. Prompts of similar lengths in order waste least padding
 * in the prefills (evaluation sorts them by length).
 * @param model - the model (with or without adapters).
 * @param tokenizer - its tokenizer.
 * @param prompts - the prompts, taken in order.
 * @param options - slots, length, repetition penalty, adapters, latent rows per prompt, signal, progress.
 * @returns one result per prompt, in order.
 * @throws (rejects with) RangeError for no prompts, a prompt of no tokens or a bad option, naming it;
 *   AbortError (code 'ABORT_ERR') when the signal aborts.
 * @example
 * ```ts
 * const rows = await generateContinuous(model, tokenizer, ['Q: 2+2?\nA:', 'Q: 3+5?\nA:'], { slots: 8, maxNewTokens: 16 });
 * rows.map((r) => r.text);
 * ```
 */
export async function generateContinuous(model: LlamaModel, tokenizer: Tokenizer, prompts: string[], options: ContinuousOptions = {}): Promise<GeneratedText[]> {
  const op = 'generateContinuous';
  checkGenerateOptions(options, op, CONTINUOUS_OPTION_NAMES);
  const slots = options.slots ?? 16;
  if (!(Number.isSafeInteger(slots) && slots >= 1)) throw new OptionError(`${op}: slots must be a positive integer, got ${shown(slots)}`);
  if (!Array.isArray(prompts) || prompts.length === 0) throw new RangeError(`${op}: no prompts`);
  throwIfAborted(options.signal, op);
  const encoded = prompts.map((p) => tokenizer.encode(p));
  const empty = encoded.findIndex((e) => e.length === 0);
  if (empty >= 0) throw new RangeError(`${op}: prompt ${empty} encodes to no tokens`);
  const eos = tokenizer.eosTokenId;
  const ids = tensor(BigInt64Array.from(encoded.flat(), BigInt), [encoded.reduce((s, e) => s + e.length, 0)]);
  const { latent } = options;
  // The addon holds the ids it needs: the handle goes now.
  const pending = modelHandle(model).continuousDecoderAsync(h(ids), encoded.map((e) => e.length), {
    slots,
    maxNewTokens: options.maxNewTokens ?? 32,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    adapters: options.adapters ?? true,
    latent: latent ? { indices: h(latent.indices), weights: h(latent.weights) } : undefined,
    eosTokenIds: eos === undefined ? [] : [eos],
    padTokenId: tokenizer.padTokenId ?? 0,
  });
  ids.dispose();
  let decoder;
  try {
    decoder = await abortable(pending, options.signal, op);
  } catch (e) {
    void pending.then((d) => d.dispose(), () => {});
    throw e;
  }
  try {
    const out = new Array<GeneratedText>(prompts.length);
    let done = 0;
    while (!decoder.done) {
      throwIfAborted(options.signal, op);
      const ended = await abortable(decoder.stepAsync(STEPS_PER_CALL), options.signal, op);
      for (const { prompt, tokens } of ended) {
        const atEos = eos !== undefined && tokens.at(-1) === eos;
        const kept = atEos ? tokens.slice(0, -1) : tokens;
        out[prompt] = { prompt: prompts[prompt]!, text: tokenizer.decode(kept), tokens: kept.length, finishReason: atEos ? 'eos' : 'length' };
      }
      done += ended.length;
      if (ended.length) options.onDone?.(done, prompts.length);
    }
    return out;
  } finally {
    decoder.dispose();
  }
}
