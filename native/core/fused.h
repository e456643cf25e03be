#pragma once
// Two element-wise layers of the decoder as single passes with hand-written backwards, float32 on
// the CPU: RMSNorm and the rotary embedding. As chains of ATen ops they took 5-6 passes over the
// activations forward and 8-10 backward, each a parallel region of its own.
#include <ATen/core/Tensor.h>

namespace jfa {

// LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps) over the last axis. x (..., H) float32 CPU,
// weight (H) float32; the weight gets a gradient when it requires one (pretraining).
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The rotary embedding of x (b, t, heads, head_dim), contiguous float32 CPU, with cos and sin
// (b, t, head_dim) contiguous (both halves equal, as Llama builds them): x cos + rotate_half(x) sin.
// Returns (b, t, heads, head_dim), contiguous.
at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Whether the fused versions take these tensors (float32, CPU, the layouts above).
bool fused_applies(const at::Tensor& x);

}  // namespace jfa
