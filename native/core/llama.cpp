#include "core/llama.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/ones_like.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>

#include "core/checkpoint.h"
#include "core/checks.h"
#include "core/decode_session.h"
#include "core/divergence.h"
#include "core/cpu_gemm.h"
#include "core/decode_attention.h"
#include "core/fused.h"
#include "core/head_loss.h"
#include "core/skinny.h"
#include "core/json.h"
#include "core/latent_mixture.h"
#include "core/lora.h"
#include "core/safetensors.h"

namespace jfa {
namespace {

namespace fs = std::filesystem;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_range(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Json read_json(const std::string& path) {
  const std::string text = read_text(path);
  return parse_json(text.data(), text.size(), path);
}

const Json* member(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// LlamaRMSNorm: normalised in float32, scaled in the input's dtype; one fused pass for float32.
// plus_one (Gemma): scaled by 1 + weight, in float32, and only then cast back to the input's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool plus_one = false) {
  if (plus_one) {
    const at::Tensor scale = weight.to(at::kFloat) + 1.0;
    if (fused_applies(x) && fused_applies(scale)) return fused_rms_norm(x, scale, eps);
    const at::Tensor x32 = x.to(at::kFloat);
    return (x32 * (x32.pow(2).mean(-1, /*keepdim=*/true) + eps).rsqrt() * scale).to(x.scalar_type());
  }
  if (fused_applies(x) && fused_applies(weight)) return fused_rms_norm(x, weight, eps);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * (x32.pow(2).mean(-1, /*keepdim=*/true) + eps).rsqrt();
  return weight * normed.to(x.scalar_type());
}

// Attention whose scaled scores are soft-capped (cap * tanh(s / cap)) before the additive mask, as
// transformers' eager Gemma 2 attention (SDPA has no such step): q (b, h, t, hd), k and v (b, h,
// total, hd); `mask` additive (b, 1, t, total) or undefined; `causal` hides later keys when no mask
// is given. Softmax in float32, then back to q's dtype.
at::Tensor softcapped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, bool causal,
                                double scale, double cap) {
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  scores = at::tanh(scores / cap) * cap;
  if (mask.defined()) {
    scores = scores + mask;
  } else if (causal) {
    const int64_t t = q.size(2), total = k.size(2);
    const at::Tensor later = at::ones({t, total}, q.options().dtype(at::kBool)).triu(total - t + 1);
    scores = scores.masked_fill(later, -std::numeric_limits<double>::infinity());
  }
  return at::matmul(at::softmax(scores, -1, at::kFloat).to(q.scalar_type()), v);
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

namespace {
// A float32 master tensor (LoRA factors, latent pools of a bfloat16 model) in the compute dtype of
// `x`: the cast is part of the graph, so its gradient reaches the master in float32.
at::Tensor as_compute(const at::Tensor& t, const at::Tensor& x) { return t.scalar_type() == x.scalar_type() ? t : t.to(x.scalar_type()); }
}  // namespace

at::Tensor LinearLayer::forward(const at::Tensor& x, bool adapters, bool decoding, const AdapterNoise* noise, uint64_t index) const {
  at::Tensor y;
  if (noise && adapters && lora_A.defined()) {
    // PACE: base + scale * ((x A^T) B^T) * (1 + eps), in autograd's own ops (the fused LoRA
    // function has no noise). eps is drawn in float32 on the CPU and moved, as dropout's mask is.
    const at::Tensor branch = at::linear(at::linear(x, as_compute(lora_A, x)), as_compute(lora_B, x));
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(noise_seed(noise->seed, index));
    const at::Tensor factor = at::randn(branch.sizes(), gen, at::TensorOptions().dtype(at::kFloat)).mul_(noise->sigma).add_(1.0);
    y = at::linear(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt)
            .add(branch * factor.to(branch.options()), lora_scale);
  } else if (decoding && skinny_applies(x, weight)) {
    y = skinny_linear(x, weight, bias);
    if (adapters && lora_A.defined()) y.add_(at::linear(at::linear(x, lora_A), lora_B), lora_scale);
  } else if (adapters && lora_A.defined()) {
    LoraArgs a;
    a.x = x;
    a.W = weight;
    a.bias = bias;
    a.A = as_compute(lora_A, x);
    a.B = as_compute(lora_B, x);
    a.scale = lora_scale;
    y = lora_linear(a);
  } else {
    y = cpu_linear(x, weight, bias);
  }
  // Frozen adapters of earlier rounds: rank-r products, never an out x in matrix.
  for (const auto& f : stacked) y = y.add(at::linear(at::linear(x, as_compute(f.A, x)), as_compute(f.B, x)), f.scale);
  return y;
}

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& dir, c10::ScalarType dtype) {
  if (dtype != c10::kFloat && dtype != c10::kBFloat16)
    throw_type("loadModel: dtype must be float32 or bfloat16, got " + dtype_name(dtype));
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw_range(dir + ": not a directory");
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path)) throw_range(config_path.string() + ": missing (not a Hugging Face model directory)");
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel());
  model->config_ = LlamaConfig::parse(read_text(config_path.string()), config_path.string());
  model->dtype_ = dtype;
  const LlamaConfig& c = model->config_;

  // name -> file holding it
  std::map<std::string, std::string> where;
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  std::map<std::string, SafetensorsFile> files;
  if (fs::exists(single)) {
    files.emplace(single.string(), SafetensorsFile::open(single.string()));
    for (const auto& n : files.at(single.string()).names()) where[n] = single.string();
  } else if (fs::exists(index)) {
    const Json j = read_json(index.string());
    const Json* map = member(j, "weight_map");
    if (!map || !map->is_object()) throw_range(index.string() + ": no weight_map object");
    for (const auto& [name, file] : map->items()) {
      if (!file.is_string()) throw_range(index.string() + ": weight_map entry '" + name + "' is not a file name");
      const std::string shard = (root / file.get<std::string>()).string();
      if (!files.count(shard)) files.emplace(shard, SafetensorsFile::open(shard));
      where[name] = shard;
    }
  } else {
    throw_range(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  const auto take = [&](const std::string& name, std::vector<int64_t> shape) {
    const auto it = where.find(name);
    if (it == where.end()) throw_range(dir + ": missing tensor '" + name + "'");
    at::Tensor t = files.at(it->second).get(name);
    if (t.sizes() != c10::IntArrayRef(shape))
      throw_range(it->second + ": tensor '" + name + "' has shape " + shape_str(t.sizes()) + ", expected " + shape_str(shape) +
                  " for this config");
    if (!c10::isFloatingType(t.scalar_type())) throw_range(it->second + ": tensor '" + name + "' is not floating-point");
    return t.scalar_type() == dtype ? t : t.to(dtype);
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q_out = c.num_attention_heads * hd, kv_out = c.num_key_value_heads * hd;
  const auto linear = [&](const std::string& prefix, int64_t out, int64_t in, bool bias) {
    LinearLayer l;
    l.weight = take(prefix + ".weight", {out, in});
    if (bias) l.bias = take(prefix + ".bias", {out});
    return l;
  };
  model->embed_tokens = take("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = take(p + "input_layernorm.weight", {H});
    layer.post_attention_norm = take(p + "post_attention_layernorm.weight", {H});
    if (c.sandwich_norms) {
      layer.pre_feedforward_norm = take(p + "pre_feedforward_layernorm.weight", {H});
      layer.post_feedforward_norm = take(p + "post_feedforward_layernorm.weight", {H});
    }
    if (c.fused_projections) {
      layer.qkv = linear(p + "self_attn.qkv_proj", q_out + 2 * kv_out, H, c.qkv_bias);
      layer.gate_up = linear(p + "mlp.gate_up_proj", 2 * I, H, c.mlp_bias);
    } else {
      layer.q = linear(p + "self_attn.q_proj", q_out, H, c.qkv_bias);
      layer.k = linear(p + "self_attn.k_proj", kv_out, H, c.qkv_bias);
      layer.v = linear(p + "self_attn.v_proj", kv_out, H, c.qkv_bias);
      layer.gate = linear(p + "mlp.gate_proj", I, H, c.mlp_bias);
      layer.up = linear(p + "mlp.up_proj", I, H, c.mlp_bias);
    }
    layer.o = linear(p + "self_attn.o_proj", H, q_out, c.o_bias);
    layer.down = linear(p + "mlp.down_proj", H, I, c.mlp_bias);
    if (c.qk_norm) {
      layer.q_norm = take(p + "self_attn.q_norm.weight", {hd});
      layer.k_norm = take(p + "self_attn.k_norm.weight", {hd});
    }
    model->layers_.push_back(std::move(layer));
  }
  model->final_norm = take("model.norm.weight", {H});
  model->lm_head = c.tie_word_embeddings && !where.count("lm_head.weight") ? model->embed_tokens
                                                                           : take("lm_head.weight", {c.vocab_size, H});
  model->set_rope_tables();
  return model;
}

void LlamaModel::set_rope_tables() {
  inv_freq_ = rope_inv_freq(config_.rope_theta, true);
  if (config_.rope_local_theta > 0) local_inv_freq_ = rope_inv_freq(config_.rope_local_theta, false);
}

at::Tensor LlamaModel::norm(const at::Tensor& x, const at::Tensor& weight) const {
  return rms_norm(x, weight, config_.rms_norm_eps, config_.norm_plus_one);
}

at::Tensor LlamaModel::rope_inv_freq(double theta, bool scaled) const {
  const auto& c = config_;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor inv = 1.0 / at::pow(theta, at::arange(0, c.head_dim, 2, f64) / static_cast<double>(c.head_dim));
  if (scaled && c.rope_linear_factor != 1.0) inv = inv / c.rope_linear_factor;
  if (scaled && c.llama3_rope) {
    // Llama 3.1's scaling: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
    const double old_len = static_cast<double>(c.rope_original_max_position);
    const double low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / c.rope_factor, inv);
    const at::Tensor smooth = (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  }
  return inv.to(at::kFloat);
}

void LlamaModel::check_ids(const at::Tensor& ids, const at::Tensor& attention_mask, const char* op) const {
  if (ids.scalar_type() != at::kLong) throw_type(std::string(op) + ": input ids must be int64, got " + dtype_name(ids.scalar_type()));
  check_dims(ids, 2, op, "input ids");
  if (ids.size(1) == 0) throw_range(std::string(op) + ": the sequence is empty");
  if (ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= config_.vocab_size))
    throw_range(std::string(op) + ": token ids must be in [0, " + std::to_string(config_.vocab_size) + ")");
  if (attention_mask.defined() && attention_mask.sizes() != ids.sizes())
    throw_range(std::string(op) + ": attention mask " + shape_str(attention_mask.sizes()) + " must match the ids " +
                shape_str(ids.sizes()));
}

void LlamaModel::check_latent(const LatentCall& latent, int64_t batch, const char* op) const {
  const std::string where(op);
  if (latent_pools_.empty()) throw_range(where + ": latent tasks given but no latent pool is set (setLatentPool)");
  if (!latent.indices.defined() || !latent.weights.defined()) throw_type(where + ": latent needs both indices and weights");
  if (latent.indices.scalar_type() != at::kLong && latent.indices.scalar_type() != at::kInt)
    throw_type(where + ": latent indices must be int64 or int32, got " + dtype_name(latent.indices.scalar_type()));
  check_float_tensor(latent.weights, op, "latent weights");
  check_dims(latent.indices, 2, op, "latent indices");
  if (latent.indices.size(0) != batch || latent.weights.sizes() != latent.indices.sizes() || latent.indices.size(1) == 0)
    throw_range(where + ": latent indices " + shape_str(latent.indices.sizes()) + " and weights " +
                shape_str(latent.weights.sizes()) + " must both be [" + std::to_string(batch) + ", k] with k >= 1, for a batch of " +
                std::to_string(batch));
  const int64_t lo = latent.indices.min().item<int64_t>(), hi = latent.indices.max().item<int64_t>();
  for (const auto& [layer, pool] : latent_pools_) {
    const int64_t P = pool.first.size(0);
    if (lo < 0 || hi >= P)
      throw_range(where + ": latent indices span " + std::to_string(lo) + ".." + std::to_string(hi) + ", outside the pool of " +
                  std::to_string(P) + " latent tasks on layer " + std::to_string(layer));
  }
}

at::Tensor LlamaModel::decode(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& key_mask, KvCache* cache,
                              bool adapters, const LatentCall* latent, const AdapterNoise* noise, bool last_only) const {
  const auto& c = config_;
  const int64_t b = ids.size(0), t = ids.size(1);
  const int64_t past = cache ? cache->length : 0, total = past + t;
  at::Tensor h = at::embedding(embed_tokens, ids);
  // Gemma: times sqrt(hidden_size) as a number of the embeddings' dtype (bfloat16 rounds it first).
  if (c.scale_embeddings)
    h = h * at::scalar_tensor(std::sqrt(static_cast<double>(c.hidden_size)), h.options().dtype(at::kFloat)).to(h.scalar_type());
  const at::Tensor position = positions.to(at::kFloat).unsqueeze(-1);
  const auto table = [&](const at::Tensor& inv_freq) {
    const at::Tensor freqs = position * inv_freq;         // (b, t, hd/2)
    const at::Tensor emb = at::cat({freqs, freqs}, -1);   // (b, t, hd)
    return std::pair<at::Tensor, at::Tensor>{emb.cos().to(dtype_), emb.sin().to(dtype_)};
  };
  const auto [cos, sin] = table(inv_freq_);
  at::Tensor local_cos, local_sin;
  if (local_inv_freq_.defined()) std::tie(local_cos, local_sin) = table(local_inv_freq_);
  const bool fused = fused_applies(cos);

  // Without padding, SDPA needs no mask: is_causal for a whole sequence (its fast causal kernel),
  // nothing for one new token. Otherwise an additive mask (b, 1, t, total): causal from this step's
  // offset, padding keys hidden, with the lowest finite value rather than -inf, as transformers
  // does, so that a query that sees no key gets uniform weights, not NaN.
  const bool padded = key_mask.numel() && key_mask.min().item<int64_t>() == 0;
  const int64_t nh = c.num_attention_heads, hd = c.head_dim;
  // Whole sequences (training, scoring) take our causal attention where it applies; steps with a
  // cache, and whatever else it does not take, take SDPA, whose mask is built only then.
  const at::Tensor real_keys = padded ? key_mask.ne(0).to(at::kByte).contiguous() : at::Tensor();
  // Soft-capped scores (Gemma 2) take softcapped_attention, which reads the same masks SDPA would.
  const bool own_attention = !cache && c.attn_logit_softcap == 0 && causal_attention_applies(b, nh, t, h.options(), real_keys);
  // Off the CPU, whole sequences padded on the right only (training batches) take SDPA's causal
  // kernel without a mask (flash attention): a padding key comes after every real query, so the
  // causal mask hides it already; only the padding rows' own outputs differ, and no loss reads them.
  bool right_padded = false;
  if (padded && !own_attention && !cache && t > 1 && !ids.device().is_cpu()) {
    const at::Tensor real = key_mask.ne(0);
    const at::Tensor prefix = at::arange(t, key_mask.options().dtype(at::kLong)).view({1, t}).lt(real.sum(1, /*keepdim=*/true));
    right_padded = real.eq(prefix).all().item<bool>();
  }
  const bool causal_only = (!padded || right_padded) && past == 0 && t > 1;
  // A decoding step (one new token per row) on the CPU takes our decode kernel, which reads the key
  // mask itself: no additive mask, no KV heads expanded (layers past a sliding window excepted).
  const bool decode_kernel = cache && t == 1 && c.attn_logit_softcap == 0 && (c.sliding_window == 0 || total <= c.sliding_window) &&
                             decode_attention_fits(nh, c.num_key_value_heads, hd, h.options());
  at::Tensor mask;
  if (!own_attention && !decode_kernel && ((padded && !right_padded) || (past > 0 && t > 1))) {
    const auto i64 = at::TensorOptions().dtype(at::kLong).device(ids.device());
    at::Tensor keep = at::arange(total, i64).view({1, total}).le(at::arange(past, total, i64).view({t, 1})).view({1, 1, t, total});
    keep = keep.logical_and(key_mask.ne(0).view({b, 1, 1, total}));
    const auto like = at::TensorOptions().dtype(dtype_).device(ids.device());
    // The dtype's own lowest finite value: float's rounds to -inf in bfloat16.
    const double lowest = dtype_ == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                                  : static_cast<double>(std::numeric_limits<float>::lowest());
    mask = at::where(keep, at::zeros({}, like), at::full({}, lowest, like));
  }

  // Windowed layers need their own mask only once a query is a window or more past a key; until then
  // the window hides nothing and they attend as every other layer does.
  at::Tensor window_mask;
  if (c.sliding_window > 0 && total > c.sliding_window) {
    const auto i64 = at::TensorOptions().dtype(at::kLong).device(ids.device());
    const at::Tensor key = at::arange(total, i64).view({1, total}), query = at::arange(past, total, i64).view({t, 1});
    const at::Tensor keep = key.le(query).logical_and(key.gt(query - c.sliding_window)).view({1, 1, t, total})
                                .logical_and(key_mask.ne(0).view({b, 1, 1, total}));
    const auto like = at::TensorOptions().dtype(dtype_).device(ids.device());
    const double lowest = dtype_ == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                                  : static_cast<double>(std::numeric_limits<float>::lowest());
    window_mask = at::where(keep, at::zeros({}, like), at::full({}, lowest, like));
  }
  const double scale = c.attention_scale > 0 ? c.attention_scale : 1.0 / std::sqrt(static_cast<double>(hd));
  LayerContext ctx{cos, sin, local_cos, local_sin, fused, mask, window_mask, real_keys, own_attention, causal_only, decode_kernel, scale,
                   past, adapters, latent ? std::optional<LatentCall>(*latent) : std::nullopt,
                   noise ? std::optional<AdapterNoise>(*noise) : std::nullopt, last_only && t > 1};
  // Checkpointed layers keep only their input for the backward: when gradients are recorded over
  // whole sequences (training) and set_checkpointing() asked for it.
  const bool checkpoint = checkpointing_ && !cache && at::GradMode::is_enabled();
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (checkpoint) {
      h = checkpointed(h, layer_params(l, ctx), [this, l, ctx](const at::Tensor& x) { return layer_forward(l, x, ctx, nullptr); });
    } else {
      h = layer_forward(l, h, ctx, cache);
    }
  }
  if (cache) cache->length = total;
  return norm(h, final_norm);
}

std::vector<at::Tensor> LlamaModel::layer_params(size_t l, const LayerContext& ctx) const {
  const Layer& layer = layers_[l];
  std::vector<at::Tensor> out{layer.input_norm, layer.post_attention_norm, layer.pre_feedforward_norm, layer.post_feedforward_norm,
                              layer.q_norm, layer.k_norm};
  for (const LinearLayer* lin : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down, &layer.qkv, &layer.gate_up})
    for (const at::Tensor& t : {lin->weight, lin->bias, lin->lora_A, lin->lora_B}) out.push_back(t);
  if (ctx.latent) {
    out.push_back(ctx.latent->weights);
    if (const auto pool = latent_pools_.find(static_cast<int64_t>(l)); pool != latent_pools_.end()) {
      out.push_back(pool->second.first);
      out.push_back(pool->second.second);
    }
  }
  return out;
}

at::Tensor LlamaModel::layer_forward(size_t l, const at::Tensor& h_in, const LayerContext& ctx, KvCache* cache) const {
  const auto& c = config_;
  const Layer& layer = layers_[l];
  const int64_t b = h_in.size(0), past = ctx.past, total = past + h_in.size(1);
  int64_t t = h_in.size(1);
  const int64_t nh = c.num_attention_heads, kvh = c.num_key_value_heads, hd = c.head_dim;
  const bool adapters = ctx.adapters;
  // Gemma 3's windowed layers rotate with their own table.
  const bool local_rope = ctx.local_cos.defined() && c.sliding_layers[l];
  const at::Tensor& cos = local_rope ? ctx.local_cos : ctx.cos;
  const at::Tensor& sin = local_rope ? ctx.local_sin : ctx.sin;
  // The rotary embedding of (b, t, heads, hd) projections; returns (b, heads, t, hd).
  const auto rope = [&](const at::Tensor& x) {
    if (ctx.fused) return fused_rope(x, cos, sin).transpose(1, 2);
    const at::Tensor xt = x.transpose(1, 2);
    return xt * cos.unsqueeze(1) + rotate_half(xt) * sin.unsqueeze(1);
  };
  at::Tensor h = h_in;
  const at::Tensor x = norm(h, layer.input_norm);
  const bool decoding = cache != nullptr;  // only generate() keeps a KV cache
  // Each linear by its slot in the layer (q k v o gate up down qkv gate_up: 0..8), which names its
  // PACE noise: linear index l * 16 + slot.
  const AdapterNoise* noise = ctx.noise ? &*ctx.noise : nullptr;
  const auto linear = [&](const LinearLayer& lin, uint64_t slot, const at::Tensor& in) {
    return lin.forward(in, adapters, decoding, noise, static_cast<uint64_t>(l) * 16 + slot);
  };
  at::Tensor qp, kp, vp;  // (b, t, heads * hd)
  if (c.fused_projections) {
    const at::Tensor qkv = linear(layer.qkv, 7, x);
    qp = qkv.narrow(-1, 0, nh * hd);
    kp = qkv.narrow(-1, nh * hd, kvh * hd);
    vp = qkv.narrow(-1, (nh + kvh) * hd, kvh * hd);
  } else {
    qp = linear(layer.q, 0, x);
    kp = linear(layer.k, 1, x);
    vp = linear(layer.v, 2, x);
  }
  at::Tensor qh = qp.reshape({b, t, nh, hd}), kh = kp.reshape({b, t, kvh, hd});
  if (c.qk_norm) {
    qh = norm(qh, layer.q_norm);
    kh = norm(kh, layer.k_norm);
  }
  at::Tensor q = rope(qh);
  at::Tensor k = rope(kh);
  at::Tensor v = vp.reshape({b, t, kvh, hd}).transpose(1, 2);
  if (cache) {
    cache->k[l].narrow(2, past, t).copy_(k);
    cache->v[l].narrow(2, past, t).copy_(v);
    k = cache->k[l].narrow(2, 0, total);
    v = cache->v[l].narrow(2, 0, total);
  }
  // A windowed layer whose window hides a key attends through SDPA with the window's mask.
  const bool windowed = ctx.window_mask.defined() && c.sliding_layers[l];
  at::Tensor mask = windowed ? ctx.window_mask : ctx.mask;
  bool own_attention = ctx.own_attention && !windowed, causal_only = ctx.causal_only && !windowed;
  // The last layer of a prefill whose last position alone is read: from here on, that position only.
  // It sees every key up to itself, which is every key: no causal mask (SDPA's is_causal would align
  // a single query with the first key), the padding mask's last row.
  const bool last_only = ctx.last_only && l + 1 == layers_.size();
  if (last_only) {
    q = q.narrow(2, t - 1, 1);
    h = h.narrow(1, t - 1, 1);
    if (mask.defined()) mask = mask.narrow(2, t - 1, 1);
    own_attention = causal_only = false;
    t = 1;
  }
  // Off the CPU without a mask, SDPA reads grouped K/V itself (enable_gqa: flash attention takes
  // it), so neither the keys nor the whole KV cache are copied per head; otherwise they are expanded.
  const bool gqa = kvh != nh && !own_attention && !mask.defined() && !h_in.device().is_cpu() && c.attn_logit_softcap == 0;
  if (kvh != nh && !gqa && !ctx.decode_kernel) {
    k = k.unsqueeze(2).expand({b, kvh, nh / kvh, total, hd}).reshape({b, nh, total, hd});
    v = v.unsqueeze(2).expand({b, kvh, nh / kvh, total, hd}).reshape({b, nh, total, hd});
  }
  const at::Tensor heads_out =
      ctx.decode_kernel        ? decode_attention(q, k, v, ctx.real_keys, ctx.scale)
      : c.attn_logit_softcap > 0 ? softcapped_attention(q, k, v, mask, causal_only, ctx.scale, c.attn_logit_softcap)
      : own_attention          ? causal_attention(q, k, v, ctx.real_keys, ctx.scale)
                               : at::scaled_dot_product_attention(q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, 0.0,
                                                       causal_only, ctx.scale, gqa);
  const at::Tensor attn = heads_out.transpose(1, 2).reshape({b, t, nh * hd});
  at::Tensor o = linear(layer.o, 3, attn);
  if (ctx.latent) {
    if (const auto pool = latent_pools_.find(static_cast<int64_t>(l)); pool != latent_pools_.end()) {
      LatentMixtureArgs m;
      m.x = attn;
      m.A = as_compute(pool->second.first, attn);
      m.B = as_compute(pool->second.second, attn);
      m.indices = ctx.latent->indices;
      m.weights = as_compute(ctx.latent->weights, attn);
      o = o + latent_mixture(m);
    }
  }
  // Gemma's sandwich: the attention's and the MLP's outputs are normed before they join the residual.
  h = h + (c.sandwich_norms ? norm(o, layer.post_attention_norm) : o);
  const at::Tensor y = norm(h, c.sandwich_norms ? layer.pre_feedforward_norm : layer.post_attention_norm);
  at::Tensor gate, up;
  if (c.fused_projections) {
    const at::Tensor gu = linear(layer.gate_up, 8, y);
    gate = gu.narrow(-1, 0, c.intermediate_size);
    up = gu.narrow(-1, c.intermediate_size, c.intermediate_size);
  } else {
    gate = linear(layer.gate, 4, y);
    up = linear(layer.up, 5, y);
  }
  const at::Tensor mlp = linear(layer.down, 6, (c.gelu_tanh ? at::gelu(gate, "tanh") : at::silu(gate)) * up);
  return h + (c.sandwich_norms ? norm(mlp, layer.post_feedforward_norm) : mlp);
}

at::Tensor LlamaModel::hidden_states(const at::Tensor& ids_in, const at::Tensor& mask_in, bool adapters,
                                     const LatentCall* latent_in, const AdapterNoise* noise) const {
  const at::Tensor ids = placed(ids_in), attention_mask = placed(mask_in);
  const std::optional<LatentCall> latent_placed = placed(latent_in);
  const LatentCall* latent = latent_placed ? &*latent_placed : nullptr;
  check_ids(ids, attention_mask, "model.forward");
  // Positions 0..t-1 whatever the padding, as transformers' forward does (pad on the right).
  const at::Tensor positions = at::arange(ids.size(1), ids.options()).expand_as(ids);
  const at::Tensor key_mask = attention_mask.defined() ? attention_mask : at::ones_like(ids);
  if (latent) check_latent(*latent, ids.size(0), "model.forward");
  return decode(ids, positions, key_mask, nullptr, adapters, latent, noise);
}

void LlamaModel::set_latent_pool(int64_t layer, const at::Tensor& A, const at::Tensor& B) {
  const char* op = "setLatentPool";
  if (layer < 0 || layer >= config_.num_hidden_layers)
    throw_range(std::string(op) + ": layer " + std::to_string(layer) + " is outside 0.." + std::to_string(config_.num_hidden_layers - 1));
  const int64_t in = config_.num_attention_heads * config_.head_dim, out = config_.hidden_size;
  // The pool is the model's dtype or float32 (trained masters of a bfloat16 model), on its device.
  check_master_kind(A, dtype_, embed_tokens, op, "A", "the pool", "the model");
  check_master_kind(B, dtype_, embed_tokens, op, "B", "the pool", "the model");
  check_dims(A, 3, op, "A");
  check_dims(B, 3, op, "B");
  if (A.size(2) != in || B.size(1) != out || A.size(0) != B.size(0) || A.size(1) != B.size(2))
    throw_range(std::string(op) + ": A " + shape_str(A.sizes()) + " and B " + shape_str(B.sizes()) + " must be (P, r, " +
                std::to_string(in) + ") and (P, " + std::to_string(out) + ", r) for o_proj");
  latent_pools_[layer] = {A, B};
}

at::Tensor LlamaModel::mean_pooled(const at::Tensor& ids_in, const at::Tensor& mask_in, bool adapters) const {
  const at::Tensor ids = placed(ids_in), attention_mask = placed(mask_in);
  const at::Tensor h = hidden_states(ids, attention_mask, adapters);
  const at::Tensor m = (attention_mask.defined() ? attention_mask.ne(0) : at::ones_like(ids).ne(0)).to(h.scalar_type()).unsqueeze(-1);
  return (h * m).sum(1) / m.sum(1).clamp_min(1);
}

at::Tensor LlamaModel::generate(const at::Tensor& ids, const at::Tensor& attention_mask, const GenerateOptions& o, bool adapters,
                                const LatentCall* latent) const {
  DecodeSession session(*this, ids, attention_mask, o, adapters, latent);
  return session.step(o.max_new_tokens);
}

std::unique_ptr<LlamaModel> LlamaModel::random(const LlamaConfig& c, uint64_t seed, double init_std) {
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel());
  model->config_ = c;
  model->dtype_ = c10::kFloat;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto normal = [&](std::vector<int64_t> shape) {
    return at::empty(shape, at::TensorOptions().dtype(at::kFloat)).normal_(0.0, init_std, gen);
  };
  const auto linear = [&](int64_t out, int64_t in, bool bias) {
    LinearLayer l;
    l.weight = normal({out, in});
    if (bias) l.bias = at::zeros({out});
    return l;
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  model->embed_tokens = normal({c.vocab_size, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer layer;
    // Norms start at one: a weight of one, or Gemma's offset of zero from it.
    const auto unit = [&] { return c.norm_plus_one ? at::zeros({H}) : at::ones({H}); };
    layer.input_norm = unit();
    layer.post_attention_norm = unit();
    if (c.sandwich_norms) {
      layer.pre_feedforward_norm = unit();
      layer.post_feedforward_norm = unit();
    }
    const int64_t q_out = c.num_attention_heads * hd, kv_out = c.num_key_value_heads * hd;
    // Drawn in the checkpoint's module order (q, k, v, o, gate, up, down): the same seed gives the
    // same weights as before the families were added, so a base rebuilt from its card's command
    // starts where the shipped one started.
    if (c.fused_projections) {
      layer.qkv = linear(q_out + 2 * kv_out, H, c.qkv_bias);
      layer.o = linear(H, q_out, c.o_bias);
      layer.gate_up = linear(2 * I, H, c.mlp_bias);
    } else {
      layer.q = linear(q_out, H, c.qkv_bias);
      layer.k = linear(kv_out, H, c.qkv_bias);
      layer.v = linear(kv_out, H, c.qkv_bias);
      layer.o = linear(H, q_out, c.o_bias);
      layer.gate = linear(I, H, c.mlp_bias);
      layer.up = linear(I, H, c.mlp_bias);
    }
    layer.down = linear(H, I, c.mlp_bias);
    if (c.qk_norm) {
      layer.q_norm = c.norm_plus_one ? at::zeros({hd}) : at::ones({hd});
      layer.k_norm = c.norm_plus_one ? at::zeros({hd}) : at::ones({hd});
    }
    model->layers_.push_back(std::move(layer));
  }
  model->final_norm = c.norm_plus_one ? at::zeros({H}) : at::ones({H});
  model->lm_head = c.tie_word_embeddings ? model->embed_tokens : normal({c.vocab_size, H});
  model->set_rope_tables();
  return model;
}

void LlamaModel::merge_lora() {
  for (auto& [name, layer] : linear_layers()) {
    if (!layer->lora_A.defined()) continue;
    layer->weight = layer->weight.clone();  // the loaded weight may alias the file's mapping
    lora_merge(layer->weight, layer->lora_A.detach(), layer->lora_B.detach(), layer->lora_scale, false);
    layer->lora_A = at::Tensor();
    layer->lora_B = at::Tensor();
  }
}

int64_t LlamaModel::remove_lora() {
  int64_t n = 0;
  for (auto& [name, layer] : linear_layers()) {
    if (!layer->lora_A.defined()) continue;
    layer->lora_A = at::Tensor();
    layer->lora_B = at::Tensor();
    n += 1;
  }
  return n;
}

int64_t LlamaModel::stack_lora() {
  bool any = false;
  for (auto& [name, layer] : linear_layers()) {
    if (!layer->lora_A.defined()) continue;
    layer->stacked.push_back({layer->lora_A.detach().clone(), layer->lora_B.detach().clone(), layer->lora_scale});
    layer->lora_A = at::Tensor();
    layer->lora_B = at::Tensor();
    any = true;
  }
  if (!any) throw_range("stackLora: this model has no adapters to stack (call addLora or loadAdapter first)");
  return stacked_count();
}

int64_t LlamaModel::stacked_count() const {
  size_t n = 0;
  for (const auto& [name, layer] : const_cast<LlamaModel*>(this)->linear_layers()) n = std::max(n, layer->stacked.size());
  return static_cast<int64_t>(n);
}

void LlamaModel::set_base_trainable(bool trainable) {
  for (auto& [name, t] : weights()) t.set_requires_grad(trainable);
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModel::weights() const {
  std::vector<std::pair<std::string, at::Tensor>> out = {{"model.embed_tokens.weight", embed_tokens}};
  auto* self = const_cast<LlamaModel*>(this);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(p + "input_layernorm.weight", layers_[i].input_norm);
    out.emplace_back(p + "post_attention_layernorm.weight", layers_[i].post_attention_norm);
    if (layers_[i].pre_feedforward_norm.defined()) {
      out.emplace_back(p + "pre_feedforward_layernorm.weight", layers_[i].pre_feedforward_norm);
      out.emplace_back(p + "post_feedforward_layernorm.weight", layers_[i].post_feedforward_norm);
    }
    if (layers_[i].q_norm.defined()) {
      out.emplace_back(p + "self_attn.q_norm.weight", layers_[i].q_norm);
      out.emplace_back(p + "self_attn.k_norm.weight", layers_[i].k_norm);
    }
  }
  for (const auto& [name, layer] : self->linear_layers()) {
    out.emplace_back(name + ".weight", layer->weight);
    if (layer->bias.defined()) out.emplace_back(name + ".bias", layer->bias);
  }
  out.emplace_back("model.norm.weight", final_norm);
  if (!lm_head.is_same(embed_tokens)) out.emplace_back("lm_head.weight", lm_head);
  return out;
}

at::Tensor LlamaModel::head_loss(const at::Tensor& hidden, const at::Tensor& rows, const at::Tensor& targets) const {
  const int64_t h = config_.hidden_size;
  if (!hidden.defined() || hidden.size(-1) != h)
    throw_range("model.headLoss: hidden states must end in the hidden size " + std::to_string(h));
  if (config_.final_logit_softcap > 0) {
    // The chunked pass knows no cap: soft-capped logits of the scored rows, then their loss.
    CrossEntropyArgs a;
    a.logits = head(hidden, rows);
    a.targets = placed(targets);
    return token_cross_entropy(a);
  }
  return head_cross_entropy(hidden.reshape({-1, h}).index_select(0, placed(rows)), lm_head, placed(targets));
}

at::Tensor LlamaModel::head(const at::Tensor& hidden_in, const at::Tensor& rows_in) const {
  const char* op = "model.head";
  const at::Tensor hidden = placed(hidden_in), rows = placed(rows_in);
  const int64_t h = config_.hidden_size;
  if (!hidden.defined() || hidden.dim() < 1 || hidden.size(-1) != h)
    throw_range(std::string(op) + ": hidden states must end in the hidden size " + std::to_string(h) + ", got " +
                (hidden.defined() ? shape_str(hidden.sizes()) : "undefined"));
  if (!rows.defined()) return softcap_logits(cpu_linear(hidden, lm_head));
  if (rows.scalar_type() != at::kLong || rows.dim() != 1)
    throw_type(std::string(op) + ": rows must be a 1-d int64 tensor, got " + shape_str(rows.sizes()));
  const at::Tensor flat = hidden.reshape({-1, h});
  if (rows.numel() > 0) {
    const auto [lo, hi] = at::aminmax(rows);
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= flat.size(0))
      throw_range(std::string(op) + ": rows must lie in [0, " + std::to_string(flat.size(0)) + ")");
  }
  return softcap_logits(cpu_linear(flat.index_select(0, rows), lm_head));
}

at::Tensor LlamaModel::softcap_logits(const at::Tensor& logits) const {
  const double cap = config_.final_logit_softcap;
  return cap > 0 ? at::tanh(logits / cap) * cap : logits;
}

at::Tensor LlamaModel::logits(const at::Tensor& ids, const at::Tensor& attention_mask, bool adapters,
                              const LatentCall* latent) const {
  return softcap_logits(cpu_linear(hidden_states(ids, attention_mask, adapters, latent), lm_head));
}

std::vector<std::pair<std::string, LinearLayer*>> LlamaModel::linear_layers() {
  std::vector<std::pair<std::string, LinearLayer*>> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& l = layers_[i];
    if (config_.fused_projections)
      out.insert(out.end(), {{p + "self_attn.qkv_proj", &l.qkv}, {p + "self_attn.o_proj", &l.o}, {p + "mlp.gate_up_proj", &l.gate_up},
                             {p + "mlp.down_proj", &l.down}});
    else
      out.insert(out.end(), {{p + "self_attn.q_proj", &l.q}, {p + "self_attn.k_proj", &l.k}, {p + "self_attn.v_proj", &l.v},
                             {p + "self_attn.o_proj", &l.o}, {p + "mlp.gate_proj", &l.gate}, {p + "mlp.up_proj", &l.up},
                             {p + "mlp.down_proj", &l.down}});
  }
  return out;
}

std::vector<std::string> LlamaModel::linear_modules() const {
  if (config_.fused_projections) return {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
  return {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
}

void LlamaModel::add_lora(const std::vector<std::string>& targets, int64_t r, double lora_alpha, bool rslora, uint64_t seed) {
  const double scale = lora_scale(lora_alpha, r, rslora);
  const std::vector<std::string> modules = linear_modules();
  for (const auto& t : targets) {
    if (std::find(modules.begin(), modules.end(), t) != modules.end()) continue;
    std::string list;
    for (const auto& m : modules) list += (list.empty() ? "" : " ") + m;
    throw_range("addLora: unknown target module '" + t + "' for model_type '" + config_.model_type + "' (expected " + list + ")");
  }
  uint64_t n = 0;
  for (auto& [name, layer] : linear_layers()) {
    const std::string module = name.substr(name.rfind('.') + 1);
    if (std::find(targets.begin(), targets.end(), module) == targets.end()) continue;
    // Made and seeded on the CPU (the same values on every device), then moved to the weight's.
    // Always float32: the trained factors of a bfloat16 base are float32 masters (as PEFT's
    // autocast_adapter_dtype), cast to bfloat16 in the forward (LinearLayer::forward).
    const auto options = layer->weight.options().device(at::kCPU).dtype(at::kFloat);
    layer->lora_A = at::empty({r, layer->weight.size(1)}, options);
    layer->lora_B = at::empty({layer->weight.size(0), r}, options);
    lora_init(layer->lora_A, layer->lora_B, LoraInit::Kaiming, seed + n++);
    if (!layer->weight.device().is_cpu()) {
      layer->lora_A = layer->lora_A.to(layer->weight.device());
      layer->lora_B = layer->lora_B.to(layer->weight.device());
    }
    layer->lora_A.set_requires_grad(true);
    layer->lora_B.set_requires_grad(true);
    layer->lora_scale = scale;
  }
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModel::lora_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, layer] : const_cast<LlamaModel*>(this)->linear_layers()) {
    if (!layer->lora_A.defined()) continue;
    out.emplace_back("base_model.model." + name + ".lora_A.weight", layer->lora_A);
    out.emplace_back("base_model.model." + name + ".lora_B.weight", layer->lora_B);
  }
  return out;
}

std::vector<std::pair<std::string, const LinearLayer*>> LlamaModel::adapted_layers() const {
  std::vector<std::pair<std::string, const LinearLayer*>> out;
  for (const auto& [name, layer] : const_cast<LlamaModel*>(this)->linear_layers())
    if (layer->lora_A.defined()) out.emplace_back(name, layer);
  return out;
}

int64_t LlamaModel::parameter_count() const {
  int64_t n = embed_tokens.numel() + final_norm.numel() + (lm_head.is_same(embed_tokens) ? 0 : lm_head.numel());
  for (const auto& [name, layer] : const_cast<LlamaModel*>(this)->linear_layers())
    n += layer->weight.numel() + (layer->bias.defined() ? layer->bias.numel() : 0);
  for (const auto& l : layers_)
    n += l.input_norm.numel() + l.post_attention_norm.numel() + (l.q_norm.defined() ? l.q_norm.numel() + l.k_norm.numel() : 0) +
         (l.pre_feedforward_norm.defined() ? l.pre_feedforward_norm.numel() + l.post_feedforward_norm.numel() : 0);
  return n;
}

void LlamaModel::to(const c10::Device& device) {
  if (device == this->device()) return;
  at::NoGradGuard no_grad;
  const auto move = [&](at::Tensor& t) {
    if (!t.defined()) return;
    const bool trainable = t.requires_grad();
    t = t.detach().to(device);
    if (trainable) t.set_requires_grad(true);
  };
  const bool tied = lm_head.is_same(embed_tokens);
  move(embed_tokens);
  move(final_norm);
  if (tied) lm_head = embed_tokens;
  else move(lm_head);
  for (auto& [name, layer] : linear_layers()) {
    move(layer->weight);
    move(layer->bias);
    move(layer->lora_A);
    move(layer->lora_B);
    for (auto& f : layer->stacked) {
      move(f.A);
      move(f.B);
    }
  }
  for (auto& layer : layers_) {
    move(layer.input_norm);
    move(layer.post_attention_norm);
    move(layer.pre_feedforward_norm);
    move(layer.post_feedforward_norm);
    move(layer.q_norm);
    move(layer.k_norm);
  }
  for (auto& [layer, pool] : latent_pools_) {
    move(pool.first);
    move(pool.second);
  }
  move(inv_freq_);
  move(local_inv_freq_);
}

}  // namespace jfa
