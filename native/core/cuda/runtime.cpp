// core/cuda/cuda.h for a build against a CUDA libtorch: devices, allocator counters, streams.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "core/cuda/cuda.h"

namespace jfa::cuda {
namespace {
// Bit i: cuda:i has been asked for (devices past 63 share bit 63). Only those are synchronised and
// read, so a process that uses one GPU never makes a context on the others.
std::atomic<uint64_t> g_used{0};
bool used(int64_t i) { return (g_used.load() >> std::min<int64_t>(i, 63)) & 1u; }
}

bool built() { return true; }

std::string version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
}

std::vector<Gpu> gpus() {
  std::vector<Gpu> out;
  const int64_t count = c10::cuda::device_count();
  for (int64_t i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, static_cast<int>(i)) != cudaSuccess) continue;
    Gpu g;
    g.index = i;
    g.name = prop.name;
    g.total_memory = static_cast<int64_t>(prop.totalGlobalMem);
    g.major = prop.major;
    g.minor = prop.minor;
    if (used(i)) {
      // Before the first allocation the caching allocator may not be initialised: zeros then.
      try {
        using namespace c10::cuda::CUDACachingAllocator;
        const auto stats = getDeviceStats(static_cast<c10::DeviceIndex>(i));
        const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
        g.allocated = stats.allocated_bytes[all].current;
        g.reserved = stats.reserved_bytes[all].current;
        g.peak_allocated = stats.allocated_bytes[all].peak;
      } catch (const std::exception&) {
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

void reset_peak() {
  for (int64_t i = 0; i < c10::cuda::device_count(); ++i) {
    if (!used(i)) continue;
    try {
      c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(i));
    } catch (const std::exception&) {  // nothing allocated there yet: no peak to reset
    }
  }
}

void empty_cache() {
  if (g_used.load()) c10::cuda::CUDACachingAllocator::emptyCache();
}

void note_used(int64_t index) { g_used.fetch_or(uint64_t{1} << std::min<int64_t>(index, 63)); }

void synchronize() {
  for (int64_t i = 0; i < c10::cuda::device_count(); ++i)
    if (used(i)) c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(i)).synchronize();
}

}  // namespace jfa::cuda
