#pragma once
// Tensor: a JS handle owning one at::Tensor. dispose() frees it at once, including the Node-API
// wrap record (napi_remove_wrap), so disposed handles leave nothing behind even in a synchronous
// loop that never lets finalizers run; otherwise the GC's finalizer frees it. The native size is
// reported to V8 as external memory so that the GC sees it.
#include <napi.h>

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>

#include "binding/boundary.h"

namespace jfa::binding {

struct AddonData {
  Napi::FunctionReference tensor_class;
  Napi::FunctionReference model_class;
  Signatures signatures;
  std::atomic<int64_t> live_handles{0};
  std::atomic<int64_t> live_bytes{0};
};

AddonData& addon_data(Napi::Env env);

namespace tensor_handle {

Napi::Function define_class(Napi::Env env);
// Wraps `t` in a new JS handle.
Napi::Object wrap(Napi::Env env, at::Tensor t);
bool is_tensor(Napi::Env env, const Napi::Value& v);
// The tensor held by handle `v`, or nullptr when `v` is a disposed handle or no handle at all.
const at::Tensor* unwrap(Napi::Env env, const Napi::Value& v);

}  // namespace tensor_handle
}  // namespace jfa::binding
