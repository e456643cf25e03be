#include "core/fused.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

namespace jfa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per parallel task: enough work per task to pay for the fork and join.
constexpr int64_t kGrain = 16;

// sum_j a[j] b[j] with eight independent partial sums (vectorisable without reassociation flags).
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const int64_t H = x.size(-1);
    const at::Tensor x2 = x.contiguous().view({-1, H});
    const int64_t n = x2.size(0);
    at::Tensor y = at::empty_like(x2);
    at::Tensor inv = at::empty({n}, x2.options());  // 1 / rms per row
    const float* X = x2.data_ptr<float>();
    const float* W = weight.data_ptr<float>();
    float* Y = y.data_ptr<float>();
    float* R = inv.data_ptr<float>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* xi = X + i * H;
        float* yi = Y + i * H;
        const float r = 1.0f / std::sqrt(dot(xi, xi, H) / static_cast<float>(H) + static_cast<float>(eps));
        R[i] = r;
        for (int64_t j = 0; j < H; ++j) yi[j] = W[j] * (xi[j] * r);
      }
    });
    ctx->save_for_backward({x2, weight, inv});
    ctx->saved_data["shape"] = x.sizes().vec();
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &weight = saved[1], &inv = saved[2];
    const int64_t H = x2.size(1), n = x2.size(0);
    const at::Tensor g = grads[0].contiguous().view({-1, H});
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    at::Tensor gx = need_x ? at::empty_like(x2) : at::Tensor();
    // The weight's gradient: one partial sum per thread, added up after.
    at::Tensor partial = need_w ? at::zeros({at::get_num_threads(), H}, x2.options()) : at::Tensor();
    const float *X = x2.data_ptr<float>(), *W = weight.data_ptr<float>(), *R = inv.data_ptr<float>(), *G = g.data_ptr<float>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      std::vector<float> u(H);
      float* gw = need_w ? partial.data_ptr<float>() + at::get_thread_num() * H : nullptr;
      for (int64_t i = begin; i < end; ++i) {
        const float *xi = X + i * H, *gi = G + i * H;
        const float r = R[i];
        if (gw)
          for (int64_t j = 0; j < H; ++j) gw[j] += gi[j] * (xi[j] * r);
        if (!need_x) continue;
        // u = w g; dx = r u - x r^3 (u . x) / H
        for (int64_t j = 0; j < H; ++j) u[j] = W[j] * gi[j];
        const float c = r * r * r * dot(u.data(), xi, H) / static_cast<float>(H);
        float* di = gx.data_ptr<float>() + i * H;
        for (int64_t j = 0; j < H; ++j) di[j] = r * u[j] - xi[j] * c;
      }
    });
    const auto shape = ctx->saved_data["shape"].toIntVector();
    return {need_x ? gx.view(shape) : at::Tensor(), need_w ? partial.sum(0) : at::Tensor(), at::Tensor()};
  }
};

// out1 = x1 c - x2 s, out2 = x2 c + x1 s per head (c, s: the first half of cos, sin; the second
// half is equal). Backward: g1 c + g2 s and g2 c - g1 s, the rotation by -angle.
void rotate(const float* X, const float* C, const float* S, float* Y, int64_t rows, int64_t heads, int64_t hd, float sign) {
  const int64_t half = hd / 2;
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float *c = C + row * hd, *s = S + row * hd;
      for (int64_t h = 0; h < heads; ++h) {
        const float* x = X + (row * heads + h) * hd;
        float* y = Y + (row * heads + h) * hd;
        for (int64_t j = 0; j < half; ++j) {
          const float a = x[j], b = x[j + half], sj = sign * s[j];
          y[j] = a * c[j] - b * sj;
          y[j + half] = b * c[j] + a * sj;
        }
      }
    }
  });
}

struct RopeFn : public torch::autograd::Function<RopeFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    at::Tensor y = at::empty_like(x);
    rotate(x.data_ptr<float>(), cos.data_ptr<float>(), sin.data_ptr<float>(), y.data_ptr<float>(), x.size(0) * x.size(1),
           x.size(2), x.size(3), 1.0f);
    ctx->save_for_backward({cos, sin});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grads[0].contiguous();
    at::Tensor gx = at::empty_like(g);
    rotate(g.data_ptr<float>(), saved[0].data_ptr<float>(), saved[1].data_ptr<float>(), gx.data_ptr<float>(),
           g.size(0) * g.size(1), g.size(2), g.size(3), -1.0f);
    return {gx, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool fused_applies(const at::Tensor& x) { return x.device().is_cpu() && x.scalar_type() == at::kFloat; }

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNormFn::apply(x, weight, eps);
}

at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return RopeFn::apply(x.contiguous(), cos.contiguous(), sin.contiguous());
}

}  // namespace jfa
