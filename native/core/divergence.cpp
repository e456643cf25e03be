#include "core/divergence.h"

#include <ATen/Parallel.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/zeros.h>
#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/checks.h"
#include "core/cuda/cuda.h"

namespace jfa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Elements per chunk buffer (1 MiB of float32): measured best of 2^15..2^20 on 2048 x 32000 here;
// smaller chunks pay per-call overhead, larger ones fall out of cache.
constexpr int64_t kChunkElements = int64_t{1} << 18;

// Calls f(begin, end) for row chunks of an (N, V) matrix, in parallel over chunks.
// On a GPU the chunks are larger (64 MiB of float32: a kernel launch per op and chunk is the cost
// there, not the cache) and run one after another on the stream.
constexpr int64_t kCudaChunkElements = int64_t{1} << 24;

template <typename F>
void for_row_chunks(int64_t rows, int64_t vocab, const at::Device& device, F&& f) {
  const int64_t budget = device.is_cpu() ? kChunkElements : kCudaChunkElements;
  const int64_t per_chunk = std::max<int64_t>(1, budget / std::max<int64_t>(vocab, 1));
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  if (!device.is_cpu()) {
    for (int64_t c = 0; c < chunks; ++c) f(c * per_chunk, std::min(rows, (c + 1) * per_chunk));
    return;
  }
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    at::NoGradGuard no_grad;  // grad mode is thread-local: the pool's threads do not inherit forward()'s
    for (int64_t c = c0; c < c1; ++c) f(c * per_chunk, std::min(rows, (c + 1) * per_chunk));
  });
}

// Row-wise dot products of two (k, V) matrices, through a scratch buffer (a vectorised multiply
// and sum beat k batched matrix-vector products here).
at::Tensor row_dot(const at::Tensor& a, const at::Tensor& b, at::Tensor& scratch) {
  return at::mul_out(scratch, a, b).sum(1);
}

// Float32 rows [r0, r0 + k) of x, divided by the temperature.
at::Tensor float_rows(const at::Tensor& x, int64_t r0, int64_t k, double temperature) {
  at::Tensor rows = x.narrow(0, r0, k);
  if (temperature != 1.0) return rows.to(at::kFloat).div(temperature);
  return rows.scalar_type() == at::kFloat ? rows : rows.to(at::kFloat);
}

// softmax of a (k, V) float32 chunk into p (one fused pass) and its per-row log-sum-exp (k, 1),
// read off the largest probability: lse = max z - log(max p), well conditioned since max p >= 1/V.
// log p is then z - lse, without a second exp pass. (amax: vectorised, unlike max with indices.)
at::Tensor softmax_lse(const at::Tensor& z, at::Tensor& p) {
  at::_softmax_out(p, z, 1, false);
  return z.amax(1, /*keepdim=*/true).sub_(p.amax(1, /*keepdim=*/true).log_());
}

// Whether any of rows [r0, r1) counts, read from a CPU copy of the mask.
bool any_row(const float* mask, int64_t r0, int64_t r1) {
  return std::any_of(mask + r0, mask + r1, [](float m) { return m != 0.0f; });
}

// Returns the gradient buffer's rows to write into: G's own rows when G is float32 and contiguous.
at::Tensor grad_rows(const at::Tensor& G, int64_t r0, int64_t k, int64_t v, const at::Device& device) {
  if (G.defined() && G.scalar_type() == at::kFloat) return G.narrow(0, r0, k);
  return at::empty({k, v}, at::TensorOptions().dtype(at::kFloat).device(device));
}

void finish_rows(at::Tensor& G, const at::Tensor& g, int64_t r0, int64_t k) {
  at::Tensor dest = G.narrow(0, r0, k);
  if (!g.is_same(dest) && g.data_ptr() != dest.data_ptr()) dest.copy_(g);
}

// Drives a fused row-wise loss over logits (..., V) with row weights M (N) in {0, 1}. Chunks
// without a counted row are skipped (their gradient rows zeroed). For the others it calls
// chunk(r0, k, weight, out), which returns the k per-row losses and, when the gradient is wanted,
// writes it into out (k, V) already multiplied by weight (k, 1) = M / denominator.
// Returns the reduced loss as a scalar of the logits' dtype and saves the gradient for backward().
template <typename F>
at::Tensor fused_row_loss(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& M, Reduction reduction,
                          bool need_grad, const char* op, const std::vector<std::pair<const at::Tensor*, const char*>>& inputs,
                          F&& chunk) {
  const int64_t V = logits.size(-1);
  const int64_t N = M.numel();
  const double denom = reduction == Reduction::Mean ? std::max(M.sum().item<double>(), 1.0) : 1.0;
  at::Tensor G = need_grad ? at::empty({N, V}, logits.options().memory_format(at::MemoryFormat::Contiguous)) : at::Tensor();
  at::Tensor row_loss = at::zeros({N}, at::TensorOptions().dtype(at::kFloat).device(logits.device()));
  const at::Tensor mask_cpu = M.to(at::kCPU).contiguous();
  const float* mask_rows = mask_cpu.data_ptr<float>();

  for_row_chunks(N, V, logits.device(), [&](int64_t r0, int64_t r1) {
    const int64_t k = r1 - r0;
    if (!any_row(mask_rows, r0, r1)) {
      if (G.defined()) G.narrow(0, r0, k).zero_();
      return;
    }
    const at::Tensor m = M.narrow(0, r0, k).unsqueeze(1);
    at::Tensor out = grad_rows(G, r0, k, V, logits.device());
    row_loss.narrow(0, r0, k).copy_(chunk(r0, k, m / denom, out).mul(m.squeeze(1)));
    if (G.defined()) finish_rows(G, out, r0, k);
  });

  const double value = row_loss.sum(at::kDouble).item<double>() / denom;
  if (!std::isfinite(value)) {
    for (const auto& [t, name] : inputs) check_finite(*t, op, name);
    throw_range(std::string(op) + ": the loss is not finite (" + std::to_string(value) + ")");
  }
  if (G.defined()) ctx->save_for_backward({G.view(logits.sizes())});
  return at::full({}, value, logits.options().dtype(at::kFloat).requires_grad(false));  // float32 whatever the logits' dtype
}

// d loss / d logits = saved gradient x upstream gradient; nothing flows to the other inputs.
variable_list saved_gradient_times(AutogradContext* ctx, const variable_list& grads, size_t inputs) {
  const at::Tensor G = ctx->get_saved_variables()[0];
  const at::Tensor& g = grads[0];
  // The usual upstream gradient is exactly 1: hand G over without another full pass (or buffer).
  const bool one = g.numel() == 1 && g.item<double>() == 1.0;
  variable_list out(inputs);
  out[0] = one ? G : G * g.to(G.scalar_type());
  return out;
}

// The GPU path: every row in one kernel (core/cuda/kl_rows.cu), where this build has it and
// JFA_CUDA_KERNELS is not 0 (0 runs the libtorch path below, the reference, on the GPU too).
bool cuda_divergence(AutogradContext* ctx, const at::Tensor& cur, const at::Tensor& ref, const at::Tensor& Z,
                     const at::Tensor& R, const at::Tensor& M, KlKind kind, Reduction reduction, double temperature,
                     bool need_grad, at::Tensor& result) {
  if (!cur.is_cuda() || !cuda::built()) return false;
  const char* flag = std::getenv("JFA_CUDA_KERNELS");
  if (flag && std::strcmp(flag, "0") == 0) return false;
  const double denom = reduction == Reduction::Mean ? std::max(M.sum().item<double>(), 1.0) : 1.0;
  at::Tensor row_loss = at::zeros({Z.size(0)}, Z.options().dtype(at::kFloat));
  at::Tensor G = need_grad ? at::empty(Z.sizes(), Z.options().memory_format(at::MemoryFormat::Contiguous)) : at::Tensor();
  // The kernel reads both in one dtype: a float32 reference of a bfloat16 model is read as bfloat16.
  if (!cuda::kl_rows(Z, R.scalar_type() == Z.scalar_type() ? R : R.to(Z.scalar_type()), M, 1.0 / denom, static_cast<int>(kind), temperature, row_loss, G)) return false;
  const double value = row_loss.sum(at::kDouble).item<double>() / denom;
  if (!std::isfinite(value)) {
    check_finite(cur, "flashbackDivergence", "the current logits");
    check_finite(ref, "flashbackDivergence", "the reference logits");
    throw_range("flashbackDivergence: the loss is not finite (" + std::to_string(value) + ")");
  }
  if (G.defined()) ctx->save_for_backward({G.view(cur.sizes())});
  result = at::full({}, value, cur.options().dtype(at::kFloat).requires_grad(false));
  return true;
}

struct DivergenceFn : public torch::autograd::Function<DivergenceFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& cur, const at::Tensor& ref, const at::Tensor& mask,
                            int64_t kind_code, int64_t reduction_code, double temperature, bool need_grad) {
    const auto kind = static_cast<KlKind>(kind_code);
    const int64_t V = cur.size(-1);
    const at::Tensor Z = cur.reshape({-1, V});
    const at::Tensor R = ref.reshape({-1, V});
    at::Tensor on_gpu;
    if (cuda_divergence(ctx, cur, ref, Z, R, mask.reshape({-1}).to(at::kFloat), kind, static_cast<Reduction>(reduction_code),
                        temperature, need_grad, on_gpu))
      return on_gpu;
    return fused_row_loss(
        ctx, cur, mask.reshape({-1}).to(at::kFloat), static_cast<Reduction>(reduction_code), need_grad, "flashbackDivergence",
        {{&cur, "the current logits"}, {&ref, "the reference logits"}},
        [&](int64_t r0, int64_t k, const at::Tensor& weight, at::Tensor& d) {
          const auto buffer = [&] { return at::empty({k, V}, at::TensorOptions().dtype(at::kFloat).device(cur.device())); };
          at::Tensor p = buffer(), q = buffer(), scratch = buffer();
          const at::Tensor z = float_rows(Z, r0, k, temperature), r = float_rows(R, r0, k, temperature);
          const at::Tensor lse_z = softmax_lse(z, p), lse_r = softmax_lse(r, q);
          at::sub_out(d, z, r).sub_(lse_z - lse_r);  // d = log p - log q
          // Per row: KL(p||q) = sum p d, KL(q||p) = -sum q d; only the ones this kind needs.
          const at::Tensor rev = kind == KlKind::Forward ? at::Tensor() : row_dot(p, d, scratch);
          const at::Tensor fwd = kind == KlKind::Reverse ? at::Tensor() : row_dot(q, d, scratch).neg_();
          const at::Tensor loss = kind == KlKind::Forward ? fwd : kind == KlKind::Reverse ? rev : fwd + rev;
          if (!need_grad) return loss;
          // d/dz KL(q||p) = p - q;  d/dz KL(p||q) = p * (log p - log q - KL(p||q)).
          if (kind == KlKind::Forward) {
            at::sub_out(d, p, q);
          } else {
            d.sub_(kind == KlKind::Reverse ? rev.unsqueeze(1) : (rev - 1.0).unsqueeze(1)).mul_(p);
            if (kind == KlKind::Symmetric) d.sub_(q);
          }
          d.mul_(weight / temperature);
          return loss;
        });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) { return saved_gradient_times(ctx, grads, 7); }
};

struct CrossEntropyFn : public torch::autograd::Function<CrossEntropyFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            const at::Tensor& counts, int64_t reduction_code, bool need_grad) {
    const int64_t V = logits.size(-1);
    const at::Tensor Z = logits.reshape({-1, V});
    const at::Tensor T = targets.reshape({-1});
    return fused_row_loss(
        ctx, logits, counts.reshape({-1}), static_cast<Reduction>(reduction_code), need_grad, "tokenCrossEntropy",
        {{&logits, "the logits"}},
        [&](int64_t r0, int64_t k, const at::Tensor& weight, at::Tensor& e) {
          const at::Tensor t = T.narrow(0, r0, k).clamp_min(0).unsqueeze(1);  // ignored rows read column 0, weighted 0
          const at::Tensor z = float_rows(Z, r0, k, 1.0);
          // One fused softmax pass; the loss is -log softmax[t]. Where softmax[t] underflows (the
          // target's logit far below the rest), the row's loss comes from logsumexp instead.
          at::_softmax_out(e, z, 1, false);
          const at::Tensor pt = e.gather(1, t);
          at::Tensor loss = pt.log().neg_().squeeze(1);
          const at::Tensor tiny = pt.squeeze(1).lt(1e-30f);
          if (tiny.any().item<bool>()) {
            const at::Tensor rows = tiny.nonzero().squeeze(1);
            const at::Tensor zr = z.index_select(0, rows);
            loss.index_copy_(0, rows, zr.logsumexp(1) - zr.gather(1, t.index_select(0, rows)).squeeze(1));
          }
          if (!need_grad) return loss;
          e.mul_(weight);  // softmax - onehot(t), weighted
          e.scatter_add_(1, t, weight.neg());
          return loss;
        });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) { return saved_gradient_times(ctx, grads, 5); }
};

void check_mask(const at::Tensor& mask, const at::Tensor& logits, const char* op, const char* name) {
  const auto want = logits.sizes().slice(0, logits.dim() - 1);
  if (mask.sizes() != want)
    throw_range(std::string(op) + ": " + name + " has shape " + shape_str(mask.sizes()) + " but the logits " +
                shape_str(logits.sizes()) + " need " + shape_str(want));
  if (mask.device() != logits.device())
    throw_type(std::string(op) + ": " + name + " is on " + mask.device().str() + " but the logits are on " +
               logits.device().str());
}

}  // namespace

at::Tensor flashback_divergence(const DivergenceArgs& a) {
  const char* op = "flashbackDivergence";
  check_float_tensor(a.cur, op, "cur");
  check_float_tensor(a.ref, op, "ref");
  if (a.cur.device() != a.ref.device())
    throw_type(std::string(op) + ": cur is on " + a.cur.device().str() + " but ref is on " + a.ref.device().str());
  if (a.cur.dim() < 1) throw_range(std::string(op) + ": logits need a vocabulary dimension, got a scalar");
  if (a.cur.dim() == a.ref.dim() && a.cur.size(-1) != a.ref.size(-1))
    throw_range(std::string(op) + ": vocabulary sizes differ: cur has " + std::to_string(a.cur.size(-1)) + ", ref has " +
                std::to_string(a.ref.size(-1)));
  if (a.cur.sizes() != a.ref.sizes())
    throw_range(std::string(op) + ": cur " + shape_str(a.cur.sizes()) + " and ref " + shape_str(a.ref.sizes()) +
                " have different shapes");
  if (a.cur.size(-1) == 0) throw_range(std::string(op) + ": the vocabulary is empty");
  check_mask(a.mask, a.cur, op, "mask");
  if (!(a.temperature > 0.0) || !std::isfinite(a.temperature))
    throw_range(std::string(op) + ": temperature must be a positive number, got " + std::to_string(a.temperature));
  const bool need_grad = a.cur.requires_grad() && at::GradMode::is_enabled();
  return DivergenceFn::apply(a.cur, a.ref.detach(), a.mask, static_cast<int64_t>(a.kind),
                             static_cast<int64_t>(a.reduction), a.temperature, need_grad);
}

at::Tensor token_cross_entropy(const CrossEntropyArgs& a) {
  const char* op = "tokenCrossEntropy";
  check_float_tensor(a.logits, op, "logits");
  if (a.logits.dim() < 1 || a.logits.size(-1) == 0)
    throw_range(std::string(op) + ": logits need a non-empty vocabulary dimension, got shape " + shape_str(a.logits.sizes()));
  if (a.targets.scalar_type() != at::kLong && a.targets.scalar_type() != at::kInt)
    throw_type(std::string(op) + ": targets must be int64 or int32 token ids, got " + dtype_name(a.targets.scalar_type()));
  check_mask(a.targets, a.logits, op, "targets");
  at::Tensor counts = a.targets.ne(a.ignore_index);
  if (a.mask.defined()) {
    check_mask(a.mask, a.logits, op, "mask");
    counts.logical_and_(a.mask.ne(0));
  }
  const int64_t V = a.logits.size(-1);
  const at::Tensor targets = a.targets.to(at::kLong);
  const at::Tensor bad = counts.logical_and(targets.lt(0).logical_or(targets.ge(V)));
  if (bad.any().item<bool>()) {
    const int64_t at_pos = bad.reshape({-1}).nonzero().select(0, 0).item<int64_t>();
    throw_range(std::string(op) + ": target " + std::to_string(targets.reshape({-1})[at_pos].item<int64_t>()) +
                " at position " + std::to_string(at_pos) + " is outside the vocabulary of " + std::to_string(V));
  }
  const bool need_grad = a.logits.requires_grad() && at::GradMode::is_enabled();
  return CrossEntropyFn::apply(a.logits, targets, counts.to(at::kFloat), static_cast<int64_t>(a.reduction), need_grad);
}

}  // namespace jfa
