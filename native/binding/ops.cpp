// The op functions exported to JS: read arguments, call native/core, wrap results.
#include <napi.h>

#include <functional>
#include <memory>
#include <utility>

#include "binding/boundary.h"
#include "binding/ops.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "core/ops.h"
#include <ATen/core/grad_mode.h>
#include "core/runtime.h"

namespace jfa::binding {
namespace {

// Runs a tensor-producing task on the libuv pool; the closure owns copies of its input tensors, so
// disposing the JS handles meanwhile is safe.
Napi::Value run_async(Napi::Env env, const char* op, std::function<at::Tensor()> fn) {
  auto result = std::make_shared<at::Tensor>();
  return queue_async(env, {op, [fn = std::move(fn), result] { *result = fn(); }, {},
                           [result](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                             return tensor_handle::wrap(env, std::move(*result));
                           }, nullptr});
}

Napi::Value from_typed_array(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "tensor", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const Napi::Value v = info[0];
    if (!v.IsTypedArray())
      throw Napi::TypeError::New(env, "tensor: data must be a Float32Array, Float64Array, Int32Array, BigInt64Array or "
                                      "Uint8Array, got " + describe(v));
    auto array = v.As<Napi::TypedArray>();
    c10::ScalarType type;
    switch (array.TypedArrayType()) {
      case napi_float32_array: type = c10::kFloat; break;
      case napi_float64_array: type = c10::kDouble; break;
      case napi_int32_array: type = c10::kInt; break;
      case napi_bigint64_array: type = c10::kLong; break;
      case napi_uint8_array: type = c10::kByte; break;
      default:
        throw Napi::TypeError::New(env, "tensor: " + describe(v) + " is not supported; use Float32Array, "
                                        "Float64Array, Int32Array, BigInt64Array or Uint8Array");
    }
    const auto shape = shape_arg(info, 1, "tensor");
    const c10::Device device = device_arg(info, 2, "tensor");
    const auto* bytes = static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
    at::Tensor t = copy_from(bytes, array.ByteLength(), shape, type, "tensor");
    return tensor_handle::wrap(env, device.is_cpu() ? t : t.to(device));
  });
}

Napi::Value zeros_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "zeros", [&]() -> Napi::Value {
    const auto shape = shape_arg(info, 0, "zeros");
    const auto type = dtype_arg(info, 1, "zeros", c10::kFloat);
    const c10::Device device = device_arg(info, 2, "zeros");
    at::Tensor t = zeros(shape, type);
    return tensor_handle::wrap(info.Env(), device.is_cpu() ? t : t.to(device));
  });
}

Napi::Value randn_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "randn", [&]() -> Napi::Value {
    const auto shape = shape_arg(info, 0, "randn");
    const auto type = dtype_arg(info, 1, "randn", c10::kFloat);
    const auto seed = seed_arg(info, 2, "randn");
    const c10::Device device = device_arg(info, 3, "randn");
    // Drawn on the CPU, then moved: a seed gives torch.manual_seed(seed); torch.randn(shape)'s values on every device.
    at::Tensor t = randn(shape, type, seed);
    return tensor_handle::wrap(info.Env(), device.is_cpu() ? t : t.to(device));
  });
}

Napi::Value matmul_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "matmul", [&]() -> Napi::Value {
    return tensor_handle::wrap(info.Env(), matmul(tensor_arg(info, 0, "matmul", "a"), tensor_arg(info, 1, "matmul", "b")));
  });
}

Napi::Value matmul_async_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "matmulAsync", [&]() -> Napi::Value {
    at::Tensor a = tensor_arg(info, 0, "matmulAsync", "a");
    at::Tensor b = tensor_arg(info, 1, "matmulAsync", "b");
    return run_async(info.Env(), "matmulAsync", [a, b] { return matmul(a, b); });
  });
}

Napi::Value add_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "add", [&]() -> Napi::Value {
    const auto& a = tensor_arg(info, 0, "add", "a");
    const auto& b = tensor_arg(info, 1, "add", "b");
    return tensor_handle::wrap(info.Env(), add(a, b, number_arg(info, 2, "add", "alpha", 1.0)));
  });
}

Napi::Value sum_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "sum", [&]() -> Napi::Value {
    const auto& a = tensor_arg(info, 0, "sum", "a");
    const auto dims = int_list_arg(info, 1, "sum", "dims");
    return tensor_handle::wrap(info.Env(), sum(a, dims, bool_arg(info, 2, "sum", "keepdim", false)));
  });
}

Napi::Value to_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "to", [&]() -> Napi::Value {
    const auto& a = tensor_arg(info, 0, "to", "a");
    if (info[1].IsUndefined()) throw Napi::TypeError::New(info.Env(), "to: dtype is required");
    return tensor_handle::wrap(info.Env(), cast(a, dtype_arg(info, 1, "to", c10::kFloat)));
  });
}

// A copy on another device (the same tensor when it is there already, as torch's .to()).
Napi::Value to_device_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "toDevice", [&]() -> Napi::Value {
    const auto& a = tensor_arg(info, 0, "toDevice", "a");
    if (info[1].IsUndefined()) throw Napi::TypeError::New(info.Env(), "toDevice: device is required");
    return tensor_handle::wrap(info.Env(), a.to(device_arg(info, 1, "toDevice")));
  });
}

Napi::Value set_requires_grad_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "setRequiresGrad", [&]() -> Napi::Value {
    at::Tensor t = tensor_arg(info, 0, "setRequiresGrad", "a");
    const bool flag = bool_arg(info, 1, "setRequiresGrad", "flag", true);
    if (flag && !c10::isFloatingType(t.scalar_type()))
      throw_type("setRequiresGrad: only floating-point tensors can require gradients, got " + dtype_name(t.scalar_type()));
    t.set_requires_grad(flag);
    return info.Env().Undefined();
  });
}

Napi::Value requires_grad_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "requiresGrad", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), tensor_arg(info, 0, "requiresGrad", "a").requires_grad());
  });
}

Napi::Value grad_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "grad", [&]() -> Napi::Value {
    const at::Tensor& g = tensor_arg(info, 0, "grad", "a").grad();
    return g.defined() ? Napi::Value(tensor_handle::wrap(info.Env(), g)) : info.Env().Null();
  });
}

Napi::Value zero_grad_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "zeroGrad", [&]() -> Napi::Value {
    at::Tensor t = tensor_arg(info, 0, "zeroGrad", "a");
    t.mutable_grad().reset();
    return info.Env().Undefined();
  });
}

Napi::Value backward_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "backward", [&]() -> Napi::Value {
    const at::Tensor& t = tensor_arg(info, 0, "backward", "a");
    const at::Tensor gradient = optional_tensor_arg(info, 1, "backward", "gradient");
    if (!t.requires_grad())
      throw_type("backward: the tensor does not require gradients (no input of the computation required them)");
    if (!gradient.defined() && t.numel() != 1)
      throw_range("backward: a gradient is needed for a non-scalar tensor of shape " + shape_str(t.sizes()));
    if (gradient.defined() && gradient.sizes() != t.sizes())
      throw_range("backward: gradient shape " + shape_str(gradient.sizes()) + " differs from the tensor's " + shape_str(t.sizes()));
    t.backward(gradient);
    return info.Env().Undefined();
  });
}

Napi::Value copy_into_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "copyInto", [&]() -> Napi::Value {
    at::Tensor dst = tensor_arg(info, 0, "copyInto", "dst");
    const at::Tensor& src = tensor_arg(info, 1, "copyInto", "src");
    if (dst.sizes() != src.sizes())
      throw_range("copyInto: shapes differ (dst " + shape_str(dst.sizes()) + ", src " + shape_str(src.sizes()) + ")");
    at::NoGradGuard no_grad;  // writing a leaf's values is not part of any graph
    dst.copy_(src);
    return info.Env().Undefined();
  });
}

Napi::Value set_grad_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "setGrad", [&]() -> Napi::Value {
    at::Tensor t = tensor_arg(info, 0, "setGrad", "a");
    const at::Tensor grad = optional_tensor_arg(info, 1, "setGrad", "grad");
    if (grad.defined() && (grad.sizes() != t.sizes() || grad.scalar_type() != t.scalar_type()))
      throw_range("setGrad: grad " + shape_str(grad.sizes()) + " " + dtype_name(grad.scalar_type()) + " does not match the tensor's " +
                  shape_str(t.sizes()) + " " + dtype_name(t.scalar_type()));
    t.mutable_grad() = grad;
    return info.Env().Undefined();
  });
}

Napi::Value detach_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "detach", [&]() -> Napi::Value {
    return tensor_handle::wrap(info.Env(), tensor_arg(info, 0, "detach", "a").detach());
  });
}

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  export_functions(env, exports, signatures,
                   {
                       {"fromTypedArray", 3, from_typed_array}, {"zeros", 3, zeros_fn},
                       {"randn", 4, randn_fn},                  {"toDevice", 2, to_device_fn},
                       {"matmul", 2, matmul_fn},
                       {"matmulAsync", 2, matmul_async_fn},     {"add", 3, add_fn},
                       {"sum", 3, sum_fn},                      {"to", 2, to_fn},
                       {"setRequiresGrad", 2, set_requires_grad_fn}, {"requiresGrad", 1, requires_grad_fn},
                       {"grad", 1, grad_fn},                    {"zeroGrad", 1, zero_grad_fn},
                       {"backward", 2, backward_fn},            {"detach", 1, detach_fn},
                       {"copyInto", 2, copy_into_fn},           {"setGrad", 2, set_grad_fn},
                   });
}

}  // namespace jfa::binding
