#pragma once
// Token-level losses over logits, fused and chunked: the flashback divergence between the current
// model's and the reference model's next-token distributions, and the masked cross-entropy of SFT.
// Both compute their gradient in the same pass as the loss, row chunks at a time, so no more than
// a few (chunk x vocab) temporaries exist at once; the only full-size result is the gradient itself.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace jfa {

// forward: KL(ref || cur), reverse: KL(cur || ref), symmetric: their sum (the paper's choice).
enum class KlKind { Forward, Reverse, Symmetric };
// sum over real tokens, or mean per real token (so the loss weight does not depend on prompt length).
enum class Reduction { Sum, Mean };

struct DivergenceArgs {
  at::Tensor cur;   // (..., V) current model's logits; the gradient flows here only
  at::Tensor ref;   // (..., V) reference model's logits
  at::Tensor mask;  // (...) nonzero at real tokens
  KlKind kind = KlKind::Symmetric;
  Reduction reduction = Reduction::Mean;
  double temperature = 1.0;  // both distributions are softmax(logits / temperature)
};

at::Tensor flashback_divergence(const DivergenceArgs& args);

struct CrossEntropyArgs {
  at::Tensor logits;   // (..., V)
  at::Tensor targets;  // (...) int64 token ids
  at::Tensor mask;     // (...) optional: nonzero where the token counts (e.g. target tokens, not the prompt)
  int64_t ignore_index = -100;  // targets equal to this never count
  Reduction reduction = Reduction::Mean;
};

at::Tensor token_cross_entropy(const CrossEntropyArgs& args);

}  // namespace jfa
