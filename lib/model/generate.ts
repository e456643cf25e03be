// Text in, text out: prompts tokenized into a left-padded batch, generated natively, decoded.
import { type GenerateOptions, type LlamaModel } from './llama.js';
import { type ChatMessage, type Tokenizer } from './tokenizer.js';

/** Options of {@link generateText}: those of {@link LlamaModel.generate} but the mask and stop tokens, which it sets. */
export interface GenerateTextOptions extends Omit<GenerateOptions, 'attentionMask' | 'eosTokenIds' | 'padTokenId'> {
  /** Wrap each prompt as a user message in the tokenizer's chat template. */
  chat?: boolean;
}

/** One prompt's continuation. */
export interface GeneratedText {
  /** the prompt as given */
  prompt: string;
  /** the generated text, up to (not including) the end-of-sequence token */
  text: string;
  /** tokens generated (before the end-of-sequence token) */
  tokens: number;
}

/**
 * Generates a continuation of each prompt; stops at the tokenizer's end-of-sequence token.
 * @param model - the model (with or without adapters).
 * @param tokenizer - its tokenizer.
 * @param prompts - one or more prompts, batched together.
 * @param options - length, sampling, chat (wrap each prompt in the chat template), adapters.
 * @returns one result per prompt, in order.
 * @throws (rejects with) RangeError for no prompts or a bad option; Error when chat is set and the tokenizer has no template.
 * @example
 * ```ts
 * const [answer] = await generateText(model, tokenizer, ['What is 17 + 25?'], { chat: true, maxNewTokens: 16 });
 * console.log(answer?.text);
 * ```
 */
export async function generateText(model: LlamaModel, tokenizer: Tokenizer, prompts: string[], options: GenerateTextOptions = {}): Promise<GeneratedText[]> {
  const texts = options.chat
    ? prompts.map((p) => tokenizer.applyChatTemplate([{ role: 'user', content: p } satisfies ChatMessage]))
    : prompts;
  const batch = tokenizer.batch(texts, { padding: 'left' });
  const eos = tokenizer.eosTokenId;
  const pad = tokenizer.padTokenId ?? 0;
  try {
    const out = await model.generate(batch.ids, {
      ...options,
      attentionMask: batch.attentionMask,
      eosTokenIds: eos === undefined ? [] : [eos],
      padTokenId: pad,
    });
    const [rows, width] = out.shape as [number, number];
    const ids = out.toTypedArray() as BigInt64Array;
    out.dispose();
    return prompts.map((prompt, r) => {
      const row = Array.from(ids.subarray(r * width, (r + 1) * width), Number);
      const end = eos === undefined ? -1 : row.indexOf(eos);
      const kept = end >= 0 ? row.slice(0, end) : row;
      return { prompt, text: tokenizer.decode(kept), tokens: kept.length };
    }).slice(0, rows);
  } finally {
    batch.ids.dispose();
    batch.attentionMask.dispose();
  }
}
