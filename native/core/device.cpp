#include "core/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "core/cuda/cuda.h"
#include "core/errors.h"

#ifndef JFA_TORCH_BUILD_VERSION
#define JFA_TORCH_BUILD_VERSION "unknown"
#endif

namespace jfa {

c10::Device parse_device(const std::string& name, const char* op) {
  const std::string where = std::string(op) + ": device '" + name + "'";
  const bool cuda_name = name == "cuda" || name.rfind("cuda:", 0) == 0;
  if (name != "cpu" && !cuda_name) throw_range(where + " is not a device; use 'cpu', 'cuda' or 'cuda:N'");
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw_range(where + " is not a device; use 'cpu', 'cuda' or 'cuda:N' (N a GPU index from 0)");
  }
  if (device.is_cpu()) return device;
  if (!cuda::built() && !at::globalContext().hasCUDA() && !at::detail::getCUDAHooks().hasCUDA()) {
    throw_generic(where + ": this libtorch (" JFA_TORCH_BUILD_VERSION
                  ") has no CUDA; install a CUDA torch (e.g. `pip install torch --index-url "
                  "https://download.pytorch.org/whl/cu130` into .venv, or set LIBTORCH to a CUDA libtorch) and rebuild "
                  "the addon (`npm run build:native`)");
  }
  const int64_t count = at::detail::getCUDAHooks().deviceCount();
  if (count == 0)
    throw_generic(where + ": this libtorch has CUDA but no GPU is visible (check nvidia-smi, the driver and "
                  "CUDA_VISIBLE_DEVICES)");
  const int64_t index = device.has_index() ? device.index() : 0;
  if (index >= count)
    throw_range(where + " is out of range: " + std::to_string(count) + " GPU" + (count == 1 ? "" : "s") +
                " visible (cuda:0" + (count > 1 ? "..cuda:" + std::to_string(count - 1) : std::string()) + ")");
  cuda::note_used(index);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string device_name(const c10::Device& device) { return device.str(); }

}  // namespace jfa
