// Tokenizers from tokenizer.json (Hugging Face's format, run by @huggingface/tokenizers) and chat
// templates from tokenizer_config.json (run by @huggingface/jinja); batches become padded tensors.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { tensor, type Tensor } from '../tensor.js';
import { readJson } from '../util/files.js';

interface TokenizerJson {
  added_tokens?: Array<{ id: number; content: string }>;
  model?: { vocab?: Record<string, number> | Array<[string, number]> };
}

/** tokenizer_config.json's fields that the tokenizer reads (others are kept as they are). */
export interface TokenizerConfig {
  /** the beginning-of-sequence token */
  bos_token?: string | { content: string } | null;
  /** the end-of-sequence token */
  eos_token?: string | { content: string } | null;
  /** the padding token (default: the end-of-sequence token) */
  pad_token?: string | { content: string } | null;
  /** a Jinja chat template */
  chat_template?: string | null;
  [key: string]: unknown;
}

/** One message of a conversation, for a chat template. */
export interface ChatMessage {
  /** 'system', 'user' or 'assistant' (whatever the template knows) */
  role: string;
  /** the message's text */
  content: string;
}

/** Token ids of several texts, padded to one width. */
export interface Batch {
  /** (b, t) int64 token ids. */
  ids: Tensor;
  /** (b, t) uint8: 1 at real tokens, 0 at padding. */
  attentionMask: Tensor;
}

// Encoded and decoded when a tokenizer is loaded: any working tokenizer handles it.
const PROBE_TEXT = 'Hello world, 12 + 3 = 15.';

const tokenText = (t: TokenizerConfig[keyof TokenizerConfig]) =>
  typeof t === 'string' ? t : t && typeof t === 'object' && 'content' in t ? String((t as { content: string }).content) : undefined;

/**
 * A Hugging Face tokenizer (tokenizer.json) with its tokenizer_config.json: encoding, decoding,
 * chat templates and padded batches.
 *
 * @example
 * ```ts
 * const tokenizer = Tokenizer.fromDir('models/jfa-base');
 * const ids = tokenizer.encode('Hello'); // [1, ...] (BOS first)
 * tokenizer.decode(ids); // 'Hello'
 * ```
 */
export class Tokenizer {
  /** The beginning-of-sequence token's id, if the config names one. */
  readonly bosTokenId?: number;
  /** The end-of-sequence token's id, if the config names one. */
  readonly eosTokenId?: number;
  /** The padding token's id (the end-of-sequence token's when no pad token is named). */
  readonly padTokenId?: number;
  private readonly template?: Template;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly json: TokenizerJson,
    /** tokenizer_config.json as read ({} when the directory has none). */
    readonly config: TokenizerConfig,
    /** the tokenizer.json it was read from, if any */
    readonly file?: string,
  ) {
    this.bosTokenId = this.tokenId(tokenText(config.bos_token));
    this.eosTokenId = this.tokenId(tokenText(config.eos_token));
    this.padTokenId = this.tokenId(tokenText(config.pad_token)) ?? this.eosTokenId;
    if (config.chat_template) this.template = new Template(config.chat_template);
  }

  /**
   * Reads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json.
   * @param dir - a model directory.
   * @returns the tokenizer.
   * @throws Error naming the file when tokenizer.json is missing, unreadable or not a tokenizer.
   * @example
   * ```ts
   * const tokenizer = Tokenizer.fromDir('path/to/hf-model');
   * ```
   */
  static fromDir(dir: string): Tokenizer {
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new Error(`${file}: missing (the model directory has no tokenizer)`);
    const json = readJson<TokenizerJson>(file);
    const configFile = join(dir, 'tokenizer_config.json');
    const config = existsSync(configFile) ? readJson<TokenizerConfig>(configFile) : {};
    // Everything the two files drive (the tokenizer, the special-token lookups, the chat template)
    // is built here, and tried on a line of plain text, so that a corrupt file fails now with its
    // name rather than later with a TypeError from inside a library.
    try {
      const tokenizer = new Tokenizer(new HfTokenizer(json, config), json, config, file);
      tokenizer.decode(tokenizer.encode(PROBE_TEXT));
      return tokenizer;
    } catch (e) {
      const what = existsSync(configFile) ? `${file} (with ${configFile})` : file;
      throw new Error(`${what}: cannot build the tokenizer (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  /**
   * The id of a token's text, from the added tokens or the model's vocabulary.
   * @param text - the token's text (e.g. '</s>').
   * @returns its id, or undefined when it is not a token (or text is undefined).
   * @example
   * ```ts
   * tokenizer.tokenId('</s>'); // 2
   * ```
   */
  tokenId(text: string | undefined): number | undefined {
    if (text === undefined) return undefined;
    const added = this.json.added_tokens?.find((t) => t.content === text);
    if (added) return added.id;
    const vocab = this.json.model?.vocab;
    if (Array.isArray(vocab)) {
      const i = vocab.findIndex(([t]) => t === text);
      return i >= 0 ? i : undefined;
    }
    return vocab?.[text];
  }

  /**
   * The largest token id the tokenizer can produce (its vocabulary and added tokens).
   * @returns the id, or -1 for an empty vocabulary.
   * @example
   * ```ts
   * tokenizer.maxTokenId; // 258 for the byte-level tokenizer with no merges
   * ```
   */
  get maxTokenId(): number {
    const vocab = this.json.model?.vocab;
    const ids = Array.isArray(vocab) ? [vocab.length - 1] : Object.values(vocab ?? {});
    return Math.max(-1, ...ids.filter((n) => Number.isInteger(n)), ...(this.json.added_tokens ?? []).map((t) => t.id));
  }

  /**
   * Throws when the tokenizer can produce ids the model has no embedding for (a tokenizer of
   * another model). A vocabulary smaller than the model's is fine: models often pad theirs.
   * @param vocabSize - the model's vocab_size.
   * @param what - what the message calls the model (default 'the model').
   * @throws RangeError naming tokenizer.json, its largest id and the vocab_size.
   * @example
   * ```ts
   * tokenizer.checkFits(model.config.vocabSize);
   * ```
   */
  checkFits(vocabSize: number, what = 'the model'): void {
    const max = this.maxTokenId;
    if (max >= vocabSize)
      throw new RangeError(
        `${this.file ?? 'the tokenizer'} has token ids up to ${max}, but ${what}'s vocab_size is ${vocabSize}: the tokenizer belongs to another model`,
      );
  }

  /**
   * Token ids of a text.
   * @param text - the text.
   * @param options - addSpecialTokens (default true): the post-processor's tokens, e.g. BOS.
   * @returns the ids.
   * @example
   * ```ts
   * tokenizer.encode('2+2', { addSpecialTokens: false });
   * ```
   */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * The text of token ids.
   * @param ids - token ids (numbers or bigints).
   * @param options - skipSpecialTokens (default true).
   * @returns the text ('' for no ids).
   * @example
   * ```ts
   * tokenizer.decode(tokenizer.encode('hi')); // 'hi'
   * ```
   */
  decode(ids: ArrayLike<number | bigint>, options: { skipSpecialTokens?: boolean } = {}): string {
    // A generation that ends at once (EOS first) decodes to nothing; tokenizers.js refuses an empty list.
    if (ids.length === 0) return '';
    return this.hf.decode(Array.from(ids, Number), { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  /**
   * Renders messages with the model's chat template.
   * @param messages - the conversation.
   * @param options - addGenerationPrompt (default true): end with the assistant's turn opened.
   * @returns the prompt text.
   * @throws Error when tokenizer_config.json has no chat_template.
   * @example
   * ```ts
   * tokenizer.applyChatTemplate([{ role: 'user', content: 'What is 2+2?' }]); // '<|user|>\nWhat is 2+2?\n<|assistant|>\n'
   * ```
   */
  applyChatTemplate(messages: ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) throw new Error('this tokenizer has no chat_template in tokenizer_config.json');
    return this.template.render({
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: tokenText(this.config.bos_token) ?? '',
      eos_token: tokenText(this.config.eos_token) ?? '',
    });
  }

  /**
   * Encodes texts into one padded batch. padding 'left' (for generation: every prompt ends at the
   * last column) or 'right' (for training).
   * @param texts - one or more texts.
   * @param options - padding side (default 'left') and addSpecialTokens (default true).
   * @returns int64 ids and a uint8 attention mask, both (texts.length, longest).
   * @throws RangeError when there are no texts or every text encodes to zero tokens.
   * @example
   * ```ts
   * const { ids, attentionMask } = tokenizer.batch(['a', 'longer text'], { padding: 'right' });
   * ```
   */
  batch(texts: string[], options: { padding?: 'left' | 'right'; addSpecialTokens?: boolean } = {}): Batch {
    if (texts.length === 0) throw new RangeError('batch: no texts');
    const encoded = texts.map((t) => this.encode(t, options));
    if (encoded.every((e) => e.length === 0)) throw new RangeError('batch: every text encodes to zero tokens');
    return padRows(encoded, this.padTokenId ?? 0, options.padding ?? 'left');
  }
}

/** Rows of token ids as one batch, padded with `padId` on the given side to the longest row. */
export function padRows(rows: readonly number[][], padId: number, padding: 'left' | 'right'): Batch {
  const width = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(rows.length * width).fill(BigInt(padId));
  const mask = new Uint8Array(rows.length * width);
  rows.forEach((row, b) => {
    const start = b * width + (padding === 'right' ? 0 : width - row.length);
    row.forEach((id, i) => {
      ids[start + i] = BigInt(id);
      mask[start + i] = 1;
    });
  });
  return { ids: tensor(ids, [rows.length, width]), attentionMask: tensor(mask, [rows.length, width]) };
}
