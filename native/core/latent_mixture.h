#pragma once
// The latent-task mixture of JFA: each sample b adds sum_j w_bj (x_b A_j^T) B_j^T for its own k
// latent tasks j, picked from a pool of low-rank increments. It runs as batched matrix products
// over the gathered factors; no (out x in) matrix is ever formed.
#include <ATen/core/Tensor.h>

namespace jfa {

struct LatentMixtureArgs {
  at::Tensor x;        // (b, t, in) or (b, in)
  at::Tensor A;        // (P, r, in) pool
  at::Tensor B;        // (P, out, r) pool
  at::Tensor indices;  // (b, k) int64 in [0, P)
  at::Tensor weights;  // (b, k); fixed (retrieval similarities), so no gradient flows to them
};

// Returns the increment, (b, t, out) or (b, out); gradients flow to x, A and B.
at::Tensor latent_mixture(const LatentMixtureArgs& args);

}  // namespace jfa
