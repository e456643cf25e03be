// Module entry: the tensor handles, the ops, FAISS, and runtime information.
#include <napi.h>

#include "binding/boundary.h"
#include "binding/decoder.h"
#include "binding/distributed.h"
#include "binding/faiss.h"
#include "binding/io.h"
#include "binding/kernels.h"
#include "binding/model.h"
#include "binding/ops.h"
#include "binding/tensor.h"
#include "binding/train.h"
#include "core/cpu_allocator.h"
#include "core/cuda/cuda.h"
#include "core/runtime.h"

namespace jfa::binding {
namespace {

Napi::Value info_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "info", [&]() -> Napi::Value {
    const RuntimeInfo r = runtime_info();
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("torchVersion", r.torch_version);
    out.Set("faissVersion", r.faiss_version);
    out.Set("cuda", r.cuda_built);
    out.Set("cudaDevices", static_cast<double>(r.cuda_devices));
    out.Set("cudaVersion", cuda::version());
    out.Set("cudaKernels", cuda::built());
    out.Set("mkl", r.mkl);
    out.Set("cpuGemm", r.cpu_gemm);
    out.Set("openmp", r.openmp);
    out.Set("numThreads", r.num_threads);
    return out;
  });
}

Napi::Value set_num_threads_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "setNumThreads", [&]() -> Napi::Value {
    set_num_threads(static_cast<int>(int_arg(info, 0, "setNumThreads", "n", 0, 1, 4096)));
    return info.Env().Undefined();
  });
}

Napi::Value stats_fn(const Napi::CallbackInfo& info) {
  const auto& data = addon_data(info.Env());
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("liveTensors", static_cast<double>(data.tensors.live()));
  out.Set("liveBytes", static_cast<double>(data.tensors.live_bytes()));
  const CpuCacheStats cache = cpu_cache_stats();
  out.Set("cpuAllocatedBytes", static_cast<double>(cache.allocated_bytes));
  out.Set("cpuCachedBytes", static_cast<double>(cache.cached_bytes));
  out.Set("cpuCacheLimitBytes", static_cast<double>(cache.limit_bytes));
  out.Set("cpuCacheHits", static_cast<double>(cache.hits));
  out.Set("cpuCacheMisses", static_cast<double>(cache.misses));
  const auto gpus = cuda::gpus();
  Napi::Array list = Napi::Array::New(info.Env(), gpus.size());
  for (size_t i = 0; i < gpus.size(); ++i) {
    const auto& g = gpus[i];
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("index", static_cast<double>(g.index));
    o.Set("name", g.name);
    o.Set("totalMemory", static_cast<double>(g.total_memory));
    o.Set("capability", std::to_string(g.major) + "." + std::to_string(g.minor));
    o.Set("allocatedBytes", static_cast<double>(g.allocated));
    o.Set("reservedBytes", static_cast<double>(g.reserved));
    o.Set("peakAllocatedBytes", static_cast<double>(g.peak_allocated));
    list.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("gpus", list);
  return out;
}

Napi::Value set_cpu_cache_limit_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "setCpuCacheLimit", [&]() -> Napi::Value {
    set_cpu_cache_limit(static_cast<size_t>(int_arg(info, 0, "setCpuCacheLimit", "bytes", -1, 0)));
    return info.Env().Undefined();
  });
}

Napi::Value empty_cpu_cache_fn(const Napi::CallbackInfo& info) {
  empty_cpu_cache();
  return info.Env().Undefined();
}

// The CUDA caching allocator: peaks cleared, or cached blocks returned to the driver (no-ops without a GPU).
Napi::Value reset_peak_memory_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "resetPeakMemory", [&]() -> Napi::Value {
    cuda::reset_peak();
    return info.Env().Undefined();
  });
}

Napi::Value empty_cuda_cache_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "emptyCudaCache", [&]() -> Napi::Value {
    cuda::empty_cache();
    return info.Env().Undefined();
  });
}

// Waits until the work queued on this thread's CUDA stream of every GPU used is done (a no-op in a
// CPU build or before any CUDA device was used): synchronous ops return once queued, so timing them needs this.
Napi::Value synchronize_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "synchronize", [&]() -> Napi::Value {
    cuda::synchronize();
    return info.Env().Undefined();
  });
}

Napi::Value faiss_self_check_fn(const Napi::CallbackInfo& info) {
  const std::string problem = faiss_self_check();
  return problem.empty() ? info.Env().Null() : Napi::String::New(info.Env(), problem);
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  install_caching_cpu_allocator();
  env.SetInstanceData(new AddonData());
  Signatures& signatures = addon_data(env).signatures;
  tensor_handle::register_functions(env, exports, signatures);
  register_ops(env, exports, signatures);
  register_faiss(env, exports, signatures);
  register_kernels(env, exports, signatures);
  register_io(env, exports, signatures);
  register_model(env, exports, signatures);
  register_decoder(env, exports, signatures);
  register_train(env, exports, signatures);
  register_distributed(env, exports, signatures);
  export_functions(env, exports, signatures,
                   {
                       {"info", 0, info_fn},
                       {"setNumThreads", 1, set_num_threads_fn},
                       {"stats", 0, stats_fn},
                       {"setCpuCacheLimit", 1, set_cpu_cache_limit_fn},
                       {"emptyCpuCache", 0, empty_cpu_cache_fn},
                       {"faissSelfCheck", 0, faiss_self_check_fn},
                       {"resetPeakMemory", 0, reset_peak_memory_fn},
                       {"emptyCudaCache", 0, empty_cuda_cache_fn},
                       {"synchronize", 0, synchronize_fn},
                   });
  exports.Set("signatures", signatures.to_js(env));
  return exports;
}

}  // namespace
}  // namespace jfa::binding

static Napi::Object init_addon(Napi::Env env, Napi::Object exports) { return jfa::binding::init(env, exports); }
NODE_API_MODULE(jfa_torch, init_addon)
