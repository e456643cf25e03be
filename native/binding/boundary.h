#pragma once
// The Node-API boundary: argument readers that throw precise TypeErrors/RangeErrors, options
// objects, guard(), which turns every C++/c10 exception escaping an op into a JS error naming the
// op, and the exports' signatures (the most arguments each takes, enforced, and listed for the test
// that checks lib/native.ts against them).
#include <napi.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
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

// The largest integer a JS number holds exactly (2^53 - 1).
constexpr int64_t kMaxInteger = 9007199254740991;

// The one integer reader: a JS number that is an integer in [min, max], else a TypeError (not a
// number) or RangeError (fractional, out of range) naming `where` and the value.
int64_t integer_value(Napi::Env env, const Napi::Value& v, const std::string& where, int64_t min = -kMaxInteger,
                      int64_t max = kMaxInteger);

// Readers for positional arguments. `name` is the parameter's name in the JS API.
const at::Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// An optional tensor argument: undefined or null gives an undefined tensor.
at::Tensor optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// An integer in [min, max]; undefined gives `fallback`.
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t fallback,
                int64_t min = -kMaxInteger, int64_t max = kMaxInteger);
std::vector<int64_t> shape_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
c10::ScalarType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, c10::ScalarType fallback);
// A device name ("cpu", "cuda", "cuda:1"; core/device.h checks it is there); undefined gives the CPU.
c10::Device device_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
std::optional<uint64_t> seed_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
double number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, double fallback);
// A finite number that must be given.
double required_number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool fallback);
// One of `choices` (a string); undefined gives `fallback`.
std::string choice_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                       std::initializer_list<const char*> choices, const char* fallback);
// A JS array of Tensors.
std::vector<at::Tensor> tensor_list(const Napi::CallbackInfo& info, const Napi::Value& v, const std::string& where);
// An integer list (e.g. dims); undefined gives an empty list.
std::vector<int64_t> int_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);

// An options object, read once into C++ values; each reader names "op: options.field" in errors.
class Options {
 public:
  // `where` names the object in its own error; a field's errors say prefix + field ("op: latent.indices").
  Options(Napi::Env env, const Napi::Value& v, std::string where, std::string prefix);
  // Argument i, fields named "op: field"; undefined reads as an empty object (every field takes its
  // fallback) unless `required`.
  Options(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name = "options", bool required = false);

  bool has(const char* name) const;
  Napi::Value get(const char* name) const;
  int64_t integer(const char* name, int64_t fallback, int64_t min = -kMaxInteger, int64_t max = kMaxInteger) const;
  int64_t required_integer(const char* name, int64_t min = -kMaxInteger, int64_t max = kMaxInteger) const;
  double number(const char* name, double fallback) const;
  double required_number(const char* name) const;
  bool boolean(const char* name, bool fallback) const;
  bool required_boolean(const char* name) const;
  std::string string(const char* name, const char* fallback) const;
  // A null fallback: the field is required.
  std::string choice(const char* name, std::initializer_list<const char*> choices, const char* fallback) const;
  std::optional<uint64_t> seed(const char* name) const;
  uint64_t required_seed(const char* name) const;
  at::Tensor tensor(const char* name) const;
  at::Tensor optional_tensor(const char* name) const;  // undefined or null: an undefined tensor
  std::vector<at::Tensor> tensors(const char* name) const;  // an array of Tensors (required)
  std::vector<int64_t> integers(const char* name) const;
  std::vector<Options> objects(const char* name) const;      // an array of objects
  std::optional<Options> object(const char* name) const;     // undefined or null: none

 private:
  std::string where(const char* name) const;
  Napi::Env env_;
  std::string prefix_;
  Napi::Object object_;
};

// ---- Signatures ---------------------------------------------------------------------------------

// More arguments than `arity`: a TypeError naming the op (a stale caller or a typo'd call).
void check_arity(const Napi::CallbackInfo& info, size_t arity, const char* op);

// Every export's arity by name: "fn" for functions, "Class.fn" for statics, "Class#fn" for methods.
class Signatures {
 public:
  void add(const std::string& name, size_t arity);
  Napi::Object to_js(Napi::Env env) const;

 private:
  std::map<std::string, size_t> arities_;
};

struct Export {
  const char* name;
  size_t arity;
  Napi::Value (*callback)(const Napi::CallbackInfo&);
};

// Exports each function with its arity enforced and recorded.
void export_functions(Napi::Env env, Napi::Object exports, Signatures& signatures, std::initializer_list<Export> functions);

// ObjectWrap classes: methods whose arity is enforced and recorded, as Class#name (or Class.name).
template <typename T>
class CheckedWrap : public Napi::ObjectWrap<T> {
 public:
  using Napi::ObjectWrap<T>::ObjectWrap;
  using Method = Napi::Value (T::*)(const Napi::CallbackInfo&);
  using StaticMethodFn = Napi::Value (*)(const Napi::CallbackInfo&);

 protected:
  template <Method Fn, size_t Arity>
  Napi::Value checked(const Napi::CallbackInfo& info) {
    check_arity(info, Arity, static_cast<const char*>(info.Data()));
    return (static_cast<T*>(this)->*Fn)(info);
  }
  template <StaticMethodFn Fn, size_t Arity>
  static Napi::Value checked_static(const Napi::CallbackInfo& info) {
    check_arity(info, Arity, static_cast<const char*>(info.Data()));
    return Fn(info);
  }
  // `label` ("Model.logits") names the method in errors and must outlive the class (a literal).
  template <Method Fn, size_t Arity>
  static typename Napi::ObjectWrap<T>::PropertyDescriptor method(Signatures& signatures, const char* cls, const char* name,
                                                                 const char* label) {
    signatures.add(std::string(cls) + "#" + name, Arity);
    return Napi::ObjectWrap<T>::InstanceMethod(
        name, static_cast<Method>(&CheckedWrap::template checked<Fn, Arity>), napi_default, const_cast<char*>(label));
  }
  template <StaticMethodFn Fn, size_t Arity>
  static typename Napi::ObjectWrap<T>::PropertyDescriptor static_method(Signatures& signatures, const char* cls,
                                                                        const char* name, const char* label) {
    signatures.add(std::string(cls) + "." + name, Arity);
    return Napi::ObjectWrap<T>::StaticMethod(name, &CheckedWrap::template checked_static<Fn, Arity>, napi_default,
                                             const_cast<char*>(label));
  }
};

}  // namespace jfa::binding
