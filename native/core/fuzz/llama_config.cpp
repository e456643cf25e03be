// libFuzzer target: LlamaConfig::parse, which LlamaModel::load runs on config.json. Whatever the
// text, it returns a config the model code can use (positive heads that divide evenly, an even
// head_dim) or throws a Range error naming the file.
#include <cstdint>
#include <string>

#include "check.h"
#include "core/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string what = "config.json";
  try {
    const jfa::LlamaConfig c = jfa::LlamaConfig::parse(std::string(reinterpret_cast<const char*>(data), size), what);
    FUZZ_CHECK(c.vocab_size >= 0 && c.hidden_size >= 0 && c.intermediate_size >= 0 && c.num_hidden_layers >= 0);
    FUZZ_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0);
    FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0);
    FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0);
    FUZZ_CHECK(c.max_position_embeddings >= 0 && c.rope_original_max_position >= 0);
  } catch (const jfa::Error& e) {
    // "config.json: ..." or, from the JSON reader, "config.json is not valid JSON (...)".
    jfa_fuzz::check_input_error(e, what);
  }
  return 0;
}
