// Generation's options, checked once in JS with the public names (the addon checks again, in C++
// terms), and handed to the addon as it reads them.
import { checkKeys, OptionError } from '../errors.js';
import { type NativeGenerateOptions } from '../native.js';
import { h, type Tensor } from '../tensor.js';

/** Options of {@link LlamaModel.generate} and {@link LlamaModel.decoder}; names follow transformers' generate (camel-cased). */
export interface GenerateOptions {
  /** (b, t) for left-padded prompts; omitted: all real. */
  attentionMask?: Tensor | undefined;
  /** Tokens to generate at most (default 32). transformers: `max_new_tokens`. */
  maxNewTokens?: number | undefined;
  /** 0 (default): greedy. transformers: `temperature` with `do_sample=True` (greedy is `do_sample=False`). */
  temperature?: number | undefined;
  /** Nucleus sampling's probability mass (default 1: off). transformers: `top_p`. */
  topP?: number | undefined;
  /**
   * Sampling keeps only the k most likely tokens (those tied with the k-th stay too), before topP.
   * Default 0: off (transformers' `top_k`, whose default is 50).
   */
  topK?: number | undefined;
  /**
   * Every token already in a sequence (its prompt's real tokens and what it generated) has its
   * logit divided by this when positive, multiplied when negative, before anything else (greedy
   * too). Default 1: off. transformers: `repetition_penalty` (which also penalises the padding
   * token of left-padded rows; padding is no part of a sequence here).
   */
  repetitionPenalty?: number | undefined;
  /** Seed of the sampling. */
  seed?: number | bigint | undefined;
  /** Sequences stop at any of these. */
  eosTokenIds?: number[] | undefined;
  /** Written after a sequence stopped. */
  padTokenId?: number | undefined;
  /** Apply LoRA adapters (default true). */
  adapters?: boolean | undefined;
  /**
   * Latent-task increments per sequence, (b, k) indices and weights, on the o_proj of layers with a
   * pool (setLatentPool): applied to the prompt and to every generated token.
   */
  latent?: {
    /** (b, k) int64 pool entries */
    indices: Tensor;
    /** (b, k) mixture weights */
    weights: Tensor;
  };
}

/** Every option name of {@link LlamaModel.generate}. */
export const GENERATE_OPTION_NAMES = [
  'attentionMask', 'maxNewTokens', 'temperature', 'topP', 'topK', 'repetitionPenalty', 'seed', 'eosTokenIds', 'padTokenId', 'adapters', 'latent',
] as const satisfies readonly (keyof GenerateOptions)[];

/** A value as the addon's messages show it: "number NaN", "null", "string 'x'". */
export function shown(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === 'string') return `string '${v}'`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  return Array.isArray(v) ? `Array(${v.length})` : typeof v;
}

type Check = (v: number) => boolean;
/** Each sampling option's rule, as its message states it. */
const RULES: Record<'maxNewTokens' | 'temperature' | 'topP' | 'topK' | 'repetitionPenalty', [Check, string]> = {
  maxNewTokens: [(v) => Number.isSafeInteger(v) && v >= 1, 'a positive integer'],
  temperature: [(v) => Number.isFinite(v) && v >= 0, 'a finite number >= 0 (0: greedy)'],
  topP: [(v) => v > 0 && v <= 1, 'a number in (0, 1]'],
  topK: [(v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer (0: off)'],
  repetitionPenalty: [(v) => Number.isFinite(v) && v > 0, 'a finite number > 0 (1: off)'],
};

/**
 * Throws a RangeError naming `op`, the option and its value for a sampling option that is given
 * (not undefined) and breaks its rule; null, NaN and Infinity are named as such.
 * @param options - the options as the caller gave them.
 * @param op - the public function, for the message.
 */
export function checkGenerateOptions(options: Partial<Record<keyof typeof RULES, unknown>>, op: string, known: readonly string[] = GENERATE_OPTION_NAMES): void {
  checkKeys(op, options, known);
  for (const [name, [ok, rule]] of Object.entries(RULES)) {
    const v = options[name as keyof typeof RULES];
    if (v !== undefined && !(typeof v === 'number' && ok(v))) throw new OptionError(`${op}: ${name} must be ${rule}, got ${shown(v)}`);
  }
}

/** Checked options as the addon reads them, defaults filled in. */
export function nativeGenerateOptions(o: GenerateOptions, op: string): NativeGenerateOptions {
  checkGenerateOptions(o, op);
  return {
    attentionMask: o.attentionMask && h(o.attentionMask),
    adapters: o.adapters ?? true,
    latent: o.latent ? { indices: h(o.latent.indices), weights: h(o.latent.weights) } : undefined,
    maxNewTokens: o.maxNewTokens ?? 32,
    temperature: o.temperature ?? 0,
    topP: o.topP ?? 1,
    topK: o.topK ?? 0,
    repetitionPenalty: o.repetitionPenalty ?? 1,
    seed: o.seed,
    eosTokenIds: o.eosTokenIds ?? [],
    padTokenId: o.padTokenId ?? 0,
  };
}
