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

interface TokenizerConfig {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  chat_template?: string | null;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: string;
  content: string;
}

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

export class Tokenizer {
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly padTokenId?: number;
  private readonly template?: Template;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly json: TokenizerJson,
    readonly config: TokenizerConfig,
  ) {
    this.bosTokenId = this.tokenId(tokenText(config.bos_token));
    this.eosTokenId = this.tokenId(tokenText(config.eos_token));
    this.padTokenId = this.tokenId(tokenText(config.pad_token)) ?? this.eosTokenId;
    if (config.chat_template) this.template = new Template(config.chat_template);
  }

  /** Reads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json. */
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
      const tokenizer = new Tokenizer(new HfTokenizer(json, config), json, config);
      tokenizer.decode(tokenizer.encode(PROBE_TEXT));
      return tokenizer;
    } catch (e) {
      const what = existsSync(configFile) ? `${file} (with ${configFile})` : file;
      throw new Error(`${what}: cannot build the tokenizer (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  /** The id of a token's text, from the added tokens or the model's vocabulary. */
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

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number | bigint>, options: { skipSpecialTokens?: boolean } = {}): string {
    // A generation that ends at once (EOS first) decodes to nothing; tokenizers.js refuses an empty list.
    if (ids.length === 0) return '';
    return this.hf.decode(Array.from(ids, Number), { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  /** Renders messages with the model's chat template. */
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
