#include "core/latent_mixture.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/checks.h"

namespace jfa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Slot j of every sample is one batched product: H_j = x A_j^T (b, t, r), y += (w_j H_j) B_j^T.
struct LatentMixtureFn : public torch::autograd::Function<LatentMixtureFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x3, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& indices, const at::Tensor& weights) {
    const int64_t k = indices.size(1);
    at::Tensor y;
    std::vector<at::Tensor> saved = {x3, A, B, indices, weights};
    for (int64_t j = 0; j < k; ++j) {
      const at::Tensor idx = indices.select(1, j);
      const at::Tensor Aj = A.index_select(0, idx);  // (b, r, in)
      const at::Tensor Bj = B.index_select(0, idx);  // (b, out, r)
      at::Tensor Hj = at::bmm(x3, Aj.transpose(1, 2)).mul_(weights.select(1, j).view({-1, 1, 1}));
      y = j == 0 ? at::bmm(Hj, Bj.transpose(1, 2)) : y.baddbmm_(Hj, Bj.transpose(1, 2));
      saved.push_back(Aj);
      saved.push_back(Bj);
      saved.push_back(Hj);
    }
    ctx->save_for_backward(saved);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor &x3 = s[0], &A = s[1], &B = s[2], &indices = s[3], &weights = s[4];
    const at::Tensor& g = grads[0];  // (b, t, out)
    const int64_t k = indices.size(1);
    const bool need_x = ctx->needs_input_grad(0), need_A = ctx->needs_input_grad(1), need_B = ctx->needs_input_grad(2);
    at::Tensor gx, gA, gB;
    if (need_A) gA = at::zeros_like(A);
    if (need_B) gB = at::zeros_like(B);
    for (int64_t j = 0; j < k; ++j) {
      const at::Tensor idx = indices.select(1, j);
      const at::Tensor &Aj = s[5 + 3 * j], &Bj = s[6 + 3 * j], &Hj = s[7 + 3 * j];  // Hj already weighted
      if (need_B) gB.index_add_(0, idx, at::bmm(g.transpose(1, 2), Hj));
      if (!need_x && !need_A) continue;
      const at::Tensor gH = at::bmm(g, Bj).mul_(weights.select(1, j).view({-1, 1, 1}));  // d loss / d (x A_j^T)
      if (need_A) gA.index_add_(0, idx, at::bmm(gH.transpose(1, 2), x3));
      if (need_x) gx = j == 0 ? at::bmm(gH, Aj) : gx.baddbmm_(gH, Aj);
    }
    return {gx, gA, gB, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor latent_mixture(const LatentMixtureArgs& a) {
  const char* op = "latentMixture";
  check_float_tensor(a.x, op, "x");
  check_same_kind(a.A, a.x, op, "A", "x");
  check_same_kind(a.B, a.x, op, "B", "x");
  check_same_kind(a.weights, a.x, op, "weights", "x");
  check_dims(a.A, 3, op, "A");
  check_dims(a.B, 3, op, "B");
  check_dims(a.indices, 2, op, "indices");
  check_dims(a.weights, 2, op, "weights");
  if (a.x.dim() != 2 && a.x.dim() != 3)
    throw_range(std::string(op) + ": x must be (b, in) or (b, t, in), got shape " + shape_str(a.x.sizes()));
  const int64_t P = a.A.size(0), r = a.A.size(1), in = a.A.size(2), b = a.x.size(0);
  if (a.x.size(-1) != in)
    throw_range(std::string(op) + ": x has " + std::to_string(a.x.size(-1)) + " features but A " + shape_str(a.A.sizes()) +
                " expects " + std::to_string(in));
  if (a.B.size(0) != P || a.B.size(2) != r)
    throw_range(std::string(op) + ": B " + shape_str(a.B.sizes()) + " must be (" + std::to_string(P) + ", out, " +
                std::to_string(r) + ") to match A " + shape_str(a.A.sizes()));
  if (a.indices.scalar_type() != at::kLong && a.indices.scalar_type() != at::kInt)
    throw_type(std::string(op) + ": indices must be int64 or int32, got " + dtype_name(a.indices.scalar_type()));
  if (a.indices.size(0) != b || a.weights.sizes() != a.indices.sizes())
    throw_range(std::string(op) + ": indices " + shape_str(a.indices.sizes()) + " and weights " +
                shape_str(a.weights.sizes()) + " must both be (" + std::to_string(b) + ", k) for x " + shape_str(a.x.sizes()));
  if (a.indices.size(1) == 0) throw_range(std::string(op) + ": k must be at least 1");
  // Indices come from retrieval, made on the CPU: taken to x's device as int64.
  const at::Tensor idx = a.indices.to(a.x.device(), at::kLong);
  const at::Tensor bad = idx.lt(0).logical_or(idx.ge(P));
  if (bad.any().item<bool>()) {
    const int64_t pos = bad.reshape({-1}).nonzero().select(0, 0).item<int64_t>();
    const int64_t k = idx.size(1);
    throw_range(std::string(op) + ": index " + std::to_string(idx.reshape({-1})[pos].item<int64_t>()) + " (sample " +
                std::to_string(pos / k) + ", slot " + std::to_string(pos % k) + ") is outside the pool of " +
                std::to_string(P) + " latent tasks");
  }
  const at::Tensor x3 = a.x.dim() == 2 ? a.x.unsqueeze(1) : a.x;
  const at::Tensor y = LatentMixtureFn::apply(x3, a.A, a.B, idx, a.weights.detach());
  return a.x.dim() == 2 ? y.squeeze(1) : y;
}

}  // namespace jfa
