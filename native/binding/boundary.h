#pragma once
// The Node-API boundary: argument readers that throw precise TypeErrors/RangeErrors, and
// guard(), which turns every C++/c10 exception escaping an op into a JS error naming the op.
#include <napi.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/errors.h"

namespace jfa::binding {

// "number 3", "string 'x'", "Float32Array(5)", "undefined": for messages about wrong arguments.
std::string describe(const Napi::Value& v);

// What an escaping exception means for JS. Plain data, so worker threads can build it too.
struct Failure {
  ErrorKind kind;
  std::string message;
};
// Call inside a catch block: classifies the exception being handled, for `op`.
Failure describe_current_exception(const char* op);
Napi::Error js_error(Napi::Env env, const Failure& failure);
Napi::Error translate_current_exception(Napi::Env env, const char* op);

template <typename F>
Napi::Value guard(Napi::Env env, const char* op, F&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw translate_current_exception(env, op);
  }
}

// Readers for positional arguments. `name` is the parameter's name in the JS API.
const at::Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
std::vector<int64_t> shape_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
c10::ScalarType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, c10::ScalarType fallback);
std::optional<uint64_t> seed_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
double number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, double fallback);
bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool fallback);
// One of `choices` (a string); undefined gives `fallback`.
std::string choice_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                       std::initializer_list<const char*> choices, const char* fallback);
// An optional tensor argument: undefined or null gives an undefined tensor.
at::Tensor optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// A JS array of Tensors.
std::vector<at::Tensor> tensor_list(const Napi::CallbackInfo& info, const Napi::Value& v, const std::string& where);
// An integer list (e.g. dims); undefined gives an empty list.
std::vector<int64_t> int_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);

}  // namespace jfa::binding
