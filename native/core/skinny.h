#pragma once
// Linear layers on a few rows (decoding: one token per sequence, batches up to 64) as a kernel of
// our own: y = x W^T (+ bias) with W streamed once, every row of x taken against each row of W while
// it is in registers. MKL's sgemv/sgemm at these shapes reached 13-16 GB/s of weights on the
// machines here against 40 GB/s for a plain read of the same weights, and decoding reads every weight
// once per token. generate() uses it for its decoding steps (LlamaModel::generate).
#include <ATen/core/Tensor.h>

namespace jfa {

// Whether skinny_linear takes x (..., K) and W (N, K): float32 on the CPU, at most 64 rows of x,
// no gradient wanted, and a CPU with AVX-512.
bool skinny_applies(const at::Tensor& x, const at::Tensor& W);

// y (..., N) = x W^T (+ bias), as at::linear, for what skinny_applies() takes.
at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias);

}  // namespace jfa
