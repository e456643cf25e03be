#pragma once
// Argument checks shared by the kernels: each throws jfa::Error naming the op and the values.
#include <ATen/core/Tensor.h>

#include <string>

#include "core/errors.h"

namespace jfa {

std::string shape_str(c10::IntArrayRef shape);
std::string dtype_name(c10::ScalarType type);
// Accepts the names dtype_name() produces; throws a Type error listing them otherwise.
c10::ScalarType parse_dtype(const std::string& name, const char* op);

// `t` is defined, floating-point, and (if `like` is given) of like's dtype and device.
void check_float_tensor(const at::Tensor& t, const char* op, const char* name);
void check_same_kind(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name, const char* like_name);
// A trained float32 master beside lower-precision weights, or a tensor of those weights' own dtype:
// t must be floating point, float32 or `other`, on like's device. Errors read
// "<op>: <name> is <dtype>; <what> must be float32 or <like_name>'s <other>".
void check_master_kind(const at::Tensor& t, c10::ScalarType other, const at::Tensor& like, const char* op, const char* name,
                       const char* what, const char* like_name);
// `t` is on like's device, whatever the dtypes.
void check_same_device(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name, const char* like_name);
void check_dims(const at::Tensor& t, int64_t dims, const char* op, const char* name);
// NaN or infinity in `t`: called only after a result came out non-finite, to say which input caused it.
void check_finite(const at::Tensor& t, const char* op, const char* name);

}  // namespace jfa
