#include "core/checks.h"

#include <ATen/ops/isfinite.h>

namespace jfa {

void check_float_tensor(const at::Tensor& t, const char* op, const char* name) {
  if (!t.defined()) throw_type(std::string(op) + ": " + name + " is missing");
  if (!c10::isFloatingType(t.scalar_type()))
    throw_type(std::string(op) + ": " + name + " must be a floating-point tensor, got " + dtype_name(t.scalar_type()));
}

void check_same_kind(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name, const char* like_name) {
  check_float_tensor(t, op, name);
  if (t.scalar_type() != like.scalar_type())
    throw_type(std::string(op) + ": " + name + " is " + dtype_name(t.scalar_type()) + " but " + like_name + " is " +
               dtype_name(like.scalar_type()));
  if (t.device() != like.device())
    throw_type(std::string(op) + ": " + name + " is on " + t.device().str() + " but " + like_name + " is on " +
               like.device().str());
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
