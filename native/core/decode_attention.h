#pragma once
// Attention of one new token per sequence against its KV cache (a decoding step) as a kernel of our
// own, float32 on CPUs with AVX-512. SDPA took this step as one small product per (row, head) plus
// an additive mask built from the key mask every step (~10 ATen ops), and on grouped-query models
// the whole cache expanded to every query head first. Here one task per (row, head) reads its KV
// head in place, skips the keys its row cannot see, and softmaxes in registers. A row's result
// depends only on its own visible keys, never on the padding or on the other rows of the batch.
#include <ATen/core/Tensor.h>

namespace jfa {

// Whether decode_attention takes a model's heads: float32 on the CPU, head_dim a multiple of 16 up
// to 256, heads a multiple of kv_heads, and a CPU with AVX-512.
bool decode_attention_fits(int64_t heads, int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options);

// q (b, heads, 1, head_dim), k and v (b, kv_heads, total, head_dim), any strides (copied where
// head_dim's is not 1), for heads that decode_attention_fits() takes.
// softmax(scale q kᵀ) v per (row, head), head h reading KV head h / (heads / kv_heads). key_mask
// (b, total) uint8, contiguous, nonzero where a key is visible, or undefined (all visible). A row
// that sees no key gets the mean of all its values (what an additive mask of the lowest finite value
// gives SDPA). Returns (b, heads, 1, head_dim) as a view of (b, 1, heads, head_dim) memory, so that
// the caller's transpose(1, 2).reshape(b, 1, heads * head_dim) is free.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask, double scale);

}  // namespace jfa
