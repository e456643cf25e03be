// `--family` for bench:model and bench:step: a Llama bench shape (hidden size, layers, heads,
// vocabulary) rewritten as another family's config.json, with that family's own details at this
// size: what each real checkpoint's config sets beside the shape. Both sides build the same config
// (ours from config.json, transformers through AutoModelForCausalLM), so the ratios compare the
// families' code paths, not different models.
import { BenchUsageError } from './gpu.mjs';

/**
 * Each family's details, after the checkpoint it stands for; `group` is its query heads per KV head,
 * kept as near as the bench's head count allows (the divisor of the heads nearest to it).
 * - llama: the bench's own shape, unchanged.
 * - qwen2 (Qwen2.5-0.5B): biases on q/k/v (transformers' Qwen2 always has them), tied embeddings,
 *   rope_theta 1e6, rms_norm_eps 1e-6, 6 query heads per KV head (0.5B: 14 / 2), no window.
 * - qwen3 (Qwen3-0.6B): RMSNorm over each head of q and k, head_dim 128 apart from hidden / heads,
 *   tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6, 2 query heads per KV head (0.6B: 16 / 8).
 * - mistral (Mistral-7B-v0.1): untied, 4 query heads per KV head (32 / 8), and a sliding window of
 *   128, half the benches' 256-token sequences, so that the windowed attention is what is timed
 *   (the real window, 4096, would hide nothing at this length).
 * - phi3 (Phi-3-mini-4k): fused qkv_proj and gate_up_proj, untied, no grouped KV (32 / 32), its
 *   window of 2047 (longer than the benches' sequences: the fused projections are what is timed).
 */
const DETAILS = {
  llama: {},
  qwen2: { group: 6, config: { tie_word_embeddings: true, rope_theta: 1e6, rms_norm_eps: 1e-6, use_sliding_window: false } },
  qwen3: { group: 2, config: { head_dim: 128, tie_word_embeddings: true, rope_theta: 1e6, rms_norm_eps: 1e-6, attention_bias: false, use_sliding_window: false } },
  mistral: { group: 4, config: { tie_word_embeddings: false, sliding_window: 128 } },
  phi3: { group: 1, config: { tie_word_embeddings: false, sliding_window: 2047 } },
};
const ARCHITECTURES = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', mistral: 'MistralForCausalLM', phi3: 'Phi3ForCausalLM' };

/** The families `--family` takes. */
export const BENCH_FAMILIES = Object.keys(DETAILS);

/**
 * The family named by `--family` (default llama).
 * @param {string} bench - the benchmark's name for the message.
 * @param {string | undefined} value - the flag's value.
 * @returns {string} the family.
 * @throws BenchUsageError for a family not in BENCH_FAMILIES.
 */
export function benchFamily(bench, value) {
  const family = value ?? 'llama';
  if (!Object.hasOwn(DETAILS, family)) throw new BenchUsageError(`${bench}: --family '${family}' is not a family; known: ${BENCH_FAMILIES.join(', ')}`);
  return family;
}

/**
 * A bench shape as `family`'s config.json.
 * @param {string} family - one of BENCH_FAMILIES.
 * @param {Record<string, unknown>} shape - config.json fields of the Llama shape (hidden size, layers, heads, ...).
 * @returns {Record<string, unknown>} the config, with model_type, architectures and the family's details.
 */
export function familyConfig(family, shape) {
  if (family === 'llama') return shape;
  const { group, config } = DETAILS[family];
  const heads = shape.num_attention_heads;
  // the KV head count whose group size is nearest the family's (ties: more KV heads)
  let kv = heads;
  for (let d = heads; d >= 1; d--) if (heads % d === 0 && Math.abs(heads / d - group) < Math.abs(heads / kv - group)) kv = d;
  // Special tokens inside the bench's vocabulary (the checkpoints' own ids, e.g. Phi-3's pad 32000 or
  // Qwen's 151643, lie outside it, and transformers refuses a padding index past the embeddings).
  const tokens = { bos_token_id: 1, eos_token_id: 2, pad_token_id: null };
  return { ...shape, ...config, ...tokens, num_key_value_heads: kv, model_type: family, architectures: [ARCHITECTURES[family]] };
}

/**
 * The LoRA targets `addLora()` picks by default for the family, as the benches print them.
 * @param {string} family - one of BENCH_FAMILIES.
 * @returns {string} a description.
 */
export function loraTargetsText(family) {
  return family === 'phi3' ? 'all 4 linear modules (qkv, o, gate_up, down)' : 'all 7 projections (q, k, v, o, gate, up, down)';
}
