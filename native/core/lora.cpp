#include "core/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "core/checks.h"
#include "core/cpu_gemm.h"

namespace jfa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saves x (or its dropped-out version), the factors and h = x A^T, so backward needs no recompute.
struct LoraLinearFn : public torch::autograd::Function<LoraLinearFn> {
  // Absent bias and mask come as empty tensors: needs_input_grad(i) counts tensor inputs only, so
  // every position must hold one for the indices below to mean the same thing in every call.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias_or_empty,
                            const at::Tensor& A, const at::Tensor& B, double scale, const at::Tensor& mask_or_empty) {
    const at::Tensor bias = bias_or_empty.numel() ? bias_or_empty : at::Tensor();
    const at::Tensor mask = mask_or_empty.numel() ? mask_or_empty : at::Tensor();
    const int64_t in = W.size(1);
    const int64_t out = W.size(0);
    const at::Tensor x2 = x.reshape({-1, in});
    const at::Tensor xd = mask.defined() ? x2 * mask : x2;
    const at::Tensor h = at::mm(xd, A.t());
    // The LoRA product accumulates into the base output: no (tokens x out) temporaries. The base
    // product takes oneDNN where it is the CPU's road (cpu_gemm.h), as the model's other products do,
    // so adapters whose B is zero give the base model's logits bit for bit.
    at::Tensor y = onednn_takes(x2, W) ? onednn_linear(x2, W, bias) : bias.defined() ? at::addmm(bias, x2, W.t()) : at::mm(x2, W.t());
    y.addmm_(h, B.t(), 1.0, scale);
    ctx->save_for_backward({x2, xd, W, A, B, h, mask});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["has_bias"] = bias.defined();
    ctx->saved_data["x_shape"] = x.sizes().vec();
    auto shape = x.sizes().vec();
    shape.back() = out;
    return y.view(shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &xd = saved[1], &W = saved[2], &A = saved[3], &B = saved[4], &h = saved[5],
                     &mask = saved[6];
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor g = grads[0].reshape({-1, W.size(0)});
    at::Tensor gx, gW, gbias, gA, gB;
    const bool need_x = ctx->needs_input_grad(0), need_A = ctx->needs_input_grad(3), need_B = ctx->needs_input_grad(4);
    at::Tensor gh;  // d loss / d h, scale folded in
    // g B with B read as the transpose of a contiguous (r, out) copy: MKL's skinny product is ~2x
    // faster that way round (1024 x 2048 by 2048 x 8: 0.46 vs 1.02 ms); the copy is out x r floats.
    if (need_x || need_A) gh = at::mm(g, B.t().contiguous().t()).mul_(scale);
    // (h^T g)^T, not g^T h: MKL runs the (r, out) product 2.5x faster than the (out, r) one (measured
    // at 1024 x 2048, r 8: 1.8 vs 4.5 ms), and the transposed view is a valid gradient for B.
    if (need_B) gB = at::mm(h.t(), g).mul_(scale).t();
    if (need_A) gA = at::mm(gh.t(), xd);
    if (need_x) {
      // g W as a linear layer of W^T (a copy of W per backward, ~1/10 of the product's time at 768 x 2048).
      gx = onednn_takes(g, W.t()) ? onednn_linear(g, W.t(), at::Tensor()) : at::mm(g, W);
      if (mask.defined()) {
        gx.add_(at::mm(gh, A).mul_(mask));
      } else {
        gx.addmm_(gh, A);
      }
      gx = gx.view(ctx->saved_data["x_shape"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) gW = at::mm(g.t(), x2);
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) gbias = g.sum(0);
    return {gx, gW, gbias, gA, gB, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lora_linear(const LoraArgs& a) {
  const char* op = "loraLinear";
  check_float_tensor(a.x, op, "x");
  check_same_kind(a.W, a.x, op, "W", "x");
  check_same_kind(a.A, a.x, op, "A", "x");
  check_same_kind(a.B, a.x, op, "B", "x");
  check_dims(a.W, 2, op, "W");
  check_dims(a.A, 2, op, "A");
  check_dims(a.B, 2, op, "B");
  if (a.x.dim() < 1) throw_range(std::string(op) + ": x must have at least 1 dimension, got a scalar");
  const int64_t out = a.W.size(0), in = a.W.size(1), r = a.A.size(0);
  if (a.x.size(-1) != in)
    throw_range(std::string(op) + ": x has " + std::to_string(a.x.size(-1)) + " features but W " + shape_str(a.W.sizes()) +
                " expects " + std::to_string(in));
  if (a.A.size(1) != in)
    throw_range(std::string(op) + ": A " + shape_str(a.A.sizes()) + " must be (r, " + std::to_string(in) + ") to match W " +
                shape_str(a.W.sizes()));
  if (a.B.size(0) != out || a.B.size(1) != r)
    throw_range(std::string(op) + ": B " + shape_str(a.B.sizes()) + " must be (" + std::to_string(out) + ", " +
                std::to_string(r) + ") to match W " + shape_str(a.W.sizes()) + " and A " + shape_str(a.A.sizes()));
  if (a.bias.defined()) {
    check_same_kind(a.bias, a.x, op, "bias", "x");
    if (a.bias.dim() != 1 || a.bias.size(0) != out)
      throw_range(std::string(op) + ": bias " + shape_str(a.bias.sizes()) + " must be (" + std::to_string(out) + ")");
  }
  if (!std::isfinite(a.scale)) throw_range(std::string(op) + ": scale must be finite, got " + std::to_string(a.scale));
  if (!(a.dropout >= 0.0 && a.dropout < 1.0))
    throw_range(std::string(op) + ": dropout must be in [0, 1), got " + std::to_string(a.dropout));

  at::Tensor mask;
  if (a.dropout > 0.0) {
    // Inverted dropout, as torch.nn.Dropout: kept entries scaled by 1 / (1 - p).
    const auto x2 = a.x.reshape({-1, in});
    mask = at::empty(x2.sizes(), x2.options());
    if (a.seed) {
      // Drawn on the CPU (the seeded generator is a CPU one), so a seed gives the same mask everywhere.
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(*a.seed);
      mask = x2.device().is_cpu() ? mask.bernoulli_(1.0 - a.dropout, gen)
                                  : at::empty(x2.sizes(), x2.options().device(at::kCPU)).bernoulli_(1.0 - a.dropout, gen).to(x2.device());
    } else {
      mask.bernoulli_(1.0 - a.dropout);
    }
    mask.div_(1.0 - a.dropout);
  }
  const at::Tensor none = at::empty({0}, a.x.options());
  return LoraLinearFn::apply(a.x, a.W, a.bias.defined() ? a.bias : none, a.A, a.B, a.scale, mask.defined() ? mask : none);
}

double lora_scale(double lora_alpha, int64_t r, bool rslora) {
  if (r < 1) throw_range("loraScale: r must be >= 1, got " + std::to_string(r));
  return rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

void lora_init(at::Tensor& A, at::Tensor& B, LoraInit init, std::optional<uint64_t> seed) {
  const char* op = "loraInit";
  check_float_tensor(A, op, "A");
  check_float_tensor(B, op, "B");
  check_dims(A, 2, op, "A");
  check_dims(B, 2, op, "B");
  if (B.size(1) != A.size(0))
    throw_range(std::string(op) + ": B " + shape_str(B.sizes()) + " and A " + shape_str(A.sizes()) + " disagree on the rank");
  std::optional<at::Generator> gen;
  if (seed) gen = at::make_generator<at::CPUGeneratorImpl>(*seed);
  at::NoGradGuard no_grad;
  if (init == LoraInit::Kaiming) {
    // kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(A.size(1)));
    A.uniform_(-bound, bound, gen);
  } else {
    A.normal_(0.0, 1.0 / static_cast<double>(A.size(0)), gen);
  }
  B.zero_();
}

void lora_merge(at::Tensor& W, const at::Tensor& A, const at::Tensor& B, double scale, bool unmerge) {
  const char* op = unmerge ? "loraUnmerge" : "loraMerge";
  check_float_tensor(W, op, "W");
  // The factors are W's dtype, or float32 masters of a lower-precision W.
  check_master_kind(A, W.scalar_type(), W, op, "A", "the factors", "W");
  check_master_kind(B, W.scalar_type(), W, op, "B", "the factors", "W");
  if (A.scalar_type() != B.scalar_type())
    throw_type(std::string(op) + ": A is " + dtype_name(A.scalar_type()) + " but B is " + dtype_name(B.scalar_type()));
  check_dims(W, 2, op, "W");
  check_dims(A, 2, op, "A");
  check_dims(B, 2, op, "B");
  if (B.size(0) != W.size(0) || A.size(1) != W.size(1) || B.size(1) != A.size(0))
    throw_range(std::string(op) + ": W " + shape_str(W.sizes()) + ", A " + shape_str(A.sizes()) + " and B " +
                shape_str(B.sizes()) + " do not fit (need W (out, in), A (r, in), B (out, r))");
  at::NoGradGuard no_grad;
  if (A.scalar_type() == W.scalar_type()) {
    W.addmm_(B, A, 1.0, unmerge ? -scale : scale);
  } else {
    // float32 masters: the product in float32, rounded once into W.
    W.copy_(at::addmm(W.to(at::kFloat), B, A, 1.0, unmerge ? -scale : scale));
  }
}

}  // namespace jfa
