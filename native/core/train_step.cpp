#include "core/train_step.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <string>

#include "core/checks.h"
#include "core/cuda/cuda.h"
#include "core/distributed.h"
#include "core/projection.h"

namespace jfa {
namespace {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  CrossEntropyArgs a;
  a.logits = logits;
  a.targets = targets;
  return token_cross_entropy(a);
}

// Adds the milliseconds since the last lap to one phase, when timings are asked for.
class Laps {
 public:
  explicit Laps(StepTimings* timings) : timings_(timings), start_(now()), last_(start_) {}
  void lap(double StepTimings::*phase) {
    if (!timings_) return;
    cuda::synchronize();  // on a GPU, the phase's kernels have run, not only been queued (no-op on the CPU)
    const auto t = now();
    timings_->*phase += ms(last_, t);
    last_ = t;
  }
  void finish() {
    if (!timings_) return;
    cuda::synchronize();
    timings_->total += ms(start_, now());
  }

 private:
  using Clock = std::chrono::steady_clock;
  static Clock::time_point now() { return Clock::now(); }
  static double ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }
  StepTimings* timings_;
  Clock::time_point start_, last_;
};

// The value of a scalar loss as the caller sees it (float32, widened).
double value(const at::Tensor& loss) { return static_cast<double>(loss.item<float>()); }

// Clears every parameter's gradient however the step ends, so a failed step leaves nothing behind.
struct ClearGrads {
  std::vector<at::Tensor>& params;
  ~ClearGrads() {
    for (auto& p : params) p.mutable_grad().reset();
  }
};

void check_batch(const StepBatch& b, size_t i, const StepSettings& s) {
  const std::string where = "trainStep: batch " + std::to_string(i);
  if (!b.ids.defined()) throw_type(where + " has no ids");
  if (!b.flashback) {
    if (!b.targets.defined()) throw_type(where + " (new-task) needs targets");
    if (b.targets.scalar_type() != at::kLong) throw_type(where + ": targets must be int64, got " + dtype_name(b.targets.scalar_type()));
    if (b.targets.sizes() != b.ids.sizes())
      throw_range(where + ": targets " + shape_str(b.targets.sizes()) + " must have the ids' shape " + shape_str(b.ids.sizes()));
  }
  if (!(b.weight >= 0) || !std::isfinite(b.weight)) throw_range(where + ": weight must be a finite number >= 0, got " + std::to_string(b.weight));
  if (s.latent && b.latent && (!b.latent->indices.defined() || !b.latent->weights.defined()))
    throw_type(where + ": latent needs indices and weights");
}

}  // namespace

Trainer::Trainer(std::vector<at::Tensor> params, const AdamWOptions& options) : params_(std::move(params)), options_(options) {
  const char* op = "Optimizer";
  const AdamWOptions& o = options_;
  if (!(o.lr >= 0) || !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) || !(o.weight_decay >= 0))
    throw_range(std::string(op) + ": need lr >= 0, betas in [0, 1), eps > 0, weightDecay >= 0");
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string name = "params[" + std::to_string(i) + "]";
    check_float_tensor(params_[i], op, name.c_str());
    if (!params_[i].is_leaf() || !params_[i].requires_grad())
      throw_range(std::string(op) + ": " + name + " must be a trainable leaf (requires gradients)");
    for (size_t j = 0; j < i; ++j)
      if (params_[j].is_same(params_[i])) throw_range(std::string(op) + ": " + name + " is params[" + std::to_string(j) + "] again");
  }
  at::NoGradGuard no_grad;
  for (const auto& p : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
  }
  steps_ = at::zeros({static_cast<int64_t>(params_.size())}, at::kLong);
}

void Trainer::adamw(double lr) {
  AdamWOptions o = options_;
  o.lr = lr;
  adamw_step(params_, exp_avg_, exp_avg_sq_, steps_, o);
}

StepMetrics Trainer::step(const LlamaModel& model, const std::vector<StepBatch>& given, const StepSettings& s) {
  // Every input on the model's device (batches are made on the CPU in JS; a no-op for a CPU model).
  std::vector<StepBatch> batches = given;
  for (StepBatch& b : batches) {
    for (at::Tensor* t : {&b.ids, &b.attention_mask, &b.targets, &b.reference_logits, &b.reference_hidden}) *t = model.placed(*t);
    if (b.latent) b.latent = model.placed(*b.latent);
  }
  if (!(s.lr >= 0)) throw_range("trainStep: lr must be >= 0, got " + std::to_string(s.lr));
  // An optimizer made before the model moved holds the old tensors, which the model no longer uses.
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].device() != model.device())
      throw_type("trainStep: optimizer params[" + std::to_string(i) + "] is on " + params_[i].device().str() + " but the model is on " +
                 model.device().str() + ": make the optimizer after model.toDevice()");
  if (!(s.max_grad_norm > 0)) throw_range("trainStep: maxGradNorm must be > 0, got " + std::to_string(s.max_grad_norm));
  if (!(s.plain_sft_weight >= 0)) throw_range("trainStep: plainSftWeight must be >= 0");
  if (!(s.pace_sigma >= 0) || !std::isfinite(s.pace_sigma)) throw_range("trainStep: paceSigma must be a finite number >= 0, got " + std::to_string(s.pace_sigma));
  if (!(s.pace_lambda >= 0) || !std::isfinite(s.pace_lambda)) throw_range("trainStep: paceLambda must be a finite number >= 0, got " + std::to_string(s.pace_lambda));
  check_penalties(model, s.penalties, "trainStep");
  for (size_t i = 0; i < batches.size(); ++i) check_batch(batches[i], i, s);

  StepMetrics m;
  Laps laps(s.timings ? &m.timings : nullptr);
  ClearGrads clear{params_};
  for (auto& p : params_) p.mutable_grad().reset();
  at::AutoGradMode grad_mode(true);

  GradientSet per_batch;
  std::vector<PendingReduce> pending;
  int64_t sft_batches = 0, plain_batches = 0, div_batches = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const StepBatch& b = batches[i];
    if (b.flashback && !s.divergence) continue;
    const LatentCall* latent = s.latent && b.latent ? &*b.latent : nullptr;
    at::Tensor loss;
    if (b.ids.size(0) == 0) {
      // This rank's shard of the micro-batch is empty: no loss, zero gradients, same all-reduce.
      (b.flashback ? div_batches : sft_batches) += 1;
      if (!b.flashback && latent && s.plain_sft_weight > 0) plain_batches += 1;
    } else if (!b.flashback) {
      // Only the positions with a target are scored: the LM head runs on those rows alone.
      const at::Tensor flat = b.targets.reshape({-1});
      const at::Tensor rows = flat.ne(-100).nonzero().reshape({-1});
      const at::Tensor ids = flat.index_select(0, rows);
      // The head and the loss in one chunked pass (model.head_loss): no (rows x vocab) logits kept.
      const auto sft_loss = [&](const at::Tensor& hidden) {
        return rows.numel() ? model.head_loss(hidden, rows, ids) : cross_entropy(model.head(hidden, rows), ids);
      };
      // PACE: this batch's two perturbed passes draw from seeds of the step, the batch and the pass.
      const bool pace = s.pace_sigma > 0;
      const auto noise = [&](uint64_t pass) { return AdapterNoise{s.pace_sigma, noise_seed(noise_seed(s.seed, i), pass)}; };
      const AdapterNoise first = noise(0);
      const at::Tensor hidden = model.hidden_states(b.ids, b.attention_mask, true, latent, pace ? &first : nullptr);
      laps.lap(&StepTimings::forward);
      loss = sft_loss(hidden);
      if (b.weight != 1.0) loss = loss * b.weight;
      m.sft += value(loss);
      sft_batches += 1;
      if (pace && s.pace_lambda > 0) {
        const AdapterNoise second = noise(1);
        const at::Tensor other = model.hidden_states(b.ids, b.attention_mask, true, latent, &second);
        laps.lap(&StepTimings::forward);
        const at::Tensor real = (b.attention_mask.defined() ? b.attention_mask.ne(0) : at::ones_like(b.ids, at::kBool)).to(at::kFloat);
        const at::Tensor per_token = (hidden.to(at::kFloat) - other.to(at::kFloat)).square().sum(-1);
        at::Tensor consistency = (per_token * real).sum() / real.sum().clamp_min(1.0) * s.pace_lambda;
        if (b.weight != 1.0) consistency = consistency * b.weight;
        m.penalty += value(consistency);
        loss = loss + consistency;
      }
      if (latent && s.plain_sft_weight > 0) {
        at::Tensor plain = sft_loss(model.hidden_states(b.ids, b.attention_mask, true));
        if (b.weight != 1.0) plain = plain * b.weight;
        m.plain_sft += value(plain);
        plain_batches += 1;
        loss = at::add(loss, plain, s.plain_sft_weight);
        laps.lap(&StepTimings::forward);
      }
    } else {
      const at::Tensor logits = model.logits(b.ids, b.attention_mask, true, latent);
      laps.lap(&StepTimings::forward);
      at::Tensor ref = b.reference_logits;
      if (!ref.defined()) {
        at::NoGradGuard no_grad;
        ref = b.reference_hidden.defined() ? model.head(b.reference_hidden, at::Tensor())
                                           : model.logits(b.ids, b.attention_mask, false);
      }
      laps.lap(&StepTimings::ref_forward);
      DivergenceArgs d;
      d.cur = logits;
      d.ref = ref;
      d.mask = b.attention_mask.defined() ? b.attention_mask : at::ones_like(b.ids);
      d.kind = s.kl;
      d.reduction = s.reduction;
      at::Tensor div = flashback_divergence(d);
      if (b.weight != 1.0) div = div * b.weight;
      m.divergence += value(div);
      div_batches += 1;
      loss = s.alpha == 1.0 ? div : div * s.alpha;
    }
    laps.lap(&StepTimings::loss);
    if (loss.defined() && loss.requires_grad()) loss.backward();
    laps.lap(&StepTimings::backward);
    // This batch's gradient, kept apart; a parameter it did not reach gets zeros.
    std::vector<at::Tensor> grads;
    grads.reserve(params_.size());
    for (auto& p : params_) {
      at::Tensor& g = p.mutable_grad();
      grads.push_back(g.defined() ? g.contiguous() : at::zeros_like(p));
      g.reset();
    }
    laps.lap(&StepTimings::grad_collect);
    if (s.group)
      pending.push_back(s.group->all_reduce_async(grads, s.flat_bucket ? Bucketing::Flat : Bucketing::PerTensor,
                                                  "the all-reduce of micro-batch " + std::to_string(i)));
    per_batch.push_back(std::move(grads));
    laps.lap(&StepTimings::allreduce);
  }
  if (per_batch.empty()) throw_range("trainStep: no micro-batch to train on (none given, or only flashbacks with the divergence off)");
  if (s.group) {
    // Every rank now holds the same per-micro-batch gradients (sums of the ranks' weighted shares).
    for (auto& p : pending) p.wait();
    at::Tensor losses = at::tensor({m.sft, m.plain_sft, m.divergence, m.penalty}, at::kDouble);
    std::vector<at::Tensor> l{losses};
    s.group->all_reduce(l, Bucketing::Flat, 1.0, "the all-reduce of the step's losses");
    m.sft = losses[0].item<double>();
    m.plain_sft = losses[1].item<double>();
    m.divergence = losses[2].item<double>();
    m.penalty = losses[3].item<double>();
    laps.lap(&StepTimings::allreduce);
  }

  std::vector<at::Tensor> combined;
  {
    at::NoGradGuard no_grad;
    if (s.pcgrad && per_batch.size() > 1) {
      PcgradResult r = pcgrad(per_batch, pcgrad_orders(static_cast<int64_t>(per_batch.size()), s.seed));
      combined = std::move(r.grads);
      m.conflicts = r.conflicts;
    } else {
      const double w = 1.0 / static_cast<double>(per_batch.size());
      for (size_t p = 0; p < params_.size(); ++p) {
        at::Tensor acc = at::zeros_like(params_[p]);
        for (const auto& g : per_batch) acc = at::add(acc, g[p], w);
        combined.push_back(std::move(acc));
      }
    }
  }
  per_batch.clear();
  // PACE's consistency is a mean over the new-task batches, as their cross-entropy is.
  if (sft_batches) m.penalty /= static_cast<double>(sft_batches);
  if (s.penalties.any()) m.penalty += add_penalty_grads(model, s.penalties, params_, combined);
  for (size_t p = 0; p < params_.size(); ++p) params_[p].mutable_grad() = std::move(combined[p]);
  laps.lap(&StepTimings::projection);
  m.grad_norm = clip_grad_norm(params_, s.max_grad_norm);
  laps.lap(&StepTimings::clip);
  adamw(s.lr);
  laps.lap(&StepTimings::optimizer);
  laps.finish();
  if (sft_batches) m.sft /= static_cast<double>(sft_batches);
  if (plain_batches) m.plain_sft /= static_cast<double>(plain_batches);
  if (div_batches) m.divergence /= static_cast<double>(div_batches);
  return m;
}

}  // namespace jfa
