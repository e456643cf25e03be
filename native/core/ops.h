#pragma once
// Checked tensor operations: each validates its inputs and throws jfa::Error with a message
// that names the op and the offending values, before libtorch sees them.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/checks.h"

namespace jfa {
// A new tensor of `type` holding a copy of `data` (numel(shape) elements of that type).
at::Tensor copy_from(const void* data, size_t bytes, const std::vector<int64_t>& shape, c10::ScalarType type,
                     const char* op);
at::Tensor zeros(const std::vector<int64_t>& shape, c10::ScalarType type);
// Standard normal samples. With a seed the values depend only on (seed, shape, dtype).
at::Tensor randn(const std::vector<int64_t>& shape, c10::ScalarType type, std::optional<uint64_t> seed);

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b);
at::Tensor add(const at::Tensor& a, const at::Tensor& b, double alpha);
// Sum over `dims` (all dims when empty).
at::Tensor sum(const at::Tensor& a, const std::vector<int64_t>& dims, bool keepdim);
at::Tensor cast(const at::Tensor& a, c10::ScalarType type);

}  // namespace jfa
