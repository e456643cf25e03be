#pragma once
// Gradient projection over sets of parameter tensors (the LoRA and latent parameters):
// PCGrad across per-micro-batch gradients, and GPM's projection out of a stored input subspace.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace jfa {

// grads[i][p]: micro-batch i's gradient of parameter p.
using GradientSet = std::vector<std::vector<at::Tensor>>;

struct PcgradResult {
  std::vector<at::Tensor> grads;  // per parameter: the mean of the projected gradients
  int64_t conflicts = 0;          // projections applied (pairs found pointing against each other)
  std::vector<double> gram;       // n x n inner products of the input gradients, row-major
};

// For each i, the order in which the other gradients are visited: a seeded shuffle.
std::vector<std::vector<int64_t>> pcgrad_orders(int64_t n, uint64_t seed);

// The n x n inner products of the gradients, in double: blockwise dots on the CPU (what pcgrad()
// uses there), or `batched`, one product per parameter read back once (what it uses on a GPU;
// callable on any device, so the CPU tests check it against the blockwise one).
std::vector<double> pcgrad_gram(const GradientSet& grads, bool batched);

// PCGrad (Yu et al. 2020): for each g_i, for j in orders[i]: if g_i . g_j < 0,
// g_i -= (g_i . g_j) / |g_j|^2 g_j (g_j the original); the result is the mean of the g_i.
// Every projected g_i stays a combination of the originals, so all of it runs on the n x n Gram
// matrix, computed in one blocked pass over the gradients; the output is one more pass.
PcgradResult pcgrad(const GradientSet& grads, const std::vector<std::vector<int64_t>>& orders);

// GPM (Saha et al. 2021). `activations` (samples x d) are inputs of a layer. Returns an orthonormal
// basis (d x k): the existing one (d x k0, may be undefined) extended by the left singular vectors
// of what it does not yet explain, until `threshold` of the activations' energy is captured.
at::Tensor gpm_basis(const at::Tensor& activations, double threshold, const at::Tensor& existing);

// g - (g M) M^T for g (..., d) and a basis M (d x k): removes the components in span(M).
at::Tensor gpm_project(const at::Tensor& grad, const at::Tensor& basis);

}  // namespace jfa
