// Text in, text out: prompts tokenized into a left-padded batch and generated natively by a
// Decoder, which JS steps so that it can look at the text between steps (stop strings, a stream,
// abort) while the decoding loop stays native.
import { abortable, throwIfAborted } from '../errors.js';
import { type Decoder } from './decoder.js';
import { checkGenerateOptions, type GenerateOptions } from './generate-options.js';
import { type LlamaModel } from './llama.js';
import { checkStopStrings, findStop, type StopHit, StopStream } from './text-stream.js';
import { type ChatMessage, type Tokenizer } from './tokenizer.js';

/** Options of {@link generateText} and {@link generateStream}: those of {@link LlamaModel.generate} but the mask and stop tokens, which they set. */
export interface GenerateTextOptions extends Omit<GenerateOptions, 'attentionMask' | 'eosTokenIds' | 'padTokenId'> {
  /** Wrap each prompt as a user message in the tokenizer's chat template. */
  chat?: boolean | undefined;
  /**
   * A sequence stops once its generated text contains one of these; the text returned ends just
   * before it (the stop string is not included, unlike transformers' `stop_strings`, which keeps
   * its tokens). Where two complete at once, the one that ends first wins (of two ending together,
   * the longer). Matched on the decoded text, so a stop string may span tokens.
   */
  stopStrings?: string[] | undefined;
  /** Aborting rejects with an AbortError (code 'ABORT_ERR') and frees the native state. */
  signal?: AbortSignal | undefined;
}

/** Every option name of {@link generateText} and {@link generateStream}. */
const TEXT_OPTION_NAMES = [
  'maxNewTokens', 'temperature', 'topP', 'topK', 'repetitionPenalty', 'seed', 'adapters', 'latent', 'chat', 'stopStrings', 'signal',
] as const satisfies readonly (keyof GenerateTextOptions)[];

/** Options of {@link generateStream}: those of {@link generateText}, for one prompt. */
export type GenerateStreamOptions = GenerateTextOptions;

/** Why a sequence ended. */
export type FinishReason = 'eos' | 'stop' | 'length';

/** One prompt's continuation. */
export interface GeneratedText {
  /** the prompt as given */
  prompt: string;
  /** the generated text, up to (not including) the end-of-sequence token or the stop string */
  text: string;
  /** tokens generated: before the end-of-sequence token, or up to the one that completed the stop string */
  tokens: number;
  /** 'eos': the end-of-sequence token; 'stop': a stop string; 'length': maxNewTokens */
  finishReason: FinishReason;
  /** the stop string that ended it, when finishReason is 'stop' */
  stopString?: string;
}

/** With stop strings, the batch's text is checked every this many tokens: fewer wasted tokens past a stop, against a round trip to the pool each time. */
const STOP_CHECK_TOKENS = 8;

/** The prompts as the model reads them: each wrapped in the chat template when asked. */
function promptTexts(tokenizer: Tokenizer, prompts: string[], chat: boolean | undefined): string[] {
  return chat ? prompts.map((p) => tokenizer.applyChatTemplate([{ role: 'user', content: p } satisfies ChatMessage])) : prompts;
}

/** A decoder on the left-padded prompts; aborting while the prefill runs disposes it when it arrives. */
async function startDecoder(model: LlamaModel, tokenizer: Tokenizer, texts: string[], options: GenerateTextOptions, op: string): Promise<Decoder> {
  const { chat: _chat, stopStrings: _stops, signal, ...rest } = options;
  const batch = tokenizer.batch(texts, { padding: 'left' });
  const eos = tokenizer.eosTokenId;
  // The addon holds the ids and mask it needs: the handles go now, prefill running or not.
  const pending = model.decoder(batch.ids, { ...rest, attentionMask: batch.attentionMask, eosTokenIds: eos === undefined ? [] : [eos], padTokenId: tokenizer.padTokenId ?? 0 });
  batch.ids.dispose();
  batch.attentionMask.dispose();
  try {
    return await abortable(pending, signal, op);
  } catch (e) {
    void pending.then((d) => d.dispose(), () => {});
    throw e;
  }
}

/** The fewest leading tokens of `ids` whose text contains a stop string (ids' whole text does). */
function tokensToStop(tokenizer: Tokenizer, ids: number[], stops: readonly string[]): number {
  let lo = 1;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (findStop(tokenizer.decode(ids.slice(0, mid)), stops)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Generates a continuation of each prompt, batched; a sequence stops at the tokenizer's
 * end-of-sequence token, at a stop string, or after maxNewTokens. With stop strings, each row stops
 * on its own, and the batch once every row has.
 * @param model - the model (with or without adapters).
 * @param tokenizer - its tokenizer.
 * @param prompts - one or more prompts, batched together.
 * @param options - length, sampling (temperature, topP, topK, repetitionPenalty, seed), stop strings, chat (wrap each prompt in the chat template), adapters, signal.
 * @returns one result per prompt, in order.
 * @throws (rejects with) RangeError for no prompts or a bad option, naming it and its value; TypeError
 *   for stop strings that are not strings; Error when chat is set and the tokenizer has no template;
 *   AbortError (code 'ABORT_ERR') when the signal aborts.
 * @example
 * ```ts
 * const [answer] = await generateText(model, tokenizer, ['What is 17 + 25?'], { chat: true, maxNewTokens: 16 });
 * console.log(answer?.text);
 * ```
 * @example
 * ```ts
 * // Sampling as transformers' generate(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.2, stop_strings=['\n'])
 * const rows = await generateText(model, tokenizer, ['Q: 2+2?\nA:', 'Q: 3+5?\nA:'], {
 *   temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.2, stopStrings: ['\n'], seed: 1,
 * });
 * rows.map((r) => [r.text, r.finishReason]);
 * ```
 */
export async function generateText(model: LlamaModel, tokenizer: Tokenizer, prompts: string[], options: GenerateTextOptions = {}): Promise<GeneratedText[]> {
  const op = 'generateText';
  const stops = checkStopStrings(options.stopStrings, op);
  checkGenerateOptions(options, op, TEXT_OPTION_NAMES);
  throwIfAborted(options.signal, op);
  const decoder = await startDecoder(model, tokenizer, promptTexts(tokenizer, prompts, options.chat), options, op);
  const eos = tokenizer.eosTokenId;
  const untilEos = (row: number[]) => (eos !== undefined && row.includes(eos) ? row.slice(0, row.indexOf(eos)) : row);
  try {
    const rows = prompts.map((): number[] => []);
    const hits: Array<StopHit | undefined> = [];
    const settled = prompts.map(() => false); // a stop string or the end-of-sequence token seen
    const chunk = stops.length ? STOP_CHECK_TOKENS : (options.maxNewTokens ?? 32);
    while (!decoder.done) {
      const step = await abortable(decoder.step(chunk), options.signal, op);
      step.forEach((tokens, r) => rows[r]!.push(...tokens));
      if (!stops.length) continue;
      const stopping: number[] = [];
      rows.forEach((row, r) => {
        if (settled[r]) return;
        hits[r] = findStop(tokenizer.decode(untilEos(row)), stops);
        if (hits[r]) stopping.push(r);
        settled[r] = Boolean(hits[r]) || untilEos(row).length < row.length;
      });
      if (stopping.length) decoder.stop(stopping);
    }
    return prompts.map((prompt, r): GeneratedText => {
      const row = rows[r]!;
      const kept = untilEos(row);
      if (!hits[r]) return { prompt, text: tokenizer.decode(kept), tokens: kept.length, finishReason: kept.length < row.length ? 'eos' : 'length' };
      const tokens = tokensToStop(tokenizer, kept, stops);
      const text = tokenizer.decode(kept.slice(0, tokens));
      const hit = findStop(text, stops)!;
      return { prompt, text: text.slice(0, hit.index), tokens, finishReason: 'stop', stopString: hit.stop };
    });
  } finally {
    decoder.dispose();
  }
}

/**
 * Streams one prompt's continuation as text pieces, as they are generated: each piece is whole
 * characters (a character whose UTF-8 bytes span tokens waits for its last one), and the stream ends
 * before a stop string, no part of which is ever let out (text that could begin one waits until it
 * cannot). Concatenated, the pieces are generateText's text for the same options. Generation starts
 * with the iteration, one token per step on the libuv pool, so the event loop stays free; `break`
 * (or return()) and abort free the native state (the KV cache) and release the model.
 * @param model - the model (with or without adapters).
 * @param tokenizer - its tokenizer.
 * @param prompt - the prompt.
 * @param options - as {@link generateText}'s: length, sampling, stopStrings, chat, adapters, signal.
 * @returns an async iterable of the text pieces.
 * @throws RangeError for a bad option, naming it and its value; TypeError for stop strings that are
 *   not strings. The iteration rejects with AbortError (code 'ABORT_ERR') when the signal aborts,
 *   and with generateText's errors.
 * @example
 * ```ts
 * for await (const piece of generateStream(model, tokenizer, 'Tell me a story.', { chat: true, maxNewTokens: 200, stopStrings: ['THE END'] })) {
 *   process.stdout.write(piece);
 * }
 * ```
 * @example
 * ```ts
 * const controller = new AbortController();
 * setTimeout(() => controller.abort(), 1000);
 * try {
 *   for await (const piece of generateStream(model, tokenizer, 'Count to a thousand:', { signal: controller.signal })) process.stdout.write(piece);
 * } catch (e) {
 *   if ((e as { code?: string }).code !== 'ABORT_ERR') throw e;
 * }
 * ```
 */
export function generateStream(model: LlamaModel, tokenizer: Tokenizer, prompt: string, options: GenerateStreamOptions = {}): AsyncGenerator<string, void, undefined> {
  const op = 'generateStream';
  if (typeof prompt !== 'string') throw new TypeError(`${op}: prompt must be a string, got ${prompt === null ? 'null' : typeof prompt}`);
  const stops = checkStopStrings(options.stopStrings, op);
  checkGenerateOptions(options, op, TEXT_OPTION_NAMES);
  return stream(model, tokenizer, prompt, stops, options, op);
}

async function* stream(model: LlamaModel, tokenizer: Tokenizer, prompt: string, stops: string[], options: GenerateStreamOptions, op: string): AsyncGenerator<string, void, undefined> {
  throwIfAborted(options.signal, op);
  const decoder = await startDecoder(model, tokenizer, promptTexts(tokenizer, [prompt], options.chat), options, op);
  try {
    const text = new StopStream((ids) => tokenizer.decode(ids), stops);
    while (!decoder.done) {
      throwIfAborted(options.signal, op);
      const [tokens] = await abortable(decoder.step(1), options.signal, op);
      for (const id of tokens!) {
        if (id === tokenizer.eosTokenId) break;
        const piece = text.push(id);
        if (piece) yield piece;
        if (text.hit) return;
      }
    }
    const rest = text.end();
    if (rest) yield rest;
  } finally {
    decoder.dispose();
  }
}
