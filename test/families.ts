// The tiny random models of the Llama-like families that transformers makes for the family tests
// (scripts/reference/tiny_families.py): test/41 compares them against transformers, test/42 trains,
// scores and generates with them through the CLI and the library. Shared so that both run the same
// details: Qwen2's q/k/v biases, Qwen3's q/k norm with head_dim apart from hidden / heads and a window
// on its second layer only, Mistral's and Phi-3's windows shorter than the tests' sequences, Gemma 2's
// soft-caps, Gemma 3's local and global layers with their own rotary bases, and Gemma's score scale.
import { checkDevice, type Device } from '../lib/device.js';

/** The vocabulary of jfa's byte tokenizer (createModel without merges), which every family's directory gets. */
export const FAMILY_VOCAB = 259;

const shape = { vocab_size: FAMILY_VOCAB, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, bos_token_id: null, eos_token_id: null, pad_token_id: null };

/** Each family's model_type, the seed of its random weights and its config.json fields. */
export const FAMILY_MODELS = {
  qwen2: { model_type: 'qwen2', seed: 1, config: { ...shape, tie_word_embeddings: false } },
  // head_dim 16 is not hidden / heads (8); layer 0 attends fully, layer 1 through a window of 5
  qwen3: { model_type: 'qwen3', seed: 2, config: { ...shape, head_dim: 16, tie_word_embeddings: true, use_sliding_window: true, sliding_window: 5, max_window_layers: 1 } },
  mistral: { model_type: 'mistral', seed: 3, config: { ...shape, sliding_window: 4, tie_word_embeddings: false } },
  phi3: { model_type: 'phi3', seed: 4, config: { ...shape, sliding_window: 5, tie_word_embeddings: false } },
  // Gemma 2: head_dim 8, query_pre_attn_scalar 12, layer 0 local (window 4), layer 1 global (its
  // default pattern), weights drawn with std 0.2 (not 0.02) so that scores and logits reach the
  // soft-caps of 4.5 (a float: transformers refuses an integer; at 50 and 30, tiny random scores and logits would never feel them)
  gemma2: {
    model_type: 'gemma2',
    seed: 6,
    config: { ...shape, head_dim: 8, query_pre_attn_scalar: 12, sliding_window: 4, initializer_range: 0.2, attn_logit_softcapping: 4.5, final_logit_softcapping: 4.5, tie_word_embeddings: true },
  },
  // Gemma 3: head_dim 8 and query_pre_attn_scalar 12 (so the score scale is not head_dim's), layer 0
  // local (a window of 4, rotary base 1e4), layer 1 global (base 1e6, linear scaling by 2), tied
  gemma3: {
    model_type: 'gemma3_text',
    seed: 5,
    config: {
      ...shape, head_dim: 8, query_pre_attn_scalar: 12, sliding_window: 4, layer_types: ['sliding_attention', 'full_attention'],
      rope_parameters: { full_attention: { rope_type: 'linear', factor: 2.0, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } },
      tie_word_embeddings: true,
    },
  },
} as const;
export type Family = keyof typeof FAMILY_MODELS;
export const FAMILIES = Object.keys(FAMILY_MODELS) as Family[];

/**
 * The device our side of the family tests runs on: JFA_TEST_DEVICE (scripts/device/check.sh sets
 * `cuda`), else the CPU. Asked for a device this process cannot use, it throws: a GPU check must fail,
 * not quietly run on the CPU.
 */
export function testDevice(): Device {
  return checkDevice(process.env.JFA_TEST_DEVICE || 'cpu', 'JFA_TEST_DEVICE'); // checkDevice throws where CUDA is missing
}
