#include "core/head_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <string>

#include "core/checks.h"

namespace jfa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Logits per chunk: about 16 MiB of float32 on the CPU, whatever the vocabulary; 64 MiB on a GPU,
// where each chunk's products must be large enough to fill it (512 rows at a 32k vocabulary).
constexpr int64_t kChunkElements = int64_t{1} << 22;
constexpr int64_t kCudaChunkElements = int64_t{1} << 24;

struct HeadCrossEntropyFn : public torch::autograd::Function<HeadCrossEntropyFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                            bool grad_hidden, bool grad_weight) {
    const int64_t n = hidden.size(0), V = weight.size(0);
    const int64_t chunk = std::max<int64_t>(1, (hidden.device().is_cpu() ? kChunkElements : kCudaChunkElements) / V);
    const at::Tensor gh = grad_hidden ? at::empty_like(hidden, at::MemoryFormat::Contiguous) : at::Tensor();
    const at::Tensor gw = grad_weight ? at::zeros_like(weight, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor total = at::zeros({}, hidden.options().dtype(at::kFloat));
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t c = std::min(chunk, n - s);
      const at::Tensor h = hidden.narrow(0, s, c);
      const at::Tensor t = targets.narrow(0, s, c).unsqueeze(1);
      at::Tensor logits = at::mm(h, weight.t()).to(at::kFloat);
      const at::Tensor lse = logits.logsumexp(1, /*keepdim=*/true);
      total.add_((lse - logits.gather(1, t)).sum());
      if (!grad_hidden && !grad_weight) continue;
      // d loss / d logits = (softmax - one-hot) / n, made in place of the logits.
      logits.sub_(lse).exp_();
      logits.scatter_add_(1, t, at::full({c, 1}, -1.0, logits.options()));
      logits.div_(static_cast<double>(n));
      const at::Tensor g = logits.to(hidden.scalar_type());
      if (grad_hidden) {
        at::Tensor rows = gh.narrow(0, s, c);
        at::mm_out(rows, g, weight);
      }
      if (grad_weight) gw.addmm_(g.t(), h);
    }
    ctx->save_for_backward({gh, gw});
    return total.div_(static_cast<double>(n));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];
    return {saved[0].defined() ? saved[0] * g : at::Tensor(), saved[1].defined() ? saved[1] * g : at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor head_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets) {
  const char* op = "headCrossEntropy";
  check_float_tensor(hidden, op, "hidden");
  check_same_kind(weight, hidden, op, "weight", "hidden");
  check_dims(hidden, 2, op, "hidden");
  check_dims(weight, 2, op, "weight");
  if (weight.size(1) != hidden.size(1))
    throw_range(std::string(op) + ": weight " + shape_str(weight.sizes()) + " and hidden " + shape_str(hidden.sizes()) +
                " must share the hidden size");
  if (targets.scalar_type() != at::kLong || targets.dim() != 1 || targets.size(0) != hidden.size(0))
    throw_range(std::string(op) + ": targets must be int64 of shape [" + std::to_string(hidden.size(0)) + "], got " +
                dtype_name(targets.scalar_type()) + " " + shape_str(targets.sizes()));
  if (hidden.size(0) == 0) throw_range(std::string(op) + ": no rows to score");
  const auto [lo, hi] = at::aminmax(targets);
  if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= weight.size(0))
    throw_range(std::string(op) + ": targets must be in [0, " + std::to_string(weight.size(0)) + ")");
  const bool grads = at::GradMode::is_enabled();
  return HeadCrossEntropyFn::apply(hidden, weight, targets, grads && hidden.requires_grad(), grads && weight.requires_grad());
}

}  // namespace jfa
