#include "core/projection.h"

#include <ATen/ops/mm.h>
#include <ATen/ops/stack.h>

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dot.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>

#include "core/checks.h"

namespace jfa {
namespace {

// Elements per block: the n gradients' blocks stay in cache while all their pairs are dotted.
constexpr int64_t kBlock = int64_t{1} << 15;

void check_gradient_set(const GradientSet& grads, const std::vector<std::vector<int64_t>>& orders) {
  const char* op = "pcgrad";
  if (grads.empty()) throw_range(std::string(op) + ": the list of gradients is empty");
  const size_t params = grads[0].size();
  if (params == 0) throw_range(std::string(op) + ": gradient 0 has no parameter tensors");
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].size() != params)
      throw_range(std::string(op) + ": gradient " + std::to_string(i) + " has " + std::to_string(grads[i].size()) +
                  " tensors but gradient 0 has " + std::to_string(params));
    for (size_t p = 0; p < params; ++p) {
      const std::string name = "gradient " + std::to_string(i) + " tensor " + std::to_string(p);
      check_same_kind(grads[i][p], grads[0][p], op, name.c_str(), "gradient 0's");
      if (grads[i][p].sizes() != grads[0][p].sizes())
        throw_range(std::string(op) + ": " + name + " has shape " + shape_str(grads[i][p].sizes()) +
                    " but gradient 0's has " + shape_str(grads[0][p].sizes()));
    }
  }
  const int64_t n = static_cast<int64_t>(grads.size());
  if (static_cast<int64_t>(orders.size()) != n)
    throw_range(std::string(op) + ": " + std::to_string(orders.size()) + " orders given for " + std::to_string(n) + " gradients");
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> sorted = orders[i];
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> want;
    for (int64_t j = 0; j < n; ++j)
      if (j != i) want.push_back(j);
    if (sorted != want)
      throw_range(std::string(op) + ": order " + std::to_string(i) + " must visit every other gradient exactly once");
  }
}

// gram[i * n + j] = sum over parameters of g_i . g_j, accumulated in double over cache-sized blocks.
std::vector<double> gram_matrix(const GradientSet& grads) {
  return pcgrad_gram(grads, !grads[0].empty() && !grads[0][0].device().is_cpu());
}

}  // namespace

std::vector<double> pcgrad_gram(const GradientSet& grads, bool batched) {
  const int64_t n = static_cast<int64_t>(grads.size());
  std::vector<double> gram(static_cast<size_t>(n * n), 0.0);
  if (batched) {
    // On a GPU: one (n x n) product per parameter in double, summed there, read back once
    // (a dot per block and pair would wait on the device thousands of times a step).
    at::NoGradGuard no_grad;
    at::Tensor acc = at::zeros({n, n}, grads[0][0].options().dtype(at::kDouble));
    for (size_t p = 0; p < grads[0].size(); ++p) {
      std::vector<at::Tensor> flat;
      for (const auto& g : grads) flat.push_back(g[p].reshape({-1}));
      const at::Tensor S = at::stack(flat).to(at::kDouble);
      acc.add_(at::mm(S, S.t()));
    }
    const at::Tensor host = acc.to(at::kCPU).contiguous();
    std::copy(host.data_ptr<double>(), host.data_ptr<double>() + n * n, gram.begin());
    return gram;
  }
  std::mutex merge;
  for (size_t p = 0; p < grads[0].size(); ++p) {
    std::vector<at::Tensor> flat;
    for (const auto& g : grads) flat.push_back(g[p].contiguous().view({-1}));
    const int64_t numel = flat[0].numel();
    const int64_t blocks = (numel + kBlock - 1) / kBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      at::NoGradGuard no_grad;
      std::vector<double> local(gram.size(), 0.0);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t start = b * kBlock, len = std::min(kBlock, numel - start);
        std::vector<at::Tensor> part;
        for (const auto& f : flat) part.push_back(f.narrow(0, start, len));
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = i; j < n; ++j) local[i * n + j] += at::dot(part[i], part[j]).item<double>();
      }
      std::lock_guard<std::mutex> lock(merge);
      for (size_t k = 0; k < gram.size(); ++k) gram[k] += local[k];
    });
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) gram[i * n + j] = gram[j * n + i];
  return gram;
}

std::vector<std::vector<int64_t>> pcgrad_orders(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> orders(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j)
      if (j != i) orders[i].push_back(j);
    std::shuffle(orders[i].begin(), orders[i].end(), rng);
  }
  return orders;
}

PcgradResult pcgrad(const GradientSet& grads, const std::vector<std::vector<int64_t>>& orders) {
  check_gradient_set(grads, orders);
  const int64_t n = static_cast<int64_t>(grads.size());
  PcgradResult result;
  result.gram = gram_matrix(grads);
  const auto& G = result.gram;

  // coefficients[m]: weight of original gradient m in the mean of the projected gradients.
  std::vector<double> coefficients(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> a(static_cast<size_t>(n), 0.0);  // g_i' = sum_m a[m] g_m
    a[i] = 1.0;
    for (int64_t j : orders[i]) {
      double dot = 0.0;
      for (int64_t m = 0; m < n; ++m) dot += a[m] * G[m * n + j];
      const double norm2 = G[j * n + j];
      if (dot < 0.0 && norm2 > 0.0) {
        a[j] -= dot / norm2;
        ++result.conflicts;
      }
    }
    for (int64_t m = 0; m < n; ++m) coefficients[m] += a[m] / static_cast<double>(n);
  }

  for (size_t p = 0; p < grads[0].size(); ++p) {
    at::Tensor out = at::empty_like(grads[0][p], at::MemoryFormat::Contiguous);
    std::vector<at::Tensor> flat;
    for (const auto& g : grads) flat.push_back(g[p].contiguous().view({-1}));
    at::Tensor out_flat = out.view({-1});
    const int64_t numel = out_flat.numel();
    const int64_t blocks = (numel + kBlock - 1) / kBlock;
    // One pass: each output block is summed while it sits in cache.
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      at::NoGradGuard no_grad;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t start = b * kBlock, len = std::min(kBlock, numel - start);
        at::Tensor dst = out_flat.narrow(0, start, len);
        at::mul_out(dst, flat[0].narrow(0, start, len), coefficients[0]);
        for (int64_t m = 1; m < n; ++m) dst.add_(flat[m].narrow(0, start, len), coefficients[m]);
      }
    });
    result.grads.push_back(out);
  }
  return result;
}

at::Tensor gpm_basis(const at::Tensor& activations, double threshold, const at::Tensor& existing) {
  const char* op = "gpmBasis";
  check_float_tensor(activations, op, "activations");
  check_dims(activations, 2, op, "activations");
  if (!(threshold > 0.0 && threshold <= 1.0))
    throw_range(std::string(op) + ": threshold must be in (0, 1], got " + std::to_string(threshold));
  const int64_t d = activations.size(1);
  if (activations.size(0) == 0) throw_range(std::string(op) + ": activations has no samples");
  const at::Tensor R = activations.t().to(at::kDouble);  // d x samples, double for a stable SVD
  at::Tensor M;
  if (existing.defined()) {
    check_same_kind(existing, activations, op, "basis", "activations");
    check_dims(existing, 2, op, "basis");
    if (existing.size(0) != d)
      throw_range(std::string(op) + ": basis " + shape_str(existing.sizes()) + " has " + std::to_string(existing.size(0)) +
                  " rows but the activations have " + std::to_string(d) + " features");
    M = existing.to(at::kDouble);
  }
  const double total = R.pow(2).sum().item<double>();
  if (total == 0.0) return existing.defined() ? existing : at::zeros({d, 0}, activations.options());
  const at::Tensor residual = M.defined() && M.size(1) > 0 ? R - at::matmul(M, at::matmul(M.t(), R)) : R;
  auto [U, S, Vh] = at::linalg_svd(residual, /*full_matrices=*/false);
  const at::Tensor energy = S.pow(2);
  // Energy already explained by the basis counts toward the threshold (GPM's criterion).
  double captured = total - energy.sum().item<double>();
  int64_t k = 0;
  const at::Tensor energy_cpu = energy.to(at::kCPU);  // read on the host, wherever the SVD ran
  const auto e = energy_cpu.accessor<double, 1>();
  while (k < e.size(0) && captured / total < threshold - 1e-12) captured += e[k++];
  const at::Tensor added = U.narrow(1, 0, k);
  const at::Tensor basis = M.defined() ? at::cat({M, added}, 1) : added;
  return basis.to(activations.scalar_type());
}

at::Tensor gpm_project(const at::Tensor& grad, const at::Tensor& basis) {
  const char* op = "gpmProject";
  check_float_tensor(grad, op, "grad");
  check_same_kind(basis, grad, op, "basis", "grad");
  check_dims(basis, 2, op, "basis");
  if (grad.dim() < 1 || grad.size(-1) != basis.size(0))
    throw_range(std::string(op) + ": grad " + shape_str(grad.sizes()) + " must end in " + std::to_string(basis.size(0)) +
                " features to match basis " + shape_str(basis.sizes()));
  return grad - at::matmul(at::matmul(grad, basis), basis.t());
}

}  // namespace jfa
