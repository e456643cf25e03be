#pragma once
// Devices by name ("cpu", "cuda", "cuda:1"), checked before anything is allocated there, with
// errors that say what is missing: a CUDA device asked of a CPU-only libtorch, of a CUDA libtorch
// on a machine without a GPU, or an index past the GPUs there are.
#include <c10/core/Device.h>

#include <string>

namespace jfa {

// `op` names the caller in errors ("tensor: device ..."). Throws jfa::Error: Range for a name that
// is no device or an index out of range, Generic for CUDA where this process has none.
c10::Device parse_device(const std::string& name, const char* op);

// The device a tensor ends up on after parse_device(): "cuda" reads as "cuda:0" (what torch prints).
std::string device_name(const c10::Device& device);

}  // namespace jfa
