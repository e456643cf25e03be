#include "core/decode_session.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isin.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "core/errors.h"
#include "core/skinny.h"

namespace jfa {
namespace {

// A double as JS prints it: NaN, Infinity, and the shortest digits that read back the same.
std::string show(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char text[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*g", precision, d);
    if (std::strtod(text, nullptr) == d) break;
  }
  return text;
}

}  // namespace

void check_generate_options(const GenerateOptions& o, const char* op) {
  const std::string where(op);
  if (o.max_new_tokens < 1) throw_range(where + ": maxNewTokens must be at least 1, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0.0) || std::isinf(o.temperature))
    throw_range(where + ": temperature must be a finite number >= 0 (0: greedy), got " + show(o.temperature));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) throw_range(where + ": topP must be in (0, 1], got " + show(o.top_p));
  if (o.top_k < 0) throw_range(where + ": topK must be a non-negative integer (0: off), got " + std::to_string(o.top_k));
  if (!(o.repetition_penalty > 0.0) || std::isinf(o.repetition_penalty))
    throw_range(where + ": repetitionPenalty must be a finite number > 0 (1: off), got " + show(o.repetition_penalty));
}

at::Tensor sample_tokens(at::Tensor logits, const at::Tensor& seen, const GenerateOptions& o, std::optional<at::Generator>& gen) {
  // RepetitionPenaltyLogitsProcessor: a seen token's logit shrinks towards 0 if positive, grows away if negative.
  if (seen.defined() && o.repetition_penalty != 1.0)
    logits = at::where(seen, at::where(logits < 0, logits * o.repetition_penalty, logits / o.repetition_penalty), logits);
  if (o.temperature == 0.0) return logits.argmax(-1);
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    // TopKLogitsWarper: below the k-th largest value is out; ties with it stay in.
    const at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  at::Tensor probs = logits.softmax(-1);
  if (o.top_p < 1.0) {
    // Nucleus: keep the most likely tokens until their mass reaches top_p (the first always).
    auto [sorted, order] = probs.sort(-1, /*descending=*/true);
    const at::Tensor drop = (sorted.cumsum(-1) - sorted).gt(o.top_p);
    probs = probs.scatter(-1, order, sorted.masked_fill(drop, 0.0));
  }
  // Drawn on the CPU with its seeded generator: the same tokens for a seed on every device.
  return probs.to(at::kCPU).multinomial(1, false, gen).squeeze(-1).to(logits.device());
}

DecodeSession::DecodeSession(const LlamaModel& model, const at::Tensor& ids_in, const at::Tensor& mask_in, const GenerateOptions& o,
                             bool adapters, const LatentCall* latent_in, const char* op)
    : model_(model), o_(o), adapters_(adapters) {
  const at::Tensor ids = model.placed(ids_in), attention_mask = model.placed(mask_in);
  mix_ = model.placed(latent_in);
  model.check_ids(ids, attention_mask, op);
  if (mix_) model.check_latent(*mix_, ids.size(0), op);
  check_generate_options(o, op);
  at::NoGradGuard no_grad;
  const LlamaConfig& c = model.config();
  batch_ = ids.size(0);
  prompt_ = ids.size(1);
  const int64_t total = prompt_ + o.max_new_tokens;
  const at::Tensor prompt_mask = attention_mask.defined() ? attention_mask.ne(0).to(at::kLong) : at::ones_like(ids);
  // Left padding: each sequence's first real token is at position 0 (as transformers' generate).
  const at::Tensor positions = (prompt_mask.cumsum(1) - 1).clamp_min(0);
  key_mask_ = at::cat({prompt_mask, at::ones({batch_, o.max_new_tokens}, prompt_mask.options())}, 1);
  const auto cache_options = model.embed_tokens.options();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    cache_.k.push_back(at::empty({batch_, c.num_key_value_heads, total, c.head_dim}, cache_options));
    cache_.v.push_back(at::empty({batch_, c.num_key_value_heads, total, c.head_dim}, cache_options));
  }
  if (o.seed) gen_ = at::make_generator<at::CPUGeneratorImpl>(*o.seed);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(ids.device());
  eos_ = at::tensor(o.eos_token_ids, i64.device(at::kCPU)).to(ids.device());
  if (o.repetition_penalty != 1.0) {
    // The prompt's real tokens (padding is no part of a sequence); padding goes to an extra column, dropped.
    const int64_t V = c.vocab_size;
    seen_ = at::zeros({batch_, V + 1}, i64.dtype(at::kBool));
    seen_.scatter_(1, at::where(prompt_mask.ne(0), ids, V), true);
    seen_ = seen_.narrow(1, 0, V).contiguous();
  }
  const at::Tensor h = model.decode(ids, positions, key_mask_.narrow(1, 0, prompt_), &cache_, adapters_, latent_call(), /*noise=*/nullptr, /*last_only=*/true);
  logits_ = next_logits(model_, h.select(1, h.size(1) - 1));
  next_pos_ = positions.select(1, prompt_ - 1) + 1;
  rows_ = at::arange(batch_, i64);
  finished_ = at::zeros({batch_}, i64.dtype(at::kBool));
}

at::Tensor DecodeSession::next_logits(const LlamaModel& model, const at::Tensor& last) {
  // The LM head on each row's last position only (the kernel for a few rows where it applies).
  const at::Tensor& w = model.lm_head;
  return model.softcap_logits(skinny_applies(last, w) ? skinny_linear(last, w, at::Tensor()) : at::linear(last, w)).to(at::kFloat);
}

void DecodeSession::advance() {
  // A row that ended leaves the batch (its cache rows, position, mask and latent tasks with it) once
  // a quarter of the rows still in it have ended, so a batch costs what its live rows do.
  const int64_t live = rows_.size(0);
  const int64_t ended = eos_.numel() || stopped_any_ ? finished_.sum().item<int64_t>() : 0;
  if (ended > 0 && ended * 4 >= live) {
    const at::Tensor keep = finished_.logical_not().nonzero().squeeze(1);
    for (size_t l = 0; l < cache_.k.size(); ++l) {
      cache_.k[l] = cache_.k[l].index_select(0, keep);
      cache_.v[l] = cache_.v[l].index_select(0, keep);
    }
    rows_ = rows_.index_select(0, keep);
    next_ = next_.index_select(0, keep);
    next_pos_ = next_pos_.index_select(0, keep);
    key_mask_ = key_mask_.index_select(0, keep);
    finished_ = finished_.index_select(0, keep);
    if (seen_.defined()) seen_ = seen_.index_select(0, keep);
    if (mix_) mix_ = LatentCall{mix_->indices.index_select(0, keep), mix_->weights.index_select(0, keep)};
  }
  const int64_t n = rows_.size(0);
  const at::Tensor h =
      model_.decode(next_.view({n, 1}), next_pos_.view({n, 1}), key_mask_.narrow(1, 0, prompt_ + produced_), &cache_, adapters_, latent_call());
  logits_ = next_logits(model_, h.select(1, 0));
  next_pos_ = next_pos_ + 1;
}

at::Tensor DecodeSession::step(int64_t n) {
  if (n < 1) throw_range("decoder.step: n must be a positive integer, got " + std::to_string(n));
  at::NoGradGuard no_grad;
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(rows_.defined() ? rows_.device() : model_.device());
  std::vector<at::Tensor> columns;
  for (int64_t i = 0; i < n && !done_; ++i) {
    if (cancelled_) {
      finish();
      break;
    }
    if (!logits_.defined()) advance();
    at::Tensor next = sample_tokens(logits_, seen_, o_, gen_);
    logits_ = at::Tensor();
    next = at::where(finished_, at::full({}, o_.pad_token_id, next.options()), next);
    columns.push_back(at::full({batch_}, o_.pad_token_id, i64).index_copy_(0, rows_, next));
    ++produced_;
    if (seen_.defined()) seen_.scatter_(1, next.view({-1, 1}), true);
    if (eos_.numel()) finished_ = finished_.logical_or(at::isin(next, eos_));
    next_ = next;
    if (produced_ == o_.max_new_tokens || ((eos_.numel() || stopped_any_) && finished_.all().item<bool>())) finish();
  }
  return columns.empty() ? at::empty({batch_, 0}, i64) : at::stack(columns, 1);
}

void DecodeSession::stop(const std::vector<int64_t>& rows) {
  for (const int64_t r : rows)
    if (r < 0 || r >= batch_) throw_range("decoder.stop: row " + std::to_string(r) + " is outside the batch of " + std::to_string(batch_));
  if (done_ || rows.empty()) return;
  const at::Tensor stopping = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(rows_.device());
  finished_ = finished_.logical_or(at::isin(rows_, stopping));
  stopped_any_ = true;
  if (finished_.all().item<bool>()) finish();
}

void DecodeSession::finish() {
  done_ = true;
  cache_ = KvCache();
  logits_ = next_ = seen_ = at::Tensor();
  mix_.reset();
}

}  // namespace jfa
