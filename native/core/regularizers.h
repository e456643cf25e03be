#pragma once
// Penalties on the trainable adapters that come from no micro-batch (EWC's Fisher-weighted distance
// to the base, O-LoRA's orthogonality to earlier rounds' adapters), and the diagonal Fisher EWC
// weighs with. Gradients are written explicitly, layer by layer: no autograd graph over the whole
// model and never more than one layer's (out, in) product alive at a time.
#include <ATen/core/Tensor.h>

#include <vector>

#include "core/llama.h"

namespace jfa {

struct AdapterPenalties {
  // EWC: ewc_lambda * sum over adapted layers of F * (scale B A)^2, F (out, in) float32 per adapted
  // layer in LlamaModel::adapted_layers()' order. 0: off (the list may then be empty).
  double ewc_lambda = 0.0;
  std::vector<at::Tensor> ewc_fisher;
  // O-LoRA: olora_lambda * sum over adapted layers of ||A A_old^T||_F^2, A_old (R, in) the earlier
  // rounds' A of that layer stacked by rows (R = 0: none), one per adapted layer. 0: off.
  double olora_lambda = 0.0;
  std::vector<at::Tensor> olora_previous;
  bool any() const { return ewc_lambda > 0 || olora_lambda > 0; }
};

// Shapes and values checked against the model's adapted layers (RangeError/TypeError naming `op`).
void check_penalties(const LlamaModel& model, const AdapterPenalties& p, const char* op);

// Adds the penalties' gradients w.r.t. each adapted layer's A and B to grads[i] where params[i] is
// that A or B (by identity; a factor not among params gets none). Returns the penalties' value.
double add_penalty_grads(const LlamaModel& model, const AdapterPenalties& p, const std::vector<at::Tensor>& params,
                         std::vector<at::Tensor>& grads);

// The diagonal Fisher of each adapted layer's base weight W, at the base (adapters off):
// mean over the n rows of (d/dW sum_t log p(targets_t | ids))^2, one row (sample) at a time.
// ids and targets (n, t) int64 (targets -100 where nothing is scored), mask (n, t) or undefined.
// Returns float32 tensors of W's shape in adapted_layers()' order.
std::vector<at::Tensor> fisher_diagonal(const LlamaModel& model, const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& targets);

}  // namespace jfa
