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

namespace jfa {
namespace {

void check_shape(const std::vector<int64_t>& shape, const char* op) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw_range(std::string(op) + ": shape " + shape_str(shape) + " has a negative dimension");
    if (d != 0 && numel > INT64_MAX / d)
      throw_range(std::string(op) + ": shape " + shape_str(shape) + " has more elements than fit in int64");
    numel *= d;
  }
}

}  // namespace

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
  check_float_tensor(a, "matmul", "a");
  check_same_kind(b, a, "matmul", "b", "a");
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
  check_same_device(b, a, "add", "b", "a");
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
