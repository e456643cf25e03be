#pragma once
// Optimizer steps over parameter lists, in place: AdamW (decoupled weight decay, as torch.optim.AdamW)
// and gradient clipping by total norm (as torch.nn.utils.clip_grad_norm_).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace jfa {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// One step for every parameter with a gradient. exp_avg and exp_avg_sq are the per-parameter moment
// buffers; steps (int64, one per parameter) counts each parameter's own updates, as torch does
// (a parameter without a gradient is skipped and its count, which sets the bias corrections, stays).
// On a GPU the update runs as multi-tensor (_foreach_) ops over every parameter with the same count
// (a handful of kernels a step instead of seven per parameter); `foreach` forces either way (the
// CPU tests check that both give the same bits).
void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                const std::vector<at::Tensor>& exp_avg_sq, const at::Tensor& steps, const AdamWOptions& options,
                std::optional<bool> foreach = std::nullopt);

// Scales every gradient by min(1, max_norm / total_norm); returns the total L2 norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace jfa
