#pragma once
// The LM head and token cross-entropy in one pass over row chunks: the mean over n rows of
// -log softmax(h W^T)[target], never holding more than one chunk's logits. The gradients (to the
// hidden states, and to the head's weight when it trains) are computed chunk by chunk in the same
// pass and kept, (n, hidden) and (vocab, hidden), in place of the (n, vocab) logits a separate head
// and loss would keep for their backward.
#include <ATen/core/Tensor.h>

namespace jfa {

// hidden (n, H) float, weight (V, H) of hidden's dtype, targets (n) int64 in [0, V). n >= 1.
at::Tensor head_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets);

}  // namespace jfa
