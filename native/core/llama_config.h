#pragma once
// A Llama model's configuration, read from a Hugging Face config.json. Kept apart from llama.h and
// free of libtorch so that the libFuzzer target (native/core/fuzz/llama_config.cpp) runs the
// loader's own parser.
#include <cstdint>
#include <string>

namespace jfa {

struct LlamaConfig {
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
  bool attention_bias = false;
  bool mlp_bias = false;
  // rope_scaling of type "llama3" (the only kind supported besides none).
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
