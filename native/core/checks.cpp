#include "core/checks.h"

#include <ATen/ops/isfinite.h>

#include <sstream>

namespace jfa {
namespace {

struct DtypeName {
  const char* name;
  c10::ScalarType type;
};

constexpr DtypeName kDtypes[] = {
    {"float32", c10::kFloat}, {"float64", c10::kDouble}, {"bfloat16", c10::kBFloat16},
    {"float16", c10::kHalf},  {"int32", c10::kInt},      {"int64", c10::kLong},
    {"uint8", c10::kByte},    {"bool", c10::kBool},
};

std::string dtype_list() {
  std::string out;
  for (const auto& d : kDtypes) {
    if (!out.empty()) out += ", ";
    out += d.name;
  }
  return out;
}

}  // namespace

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

std::string dtype_name(c10::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  return c10::toString(type);
}

c10::ScalarType parse_dtype(const std::string& name, const char* op) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw_type(std::string(op) + ": unknown dtype '" + name + "'; expected one of " + dtype_list());
}

void check_float_tensor(const at::Tensor& t, const char* op, const char* name) {
  if (!t.defined()) throw_type(std::string(op) + ": " + name + " is missing");
  if (!c10::isFloatingType(t.scalar_type()))
    throw_type(std::string(op) + ": " + name + " must be a floating-point tensor, got " + dtype_name(t.scalar_type()));
}

void check_same_device(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name, const char* like_name) {
  if (t.device() != like.device())
    throw_type(std::string(op) + ": " + name + " is on " + t.device().str() + " but " + like_name + " is on " +
               like.device().str());
}

void check_same_kind(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name, const char* like_name) {
  check_float_tensor(t, op, name);
  if (t.scalar_type() != like.scalar_type())
    throw_type(std::string(op) + ": " + name + " is " + dtype_name(t.scalar_type()) + " but " + like_name + " is " +
               dtype_name(like.scalar_type()));
  check_same_device(t, like, op, name, like_name);
}

void check_master_kind(const at::Tensor& t, c10::ScalarType other, const at::Tensor& like, const char* op, const char* name,
                       const char* what, const char* like_name) {
  check_float_tensor(t, op, name);
  if (t.scalar_type() != at::kFloat && t.scalar_type() != other)
    throw_type(std::string(op) + ": " + name + " is " + dtype_name(t.scalar_type()) + "; " + what + " must be float32 or " + like_name +
               "'s " + dtype_name(other));
  check_same_device(t, like, op, name, like_name);
}

void check_dims(const at::Tensor& t, int64_t dims, const char* op, const char* name) {
  if (t.dim() != dims)
    throw_range(std::string(op) + ": " + name + " must have " + std::to_string(dims) + " dimensions, got shape " +
                shape_str(t.sizes()));
}

void check_finite(const at::Tensor& t, const char* op, const char* name) {
  if (!at::isfinite(t).all().item<bool>())
    throw_range(std::string(op) + ": " + name + " contains NaN or infinity");
}

}  // namespace jfa
