#pragma once
// Activation checkpointing: a function run without keeping its activations, recomputed (with the
// same inputs, so with the same values on the CPU) when the backward reaches it. A decoder layer
// keeps only its input this way; its activations exist again for the time of its own backward.
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace jfa {

// fn(x) computed without recording its graph. When gradients are recorded and x or a tensor of
// `params` needs one, the result carries a backward that recomputes fn(x) with gradients and
// back-propagates through it into x and `params`. `params` must list every tensor fn reads that
// may need a gradient; fn must compute the same thing each time it is called.
at::Tensor checkpointed(const at::Tensor& x, const std::vector<at::Tensor>& params, std::function<at::Tensor(const at::Tensor&)> fn);

}  // namespace jfa
