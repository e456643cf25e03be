#pragma once
// A Llama-family decoder on libtorch, configured from a Hugging Face config.json and loaded from a
// model directory (model.safetensors, or shards listed in model.safetensors.index.json). Linear
// layers can carry LoRA adapters, which a forward pass can switch off: the base model is then the
// JFA reference, with no second copy of the weights.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <optional>
#include <vector>

#include "core/llama_config.h"

namespace jfa {

// PACE's perturbation of the adapters in a training forward: each LoRA branch's output is multiplied
// by (1 + eps), eps ~ N(0, sigma^2) elementwise (per token and output feature). Linear `index`
// (layer * 16 + its module's slot, see LlamaModel::layer_forward) draws its eps from a fresh CPU
// generator seeded noise_seed(seed, index): a recompute (activation checkpointing) draws the same
// values, and so does PyTorch's torch.Generator().manual_seed() on the same seed.
struct AdapterNoise {
  double sigma = 0.0;
  uint64_t seed = 0;
};
// One 64-bit seed from a seed and a value (the same arithmetic, modulo 2^64, in scripts/reference).
inline uint64_t noise_seed(uint64_t seed, uint64_t value) { return (seed * 0x100000001B3ULL) ^ (value + 0x9E3779B97F4A7C15ULL); }

struct LinearLayer {
  at::Tensor weight;  // (out, in), frozen
  at::Tensor bias;    // (out) or undefined
  at::Tensor lora_A;  // (r, in) or undefined
  at::Tensor lora_B;  // (out, r)
  double lora_scale = 0.0;
  // Adapters of earlier rounds kept frozen under the trainable one (stack_lora): part of the base
  // for every forward pass, adapters on or off, so the reference includes them.
  struct Frozen {
    at::Tensor A, B;  // (r, in), (out, r), no gradient
    double scale;
  };
  std::vector<Frozen> stacked;

  // `decoding`: a generation step with a KV cache, where a few rows of x take the skinny kernel
  // (only there: training, scoring and checkpointing's recompute keep libtorch's products, so
  // their results stay what they were, bit for bit).
  // `noise` (training only): the adapter's output is perturbed as AdapterNoise says, for linear `index`.
  at::Tensor forward(const at::Tensor& x, bool adapters, bool decoding = false, const AdapterNoise* noise = nullptr,
                     uint64_t index = 0) const;
};

// Keys and values of past positions, per layer (b, kv_heads, capacity, head_dim).
struct KvCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
};

// The latent-task increments of one forward pass: per sample b, its k latent tasks and weights,
// applied through every pool set with set_latent_pool().
struct LatentCall {
  at::Tensor indices;  // (b, k) int64
  at::Tensor weights;  // (b, k)
};

// As transformers' generate options: the repetition penalty applies to the logits first (greedy
// too), then temperature, top-k and top-p shape the sampled distribution.
struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;                // 0: off
  double repetition_penalty = 1.0;  // 1: off
  std::optional<uint64_t> seed;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;  // written after a sequence ended
};

class LlamaModel {
 public:
  // A model of `config` with random weights (normal, std `init_std`; norms one), as a base model
  // trained from scratch starts.
  static std::unique_ptr<LlamaModel> random(const LlamaConfig& config, uint64_t seed, double init_std);
  // dtype: float32 or bfloat16 (weights are converted on load when the file holds another).
  static std::unique_ptr<LlamaModel> load(const std::string& dir, c10::ScalarType dtype);

  // Moves every weight, adapter, latent pool and buffer to `device` (parse_device() checked it);
  // trainable leaves stay trainable leaves. Optimizers made before hold the old tensors: move first.
  void to(const c10::Device& device);
  c10::Device device() const { return embed_tokens.device(); }
  // An input (ids, masks, targets, latent tasks) on the model's device: inputs made in JS live on the
  // CPU, and a CUDA model takes them as they are (the copy is the only cost; on the CPU, none).
  at::Tensor placed(const at::Tensor& t) const { return t.defined() && t.device() != device() ? t.to(device()) : t; }
  LatentCall placed(const LatentCall& l) const { return LatentCall{placed(l.indices), placed(l.weights)}; }
  std::optional<LatentCall> placed(const LatentCall* l) const { return l ? std::optional<LatentCall>(placed(*l)) : std::nullopt; }

  const LlamaConfig& config() const { return config_; }
  c10::ScalarType dtype() const { return dtype_; }

  // input_ids (b, t) int64; attention_mask (b, t) nonzero at real tokens, or undefined for all real.
  // Returns the final hidden states (b, t, hidden) (after the final norm).
  // `noise`: the adapters' outputs perturbed (PACE, training only; see AdapterNoise).
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask, bool adapters,
                           const LatentCall* latent = nullptr, const AdapterNoise* noise = nullptr) const;
  // The LM head on final hidden states (..., hidden): logits (..., vocab). With `rows` (n) int64, only
  // those rows of the hidden states flattened to (-1, hidden) are scored: (n, vocab). Training scores
  // only the positions it has targets for.
  at::Tensor head(const at::Tensor& hidden, const at::Tensor& rows) const;
  // The mean token cross-entropy of the LM head on `rows` (n) of the hidden states flattened to
  // (-1, hidden), against `targets` (n) int64: head and loss in one pass over row chunks
  // (head_cross_entropy), never the (n, vocab) logits.
  at::Tensor head_loss(const at::Tensor& hidden, const at::Tensor& rows, const at::Tensor& targets) const;
  // Gemma 2's final soft-cap (cap * tanh(logits / cap)) on logits of the head; the logits as they are without one.
  at::Tensor softcap_logits(const at::Tensor& logits) const;
  // Logits (b, t, vocab).
  at::Tensor logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, bool adapters,
                    const LatentCall* latent = nullptr) const;

  // A pool of latent-task increments on layer `layer`'s o_proj: A (P, r, in), B (P, out, r).
  // Applied (latent_mixture) when a forward pass is given a LatentCall.
  void set_latent_pool(int64_t layer, const at::Tensor& A, const at::Tensor& B);

  // Mean of the final hidden states over real tokens: (b, hidden), for retrieval embeddings.
  at::Tensor mean_pooled(const at::Tensor& input_ids, const at::Tensor& attention_mask, bool adapters) const;

  // Continues left-padded prompts ids (b, t) with mask (b, t); returns the new tokens (b, n <=
  // max_new_tokens), pad_token_id after a sequence's end. Runs with a KV cache, without gradients.
  // With `latent`, each sequence's increments apply to the prompt and to every generated token, as
  // in training: they depend on the sample, not on the position, so left padding changes nothing.
  // A DecodeSession (core/decode_session.h) run to its end.
  at::Tensor generate(const at::Tensor& input_ids, const at::Tensor& attention_mask, const GenerateOptions& options,
                      bool adapters, const LatentCall* latent = nullptr) const;

  // Activation checkpointing: forward passes that record gradients over whole sequences keep only
  // each decoder layer's input and recompute the layer in the backward (results unchanged).
  void set_checkpointing(bool on) { checkpointing_ = on; }
  bool checkpointing() const { return checkpointing_; }

  // Folds every adapter into its base weight (W += scale B A) and drops the adapters.
  void merge_lora();
  // Drops the trainable adapters without folding them (stacked ones stay). Returns how many layers had one.
  int64_t remove_lora();
  // Freezes the current adapters beneath the base instead of merging them: every later forward pass
  // (adapters on or off) adds scale (x A^T) B^T of each, and a new adapter can be added on top.
  // Returns how many adapters are stacked on each adapted layer now.
  int64_t stack_lora();
  int64_t stacked_count() const;
  // Makes every base weight a trainable leaf (pretraining, full fine-tuning) or frozen again.
  void set_base_trainable(bool trainable);
  // All base weights under Hugging Face's names (lm_head omitted when tied).
  std::vector<std::pair<std::string, at::Tensor>> weights() const;

  // The module names of this family's linear layers: q_proj k_proj v_proj o_proj gate_proj up_proj
  // down_proj, or qkv_proj o_proj gate_up_proj down_proj where the checkpoint fuses them (Phi-3).
  std::vector<std::string> linear_modules() const;
  // Adds LoRA factors (A kaiming-uniform, B zero, as PEFT) to every linear layer whose module name
  // (one of linear_modules()) is in `targets`.
  void add_lora(const std::vector<std::string>& targets, int64_t r, double lora_alpha, bool rslora, uint64_t seed);
  // The LoRA factors under PEFT's key names (base_model.model.<module>.lora_A.weight, ...).
  std::vector<std::pair<std::string, at::Tensor>> lora_parameters() const;
  // The linear layers with a trainable adapter, in lora_parameters()' order, under their module names.
  std::vector<std::pair<std::string, const LinearLayer*>> adapted_layers() const;
  int64_t parameter_count() const;

 private:
  friend class DecodeSession;  // generation's loop drives decode() with its own KV cache
  friend class ContinuousSession;  // and so does continuous batching's
  struct Layer {
    at::Tensor input_norm, post_attention_norm;
    at::Tensor pre_feedforward_norm, post_feedforward_norm;  // with config.sandwich_norms
    at::Tensor q_norm, k_norm;  // (head_dim), with config.qk_norm
    // q, k, v, gate, up; or, with config.fused_projections, qkv (q rows, then k, then v) and gate_up (gate, then up).
    LinearLayer q, k, v, o, gate, up, down, qkv, gate_up;
  };
  // The rotary embedding's inverse frequencies for base `theta` (llama3 and linear scaling applied where
  // `scaled`: Gemma 3 scales its full-attention layers' table only).
  at::Tensor rope_inv_freq(double theta, bool scaled) const;
  void set_rope_tables();
  // An RMSNorm of the family's kind (Llama's w, or Gemma's 1 + w).
  at::Tensor norm(const at::Tensor& x, const at::Tensor& weight) const;
  // What every layer of one decode() call shares: rotary tables, the attention's masks, options.
  struct LayerContext {
    at::Tensor cos, sin;  // (b, t, head_dim)
    at::Tensor local_cos, local_sin;  // the windowed layers' own, with config.rope_local_theta; else undefined
    bool fused;           // cos/sin take the fused rotary kernel
    at::Tensor mask;      // SDPA's additive mask, or undefined
    at::Tensor window_mask;  // the additive mask of windowed layers, when the window hides a key; else undefined
    at::Tensor real_keys; // our causal attention's key mask, or undefined
    bool own_attention, causal_only;
    bool decode_kernel;   // one new token per row with a cache, on the CPU: decode_attention, reading real_keys
    double scale;
    int64_t past;  // cached positions before this call
    bool adapters;
    std::optional<LatentCall> latent;
    std::optional<AdapterNoise> noise;
    bool last_only = false;  // the last layer computes past its keys and values for the last position only
  };
  // Decoder layer l on h (b, t, hidden); with a cache, attends to its past and appends to it.
  at::Tensor layer_forward(size_t l, const at::Tensor& h, const LayerContext& ctx, KvCache* cache) const;
  // The tensors layer l reads that may need gradients (for checkpointing).
  std::vector<at::Tensor> layer_params(size_t l, const LayerContext& ctx) const;
  // The decoder on ids (b, t) at positions (b, t); keys visible per key_mask (b, past + t). With a
  // cache, attends to its past and appends this step's keys and values. `last_only` (a prefill, whose
  // next token reads the last position alone): the final hidden states of the last position only,
  // (b, 1, hidden); the last layer's attention output and MLP run on that position only, all
  // positions' keys and values still go to the cache.
  at::Tensor decode(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& key_mask, KvCache* cache,
                    bool adapters, const LatentCall* latent = nullptr, const AdapterNoise* noise = nullptr, bool last_only = false) const;
  void check_ids(const at::Tensor& ids, const at::Tensor& mask, const char* op) const;
  // Latent tasks for a batch of `batch`: a pool is set, indices and weights are (batch, k), every
  // index is inside every pool. Checked before any work, so a bad call names `op`, not a layer.
  void check_latent(const LatentCall& latent, int64_t batch, const char* op) const;
  std::vector<std::pair<std::string, LinearLayer*>> linear_layers();

  LlamaConfig config_;
  c10::ScalarType dtype_ = c10::kFloat;
  at::Tensor embed_tokens, final_norm, lm_head;
  std::vector<Layer> layers_;
  at::Tensor inv_freq_, local_inv_freq_;  // local: with config.rope_local_theta
  std::map<int64_t, std::pair<at::Tensor, at::Tensor>> latent_pools_;  // layer -> (A, B)
  bool checkpointing_ = false;
};

}  // namespace jfa
