#pragma once
// A Llama model's configuration, read from a Hugging Face config.json. Kept apart from llama.h and
// free of libtorch so that the libFuzzer target (native/core/fuzz/llama_config.cpp) runs the
// loader's own parser.
#include <cstdint>
#include <string>
#include <vector>

namespace jfa {

// The families that share Llama's decoder and differ in a few details (config.json's model_type).
// Each detail is a switch below, so the model code reads switches, never family names.
struct LlamaConfig {
  std::string model_type = "llama";  // llama, qwen2, qwen3, mistral, phi3, gemma2 or gemma3_text
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections carry biases (Llama's attention_bias, Qwen2 always, Qwen3's attention_bias)
  bool o_bias = false;    // o_proj carries one (Llama's and Qwen3's attention_bias; never Qwen2's)
  bool mlp_bias = false;
  bool qk_norm = false;   // Qwen3: an RMSNorm over each head of q and k, before the rotary embedding
  // Phi-3: the checkpoint holds q/k/v as one qkv_proj and gate/up as one gate_up_proj; the model
  // keeps them fused (a LoRA on qkv_proj is one A under B rows for q, k and v, as PEFT's).
  bool fused_projections = false;
  // Sliding-window attention: a windowed layer's query at index i sees keys j with i - window < j <= i.
  // 0: no layer is windowed; else one flag per layer.
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;
  // Gemma 2 and 3: RMSNorm weights hold an offset from one (x * (1 + w), scaled in float32 before the cast
  // back); the embeddings are multiplied by sqrt(hidden_size) rounded to their dtype; each layer norms
  // its attention's and its MLP's outputs too (post_attention_layernorm is then the attention output's,
  // pre_feedforward_layernorm the MLP input's); the MLP's gate takes GELU's tanh approximation.
  bool norm_plus_one = false;
  bool scale_embeddings = false;
  bool sandwich_norms = false;
  bool gelu_tanh = false;  // else SiLU
  // The attention's score scale: 0 for head_dim^-0.5, Gemma's query_pre_attn_scalar^-0.5 otherwise.
  double attention_scale = 0.0;
  // Gemma 3: windowed layers rotate with their own base (rope_local_base_freq); 0: as every layer.
  double rope_local_theta = 0.0;
  // Gemma 2: cap * tanh(x / cap) on the attention's scaled scores (before the mask) and on the head's
  // logits; 0: none.
  double attn_logit_softcap = 0.0;
  double final_logit_softcap = 0.0;
  // rope_scaling of type "linear" (Gemma 3's full-attention layers): inverse frequencies / factor.
  double rope_linear_factor = 1.0;
  // rope_scaling of type "llama3" (the only kind supported besides none and Gemma 3's linear).
  bool llama3_rope = false;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;

  // Reads the text of a config.json; `what` names it in errors. Text that is not JSON, and
  // unsupported architectures or options, are Range errors naming them.
  static LlamaConfig parse(const std::string& text, const std::string& what);
};

}  // namespace jfa
