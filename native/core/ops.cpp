#include "core/ops.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ExpandUtils.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <cstring>
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

void check_shape(const std::vector<int64_t>& shape, const char* op) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw_range(std::string(op) + ": shape " + shape_str(shape) + " has a negative dimension");
    if (d != 0 && numel > INT64_MAX / d)
      throw_range(std::string(op) + ": shape " + shape_str(shape) + " has more elements than fit in int64");
    numel *= d;
  }
}

void check_float(const at::Tensor& t, const char* op, const char* what) {
  if (!c10::isFloatingType(t.scalar_type()))
    throw_type(std::string(op) + ": " + what + " must be a floating-point tensor, got " + dtype_name(t.scalar_type()));
}

void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op) {
  if (a.device() != b.device())
    throw_type(std::string(op) + ": tensors are on different devices (" + a.device().str() + " and " +
               b.device().str() + ")");
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

at::Tensor copy_from(const void* data, size_t bytes, const std::vector<int64_t>& shape, c10::ScalarType type,
                     const char* op) {
  check_shape(shape, op);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  if (t.nbytes() != bytes)
    throw_range(std::string(op) + ": shape " + shape_str(shape) + " holds " + std::to_string(t.numel()) +
                " elements but the data has " + std::to_string(bytes / c10::elementSize(type)));
  if (bytes) std::memcpy(t.data_ptr(), data, bytes);
  return t;
}

at::Tensor zeros(const std::vector<int64_t>& shape, c10::ScalarType type) {
  check_shape(shape, "zeros");
  return at::zeros(shape, at::TensorOptions().dtype(type));
}

at::Tensor randn(const std::vector<int64_t>& shape, c10::ScalarType type, std::optional<uint64_t> seed) {
  check_shape(shape, "randn");
  if (!c10::isFloatingType(type)) throw_type("randn: dtype must be floating-point, got " + dtype_name(type));
  auto options = at::TensorOptions().dtype(type);
  if (!seed) return at::randn(shape, options);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(*seed);
  return at::randn(shape, gen, options);
}

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
  check_float(a, "matmul", "a");
  check_float(b, "matmul", "b");
  if (a.scalar_type() != b.scalar_type())
    throw_type("matmul: dtypes differ (" + dtype_name(a.scalar_type()) + " and " + dtype_name(b.scalar_type()) + ")");
  check_same_device(a, b, "matmul");
  if (a.dim() == 0 || b.dim() == 0)
    throw_range("matmul: both operands need at least 1 dimension, got shapes " + shape_str(a.sizes()) + " and " +
                shape_str(b.sizes()));
  const int64_t inner_a = a.size(-1);
  const int64_t inner_b = b.dim() == 1 ? b.size(0) : b.size(-2);
  if (inner_a != inner_b)
    throw_range("matmul: shapes " + shape_str(a.sizes()) + " and " + shape_str(b.sizes()) +
                " cannot be multiplied (" + std::to_string(inner_a) + " columns vs " + std::to_string(inner_b) +
                " rows)");
  return at::matmul(a, b);
}

at::Tensor add(const at::Tensor& a, const at::Tensor& b, double alpha) {
  check_same_device(a, b, "add");
  try {
    at::infer_size(a.sizes(), b.sizes());
  } catch (const c10::Error&) {
    throw_range("add: shapes " + shape_str(a.sizes()) + " and " + shape_str(b.sizes()) +
                " cannot be broadcast together");
  }
  if (a.scalar_type() == c10::kBool && b.scalar_type() == c10::kBool)
    throw_type("add: both tensors are bool; cast one to a numeric dtype first");
  return at::add(a, b, alpha);
}

at::Tensor sum(const at::Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t n = a.dim();
  std::vector<bool> seen(static_cast<size_t>(n), false);
  for (int64_t d : dims) {
    if (d < -n || d >= n || n == 0)
      throw_range("sum: dim " + std::to_string(d) + " is out of range for a tensor of shape " +
                  shape_str(a.sizes()) + (n ? " (valid: " + std::to_string(-n) + ".." + std::to_string(n - 1) + ")" : ""));
    const auto k = static_cast<size_t>(d < 0 ? d + n : d);
    if (seen[k]) throw_range("sum: dim " + std::to_string(d) + " is listed twice");
    seen[k] = true;
  }
  if (dims.empty()) return keepdim ? a.sum(c10::IntArrayRef{}, true) : a.sum();
  return at::sum(a, dims, keepdim);
}

at::Tensor cast(const at::Tensor& a, c10::ScalarType type) { return a.to(type); }

}  // namespace jfa
