#include "core/cpu_gemm.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <torch/csrc/autograd/custom_function.h>
#include <cpuid.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/errors.h"
#include "core/lane_sums.h"

namespace jfa {
namespace {

bool amd_with_avx512() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  return std::strcmp(vendor, "AuthenticAMD") == 0 && cpu_has_avx512();
}

const c10::OperatorHandle* linear_op() {
  static const c10::OperatorHandle* op = [] {
    const auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    return handle ? new c10::OperatorHandle(*handle) : nullptr;
  }();
  return op;
}

}  // namespace

bool onednn_linear_enabled() {
  static const bool enabled = [] {
    if (!at::hasMKLDNN() || linear_op() == nullptr) return false;
    const char* env = std::getenv("JFA_CPU_GEMM");
    const std::string choice = env ? env : "";
    if (choice == "mkl") return false;
    if (choice == "onednn") return true;
    return amd_with_avx512();
  }();
  return enabled;
}

bool onednn_takes(const at::Tensor& x, const at::Tensor& W) {
  return onednn_linear_enabled() && x.device().is_cpu() && W.device().is_cpu() && x.scalar_type() == at::kFloat &&
         W.scalar_type() == at::kFloat && W.dim() == 2 && x.dim() >= 1 && x.size(-1) == W.size(1) && x.numel() > 0;
}

bool onednn_linear_applies(const at::Tensor& x, const at::Tensor& W) {
  return onednn_takes(x, W) && !(at::GradMode::is_enabled() && (x.requires_grad() || W.requires_grad()));
}

at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias) {
  const int64_t K = W.size(1), N = W.size(0);
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x.reshape({-1, K}).contiguous());
  stack.emplace_back(W.contiguous());
  stack.emplace_back(bias.defined() ? c10::IValue(bias.contiguous()) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<std::optional<c10::Scalar>>());
  stack.emplace_back(c10::IValue());
  linear_op()->callBoxed(&stack);
  at::Tensor y = stack.at(0).toTensor();
  auto shape = x.sizes().vec();
  shape.back() = N;
  return y.view(shape);
}

namespace {

struct OnednnLinearFn : public torch::autograd::Function<OnednnLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias_or_empty) {
    const at::Tensor bias = bias_or_empty.numel() ? bias_or_empty : at::Tensor();
    const at::Tensor x2 = x.reshape({-1, W.size(1)});
    ctx->save_for_backward({x2, W});
    ctx->saved_data["has_bias"] = bias.defined();
    ctx->saved_data["x_shape"] = x.sizes().vec();
    auto shape = x.sizes().vec();
    shape.back() = W.size(0);
    return onednn_linear(x2, W, bias).view(shape);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &W = saved[1];
    const at::Tensor g = grads[0].reshape({-1, W.size(0)});
    at::Tensor gx, gW, gb;
    if (ctx->needs_input_grad(0)) gx = onednn_linear(g, W.t(), at::Tensor()).view(ctx->saved_data["x_shape"].toIntVector());
    if (ctx->needs_input_grad(1)) gW = onednn_linear(g.t(), x2.t(), at::Tensor());
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) gb = g.sum(0);
    return {gx, gW, gb};
  }
};

}  // namespace

at::Tensor onednn_linear_autograd(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias) {
  return OnednnLinearFn::apply(x, W, bias.defined() ? bias : at::empty({0}, x.options()));
}

at::Tensor cpu_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias) {
  if (onednn_linear_applies(x, W)) return onednn_linear(x, W, bias);
  if (onednn_takes(x, W)) return onednn_linear_autograd(x, W, bias);
  return at::linear(x, W, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
}

}  // namespace jfa
