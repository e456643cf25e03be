#include "core/runtime.h"

#include "core/cpu_gemm.h"

#include "core/cuda/cuda.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <ATen/Config.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <faiss/IndexFlat.h>

#include <atomic>
#include <vector>

#ifndef JFA_TORCH_BUILD_VERSION
#define JFA_TORCH_BUILD_VERSION "unknown"
#endif

namespace jfa {
namespace {
std::atomic<int> g_threads{0};  // 0: leave libtorch's default
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.torch_version = JFA_TORCH_BUILD_VERSION;
  info.faiss_version = std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." +
                       std::to_string(FAISS_VERSION_PATCH);
  // A CUDA libtorch on a machine without a driver or GPU reports hasCUDA() false: this addon's own
  // CUDA build says that the libtorch has CUDA all the same (the device count then says there is no GPU).
  info.cuda_built = cuda::built() || at::detail::getCUDAHooks().hasCUDA() || at::globalContext().hasCUDA();
  info.cuda_devices = info.cuda_built ? at::detail::getCUDAHooks().deviceCount() : 0;
  info.mkl = at::hasMKL();
  info.cpu_gemm = onednn_linear_enabled() ? "onednn" : "mkl";
  info.openmp = AT_PARALLEL_OPENMP;
  apply_threads();
  info.num_threads = at::get_num_threads();
  return info;
}

void set_num_threads(int n) {
  g_threads.store(n);
  at::set_num_threads(n);
}

void release_thread_pool() {
#ifdef _OPENMP
  if (!omp_in_parallel()) omp_pause_resource_all(omp_pause_soft);
#endif
}

void apply_threads() {
  const int n = g_threads.load();
  if (n > 0 && at::get_num_threads() != n) at::set_num_threads(n);
}

std::string faiss_self_check() {
  try {
    const int d = 4;
    faiss::IndexFlatIP index(d);
    const std::vector<float> base = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    index.add(3, base.data());
    const std::vector<float> query = {0, 0.9f, 0.1f, 0};
    float distance = 0;
    int64_t label = -1;  // faiss's idx_t (int64_t) under both its old and new spelling
    index.search(1, query.data(), 1, &distance, &label);
    if (label != 1) return "flat inner-product search returned label " + std::to_string(label) + ", expected 1";
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace jfa
