#include "core/llama_config.h"

#include <cmath>
#include <optional>

#include "core/errors.h"
#include "core/json.h"

namespace jfa {
namespace {

const Json* member(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int64_t int_field(const Json& j, const char* key, const std::string& path, std::optional<int64_t> fallback) {
  const Json* v = member(j, key);
  if (!v) {
    if (fallback) return *fallback;
    throw_range(path + ": missing '" + key + "'");
  }
  const auto n = json_index(*v, INT64_MAX);
  if (!n) throw_range(path + ": '" + key + "' must be a non-negative integer");
  return static_cast<int64_t>(*n);
}

double number_field(const Json& j, const char* key, const std::string& path, double fallback) {
  const Json* v = member(j, key);
  if (!v) return fallback;
  if (!v->is_number()) throw_range(path + ": '" + key + "' must be a number");
  return v->get<double>();
}

bool bool_field(const Json& j, const char* key, const std::string& path, bool fallback) {
  const Json* v = member(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw_range(path + ": '" + key + "' must be true or false");
  return v->get<bool>();
}

std::string string_field(const Json& j, const char* key) {
  const Json* v = member(j, key);
  return v && v->is_string() ? v->get<std::string>() : "";
}

// model_type -> the architecture transformers names it by.
const std::pair<const char*, const char*> kFamilies[] = {
    {"gemma2", "Gemma2ForCausalLM"}, {"gemma3_text", "Gemma3ForCausalLM"}, {"llama", "LlamaForCausalLM"},
    {"mistral", "MistralForCausalLM"}, {"phi3", "Phi3ForCausalLM"},       {"qwen2", "Qwen2ForCausalLM"},
    {"qwen3", "Qwen3ForCausalLM"}};
const char* kSupported = "gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3";

// A soft-cap (cap * tanh(x / cap)): `fallback` when the config leaves it out, none (0) when it is null.
double softcap_field(const Json& j, const char* key, const std::string& path, double fallback) {
  const auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_null()) return 0.0;
  if (!it->is_number() || !(it->get<double>() > 0) || !std::isfinite(it->get<double>()))
    throw_range(path + ": '" + key + "' must be a finite number > 0 or null");
  return it->get<double>();
}

// A rotary table's parameters (one of Gemma 3's rope_parameters entries, or rope_scaling): its base
// (`theta`, kept when the entry has none) and, with `linear`, the factor of a "linear" type.
// Any other type, and partial rotary, are refused.
void read_rope_entry(const Json& entry, const std::string& path, const std::string& what, double& theta, double* linear) {
  if (!entry.is_object()) throw_range(path + ": " + what + " must be an object");
  std::string type = string_field(entry, "rope_type");
  if (type.empty()) type = string_field(entry, "type");
  if (const Json* t = member(entry, "rope_theta"); t && t->is_number()) theta = t->get<double>();
  if (const double f = number_field(entry, "partial_rotary_factor", path, 1.0); f != 1.0)
    throw_range(path + ": partial_rotary_factor " + std::to_string(f) + " is not supported (only 1: rotary over the whole head)");
  if (type == "linear" && linear) {
    *linear = number_field(entry, "factor", path, 0.0);
    if (!(*linear > 0) || !std::isfinite(*linear)) throw_range(path + ": " + what + "'s linear 'factor' must be a finite number > 0");
  } else if (!type.empty() && type != "default") {
    throw_range(path + ": " + what + " of type '" + type + "' is not supported (only " + (linear ? "'default' and 'linear'" : "'default'") + ")");
  }
  if (!(theta > 0) || !std::isfinite(theta)) throw_range(path + ": " + what + "'s 'rope_theta' must be a finite number > 0");
}

// Gemma 2's and 3's details beyond the shared fields, with transformers' Gemma2Config and
// Gemma3TextConfig defaults for what the config leaves out. Gemma 3's windowed ("sliding_attention")
// layers rotate with rope_local_base_freq, its full-attention layers with rope_theta and rope_scaling;
// transformers 5 writes both as rope_parameters {"full_attention": {...}, "sliding_attention": {...}}.
// Gemma 2 has one rotary table (read as Llama's) and soft-caps its scores and logits by default.
void read_gemma(const Json& j, const std::string& path, LlamaConfig& c) {
  const bool v3 = c.model_type == "gemma3_text";
  c.norm_plus_one = c.scale_embeddings = c.sandwich_norms = c.gelu_tanh = true;
  c.qk_norm = v3;
  const std::string act = member(j, "hidden_activation") ? string_field(j, "hidden_activation") : "gelu_pytorch_tanh";
  if (act != "gelu_pytorch_tanh") throw_range(path + ": hidden_activation '" + act + "' is not supported for model_type '" + c.model_type + "' (only 'gelu_pytorch_tanh')");
  const double scalar = number_field(j, "query_pre_attn_scalar", path, 256.0);
  if (!(scalar > 0) || !std::isfinite(scalar)) throw_range(path + ": 'query_pre_attn_scalar' must be a finite number > 0");
  c.attention_scale = std::pow(scalar, -0.5);
  c.final_logit_softcap = softcap_field(j, "final_logit_softcapping", path, v3 ? 0.0 : 30.0);
  c.attn_logit_softcap = softcap_field(j, "attn_logit_softcapping", path, v3 ? 0.0 : 50.0);
  if (bool_field(j, "use_bidirectional_attention", path, false))
    throw_range(path + ": use_bidirectional_attention is not supported (only causal attention)");
  c.qkv_bias = c.o_bias = bool_field(j, "attention_bias", path, false);
  // The window, on the layers layer_types names (read_sliding_window), else Gemma 2's every other
  // layer or Gemma 3's every sliding_window_pattern-th layer attends fully.
  const auto it = j.find("sliding_window");
  if (it != j.end() && it->is_null()) throw_range(path + ": sliding_window null is not supported for model_type '" + c.model_type + "' (its local layers need a window)");
  const auto window = it == j.end() ? std::optional<uint64_t>(4096) : json_index(*it, INT64_MAX);
  if (!window || *window < 1) throw_range(path + ": 'sliding_window' must be a positive integer");
  c.sliding_window = static_cast<int64_t>(*window);
  const int64_t pattern = v3 ? int_field(j, "sliding_window_pattern", path, 6) : 2;
  if (pattern < 1) throw_range(path + ": 'sliding_window_pattern' must be a positive integer");
  c.sliding_layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) c.sliding_layers[static_cast<size_t>(i)] = (i + 1) % pattern != 0;
  if (!v3) return;  // Gemma 2's rotary parameters are read as Llama's
  c.rope_theta = number_field(j, "rope_theta", path, 1e6);
  c.rope_local_theta = number_field(j, "rope_local_base_freq", path, 1e4);
  const Json* params = member(j, "rope_parameters");
  if (params) {
    if (!params->is_object() || (!params->contains("full_attention") && !params->contains("sliding_attention")))
      throw_range(path + ": rope_parameters must map 'full_attention' and 'sliding_attention' to their rotary parameters");
    if (const Json* full = member(*params, "full_attention")) read_rope_entry(*full, path, "rope_parameters.full_attention", c.rope_theta, &c.rope_linear_factor);
    if (const Json* local = member(*params, "sliding_attention")) read_rope_entry(*local, path, "rope_parameters.sliding_attention", c.rope_local_theta, nullptr);
  }
  // transformers 4.x's rope_scaling: the full-attention layers'.
  if (const Json* scaling = member(j, "rope_scaling"))
    read_rope_entry(*scaling, path, "rope_scaling", c.rope_theta, &c.rope_linear_factor);
  for (const auto& [key, theta] : {std::pair<const char*, double>{"rope_theta", c.rope_theta}, {"rope_local_base_freq", c.rope_local_theta}})
    if (!(theta > 0) || !std::isfinite(theta)) throw_range(path + ": '" + key + "' must be a finite number > 0");
}

// Which layers attend through a window: `layer_types` when the config lists them, else the family's rule.
void read_sliding_window(const Json& j, const std::string& path, LlamaConfig& c) {
  const std::string& family = c.model_type;
  if (family == "llama") return;  // LlamaConfig has no window
  const bool gemma = family == "gemma3_text" || family == "gemma2";
  const bool qwen = family == "qwen2" || family == "qwen3";
  // Qwen's window is off unless use_sliding_window (transformers then drops sliding_window).
  if (qwen && !bool_field(j, "use_sliding_window", path, false)) return;
  if (!gemma) {  // read_gemma set Gemma's window and its default pattern
    const Json* w = member(j, "sliding_window");
    if (!w) return;
    const auto window = json_index(*w, INT64_MAX);
    if (!window || *window < 1) throw_range(path + ": 'sliding_window' must be a positive integer or null");
    c.sliding_window = static_cast<int64_t>(*window);
    c.sliding_layers.assign(static_cast<size_t>(c.num_hidden_layers), true);
  }
  if (qwen) {
    const int64_t first = int_field(j, "max_window_layers", path, 28);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) c.sliding_layers[static_cast<size_t>(i)] = i >= first;
  }
  const Json* types = member(j, "layer_types");
  if (!types) return;
  if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_hidden_layers)
    throw_range(path + ": 'layer_types' must list one type per layer (" + std::to_string(c.num_hidden_layers) + ")");
  for (size_t i = 0; i < types->size(); ++i) {
    const Json& t = (*types)[i];
    const std::string type = t.is_string() ? t.get<std::string>() : "";
    if (type != "sliding_attention" && type != "full_attention")
      throw_range(path + ": layer_types[" + std::to_string(i) + "] '" + type + "' is not supported (only sliding_attention, full_attention)");
    // MistralForCausalLM windows every layer whatever layer_types says (transformers warns and points
    // to Ministral): a mixed list asks for what that class does not do, so it is refused.
    if (family == "mistral" || family == "phi3") {
      if (type != "sliding_attention")
        throw_range(path + ": layer_types with full-attention layers is not supported for model_type '" + family +
                    "' (transformers' " + family + " windows every layer; a Ministral-style mix is not implemented)");
    } else {
      c.sliding_layers[i] = type == "sliding_attention";
    }
  }
}

LlamaConfig config_from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) throw_range(path + ": not a JSON object");
  const std::string model_type = string_field(j, "model_type");
  if (model_type == "gemma3")
    throw_range(path + ": model_type 'gemma3' (Gemma3ForConditionalGeneration, text and vision) is not supported: only the text model "
                "is, as model_type 'gemma3_text' (Gemma3ForCausalLM, e.g. gemma-3-1b); the multimodal checkpoints nest it under "
                "text_config and language_model.* names");
  if (model_type == "gemma")
    throw_range(path + ": model_type 'gemma' is not supported: Gemma 1 (no sandwich norms, its own activation fields) is not "
                "implemented (supported: " + kSupported + ")");
  const bool gemma = model_type == "gemma3_text" || model_type == "gemma2";
  const char* architecture = nullptr;
  for (const auto& [type, arch] : kFamilies)
    if (model_type == type) architecture = arch;
  if (!architecture) throw_range(path + ": model_type '" + model_type + "' is not supported (supported: " + kSupported + ")");
  if (const Json* arch = member(j, "architectures"); arch && arch->is_array())
    for (const auto& a : *arch)
      if (a.is_string() && a.get<std::string>() != architecture)
        throw_range(path + ": architecture '" + a.get<std::string>() + "' is not supported for model_type '" + model_type + "' (only " +
                    architecture + ")");
  // Gemma reads hidden_activation instead (read_gemma), as its modeling code does.
  const std::string act = gemma ? "" : string_field(j, "hidden_act");
  if (!act.empty() && act != "silu") throw_range(path + ": hidden_act '" + act + "' is not supported (only 'silu')");
  LlamaConfig c;
  c.model_type = model_type;
  c.vocab_size = int_field(j, "vocab_size", path, std::nullopt);
  c.hidden_size = int_field(j, "hidden_size", path, std::nullopt);
  c.intermediate_size = int_field(j, "intermediate_size", path, std::nullopt);
  c.num_hidden_layers = int_field(j, "num_hidden_layers", path, std::nullopt);
  c.num_attention_heads = int_field(j, "num_attention_heads", path, std::nullopt);
  c.num_key_value_heads = int_field(j, "num_key_value_heads", path, gemma ? 4 : c.num_attention_heads);
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                                   {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers}})
    if (value < 1) throw_range(path + ": '" + key + "' must be a positive integer, got " + std::to_string(value));
  if (!gemma && !member(j, "head_dim") && c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads != 0)
    throw_range(path + ": num_attention_heads " + std::to_string(c.num_attention_heads) + " does not divide hidden_size " +
                std::to_string(c.hidden_size) + " (and no head_dim is given)");
  if (c.num_attention_heads == 0 || c.num_key_value_heads == 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    throw_range(path + ": num_attention_heads " + std::to_string(c.num_attention_heads) +
                " must be a positive multiple of num_key_value_heads " + std::to_string(c.num_key_value_heads));
  c.head_dim = int_field(j, "head_dim", path, gemma ? 256 : c.hidden_size / c.num_attention_heads);
  if (c.head_dim == 0 || c.head_dim % 2 != 0) throw_range(path + ": head_dim must be even and positive");
  c.max_position_embeddings = int_field(j, "max_position_embeddings", path, 2048);
  c.rms_norm_eps = number_field(j, "rms_norm_eps", path, 1e-6);
  c.rope_theta = number_field(j, "rope_theta", path, 10000.0);
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) throw_range(path + ": 'rms_norm_eps' must be a finite number > 0");
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) throw_range(path + ": 'rope_theta' must be a finite number > 0");
  c.tie_word_embeddings = bool_field(j, "tie_word_embeddings", path, gemma);
  // Biases as each family's modeling code places them: Mistral and Phi-3 have none whatever the config says.
  if (model_type == "llama" || model_type == "qwen3") {
    c.qkv_bias = c.o_bias = bool_field(j, "attention_bias", path, false);
  } else if (model_type == "qwen2") {
    c.qkv_bias = true;
  }
  if (model_type == "llama") c.mlp_bias = bool_field(j, "mlp_bias", path, false);
  c.qk_norm = model_type == "qwen3";
  c.fused_projections = model_type == "phi3";
  if (gemma) read_gemma(j, path, c);
  read_sliding_window(j, path, c);
  if (const double f = number_field(j, "partial_rotary_factor", path, 1.0); f != 1.0)
    throw_range(path + ": partial_rotary_factor " + std::to_string(f) + " is not supported (only 1: rotary over the whole head)");
  if (model_type == "gemma3_text") return c;  // read_gemma read its rotary parameters
  // transformers 5 writes rope_parameters (with rope_theta inside); 4.x wrote rope_scaling.
  const Json* rs = member(j, "rope_parameters");
  if (!rs || !rs->is_object()) rs = member(j, "rope_scaling");
  if (rs && rs->is_object()) {
    std::string type = string_field(*rs, "rope_type");
    if (type.empty()) type = string_field(*rs, "type");
    if (const Json* theta = member(*rs, "rope_theta"); theta && theta->is_number()) c.rope_theta = theta->get<double>();
    if (const double f = number_field(*rs, "partial_rotary_factor", path, 1.0); f != 1.0)
      throw_range(path + ": partial_rotary_factor " + std::to_string(f) + " is not supported (only 1: rotary over the whole head)");
    if (type == "llama3") {
      c.llama3_rope = true;
      c.rope_factor = number_field(*rs, "factor", path, 8.0);
      c.rope_low_freq_factor = number_field(*rs, "low_freq_factor", path, 1.0);
      c.rope_high_freq_factor = number_field(*rs, "high_freq_factor", path, 4.0);
      c.rope_original_max_position = int_field(*rs, "original_max_position_embeddings", path, 8192);
    } else if (!type.empty() && type != "default") {
      throw_range(path + ": rope_scaling of type '" + type + "' is not supported (only 'llama3')");
    }
  }
  return c;
}

}  // namespace

LlamaConfig LlamaConfig::parse(const std::string& text, const std::string& what) {
  return config_from_json(parse_json(text.data(), text.size(), what), what);
}

}  // namespace jfa
