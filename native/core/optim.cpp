#include "core/optim.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/stack.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "core/checks.h"

namespace jfa {

void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                const std::vector<at::Tensor>& exp_avg_sq, const at::Tensor& steps, const AdamWOptions& o,
                std::optional<bool> foreach) {
  const char* op = "adamwStep";
  if (exp_avg.size() != params.size() || exp_avg_sq.size() != params.size())
    throw_range(std::string(op) + ": " + std::to_string(params.size()) + " parameters but " + std::to_string(exp_avg.size()) +
                " and " + std::to_string(exp_avg_sq.size()) + " moment buffers");
  if (!steps.defined() || steps.scalar_type() != at::kLong || steps.dim() != 1 || steps.size(0) != static_cast<int64_t>(params.size()) ||
      !steps.device().is_cpu())
    throw_range(std::string(op) + ": steps must be a CPU int64 tensor of " + std::to_string(params.size()) + " counts");
  if (!(o.lr >= 0) || !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) || !(o.weight_decay >= 0))
    throw_range(std::string(op) + ": need lr >= 0, betas in [0, 1), eps > 0, weightDecay >= 0");
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string name = "parameter " + std::to_string(i);
    check_float_tensor(params[i], op, name.c_str());
    if (exp_avg[i].sizes() != params[i].sizes() || exp_avg_sq[i].sizes() != params[i].sizes())
      throw_range(std::string(op) + ": the moment buffers of " + name + " do not have its shape " + shape_str(params[i].sizes()));
    check_same_kind(exp_avg[i], params[i], op, "a moment buffer", name.c_str());
    check_same_kind(exp_avg_sq[i], params[i], op, "a moment buffer", name.c_str());
  }
  at::NoGradGuard no_grad;
  const at::Tensor counts = steps.contiguous();
  int64_t* count = counts.data_ptr<int64_t>();
  if (foreach.value_or(!params.empty() && !params[0].device().is_cpu())) {
    // The same operations in the same order, over every parameter of one count at once.
    std::map<int64_t, std::vector<size_t>> by_step;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].grad().defined()) by_step[++count[i]].push_back(i);
    for (const auto& [step, members] : by_step) {
      std::vector<at::Tensor> P, G, M, V;
      for (size_t i : members) {
        P.push_back(params[i]);
        G.push_back(params[i].grad());
        M.push_back(exp_avg[i]);
        V.push_back(exp_avg_sq[i]);
      }
      const double bias1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
      const double bias2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
      at::_foreach_mul_(P, 1.0 - o.lr * o.weight_decay);
      at::_foreach_lerp_(M, G, 1.0 - o.beta1);
      at::_foreach_mul_(V, o.beta2);
      at::_foreach_addcmul_(V, G, G, 1.0 - o.beta2);
      std::vector<at::Tensor> denom = at::_foreach_sqrt(V);
      at::_foreach_div_(denom, std::sqrt(bias2));
      at::_foreach_add_(denom, o.eps);
      at::_foreach_addcdiv_(P, M, denom, -o.lr / bias1);
    }
    if (!counts.is_same(steps)) steps.copy_(counts);
    return;
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const int64_t step = ++count[i];
    const double bias1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
    const double bias2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
    p.mul_(1.0 - o.lr * o.weight_decay);
    exp_avg[i].lerp_(g, 1.0 - o.beta1);
    exp_avg_sq[i].mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
    const at::Tensor denom = exp_avg_sq[i].sqrt().div_(std::sqrt(bias2)).add_(o.eps);
    p.addcdiv_(exp_avg[i], denom, -o.lr / bias1);
  }
  if (!counts.is_same(steps)) steps.copy_(counts);
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  if (!(max_norm > 0)) throw_range("clipGradNorm: maxNorm must be > 0, got " + std::to_string(max_norm));
  at::NoGradGuard no_grad;
  double total = 0.0;
  std::vector<at::Tensor> on_device;  // norms of gradients off the CPU, read back together
  for (const auto& p : params)
    if (p.defined() && p.grad().defined()) {
      if (!p.grad().device().is_cpu()) {
        on_device.push_back(p.grad().norm().to(at::kDouble).pow(2));
        continue;
      }
      const double n = p.grad().norm().item<double>();
      total += n * n;
    }
  if (!on_device.empty()) total += at::stack(on_device).sum().item<double>();
  total = std::sqrt(total);
  const double scale = max_norm / (total + 1e-6);
  if (scale < 1.0)
    for (const auto& p : params)
      if (p.defined() && p.grad().defined()) p.mutable_grad().mul_(scale);
  return total;
}

}  // namespace jfa
