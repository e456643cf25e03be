// The Node-API boundary: errors, argument readers, options objects and export signatures.
#include "binding/boundary.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "binding/tensor.h"
#include "core/checks.h"
#include "core/device.h"
#include "core/ops.h"

namespace jfa::binding {

// ---- Boundary: errors ------------------------------------------------------------------------

namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Failure describe_current_exception(const char* op) {
  const std::string prefix = std::string(op) + ": ";
  try {
    throw;
  } catch (const jfa::Error& e) {
    return {e.kind(), e.what()};
  } catch (const c10::OutOfMemoryError& e) {
    return {ErrorKind::Range, prefix + "out of memory: " + trimmed(e.what_without_backtrace())};
  } catch (const c10::TypeError& e) {
    return {ErrorKind::Type, prefix + trimmed(e.what_without_backtrace())};
  } catch (const c10::IndexError& e) {
    return {ErrorKind::Range, prefix + trimmed(e.what_without_backtrace())};
  } catch (const c10::ValueError& e) {
    return {ErrorKind::Range, prefix + trimmed(e.what_without_backtrace())};
  } catch (const c10::Error& e) {
    return {ErrorKind::Generic, prefix + trimmed(e.what_without_backtrace())};
  } catch (const std::bad_alloc&) {
    return {ErrorKind::Range, prefix + "out of memory"};
  } catch (const std::exception& e) {
    return {ErrorKind::Generic, prefix + e.what()};
  } catch (...) {
    return {ErrorKind::Generic, prefix + "unknown native error"};
  }
}

Napi::Error js_error(Napi::Env env, const Failure& failure) {
  switch (failure.kind) {
    case ErrorKind::Type: return Napi::TypeError::New(env, failure.message);
    case ErrorKind::Range: return Napi::RangeError::New(env, failure.message);
    default: return Napi::Error::New(env, failure.message);
  }
}

Napi::Error translate_current_exception(Napi::Env env, const char* op) {
  return js_error(env, describe_current_exception(op));
}

// ---- Boundary: arguments ---------------------------------------------------------------------

std::string describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return std::string("boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
    case napi_number: {
      const double d = v.As<Napi::Number>().DoubleValue();
      if (std::isnan(d)) return "number NaN";
      if (std::isinf(d)) return d > 0 ? "number Infinity" : "number -Infinity";
      if (d == std::floor(d) && std::fabs(d) < 1e15) return "number " + std::to_string(static_cast<int64_t>(d));
      // the shortest form that reads back as the same double, as JS prints it
      char text[32];
      for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(text, sizeof text, "%.*g", precision, d);
        if (std::strtod(text, nullptr) == d) break;
      }
      return std::string("number ") + text;
    }
    case napi_string: return "string '" + v.As<Napi::String>().Utf8Value() + "'";
    case napi_bigint: return "bigint";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    default: break;
  }
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",    "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto ta = v.As<Napi::TypedArray>();
    const auto type = static_cast<size_t>(ta.TypedArrayType());
    const char* name = type < sizeof names / sizeof *names ? names[type] : "TypedArray";
    return std::string(name) + "(" + std::to_string(ta.ElementLength()) + ")";
  }
  if (v.IsArray()) return "Array(" + std::to_string(v.As<Napi::Array>().Length()) + ")";
  return "object";
}

// ---- Readers of one value, named by `where` ("op: name") in their errors -------------------------

int64_t integer_value(Napi::Env env, const Napi::Value& v, const std::string& where, int64_t min, int64_t max) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, where + " must be an integer, got " + describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  const bool integral = std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= static_cast<double>(kMaxInteger);
  if (!integral || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    std::string range;
    if (min == 0 && max == kMaxInteger) range = "a non-negative integer";
    else if (min == 1 && max == kMaxInteger) range = "a positive integer";
    else if (min <= -kMaxInteger && max == kMaxInteger) range = "an integer";
    else if (max == kMaxInteger) range = "an integer >= " + std::to_string(min);
    else range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    throw Napi::RangeError::New(env, where + " must be " + range + ", got " + describe(v));
  }
  return static_cast<int64_t>(d);
}

namespace {

double number_value(Napi::Env env, const Napi::Value& v, const std::string& where) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, where + " must be a number, got " + describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw Napi::RangeError::New(env, where + " must be finite, got " + describe(v));
  return d;
}

bool bool_value(Napi::Env env, const Napi::Value& v, const std::string& where) {
  if (!v.IsBoolean()) throw Napi::TypeError::New(env, where + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

uint64_t seed_value(Napi::Env env, const Napi::Value& v, const std::string& where) {
  if (v.IsBigInt()) {
    bool lossless = false;
    const uint64_t seed = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, where + " must fit in 64 unsigned bits");
    return seed;
  }
  return static_cast<uint64_t>(integer_value(env, v, where, 0));
}

std::string choice_value(Napi::Env env, const Napi::Value& v, const std::string& where, std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) list += std::string(list.empty() ? "" : ", ") + "'" + c + "'";
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* c : choices)
      if (s == c) return s;
  }
  throw Napi::TypeError::New(env, where + " must be one of " + list + ", got " + describe(v));
}

const at::Tensor& tensor_value(Napi::Env env, const Napi::Value& v, const std::string& where) {
  if (const at::Tensor* t = tensor_handle::unwrap(env, v)) return *t;
  if (tensor_handle::is_tensor(env, v)) throw Napi::TypeError::New(env, where + " is a disposed tensor");
  throw Napi::TypeError::New(env, where + " must be a Tensor, got " + describe(v));
}

std::vector<int64_t> integer_list(Napi::Env env, const Napi::Value& v, const std::string& where) {
  if (v.IsUndefined()) return {};
  if (v.IsNumber()) return {integer_value(env, v, where, -kMaxInteger)};
  if (!v.IsArray()) throw Napi::TypeError::New(env, where + " must be an integer or an array of integers, got " + describe(v));
  auto array = v.As<Napi::Array>();
  std::vector<int64_t> out(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k)
    out[k] = integer_value(env, array.Get(k), where + "[" + std::to_string(k) + "]", -kMaxInteger);
  return out;
}

std::string named(const char* op, const char* name) { return std::string(op) + ": " + name; }

}  // namespace

// ---- Positional arguments -----------------------------------------------------------------------

// The readers called on every op take their fast path before naming the argument: the name is a
// string built only for an error.

const at::Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (const at::Tensor* t = tensor_handle::unwrap(info.Env(), info[i])) return *t;
  return tensor_value(info.Env(), info[i], named(op, name));
}

at::Tensor optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (info[i].IsUndefined() || info[i].IsNull()) return at::Tensor();
  return tensor_arg(info, i, op, name);
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t fallback, int64_t min,
                int64_t max) {
  if (info[i].IsUndefined()) return fallback;
  return integer_value(info.Env(), info[i], named(op, name), min, max);
}

std::vector<int64_t> shape_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Napi::Env env = info.Env();
  const Napi::Value v = info[i];
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": shape must be an array of integers, got " + describe(v));
  auto array = v.As<Napi::Array>();
  std::vector<int64_t> shape(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k)
    shape[k] = integer_value(env, array.Get(k), std::string(op) + ": shape[" + std::to_string(k) + "]", 0);
  return shape;
}

c10::ScalarType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, c10::ScalarType fallback) {
  const Napi::Value v = info[i];
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": dtype must be a string, got " + describe(v));
  return parse_dtype(v.As<Napi::String>().Utf8Value(), op);
}

c10::Device device_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const Napi::Value v = info[i];
  if (v.IsUndefined()) return c10::Device(c10::kCPU);
  if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": device must be a string, got " + describe(v));
  return parse_device(v.As<Napi::String>().Utf8Value(), op);
}

std::optional<uint64_t> seed_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info[i].IsUndefined()) return std::nullopt;
  return seed_value(info.Env(), info[i], named(op, "seed"));
}

double number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, double fallback) {
  return info[i].IsUndefined() ? fallback : required_number_arg(info, i, op, name);
}

double required_number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const Napi::Value v = info[i];
  double d = 0;
  if (napi_get_value_double(info.Env(), v, &d) == napi_ok && std::isfinite(d)) return d;
  return number_value(info.Env(), v, named(op, name));
}

bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool fallback) {
  const Napi::Value v = info[i];
  if (v.IsUndefined()) return fallback;
  bool b = false;
  if (napi_get_value_bool(info.Env(), v, &b) == napi_ok) return b;
  return bool_value(info.Env(), v, named(op, name));
}

std::string choice_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name,
                       std::initializer_list<const char*> choices, const char* fallback) {
  return info[i].IsUndefined() ? fallback : choice_value(info.Env(), info[i], named(op, name), choices);
}

std::vector<at::Tensor> tensor_list(const Napi::CallbackInfo& info, const Napi::Value& v, const std::string& where) {
  Napi::Env env = info.Env();
  if (!v.IsArray()) throw Napi::TypeError::New(env, where + " must be an array of Tensors, got " + describe(v));
  auto array = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k) out.push_back(tensor_value(env, array.Get(k), where + "[" + std::to_string(k) + "]"));
  return out;
}

std::vector<int64_t> int_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (info[i].IsUndefined()) return {};
  return integer_list(info.Env(), info[i], named(op, name));
}

// ---- Options objects ----------------------------------------------------------------------------

Options::Options(Napi::Env env, const Napi::Value& v, std::string where, std::string prefix)
    : env_(env), prefix_(std::move(prefix)) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction())
    throw Napi::TypeError::New(env, where + " must be an object, got " + describe(v));
  object_ = v.As<Napi::Object>();
}

Options::Options(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool required)
    : Options(info.Env(), !required && info[i].IsUndefined() ? Napi::Value(Napi::Object::New(info.Env())) : info[i],
              named(op, name), std::string(op) + ": ") {}

Napi::Value Options::get(const char* name) const { return object_.Get(name); }
bool Options::has(const char* name) const { return !get(name).IsUndefined(); }
std::string Options::where(const char* name) const { return prefix_ + name; }

int64_t Options::integer(const char* name, int64_t fallback, int64_t min, int64_t max) const {
  return has(name) ? required_integer(name, min, max) : fallback;
}
int64_t Options::required_integer(const char* name, int64_t min, int64_t max) const {
  return integer_value(env_, get(name), where(name), min, max);
}
double Options::number(const char* name, double fallback) const { return has(name) ? required_number(name) : fallback; }
double Options::required_number(const char* name) const { return number_value(env_, get(name), where(name)); }
bool Options::boolean(const char* name, bool fallback) const { return has(name) ? required_boolean(name) : fallback; }
bool Options::required_boolean(const char* name) const { return bool_value(env_, get(name), where(name)); }
std::string Options::string(const char* name, const char* fallback) const {
  const Napi::Value v = get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(env_, where(name) + " must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}
std::string Options::choice(const char* name, std::initializer_list<const char*> choices, const char* fallback) const {
  return has(name) || !fallback ? choice_value(env_, get(name), where(name), choices) : fallback;
}
std::optional<uint64_t> Options::seed(const char* name) const {
  if (!has(name)) return std::nullopt;
  return required_seed(name);
}
uint64_t Options::required_seed(const char* name) const { return seed_value(env_, get(name), where(name)); }
at::Tensor Options::tensor(const char* name) const { return tensor_value(env_, get(name), where(name)); }
at::Tensor Options::optional_tensor(const char* name) const {
  const Napi::Value v = get(name);
  return v.IsUndefined() || v.IsNull() ? at::Tensor() : tensor(name);
}
std::vector<at::Tensor> Options::tensors(const char* name) const {
  const Napi::Value v = get(name);
  if (!v.IsArray()) throw Napi::TypeError::New(env_, where(name) + " must be an array of Tensors, got " + describe(v));
  auto array = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k) out.push_back(tensor_value(env_, array.Get(k), where(name) + "[" + std::to_string(k) + "]"));
  return out;
}
std::vector<int64_t> Options::integers(const char* name) const { return integer_list(env_, get(name), where(name)); }
std::vector<Options> Options::objects(const char* name) const {
  const Napi::Value v = get(name);
  if (!v.IsArray()) throw Napi::TypeError::New(env_, where(name) + " must be an array of objects, got " + describe(v));
  auto array = v.As<Napi::Array>();
  std::vector<Options> out;
  for (uint32_t k = 0; k < array.Length(); ++k) {
    const std::string item = where(name) + "[" + std::to_string(k) + "]";
    out.emplace_back(env_, array.Get(k), item, item + ".");
  }
  return out;
}
std::optional<Options> Options::object(const char* name) const {
  const Napi::Value v = get(name);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return Options(env_, v, where(name), where(name) + ".");
}

// ---- Signatures ---------------------------------------------------------------------------------

void check_arity(const Napi::CallbackInfo& info, size_t arity, const char* op) {
  if (info.Length() > arity)
    throw Napi::TypeError::New(info.Env(), std::string(op) + " takes at most " + std::to_string(arity) + " argument" +
                                               (arity == 1 ? "" : "s") + ", got " + std::to_string(info.Length()));
}

void Signatures::add(const std::string& name, size_t arity) { arities_[name] = arity; }

Napi::Object Signatures::to_js(Napi::Env env) const {
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [name, arity] : arities_) out.Set(name, static_cast<double>(arity));
  return out;
}

void export_functions(Napi::Env env, Napi::Object exports, Signatures& signatures, std::initializer_list<Export> functions) {
  for (const Export& f : functions) {
    signatures.add(f.name, f.arity);
    exports.Set(f.name, Napi::Function::New(
                            env,
                            [f](const Napi::CallbackInfo& info) -> Napi::Value {
                              check_arity(info, f.arity, f.name);
                              return f.callback(info);
                            },
                            f.name));
  }
}

}  // namespace jfa::binding
