// The CPU build's answers to core/cuda/cuda.h: no GPU, no kernels.
#include "core/cuda/cuda.h"

namespace jfa::cuda {

bool built() { return false; }
std::string version() { return ""; }
std::vector<Gpu> gpus() { return {}; }
void reset_peak() {}
void empty_cache() {}
void note_used(int64_t) {}
void synchronize() {}
bool kl_rows(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int, double, at::Tensor&, at::Tensor&) {
  return false;
}

}  // namespace jfa::cuda
