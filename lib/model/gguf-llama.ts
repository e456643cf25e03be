// A Llama model as llama.cpp reads it from GGUF: the 'llama' architecture's hyperparameters, the
// weights under llama.cpp's tensor names, and a byte-level BPE tokenizer as tokenizer.ggml.* keys.
// Two layouts differ from Hugging Face's: GGUF dimensions run innermost first (the writer reverses
// them), and llama.cpp's llama rotates query/key pairs that sit next to each other (2i, 2i+1) where
// transformers rotates the two halves of a head (i, i + d/2), so the rows of q_proj and k_proj are
// reordered within each head (see interleaveHeads).
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';

import { ModelFormatError } from '../errors.js';
import { readJson } from '../util/files.js';
import { type GgufTensor, type GgufTensorType, type GgufValue, Q8_0_BLOCK, type writeGguf } from './gguf.js';
import { type LlamaModel } from './llama.js';
import { type AdapterShape } from './peft.js';
import { type Tensor } from '../tensor.js';

/** config.json's fields the export reads (LlamaConfig). */
interface LlamaConfigJson {
  model_type?: string;
  max_position_embeddings?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  rope_scaling?: unknown;
  attention_bias?: boolean;
  mlp_bias?: boolean;
}

/** tokenizer.json's fields the export reads. */
interface TokenizerJson {
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
  normalizer?: unknown;
  pre_tokenizer?: { type?: string; add_prefix_space?: boolean; use_regex?: boolean; pretokenizers?: unknown[] } | null;
  model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]>; byte_fallback?: boolean };
}

/** llama.cpp's token types. */
const TOKEN_TYPE = { normal: 1, control: 3, unused: 5 } as const;

/** GGUF general.file_type: llama.cpp's LLAMA_FTYPE of a file whose 2-D weights are all of one type. */
const FILE_TYPE: Record<GgufTensorType, number> = { f32: 0, f16: 1, q8_0: 7 };

/**
 * Reorders the rows of a q_proj or k_proj weight (heads x headDim rows of `cols` values) from
 * transformers' rotary layout, where row i of a head pairs with row i + headDim/2, to llama.cpp's,
 * where rows 2i and 2i+1 pair: new row 2i is old row i, new row 2i+1 is old row i + headDim/2.
 * @param w - the weight, row-major (heads * headDim, cols).
 * @param heads - the heads of the projection (numHeads for q, numKeyValueHeads for k).
 * @param cols - the row length (the hidden size).
 * @returns a new array with the rows reordered.
 * @example
 * ```ts
 * interleaveHeads(Float32Array.from([0, 1, 2, 3]), 1, 1); // rows 0, 2, 1, 3
 * ```
 */
export function interleaveHeads(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = (h * headDim + j * half + i) * cols;
        out.set(w.subarray(from, from + cols), (h * headDim + 2 * i + j) * cols);
      }
  return out;
}

/** llama.cpp's name of a Hugging Face Llama weight, or undefined for one it has no place for. */
function ggufName(hf: string): string | undefined {
  const top: Record<string, string> = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
  if (top[hf]) return top[hf];
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
  if (!m) return undefined;
  const inner: Record<string, string> = {
    'input_layernorm': 'attn_norm',
    'post_attention_layernorm': 'ffn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  return inner[m[2]!] && `blk.${m[1]}.${inner[m[2]!]}.weight`;
}

/**
 * The tokenizer as llama.cpp's 'gpt2' (byte-level BPE) vocabulary: tokens by id (padded with unused
 * tokens up to the model's vocab_size), their types, the merges, the special ids, and the name of the
 * pre-tokenizer llama.cpp must apply: 'gpt-2', whose splitting regex is the one Hugging Face's
 * ByteLevel pre-tokenizer applies with use_regex.
 * @param dir - the model directory (tokenizer.json, tokenizer_config.json).
 * @param vocabSize - the model's vocab_size.
 * @returns the tokenizer.* key-values.
 * @throws ModelFormatError for a tokenizer llama.cpp's 'gpt2' vocabulary cannot reproduce (another model type, a normalizer, another pre-tokenizer).
 * @example
 * ```ts
 * const keys = tokenizerMetadata('models/jfa-base', 659);
 * keys.find(([k]) => k === 'tokenizer.ggml.pre')?.[1]; // { type: 'string', value: 'gpt-2' }
 * ```
 */
export function tokenizerMetadata(dir: string, vocabSize: number): Array<[string, GgufValue]> {
  const file = join(dir, 'tokenizer.json');
  const t = readJson<TokenizerJson>(file);
  const refuse = (why: string) => new ModelFormatError(`export gguf: ${file}: ${why}; only byte-level BPE tokenizers with GPT-2's pre-tokenizer can be exported for now`);
  if (t.model?.type !== 'BPE' || !t.model.vocab) throw refuse(`model type ${JSON.stringify(t.model?.type)} is not BPE`);
  if (t.model.byte_fallback) throw refuse('byte_fallback BPE (SentencePiece style) is not byte-level BPE');
  if (t.normalizer) throw refuse('it has a normalizer');
  const pre = t.pre_tokenizer;
  if (pre?.type !== 'ByteLevel' || pre.use_regex === false || pre.add_prefix_space) throw refuse(`pre-tokenizer ${JSON.stringify(pre?.type)} (use_regex ${pre?.use_regex}, add_prefix_space ${pre?.add_prefix_space}) is not GPT-2's`);
  const tokens = new Array<string | undefined>(vocabSize);
  const types = new Int32Array(vocabSize).fill(TOKEN_TYPE.normal);
  for (const [text, id] of Object.entries(t.model.vocab)) tokens[id] = text;
  for (const a of t.added_tokens ?? []) {
    tokens[a.id] = a.content;
    types[a.id] = a.special === false ? TOKEN_TYPE.normal : TOKEN_TYPE.control;
  }
  if (tokens.length > vocabSize) throw new ModelFormatError(`export gguf: ${file} has ${tokens.length} tokens, the model's vocab_size is ${vocabSize}`);
  for (let i = 0; i < vocabSize; i++)
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_TYPE.unused;
    }
  const merges = (t.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const configFile = join(dir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJson<Record<string, unknown>>(configFile) : {};
  const idOf = (field: string): number | undefined => {
    const v = config[field];
    const text = typeof v === 'string' ? v : v && typeof v === 'object' && 'content' in v ? String((v as { content: unknown }).content) : undefined;
    const id = text === undefined ? undefined : tokens.indexOf(text);
    return id === undefined || id < 0 ? undefined : id;
  };
  const out: Array<[string, GgufValue]> = [
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: 'gpt-2' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens as string[] }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.merges', { type: 'string[]', value: merges }],
  ];
  const bos = idOf('bos_token');
  const eos = idOf('eos_token');
  const pad = idOf('pad_token');
  if (bos !== undefined) out.push(['tokenizer.ggml.bos_token_id', { type: 'u32', value: bos }]);
  if (eos !== undefined) out.push(['tokenizer.ggml.eos_token_id', { type: 'u32', value: eos }]);
  if (pad !== undefined) out.push(['tokenizer.ggml.padding_token_id', { type: 'u32', value: pad }]);
  out.push(['tokenizer.ggml.add_bos_token', { type: 'bool', value: config.add_bos_token === true }]);
  out.push(['tokenizer.ggml.add_eos_token', { type: 'bool', value: config.add_eos_token === true }]);
  if (typeof config.chat_template === 'string') out.push(['tokenizer.chat_template', { type: 'string', value: config.chat_template }]);
  return out;
}

/** What {@link llamaGguf} returns: the arguments of {@link writeGguf}. */
export interface LlamaGgufContents {
  /** general.*, llama.* and tokenizer.* key-values, in the order to write them */
  metadata: Array<[string, GgufValue]>;
  /** the tensors under llama.cpp's names, token_embd first */
  tensors: GgufTensor[];
}

/** Options of {@link llamaGguf}. */
export interface LlamaGgufOptions {
  /** the element type of the 2-D weights (norms stay f32; a q8_0 weight whose rows do not divide into blocks of 32 is stored f16) */
  type: GgufTensorType;
  /** general.name (default: the model directory's name) */
  name?: string | undefined;
}

/**
 * A Llama model's GGUF contents for llama.cpp's 'llama' architecture: metadata (general.*, llama.*,
 * tokenizer.*) and tensors under llama.cpp's names, q_proj and k_proj rows interleaved per head. The
 * tensors read the model's weights when written; the model must stay alive until then.
 * @param model - a loaded model (adapters merged, none left) whose directory holds config.json and tokenizer.json.
 * @param dir - the model's directory (config.json, tokenizer.json, tokenizer_config.json).
 * @param o - the element type and name.
 * @returns the metadata and tensors for {@link writeGguf}.
 * @throws ModelFormatError for a model llama.cpp's llama architecture cannot hold as we write it (another family, RoPE scaling, biases, unmerged adapters) or a tokenizer it cannot reproduce.
 * @example
 * ```ts
 * using model = loadModel('models/jfa-base');
 * const { metadata, tensors } = llamaGguf(model, 'models/jfa-base', { type: 'f16' });
 * writeGguf('jfa-base.f16.gguf', metadata, tensors);
 * ```
 */
export function llamaGguf(model: LlamaModel, dir: string, o: LlamaGgufOptions): LlamaGgufContents {
  const configFile = join(dir, 'config.json');
  const raw = readJson<LlamaConfigJson>(configFile);
  const c = model.config;
  const refuse = (why: string) => new ModelFormatError(`export gguf: ${configFile}: ${why}`);
  if (raw.model_type !== 'llama') throw refuse(`model_type '${raw.model_type}' is not supported (only 'llama')`);
  if (raw.rope_scaling || c.llama3RopeScaling) throw refuse('rope_scaling is not supported by this export yet');
  if (raw.attention_bias || raw.mlp_bias) throw refuse('attention or MLP biases are not supported by this export yet');
  if (model.hasLora || model.stackedAdapters > 0) throw new ModelFormatError('export gguf: the model has adapters; merge them first (mergeLora)');
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: o.name ?? basename(dir) }],
    ['general.file_type', u32(FILE_TYPE[o.type])],
    ...(o.type === 'q8_0' ? ([['general.quantization_version', u32(2)]] as Array<[string, GgufValue]>) : []),
    ['llama.context_length', u32(raw.max_position_embeddings ?? 2048)],
    ['llama.embedding_length', u32(c.hiddenSize)],
    ['llama.block_count', u32(c.numLayers)],
    ['llama.feed_forward_length', u32(c.intermediateSize)],
    ['llama.attention.head_count', u32(c.numHeads)],
    ['llama.attention.head_count_kv', u32(c.numKeyValueHeads)],
    ['llama.attention.key_length', u32(c.headDim)],
    ['llama.attention.value_length', u32(c.headDim)],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: raw.rms_norm_eps ?? 1e-6 }],
    ['llama.rope.freq_base', { type: 'f32', value: raw.rope_theta ?? 10000 }],
    ['llama.rope.dimension_count', u32(c.headDim)],
    ['llama.vocab_size', u32(c.vocabSize)],
    ...tokenizerMetadata(dir, c.vocabSize),
  ];
  const weights = model.weights();
  const tensors: GgufTensor[] = [];
  const order = (n: string) => (n === 'token_embd.weight' ? -2 : n.startsWith('blk.') ? Number(n.split('.')[1]) : n === 'output_norm.weight' ? 1e9 : 1e9 + 1);
  const entries = Object.entries(weights)
    .map(([hf, t]) => ({ hf, t, name: ggufName(hf) }))
    .sort((a, b) => order(a.name ?? '') - order(b.name ?? ''));
  for (const { hf, t, name } of entries) {
    if (!name) {
      Object.values(weights).forEach((w) => w.dispose());
      throw new ModelFormatError(`export gguf: weight '${hf}' has no place in llama.cpp's llama architecture`);
    }
    // Tied embeddings: llama.cpp uses token_embd as the output head when there is no output tensor.
    if (name === 'output.weight' && c.tieWordEmbeddings) continue;
    const shape = t.shape;
    const type: GgufTensorType = shape.length === 1 ? 'f32' : o.type === 'q8_0' && shape.at(-1)! % Q8_0_BLOCK !== 0 ? 'f16' : o.type;
    const heads = name.endsWith('attn_q.weight') ? c.numHeads : name.endsWith('attn_k.weight') ? c.numKeyValueHeads : 0;
    tensors.push({
      name,
      shape,
      type,
      data: () => {
        const f = t.dtype === 'float32' ? t : t.to('float32');
        const values = f.toTypedArray() as Float32Array;
        if (f !== t) f.dispose();
        t.dispose();
        return heads ? interleaveHeads(values, heads, shape[1]!) : values;
      },
    });
  }
  for (const [hf, t] of Object.entries(weights)) if (hf === 'lm_head.weight' && c.tieWordEmbeddings) t.dispose();
  return { metadata, tensors };
}

/**
 * A PEFT LoRA adapter as a GGUF LoRA adapter for llama.cpp (general.type 'adapter'): each factor
 * under its layer's llama.cpp name with `.lora_a` / `.lora_b`, B's rows of q_proj and k_proj
 * interleaved as the base's are, and adapter.lora.alpha chosen so that llama.cpp's alpha / r is
 * PEFT's scale (rsLoRA's alpha / sqrt(r) included). Factors are stored f32.
 * @param factors - the adapter's factors by PEFT key name (as readPeftAdapter returns them); the tensors are disposed as they are written.
 * @param shape - its rank, alpha and scaling.
 * @param model - the base it belongs to (its config).
 * @param name - general.name.
 * @returns the metadata and tensors for {@link writeGguf}.
 * @example
 * ```ts
 * const factors = model.loraParameters(); // a model with an adapter, e.g. after loadAdapter
 * const shape = { targets: [...LORA_TARGETS], r: 8, loraAlpha: 16, rslora: false };
 * const { metadata, tensors } = llamaLoraGguf(factors, shape, model, 'jfa');
 * writeGguf('jfa.lora.gguf', metadata, tensors);
 * ```
 */
export function llamaLoraGguf(factors: Record<string, Tensor>, shape: AdapterShape, model: LlamaModel, name: string): LlamaGgufContents {
  const c = model.config;
  const alpha = shape.rslora ? shape.loraAlpha * Math.sqrt(shape.r) : shape.loraAlpha;
  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.type', { type: 'string', value: 'adapter' }],
    ['general.name', { type: 'string', value: name }],
    ['adapter.type', { type: 'string', value: 'lora' }],
    ['adapter.lora.alpha', { type: 'f32', value: alpha }],
  ];
  const tensors: GgufTensor[] = [];
  const keys = Object.keys(factors).sort((a, b) => Number(/layers\.(\d+)\./.exec(a)?.[1]) - Number(/layers\.(\d+)\./.exec(b)?.[1]) || a.localeCompare(b));
  for (const key of keys) {
    const m = /^base_model\.model\.(model\.layers\.\d+\..+)\.lora_([AB])\.weight$/.exec(key);
    const target = m && ggufName(`${m[1]}.weight`);
    if (!m || !target) throw new ModelFormatError(`export gguf: adapter tensor '${key}' has no place in llama.cpp's llama architecture`);
    const t = factors[key]!;
    const heads = m[2] === 'B' ? (target.endsWith('attn_q.weight') ? c.numHeads : target.endsWith('attn_k.weight') ? c.numKeyValueHeads : 0) : 0;
    tensors.push({
      name: `${target}.lora_${m[2]!.toLowerCase()}`,
      shape: t.shape,
      type: 'f32',
      data: () => {
        const f = t.dtype === 'float32' ? t : t.to('float32');
        const values = f.toTypedArray() as Float32Array;
        if (f !== t) f.dispose();
        t.dispose();
        return heads ? interleaveHeads(values, heads, shape.r) : values;
      },
    });
  }
  return { metadata, tensors };
}
