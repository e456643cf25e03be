#pragma once
// Causal self-attention over whole sequences on the CPU, float32, with its own backward: the
// training path of the model. One task per (sample, head): the scores are computed in row blocks
// of 64 that skip the keys a block cannot see, softmaxed while they are in cache, kept for the
// backward (no recompute), and every product skips the causal upper triangle. libtorch's CPU SDPA
// (flash) computed and discarded the whole square and took 2-3x longer fwd + bwd at t = 256.
#include <ATen/core/Tensor.h>

namespace jfa {

// q, k, v (b, heads, t, head_dim) float32 on the CPU, any layout with unit stride on head_dim's
// axis (copied otherwise); key_mask (b, t) nonzero at real keys, or undefined for none padded.
// Query i sees the keys j <= i that are real. Every query must see at least one key, so key 0 of
// every sample must be real (right padding): see causal_attention_applies().
// Returns (b, heads, t, head_dim) as a view of (b, t, heads, head_dim) memory, so that the caller's
// transpose(1, 2).reshape(b, t, heads * head_dim) is free; its gradients come in that layout too.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                            double scale);

// Whether causal_attention computes what an additive-mask SDPA would for these inputs: float32 CPU
// tensors of equal shapes, more than one position, and no query without a visible key (with a
// mask: key 0 real in every sample). Otherwise the caller uses SDPA.
bool causal_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask);

}  // namespace jfa
