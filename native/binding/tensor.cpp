#include "binding/tensor.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <string>

#include "binding/boundary.h"
#include "core/ops.h"

namespace jfa::binding {

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// ---- The table -----------------------------------------------------------------------------------

// Reported on every insert and release: batching the reports into 256 KiB steps measured no faster.
void TensorTable::account(Napi::Env env, int64_t bytes) {
  live_bytes_ += bytes;
  int64_t ignored = 0;
  if (bytes) napi_adjust_external_memory(env, bytes, &ignored);  // the C call: it never throws
}

double TensorTable::insert(Napi::Env env, at::Tensor t) {
  uint32_t slot;
  if (free_ != kNone) {
    slot = free_;
    free_ = at(slot).next_free;
  } else {
    if (used_ == kSlots)
      throw Napi::RangeError::New(env, "too many live tensors (" + std::to_string(kSlots) +
                                           "): dispose tensors, use scope(), or let the GC collect them");
    if ((used_ & ((1u << kChunkBits) - 1)) == 0) chunks_.push_back(std::make_unique<Slot[]>(size_t{1} << kChunkBits));
    slot = used_++;
  }
  Slot& s = at(slot);
  s.generation += 1;
  s.bytes = t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
  s.tensor = std::move(t);
  s.live = true;
  ++live_;
  account(env, s.bytes);
  return static_cast<double>(s.generation * kSlots + slot);
}

TensorTable::State TensorTable::find(double id, at::Tensor** out) {
  // Integers from 2^24 (generation 1) up to the last exact double; NaN fails the first test.
  if (!(id >= static_cast<double>(kSlots)) || !(id <= static_cast<double>((kMaxGeneration + 1) * kSlots - 1)))
    return State::Foreign;
  const auto u = static_cast<uint64_t>(id);
  if (static_cast<double>(u) != id) return State::Foreign;
  const auto slot = static_cast<uint32_t>(u & (kSlots - 1));
  const uint64_t generation = u >> kSlotBits;
  if (slot >= used_) return State::Foreign;
  Slot& s = at(slot);
  if (generation == s.generation && s.live) {
    *out = &s.tensor;
    return State::Live;
  }
  return generation <= s.generation ? State::Disposed : State::Foreign;
}

bool TensorTable::release(Napi::Env env, double id) {
  at::Tensor* t = nullptr;
  if (find(id, &t) != State::Live) return false;
  const auto slot = static_cast<uint32_t>(static_cast<uint64_t>(id) & (kSlots - 1));
  Slot& s = at(slot);
  s.live = false;
  --live_;
  account(env, -s.bytes);
  // A slot whose generation is spent is never reused: an old id must not find a new tensor.
  if (s.generation < kMaxGeneration) {
    s.next_free = free_;
    free_ = slot;
  }
  at::Tensor freed = std::move(s.tensor);  // freed last, with the slot already consistent
  return true;
}

// ---- Handles -------------------------------------------------------------------------------------

namespace tensor_handle {

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  const double id = addon_data(env).tensors.insert(env, std::move(t));
  napi_value out = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_double(env, id, &out), Napi::Value());
  return Napi::Value(env, out);
}

namespace {

TensorTable::State lookup(Napi::Env env, const Napi::Value& v, at::Tensor** out) {
  double id = 0;
  if (napi_get_value_double(env, v, &id) != napi_ok) return TensorTable::State::Foreign;
  return addon_data(env).tensors.find(id, out);
}

}  // namespace

bool is_tensor(Napi::Env env, const Napi::Value& v) {
  at::Tensor* t = nullptr;
  return lookup(env, v, &t) != TensorTable::State::Foreign;
}

const at::Tensor* unwrap(Napi::Env env, const Napi::Value& v) {
  at::Tensor* t = nullptr;
  return lookup(env, v, &t) == TensorTable::State::Live ? t : nullptr;
}

namespace {

// The tensor an accessor reads: `op` names it in errors ("shape: the tensor is disposed").
const at::Tensor& receiver(const Napi::CallbackInfo& info, const char* op) {
  at::Tensor* t = nullptr;
  switch (lookup(info.Env(), info[0], &t)) {
    case TensorTable::State::Live: return *t;
    case TensorTable::State::Disposed: throw Napi::TypeError::New(info.Env(), std::string(op) + ": the tensor is disposed");
    default: throw Napi::TypeError::New(info.Env(), std::string(op) + ": t must be a Tensor, got " + describe(info[0]));
  }
}

Napi::Value shape_fn(const Napi::CallbackInfo& info) {
  const auto sizes = receiver(info, "shape").sizes();
  auto out = Napi::Array::New(info.Env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) out.Set(static_cast<uint32_t>(i), static_cast<double>(sizes[i]));
  return out;
}

Napi::Value dtype_fn(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(receiver(info, "dtype").scalar_type()));
}

Napi::Value device_fn(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), receiver(info, "device").device().str());
}

Napi::Value nbytes_fn(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(receiver(info, "nbytes").nbytes()));
}

Napi::Value is_disposed_fn(const Napi::CallbackInfo& info) {
  at::Tensor* t = nullptr;
  switch (lookup(info.Env(), info[0], &t)) {
    case TensorTable::State::Live: return Napi::Boolean::New(info.Env(), false);
    case TensorTable::State::Disposed: return Napi::Boolean::New(info.Env(), true);
    default: throw Napi::TypeError::New(info.Env(), "isDisposed: t must be a Tensor, got " + describe(info[0]));
  }
}

// Frees a live id; a disposed id is left alone (disposing twice, or the GC's late call after dispose()).
Napi::Value dispose_fn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double id = 0;
  if (napi_get_value_double(env, info[0], &id) == napi_ok && addon_data(env).tensors.release(env, id)) return env.Undefined();
  if (!is_tensor(env, info[0])) throw Napi::TypeError::New(env, "dispose: t must be a Tensor, got " + describe(info[0]));
  return env.Undefined();
}

template <typename T>
Napi::Value typed_array(Napi::Env env, size_t length, Napi::ArrayBuffer buffer, napi_typedarray_type type) {
  return Napi::TypedArrayOf<T>::New(env, length, buffer, 0, type);
}

Napi::Value to_typed_array_fn(const Napi::CallbackInfo& info) {
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
}

}  // namespace

void register_functions(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  export_functions(env, exports, signatures,
                   {
                       {"shape", 1, shape_fn},
                       {"dtype", 1, dtype_fn},
                       {"device", 1, device_fn},
                       {"nbytes", 1, nbytes_fn},
                       {"isDisposed", 1, is_disposed_fn},
                       {"toTypedArray", 1, to_typed_array_fn},
                       {"dispose", 1, dispose_fn},
                   });
}

}  // namespace tensor_handle
}  // namespace jfa::binding
