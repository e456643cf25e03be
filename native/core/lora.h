#pragma once
// LoRA linear layer: y = x W^T + b + scale * (dropout(x) A^T) B^T, with W and b frozen,
// A (r x in) and B (out x r) trained. Forward and an explicit backward run as one libtorch
// autograd function, so the layer composes with the rest of a model's graph.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace jfa {

struct LoraArgs {
  at::Tensor x;     // (..., in)
  at::Tensor W;     // (out, in), frozen
  at::Tensor bias;  // (out) or undefined
  at::Tensor A;     // (r, in)
  at::Tensor B;     // (out, r)
  double scale = 1.0;
  double dropout = 0.0;              // on the LoRA branch's input, as PEFT does
  std::optional<uint64_t> seed;      // dropout mask seed; none: libtorch's default generator
};

at::Tensor lora_linear(const LoraArgs& args);

// PEFT's scaling: lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
double lora_scale(double lora_alpha, int64_t r, bool rslora);

enum class LoraInit { Kaiming, Gaussian };
// In place, like PEFT: A kaiming-uniform with a = sqrt(5) (U(-1/sqrt(in), 1/sqrt(in))) or
// gaussian with std 1/r; B zero, so the layer starts as the base model.
void lora_init(at::Tensor& A, at::Tensor& B, LoraInit init, std::optional<uint64_t> seed);

// W += scale * B A (merge) or W -= scale * B A (unmerge), in place.
void lora_merge(at::Tensor& W, const at::Tensor& A, const at::Tensor& B, double scale, bool unmerge);

}  // namespace jfa
