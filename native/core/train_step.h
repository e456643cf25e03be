#pragma once
// One optimisation step of the trainer, whole, in native code: the trainable parameters and their
// AdamW state live here, and a step runs every micro-batch's forward and backward, the flashback
// divergence, PCGrad (or the mean), clipping and AdamW without returning to the caller. The binding
// runs it on a worker thread, so one step is one asynchronous call.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/divergence.h"
#include "core/llama.h"
#include "core/optim.h"
#include "core/regularizers.h"

namespace jfa {

class ProcessGroup;

struct StepBatch {
  bool flashback = false;
  at::Tensor ids;             // (b, t) int64
  at::Tensor attention_mask;  // (b, t) nonzero at real tokens, or undefined
  at::Tensor targets;         // new-task batches: (b, t) int64 next-token targets, -100 where none
  // Flashback batches: what the caller keeps of the frozen reference (adapters and latent tasks off)
  // for these ids: its logits (b, t, vocab), else its final hidden states; neither: computed here.
  at::Tensor reference_logits;
  at::Tensor reference_hidden;
  std::optional<LatentCall> latent;
  // Data-parallel: this rank's share of the whole micro-batch's loss (its real tokens over the
  // whole micro-batch's), so the ranks' weighted losses sum to the single-process loss. A batch
  // with no rows (this rank's shard is empty) still takes part in the all-reduce, with zeros.
  double weight = 1.0;
};

// The caller sets every field: their defaults are the library's (lib/jfa/plan.ts), and the binding
// requires them all, so none is chosen here.
struct StepSettings {
  // What the step does with its batches (a training method is a set of these, chosen by the caller):
  // flashback batches add alpha x the divergence, else they are skipped; batches' latent tasks
  // apply, else they are ignored. New-task batches always add their cross-entropy.
  bool divergence{};
  bool latent{};
  double alpha{};  // weight of the divergence
  KlKind kl{};
  Reduction reduction{};
  bool pcgrad{};  // combine micro-batch gradients with PCGrad instead of their mean
  double max_grad_norm{};  // must be > 0
  uint64_t seed{};  // PCGrad's visiting orders
  // with latent: weight of an extra SFT loss with the latent increments off, on new-task batches that carry them
  double plain_sft_weight{};
  // Penalties on the adapters (EWC, O-LoRA; 0 weights: off): their gradients join the combined
  // gradient before clipping, whatever combined the micro-batches' (PCGrad or the mean).
  AdapterPenalties penalties;
  // PACE (pace_sigma > 0): new-task batches run with the adapters' outputs perturbed (AdapterNoise,
  // seeded by the step's seed, the batch's index and the pass), the cross-entropy of that pass plus
  // pace_lambda x the mean over real tokens of ||h1 - h2||^2 between its final hidden states and a
  // second, independently perturbed pass's (pace_lambda 0: the second pass is not run).
  double pace_sigma{};
  double pace_lambda{};
  double lr{};  // this step's learning rate (the schedule is the caller's)
  bool timings{};
  // Data-parallel: each micro-batch's gradients are summed over the group's ranks (started right
  // after its backward, so they travel while the next micro-batch computes) before PCGrad or the
  // mean; the losses reported are summed too. Null: one process.
  std::shared_ptr<ProcessGroup> group;
  bool flat_bucket{};  // with a group: one flat buffer per micro-batch (else one all-reduce per tensor)
};

// Milliseconds per phase of a step.
struct StepTimings {
  double forward = 0, ref_forward = 0, loss = 0, backward = 0, grad_collect = 0, allreduce = 0, projection = 0, clip = 0,
         optimizer = 0, total = 0;
};

struct StepMetrics {
  double sft = 0;        // mean new-task cross-entropy over the batches that had one
  double plain_sft = 0;  // mean of the plain (latent off) SFT loss where plain_sft_weight added it
  double divergence = 0; // mean flashback divergence
  // the penalties' value (EWC, O-LoRA) plus the mean over new-task batches of pace_lambda x consistency
  double penalty = 0;
  double grad_norm = 0;  // before clipping
  int64_t conflicts = 0;
  StepTimings timings;   // zeros unless settings.timings
};

// The trainable parameters (leaves of the model: LoRA factors, latent pools, or all base weights
// when pretraining) and AdamW's state for them.
class Trainer {
 public:
  Trainer(std::vector<at::Tensor> params, const AdamWOptions& options);

  // One step over `batches` (at least one must apply under the settings): gradients of each batch kept
  // apart, combined, clipped, AdamW at settings.lr. The parameters are updated in place; their
  // .grad is cleared before returning (also when the step fails).
  StepMetrics step(const LlamaModel& model, const std::vector<StepBatch>& batches, const StepSettings& settings);
  // AdamW on the parameters' current gradients at `lr` (for callers that run their own backward).
  void adamw(double lr);

  const std::vector<at::Tensor>& params() const { return params_; }
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  // Updates made to each parameter (int64): one skipped in a step (no gradient) keeps its count.
  const at::Tensor& steps() const { return steps_; }
  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_;
  at::Tensor steps_;
  AdamWOptions options_;
};

}  // namespace jfa
