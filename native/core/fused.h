#pragma once
// The decoder's layers as our own kernels with hand-written backwards, float32 on the CPU:
// - causal self-attention over whole sequences (training, scoring): one task per (sample, head);
//   scores in row blocks of 64 that skip the keys a block cannot see, softmaxed while in cache and
//   kept for the backward (no recompute); every product skips the causal upper triangle. libtorch's
//   CPU SDPA computed the whole square: 29.6 ms forward + backward per layer at b 4, t 256, 12 x 64,
//   about 1.7x what this takes;
// - RMSNorm and the rotary embedding in one pass each way: as chains of ATen ops they took 5-6
//   passes over the activations forward and 8-10 backward, each a parallel region of its own.
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

// q, k, v (b, heads, t, head_dim) float32 on the CPU, any layout with unit stride on head_dim's
// axis (copied otherwise); key_mask (b, t) nonzero at real keys (uint8 and contiguous is taken as
// it is, anything else converted), or undefined for none padded.
// Query i sees the keys j <= i that are real. Every query must see at least one key, so key 0 of
// every sample must be real (right padding): see causal_attention_applies().
// Returns (b, heads, t, head_dim) as a view of (b, t, heads, head_dim) memory, so that the caller's
// transpose(1, 2).reshape(b, t, heads * head_dim) is free; its gradients come in that layout too.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                            double scale);

// Whether causal_attention computes what an additive-mask SDPA would for q, k, v of shape (batch,
// heads, t, head_dim) made with `options`, and key_mask (b, t) or undefined: float32 on the CPU,
// more than one position, kept probabilities within 512 MiB, and no query without a visible key
// (with a mask: key 0 real in every sample). Otherwise the caller uses SDPA.
bool causal_attention_applies(int64_t batch, int64_t heads, int64_t t, const at::TensorOptions& options,
                              const at::Tensor& key_mask);

}  // namespace jfa
