// A model created from scratch, in Hugging Face layout: the demo's base model before pretraining.
// Its tokenizer is byte-level BPE over the 256 byte symbols (GPT-2's byte-to-unicode mapping) with
// optional merges, three special tokens, and a chat template; transformers loads it unchanged.
import { join } from 'node:path';

import { tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/files.js';
import { CHAT_TEMPLATE } from './chat-template.js';
import { LlamaModel } from './llama.js';

export const SPECIAL_TOKENS = { pad: '<pad>', bos: '<s>', eos: '</s>' } as const;

/** GPT-2's map from bytes to printable unicode characters, as byte-level BPE uses it. */
export function byteSymbols(): string[] {
  const direct = [...range(33, 126), ...range(161, 172), ...range(174, 255)];
  const symbols: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) symbols.push(String.fromCodePoint(direct.includes(b) ? b : 256 + extra++));
  return symbols;
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

/**
 * tokenizer.json and tokenizer_config.json for byte-level BPE with the given merges ("a b" pairs of symbols).
 * @param merges - BPE merges in priority order, as {@link learnMerges} returns them.
 * @returns the two files' contents as objects, and the vocabulary size (3 special tokens + 256 bytes + merges).
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs';
 * const { tokenizer, config, vocabSize } = byteLevelTokenizer(learnMerges(['the cat sat on the mat', 'the dog sat'], 200));
 * writeFileSync('tokenizer.json', JSON.stringify(tokenizer));
 * ```
 */
export function byteLevelTokenizer(merges: string[] = []): {
  /** tokenizer.json */
  tokenizer: object;
  /** tokenizer_config.json, with a chat template */
  config: object;
  /** tokens in the vocabulary */
  vocabSize: number;
} {
  const vocab: Record<string, number> = {};
  const specials = [SPECIAL_TOKENS.pad, SPECIAL_TOKENS.bos, SPECIAL_TOKENS.eos];
  specials.forEach((t, i) => (vocab[t] = i));
  for (const s of byteSymbols()) vocab[s] = Object.keys(vocab).length;
  for (const m of merges) {
    const merged = m.replace(' ', '');
    if (!(merged in vocab)) vocab[merged] = Object.keys(vocab).length;
  }
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: SPECIAL_TOKENS.bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: SPECIAL_TOKENS.bos, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [SPECIAL_TOKENS.bos]: { id: SPECIAL_TOKENS.bos, ids: [1], tokens: [SPECIAL_TOKENS.bos] } },
    },
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: SPECIAL_TOKENS.bos,
    eos_token: SPECIAL_TOKENS.eos,
    pad_token: SPECIAL_TOKENS.pad,
    add_bos_token: true,
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
    chat_template: CHAT_TEMPLATE,
  };
  return { tokenizer, config, vocabSize: Object.keys(vocab).length };
}

/** Llama's MLP width for a hidden size: 8/3 of it (SwiGLU keeps the parameters of a 4x MLP), rounded to a multiple of 32. */
export function intermediateSize(hiddenSize: number): number {
  return Math.round((hiddenSize * 8) / 3 / 32) * 32;
}

/** The shape and tokenizer of a model made by {@link createModel}. */
export interface CreateModelOptions {
  /** Width of the residual stream (default 256). */
  hiddenSize?: number;
  /** Width of the MLP (default 8/3 of hiddenSize, rounded to a multiple of 32). */
  intermediateSize?: number;
  /** Decoder layers (default 4). */
  numLayers?: number;
  /** Attention heads (default 4); hiddenSize must divide by it. */
  numHeads?: number;
  /** Key/value heads (default numHeads). */
  numKeyValueHeads?: number;
  /** Longest sequence (default 512). */
  maxPositionEmbeddings?: number;
  /** Share the embedding with the output head (default true). */
  tieWordEmbeddings?: boolean;
  /** BPE merges of the byte-level tokenizer (default none: one token per byte). */
  merges?: string[];
  /** Seed of the random weights (default 0). */
  seed?: number | bigint;
  /**
   * Standard deviation of the random weights (default 0.02, transformers' initializer_range).
   * A small model pretrained from scratch forms its in-context circuits (induction heads) far sooner
   * from a larger one: see `jfa pretrain --init-std`.
   */
  initStd?: number;
  /**
   * Standard deviation of the attention's query and key weights (default: initStd). Attention
   * logits at initialisation grow with the product of the two, and so does the gradient of each:
   * from small ones, attention starts uniform and content-based lookups form late. See
   * `jfa pretrain --attention-init-std`.
   */
  attentionInitStd?: number;
}

/**
 * Writes a randomly initialised Llama and its tokenizer to `dir` in Hugging Face layout
 * (transformers loads it unchanged); pretrain it with {@link pretrain}.
 * @param dir - the model directory (created if missing).
 * @param options - the model's shape, the tokenizer's merges and a seed.
 * @throws Error for a shape the model cannot have (e.g. heads that do not divide the hidden size) or a file that cannot be written.
 * @example
 * ```ts
 * createModel('tiny-llama', { hiddenSize: 64, numLayers: 2, numHeads: 4, seed: 1 });
 * using model = loadModel('tiny-llama');
 * ```
 */
export function createModel(dir: string, options: CreateModelOptions = {}): void {
  const { tokenizer, config: tokenizerConfig, vocabSize } = byteLevelTokenizer(options.merges);
  const hidden = options.hiddenSize ?? 256;
  const heads = options.numHeads ?? 4;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: vocabSize,
    hidden_size: hidden,
    intermediate_size: options.intermediateSize ?? intermediateSize(hidden),
    num_hidden_layers: options.numLayers ?? 4,
    num_attention_heads: heads,
    num_key_value_heads: options.numKeyValueHeads ?? heads,
    head_dim: hidden / heads,
    hidden_act: 'silu',
    max_position_embeddings: options.maxPositionEmbeddings ?? 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    tie_word_embeddings: options.tieWordEmbeddings ?? true,
    attention_bias: false,
    mlp_bias: false,
    pad_token_id: 0,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
  };
  if (options.initStd !== undefined && !(options.initStd > 0 && Number.isFinite(options.initStd))) throw new RangeError(`createModel: initStd must be a finite number > 0, got ${options.initStd}`);
  if (options.attentionInitStd !== undefined && !(options.attentionInitStd > 0 && Number.isFinite(options.attentionInitStd)))
    throw new RangeError(`createModel: attentionInitStd must be a finite number > 0, got ${options.attentionInitStd}`);
  const initStd = options.initStd ?? 0.02;
  const model = LlamaModel.random(config, { seed: options.seed ?? 0, initStd });
  try {
    if (options.attentionInitStd !== undefined && options.attentionInitStd !== initStd) {
      // The same draws, rescaled: a normal of std s times f is a normal of std s * f.
      const f = options.attentionInitStd / initStd;
      const weights = model.weights();
      try {
        for (const [name, w] of Object.entries(weights)) {
          if (!/\.self_attn\.(q_proj|k_proj)\.weight$/.test(name)) continue;
          using scaled = tensor(Float32Array.from(w.toTypedArray() as Float32Array, (x) => x * f), w.shape);
          w.copyFrom(scaled);
        }
      } finally {
        for (const w of Object.values(weights)) w.dispose();
      }
    }
    model.save(dir, {
      'config.json': `${JSON.stringify(config, null, 2)}\n`,
      'generation_config.json': `${JSON.stringify({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 }, null, 2)}\n`,
      'tokenizer.json': JSON.stringify(tokenizer),
      'tokenizer_config.json': `${JSON.stringify(tokenizerConfig, null, 2)}\n`,
    });
  } finally {
    model.dispose();
  }
  writeFileAtomic(join(dir, 'special_tokens_map.json'), `${JSON.stringify({ bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>' }, null, 2)}\n`);
}
