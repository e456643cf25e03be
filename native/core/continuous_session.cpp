#include "core/continuous_session.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <limits>
#include <string>

#include "core/checks.h"
#include "core/decode_session.h"
#include "core/errors.h"

namespace jfa {
namespace {

// Free slots are refilled once this share of the batch (1/kRefillShare) is free, or when every
// waiting prompt fits: each refill is one more forward pass, and a free slot still takes its share
// of every decode step until it is refilled.
constexpr int64_t kRefillShare = 8;
// Columns before every slot's run (left by runs that ended) that make a compaction worth its copy.
constexpr int64_t kDeadColumns = 16;
// A prefix shared by a refill's prompts shorter than this is computed with each: the prefix's own
// forward pass would cost about what it saves.
constexpr int64_t kMinSharedPrefix = 16;

}  // namespace

ContinuousSession::ContinuousSession(const LlamaModel& model, const at::Tensor& ids_in, const std::vector<int64_t>& lengths, int64_t slots,
                                     const GenerateOptions& o, bool adapters, const LatentCall* latent_in, const char* op)
    : model_(model), o_(o), adapters_(adapters), lengths_(lengths) {
  const std::string where(op);
  check_generate_options(o, op);
  if (o.temperature != 0.0) throw_range(where + ": continuous batching is greedy only (temperature 0), got temperature " + std::to_string(o.temperature));
  if (slots < 1) throw_range(where + ": slots must be a positive integer, got " + std::to_string(slots));
  if (lengths_.empty()) throw_range(where + ": no prompts");
  ids_ = model.placed(ids_in);
  ids_cpu_ = ids_in.to(at::kCPU).contiguous();
  if (ids_.scalar_type() != at::kLong) throw_type(where + ": prompt ids must be int64, got " + dtype_name(ids_.scalar_type()));
  check_dims(ids_, 1, op, "prompt ids");
  int64_t total = 0, longest = 0;
  for (size_t p = 0; p < lengths_.size(); ++p) {
    if (lengths_[p] < 1) throw_range(where + ": prompt " + std::to_string(p) + " is empty");
    offsets_.push_back(total);
    total += lengths_[p];
    longest = std::max(longest, lengths_[p]);
  }
  if (total != ids_.numel())
    throw_range(where + ": the prompt lengths add up to " + std::to_string(total) + " tokens, but " + std::to_string(ids_.numel()) + " ids were given");
  const LlamaConfig& c = model.config();
  if (ids_.min().item<int64_t>() < 0 || ids_.max().item<int64_t>() >= c.vocab_size)
    throw_range(where + ": token ids must be in [0, " + std::to_string(c.vocab_size) + ")");
  const int64_t prompts = static_cast<int64_t>(lengths_.size());
  latent_ = model.placed(latent_in);
  if (latent_) model.check_latent(*latent_, prompts, op);

  at::NoGradGuard no_grad;
  const int64_t b = std::min(slots, prompts);
  remaining_ = prompts;
  // The longest sequence, and the dead columns a compaction waits for. Columns are written before
  // they are read (the first refill's relayout zeroes those before its runs).
  capacity_ = longest + o.max_new_tokens + kDeadColumns;
  const auto cache_options = model.embed_tokens.options();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    cache_.k.push_back(at::empty({b, c.num_key_value_heads, capacity_, c.head_dim}, cache_options));
    cache_.v.push_back(at::empty({b, c.num_key_value_heads, capacity_, c.head_dim}, cache_options));
  }
  prompt_.assign(b, -1);
  start_.assign(b, 0);
  position_.assign(b, 0);
  out_.resize(b);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(model.device());
  next_ = at::full({b}, o.pad_token_id, i64);
  mask_ = at::zeros({b, capacity_}, i64);
  if (o.repetition_penalty != 1.0) seen_ = at::zeros({b, c.vocab_size}, i64.dtype(at::kBool));
  if (latent_)
    mix_ = LatentCall{at::zeros({b, latent_->indices.size(1)}, latent_->indices.options()), at::zeros({b, latent_->weights.size(1)}, latent_->weights.options())};
}

int64_t ContinuousSession::free_slots() const {
  return std::count(prompt_.begin(), prompt_.end(), int64_t{-1});
}

std::vector<FinishedSequence> ContinuousSession::step(int64_t n) {
  if (n < 1) throw_range("continuous.step: n must be a positive integer, got " + std::to_string(n));
  at::NoGradGuard no_grad;
  std::vector<FinishedSequence> out;
  const int64_t prompts = static_cast<int64_t>(lengths_.size());
  for (int64_t i = 0; i < n && !done_; ++i) {
    if (cancelled_) {
      finish();
      break;
    }
    const int64_t b = static_cast<int64_t>(prompt_.size()), free = free_slots(), waiting = prompts - next_prompt_;
    if (waiting > 0 && free > 0 && (free * kRefillShare >= b || free >= waiting)) refill(out);
    // Once no prompt waits, ended slots leave the batch as generate's rows do: once a quarter of it.
    else if (waiting == 0 && free > 0 && free * 4 >= b) {
      std::vector<int64_t> busy;
      for (int64_t s = 0; s < b; ++s)
        if (prompt_[s] >= 0) busy.push_back(s);
      if (!busy.empty()) relayout(busy, longest_run());
    }
    if (remaining_ == 0) {
      finish();
      break;
    }
    if (free_slots() < static_cast<int64_t>(prompt_.size())) decode_step(out);
    if (remaining_ == 0) finish();
  }
  return out;
}

int64_t ContinuousSession::shared_prefix(int64_t first, int64_t g) const {
  const int64_t* ids = ids_cpu_.data_ptr<int64_t>();
  int64_t most = std::numeric_limits<int64_t>::max();
  for (int64_t j = 0; j < g; ++j) most = std::min(most, lengths_[first + j] - 1);
  for (int64_t k = 0; k < most; ++k)
    for (int64_t j = 1; j < g; ++j)
      if (ids[offsets_[first + j] + k] != ids[offsets_[first] + k]) return k;
  return most;
}

void ContinuousSession::refill(std::vector<FinishedSequence>& out) {
  const int64_t prompts = static_cast<int64_t>(lengths_.size());
  std::vector<int64_t> slots;
  for (int64_t s = 0; s < static_cast<int64_t>(prompt_.size()) && next_prompt_ + static_cast<int64_t>(slots.size()) < prompts; ++s)
    if (prompt_[s] < 0) slots.push_back(s);
  const int64_t g = static_cast<int64_t>(slots.size()), first = next_prompt_;
  // The tokens every prompt of the group begins with (an instruction they share) are computed once.
  // Not with latent tasks: they make each prompt's keys its own from the first token.
  int64_t shared = latent_ || g < 2 ? 0 : shared_prefix(first, g);
  if (shared < kMinSharedPrefix) shared = 0;
  int64_t rest = 0;
  for (int64_t j = 0; j < g; ++j) rest = std::max(rest, lengths_[first + j] - shared);
  const int64_t width = shared + rest;
  // Each prompt as [shared prefix, padding, the rest of it]: left-padded as generate batches prompts
  // when nothing is shared. Positions count real tokens, so the padding moves none.
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(model_.device());
  at::Tensor ids = at::full({g, width}, o_.pad_token_id, i64), mask = at::zeros({g, width}, i64);
  if (shared) {
    ids.narrow(1, 0, shared).copy_(ids_.narrow(0, offsets_[first], shared).view({1, shared}));
    mask.narrow(1, 0, shared).fill_(1);
  }
  for (int64_t j = 0; j < g; ++j) {
    const int64_t own = lengths_[first + j] - shared;
    ids.select(0, j).narrow(0, width - own, own).copy_(ids_.narrow(0, offsets_[first + j] + shared, own));
    mask.select(0, j).narrow(0, width - own, own).fill_(1);
  }
  const at::Tensor positions = (mask.cumsum(1) - 1).clamp_min(0);
  const LlamaConfig& c = model_.config();
  KvCache group;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    group.k.push_back(at::empty({g, c.num_key_value_heads, width, c.head_dim}, cache_.k[0].options()));
    group.v.push_back(at::empty({g, c.num_key_value_heads, width, c.head_dim}, cache_.v[0].options()));
  }
  if (shared) {
    // The prefix alone (batch 1), its keys and values then given to every row.
    KvCache prefix;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      prefix.k.push_back(at::empty({1, c.num_key_value_heads, shared, c.head_dim}, cache_.k[0].options()));
      prefix.v.push_back(at::empty({1, c.num_key_value_heads, shared, c.head_dim}, cache_.v[0].options()));
    }
    model_.decode(ids.narrow(0, 0, 1).narrow(1, 0, shared), positions.narrow(0, 0, 1).narrow(1, 0, shared), mask.narrow(0, 0, 1).narrow(1, 0, shared),
                  &prefix, adapters_, nullptr, /*noise=*/nullptr, /*last_only=*/true);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      group.k[l].narrow(2, 0, shared).copy_(prefix.k[l].expand({g, -1, -1, -1}));
      group.v[l].narrow(2, 0, shared).copy_(prefix.v[l].expand({g, -1, -1, -1}));
    }
    group.length = shared;
  }
  std::optional<LatentCall> tasks;
  if (latent_) tasks = LatentCall{latent_->indices.narrow(0, first, g), latent_->weights.narrow(0, first, g)};
  const at::Tensor h = model_.decode(ids.narrow(1, shared, rest), positions.narrow(1, shared, rest), mask, &group, adapters_,
                                     tasks ? &*tasks : nullptr, /*noise=*/nullptr, /*last_only=*/true);
  const at::Tensor logits = DecodeSession::next_logits(model_, h.select(1, h.size(1) - 1));
  at::Tensor seen;
  if (seen_.defined()) {
    // The prompt's real tokens; padding goes to an extra column, dropped.
    seen = at::zeros({g, c.vocab_size + 1}, i64.dtype(at::kBool));
    seen.scatter_(1, at::where(mask.ne(0), ids, c.vocab_size), true);
    seen = seen.narrow(1, 0, c.vocab_size).contiguous();
  }
  const at::Tensor tokens = sample_tokens(logits, seen, o_, gen_);

  // The group's columns end at the write column, which must leave room for its longest prompt.
  if (cache_.length < width) relayout({}, width);
  const int64_t end = cache_.length;
  const at::Tensor rows = at::tensor(slots, at::TensorOptions().dtype(at::kLong)).to(model_.device());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    cache_.k[l].narrow(2, end - width, width).index_copy_(0, rows, group.k[l]);
    cache_.v[l].narrow(2, end - width, width).index_copy_(0, rows, group.v[l]);
  }
  mask_.index_fill_(0, rows, 0);
  mask_.narrow(1, end - width, width).index_copy_(0, rows, mask);
  if (mix_) {
    mix_->indices.index_copy_(0, rows, tasks->indices);
    mix_->weights.index_copy_(0, rows, tasks->weights);
  }
  if (seen_.defined()) seen_.index_copy_(0, rows, seen.scatter_(1, tokens.view({-1, 1}), true));
  next_.index_copy_(0, rows, tokens);
  for (int64_t j = 0; j < g; ++j) {
    const int64_t s = slots[j], len = lengths_[first + j];
    prompt_[s] = first + j;
    start_[s] = end - (shared ? width : len);
    position_[s] = len;
    out_[s].clear();
  }
  next_prompt_ += g;
  take(slots, tokens.to(at::kCPU), out);
}

void ContinuousSession::decode_step(std::vector<FinishedSequence>& out) {
  const int64_t b = static_cast<int64_t>(prompt_.size());
  // Compaction: every busy slot's run moves to the front, as the cache fills or once the longest
  // run leaves kDeadColumns columns before every run (attention reads them, masked, every step).
  const int64_t longest = longest_run();
  if (cache_.length + 1 > capacity_ || cache_.length - longest >= kDeadColumns) relayout({}, longest);
  const int64_t past = cache_.length;
  std::vector<int64_t> position(b), busy;
  for (int64_t s = 0; s < b; ++s) {
    const bool free = prompt_[s] < 0;
    position[s] = free ? 0 : position_[s];
    if (!free) busy.push_back(s);
  }
  const auto cpu = at::TensorOptions().dtype(at::kLong);
  const at::Tensor positions = at::tensor(position, cpu).to(model_.device()).view({b, 1});
  // Every slot's new key (a free slot's output is ignored; it attends to keys that are at least defined).
  mask_.select(1, past).fill_(1);
  const at::Tensor key_mask = mask_.narrow(1, 0, past + 1);
  const at::Tensor h = model_.decode(next_.view({b, 1}), positions, key_mask, &cache_, adapters_, mix_ ? &*mix_ : nullptr);
  const at::Tensor tokens = sample_tokens(DecodeSession::next_logits(model_, h.select(1, 0)), seen_, o_, gen_);
  if (seen_.defined()) seen_.scatter_(1, tokens.view({-1, 1}), true);
  next_ = tokens;
  for (const int64_t s : busy) ++position_[s];
  take(busy, tokens.to(at::kCPU).index_select(0, at::tensor(busy, cpu)), out);
}

void ContinuousSession::take(const std::vector<int64_t>& slots, const at::Tensor& tokens, std::vector<FinishedSequence>& out) {
  const at::Tensor cpu = tokens.contiguous();
  const int64_t* t = cpu.data_ptr<int64_t>();
  for (size_t j = 0; j < slots.size(); ++j) {
    const int64_t s = slots[j];
    out_[s].push_back(t[j]);
    const bool eos = std::find(o_.eos_token_ids.begin(), o_.eos_token_ids.end(), t[j]) != o_.eos_token_ids.end();
    if (!eos && static_cast<int64_t>(out_[s].size()) < o_.max_new_tokens) continue;
    out.push_back(FinishedSequence{prompt_[s], std::move(out_[s])});
    out_[s] = {};
    prompt_[s] = -1;
    --remaining_;
  }
}

int64_t ContinuousSession::longest_run() const {
  int64_t longest = 0;
  for (size_t s = 0; s < prompt_.size(); ++s)
    if (prompt_[s] >= 0) longest = std::max(longest, cache_.length - start_[s]);
  return longest;
}

void ContinuousSession::relayout(const std::vector<int64_t>& keep, int64_t end) {
  const int64_t length = cache_.length, kept = std::min(length, end);
  const at::Tensor rows = keep.empty() ? at::Tensor() : at::tensor(keep, at::TensorOptions().dtype(at::kLong)).to(model_.device());
  for (size_t l = 0; l < cache_.k.size(); ++l)
    for (at::Tensor* t : {&cache_.k[l], &cache_.v[l]}) {
      at::Tensor source = t->narrow(2, length - kept, kept);
      if (rows.defined()) source = source.index_select(0, rows);
      at::Tensor moved = at::empty({source.size(0), t->size(1), capacity_, t->size(3)}, t->options());
      // Columns before every run are read (masked): zeros, not whatever the memory held (0 * NaN is not 0).
      moved.narrow(2, 0, end - kept).zero_();
      moved.narrow(2, end - kept, kept).copy_(source);
      *t = moved;
    }
  at::Tensor visible = mask_.narrow(1, length - kept, kept);
  if (rows.defined()) visible = visible.index_select(0, rows);
  mask_ = at::zeros({visible.size(0), capacity_}, mask_.options());
  mask_.narrow(1, end - kept, kept).copy_(visible);
  for (int64_t& s : start_) s = std::max<int64_t>(0, s + end - length);
  cache_.length = end;
  if (!rows.defined()) return;
  next_ = next_.index_select(0, rows);
  if (seen_.defined()) seen_ = seen_.index_select(0, rows);
  if (mix_) mix_ = LatentCall{mix_->indices.index_select(0, rows), mix_->weights.index_select(0, rows)};
  const auto pick = [&](auto& v) {
    std::remove_reference_t<decltype(v)> picked;
    for (const int64_t s : keep) picked.push_back(std::move(v[s]));
    v = std::move(picked);
  };
  pick(prompt_);
  pick(start_);
  pick(position_);
  pick(out_);
}

void ContinuousSession::finish() {
  done_ = true;
  cache_ = KvCache();
  next_ = seen_ = ids_ = ids_cpu_ = mask_ = at::Tensor();
  mix_.reset();
  latent_.reset();
}

}  // namespace jfa
