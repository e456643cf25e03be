#pragma once
// Linear layers on CPUs where libtorch's MKL is the slow road. The pip builds of
// libtorch run float32 products through MKL, which takes its AVX2 kernels on AMD processors (the
// profile shows ymm FMAs only on an AVX-512 Zen); the oneDNN that libtorch bundles takes AVX-512
// there. Measured on the 2-core AMD EPYC here (torch 2.13, 2 threads): 1024 x 768 x 2048 in 21.3 ms
// through MKL, 8.7 ms through oneDNN, both float32 (errors against float64 2.9e-6 and 6.1e-6).
// Both are float32 with float32 accumulation; they round differently, so one process uses one of
// them throughout (the choice is made once, from the CPU, never from timings).
#include <ATen/core/Tensor.h>

namespace jfa {

// Whether fp32 linear layers that record no gradient go through oneDNN: on AMD processors with
// AVX-512 when libtorch has oneDNN; JFA_CPU_GEMM=onednn or =mkl in the environment overrides.
bool onednn_linear_enabled();

// Whether onednn_linear takes x and W: enabled, float32 on the CPU (x (..., K), W (N, K)).
bool onednn_takes(const at::Tensor& x, const at::Tensor& W);

// onednn_takes, and no gradient recorded through the product (an autograd function's own forward
// and backward record none, and call onednn_linear where onednn_takes).
bool onednn_linear_applies(const at::Tensor& x, const at::Tensor& W);

// y (..., N) = x (..., K) W (N, K)^T (+ bias), as at::linear, through oneDNN.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias);

// y = x W^T (+ bias) through oneDNN with gradients for x, W and bias (pretraining, full fine-tuning):
// the input gradient g W and the weight gradient g^T x through oneDNN too, on transposed copies.
at::Tensor onednn_linear_autograd(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias);

// at::linear, or onednn_linear where it applies.
at::Tensor cpu_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias = at::Tensor());

}  // namespace jfa
