#pragma once
// Tensor: a JS handle owning one at::Tensor. dispose() frees it now; otherwise the GC does.
// Its native size is reported to V8 as external memory so that the GC sees it.
#include <napi.h>

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>

namespace jfa::binding {

struct AddonData {
  Napi::FunctionReference tensor_class;
  std::atomic<int64_t> live_handles{0};
  std::atomic<int64_t> live_bytes{0};
};

class Tensor : public Napi::ObjectWrap<Tensor> {
 public:
  static Napi::Function define_class(Napi::Env env);
  // Wraps `t` in a new JS handle.
  static Napi::Object wrap(Napi::Env env, at::Tensor t);
  static bool is_tensor(Napi::Env env, const Napi::Value& v);

  explicit Tensor(const Napi::CallbackInfo& info);
  ~Tensor() override;

  bool disposed() const { return !live_; }
  const at::Tensor& tensor() const { return t_; }

 private:
  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value nbytes(const Napi::CallbackInfo& info);
  Napi::Value is_disposed(const Napi::CallbackInfo& info);
  Napi::Value to_typed_array(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  const at::Tensor& live_tensor(const char* op) const;
  void release();

  Napi::Env env_;
  at::Tensor t_;
  bool live_ = false;
  int64_t reported_bytes_ = 0;
};

AddonData& addon_data(Napi::Env env);

}  // namespace jfa::binding
