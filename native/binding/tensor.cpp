#include "binding/tensor.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <new>

#include "binding/boundary.h"
#include "core/ops.h"

namespace jfa::binding {

// ---- Tensor handle ---------------------------------------------------------------------------

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

namespace tensor_handle {
namespace {

struct Handle {
  at::Tensor tensor;
  int64_t reported_bytes;
};

// Marks objects created by our constructor (cheaper than instanceof, and immune to prototype tricks).
constexpr napi_type_tag kTensorTag = {0x6a66612d746f7263ull, 0x682d74656e736f72ull};

// wrap() hands the constructor its tensor here; a `new Tensor()` from JS finds nothing and is refused.
thread_local at::Tensor* g_pending = nullptr;

void account(napi_env env, int64_t handles, int64_t bytes) {
  auto& data = addon_data(Napi::Env(env));
  data.live_handles += handles;
  data.live_bytes += bytes;
  int64_t ignored = 0;
  napi_adjust_external_memory(env, bytes, &ignored);  // the C call: finalizers must not throw
}

void finalize(napi_env env, void* data, void*) {
  auto* handle = static_cast<Handle*>(data);
  account(env, -1, -handle->reported_bytes);
  delete handle;
}

// Runs a method body with C++ exceptions turned into JS exceptions.
template <typename F>
napi_value method(napi_env env, napi_callback_info cbinfo, F&& body) {
  try {
    Napi::CallbackInfo info(env, cbinfo);
    return body(info);
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
    return nullptr;
  }
}

const at::Tensor& receiver(const Napi::CallbackInfo& info, const char* op) {
  const at::Tensor* t = unwrap(info.Env(), info.This());
  if (!t) throw Napi::TypeError::New(info.Env(), std::string(op) + ": the tensor is disposed");
  return *t;
}

napi_value construct(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    if (!g_pending)
      throw Napi::TypeError::New(info.Env(), "Tensor: handles are made by tensor(), zeros(), randn() and the ops, not by new");
    auto* handle = new Handle{std::move(*g_pending), 0};
    g_pending = nullptr;
    handle->reported_bytes = handle->tensor.defined() ? static_cast<int64_t>(handle->tensor.nbytes()) : 0;
    // No napi_ref is requested: the runtime owns the wrap record, and napi_remove_wrap frees it.
    if (napi_wrap(info.Env(), info.This(), handle, finalize, nullptr, nullptr) != napi_ok ||
        napi_type_tag_object(info.Env(), info.This(), &kTensorTag) != napi_ok) {
      delete handle;
      throw Napi::Error::New(info.Env(), "Tensor: could not wrap the handle");
    }
    account(info.Env(), 1, handle->reported_bytes);
    return info.This();
  });
}

napi_value get_shape(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    const auto sizes = receiver(info, "shape").sizes();
    auto out = Napi::Array::New(info.Env(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) out.Set(static_cast<uint32_t>(i), static_cast<double>(sizes[i]));
    return out;
  });
}

napi_value get_dtype(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    return Napi::String::New(info.Env(), dtype_name(receiver(info, "dtype").scalar_type()));
  });
}

napi_value get_device(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    return Napi::String::New(info.Env(), receiver(info, "device").device().str());
  });
}

napi_value get_nbytes(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    return Napi::Number::New(info.Env(), static_cast<double>(receiver(info, "nbytes").nbytes()));
  });
}

napi_value get_disposed(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    return Napi::Boolean::New(info.Env(), unwrap(info.Env(), info.This()) == nullptr);
  });
}

napi_value dispose(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    check_arity(info, 0, "Tensor.dispose");
    void* data = nullptr;
    if (is_tensor(info.Env(), info.This()) && napi_remove_wrap(info.Env(), info.This(), &data) == napi_ok && data)
      finalize(info.Env(), data, nullptr);
    return info.Env().Undefined();
  });
}

template <typename T>
Napi::Value typed_array(Napi::Env env, size_t length, Napi::ArrayBuffer buffer, napi_typedarray_type type) {
  return Napi::TypedArrayOf<T>::New(env, length, buffer, 0, type);
}

napi_value to_typed_array(napi_env env, napi_callback_info cbinfo) {
  return method(env, cbinfo, [](const Napi::CallbackInfo& info) -> napi_value {
    check_arity(info, 0, "Tensor.toTypedArray");
    Napi::Env env = info.Env();
    return guard(env, "toTypedArray", [&]() -> Napi::Value {
      at::Tensor src = receiver(info, "toTypedArray");
      if (!src.device().is_cpu()) src = src.to(at::kCPU);
      // JS has no 16-bit float arrays on Node 20: half types come back widened to float32.
      if (src.scalar_type() == c10::kBFloat16 || src.scalar_type() == c10::kHalf) src = src.to(c10::kFloat);
      src = src.contiguous();
      const size_t n = static_cast<size_t>(src.numel());
      auto buffer = Napi::ArrayBuffer::New(env, src.nbytes());
      if (n) std::memcpy(buffer.Data(), src.data_ptr(), src.nbytes());
      switch (src.scalar_type()) {
        case c10::kFloat: return typed_array<float>(env, n, buffer, napi_float32_array);
        case c10::kDouble: return typed_array<double>(env, n, buffer, napi_float64_array);
        case c10::kInt: return typed_array<int32_t>(env, n, buffer, napi_int32_array);
        case c10::kLong: return typed_array<int64_t>(env, n, buffer, napi_bigint64_array);
        case c10::kByte:
        case c10::kBool: return typed_array<uint8_t>(env, n, buffer, napi_uint8_array);
        default: throw_type("toTypedArray: no typed array for dtype " + dtype_name(src.scalar_type()));
      }
    });
  });
}

}  // namespace

Napi::Function define_class(Napi::Env env) {
  const auto getter = [](const char* name, napi_callback get) {
    return napi_property_descriptor{name, nullptr, nullptr, get, nullptr, nullptr, napi_default, nullptr};
  };
  const auto fn = [](const char* name, napi_callback call) {
    return napi_property_descriptor{name, nullptr, call, nullptr, nullptr, nullptr, napi_default, nullptr};
  };
  const napi_property_descriptor props[] = {
      getter("shape", get_shape),   getter("dtype", get_dtype),     getter("device", get_device),
      getter("nbytes", get_nbytes), getter("disposed", get_disposed), fn("toTypedArray", to_typed_array),
      fn("dispose", dispose),
  };
  napi_value cls = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_define_class(env, "Tensor", NAPI_AUTO_LENGTH, construct, nullptr,
                                              sizeof props / sizeof *props, props, &cls),
                       Napi::Function());
  Napi::Function out(env, cls);
  addon_data(env).tensor_class = Napi::Persistent(out);
  addon_data(env).signatures.add("Tensor#toTypedArray", 0);
  addon_data(env).signatures.add("Tensor#dispose", 0);
  return out;
}

Napi::Object wrap(Napi::Env env, at::Tensor t) {
  g_pending = &t;
  napi_value obj = nullptr;
  const napi_status status = napi_new_instance(env, addon_data(env).tensor_class.Value(), 0, nullptr, &obj);
  g_pending = nullptr;
  NAPI_THROW_IF_FAILED(env, status, Napi::Object());
  return Napi::Object(env, obj);
}

bool is_tensor(Napi::Env env, const Napi::Value& v) {
  bool tagged = false;
  return v.IsObject() && napi_check_object_type_tag(env, v, &kTensorTag, &tagged) == napi_ok && tagged;
}

const at::Tensor* unwrap(Napi::Env env, const Napi::Value& v) {
  // Only our constructor tags objects; other addons' wrapped objects are not ours to read.
  void* data = nullptr;
  if (!is_tensor(env, v) || napi_unwrap(env, v, &data) != napi_ok || !data) return nullptr;
  return &static_cast<Handle*>(data)->tensor;
}

}  // namespace tensor_handle

}  // namespace jfa::binding
