#pragma once
// What native/core needs of CUDA, callable from every build. A build against a CUDA libtorch
// compiles runtime.cpp and the kernels (*.cu) here; a CPU build compiles none.cpp, whose answers
// are "no GPU" and whose kernels report themselves unavailable, so callers keep the libtorch path.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace jfa::cuda {

struct Gpu {
  int64_t index = 0;
  std::string name;
  int64_t total_memory = 0;  // bytes
  int64_t major = 0, minor = 0;  // compute capability
  // The caching allocator (bytes): held by live tensors, held in all (live + cached), highest held by
  // tensors since the process started or the last reset.
  int64_t allocated = 0, reserved = 0, peak_allocated = 0;
};

// Whether this addon was compiled against a CUDA libtorch (with the kernels of this folder).
bool built();
// The CUDA runtime version the addon was compiled with ("13.0"), or "" in a CPU build.
std::string version();
// The visible GPUs, with their allocator counters. Empty in a CPU build or without a GPU.
std::vector<Gpu> gpus();
// Clears the peak counters of every GPU (no-op without).
void reset_peak();
// Returns cached blocks to the driver (no-op without).
void empty_cache();

// Called once a CUDA device has been asked for; until then synchronize() does nothing, so CPU-only
// work never creates a CUDA context.
void note_used(int64_t index);
// Waits for the calling thread's current stream on every device used: an async worker calls it
// before its Promise resolves, so results are complete when JS sees them.
void synchronize();

// Symmetric/forward/reverse KL rows of (N, V) logits z (current) and r (reference), float32 or
// bfloat16, on one GPU, in one kernel: per row, the loss times mask[row] (0 or 1) into row_loss (N,
// float32) and, when grad is defined ((N, V) contiguous, z's dtype), d loss / d z times
// mask[row] * grad_scale / temperature. kind: 0
// forward, 1 reverse, 2 symmetric (core/divergence.h's KlKind). Returns false where this build has no
// kernel for these inputs (the caller then runs the libtorch path).
bool kl_rows(const at::Tensor& z, const at::Tensor& r, const at::Tensor& mask, double grad_scale, int kind,
             double temperature, at::Tensor& row_loss, at::Tensor& grad);

}  // namespace jfa::cuda
