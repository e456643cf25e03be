#include "core/fused.h"

#include <ATen/Parallel.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
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

// ---- causal attention ----

namespace {

constexpr int64_t kBlock = 64;
// The kept probabilities of one call (b x heads x t x t floats) may use at most this much; longer
// sequences take SDPA, which keeps none.
constexpr int64_t kMaxKeptBytes = int64_t{512} << 20;

// The Fortran BLAS entry that libtorch exports (MKL in the pip wheels; resolved before any other
// BLAS the addon loads, as libtorch comes first among its libraries). ATen's own CPU gemm is not
// exported, and an ATen op per block would cost more in dispatch than the block's arithmetic.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

// Row-major C (M x N) = alpha op(A) op(B) + beta C, rows strided by lda, ldb, ldc; BLAS is
// column-major, so it computes C^T = op(B)^T op(A)^T. Inside a parallel region MKL uses one thread.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

// One (sample, head) matrix (t x head_dim) of a (b, heads, t, head_dim) tensor with unit last stride.
struct Rows {
  float* p;
  int64_t ld;
};
Rows rows_of(const at::Tensor& x, int64_t sample, int64_t head) {
  return {x.data_ptr<float>() + sample * x.stride(0) + head * x.stride(1), x.stride(2)};
}

at::Tensor unit_last(const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); }

// A (b, t, heads, head_dim) buffer seen as (b, heads, t, head_dim).
at::Tensor heads_view_buffer(const at::Tensor& like) {
  return at::empty({like.size(0), like.size(2), like.size(1), like.size(3)}, like.options()).transpose(1, 2);
}

// Per thread of a parallel region, one t x t scratch.
struct Scratch {
  explicit Scratch(int64_t t, const at::TensorOptions& options) : t_(t), options_(options), buffers_(at::get_num_threads()) {}
  float* get() {
    at::Tensor& b = buffers_.at(at::get_thread_num());
    if (!b.defined()) b = at::empty({t_, t_}, options_);
    return b.data_ptr<float>();
  }
  at::Tensor tensor() { return buffers_.at(at::get_thread_num()); }

 private:
  int64_t t_;
  at::TensorOptions options_;
  std::vector<at::Tensor> buffers_;
};

struct CausalAttentionFn : public torch::autograd::Function<CausalAttentionFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& mask_or_empty, double scale) {
    const at::Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), hd = q.size(3);
    const uint8_t* mask = mask_or_empty.numel() ? mask_or_empty.data_ptr<uint8_t>() : nullptr;
    at::Tensor out = heads_view_buffer(q);
    at::Tensor probs = at::empty({b, heads, t, t}, q.options());
    Scratch scratch(t, q.options());
    const float lowest = -std::numeric_limits<float>::infinity();
    at::parallel_for(0, b * heads, 1, [&](int64_t begin, int64_t end) {
      float* S = scratch.get();
      for (int64_t pair = begin; pair < end; ++pair) {
        const int64_t s = pair / heads, h = pair % heads;
        const Rows Q = rows_of(q, s, h), K = rows_of(k, s, h), V = rows_of(v, s, h), O = rows_of(out, s, h);
        const uint8_t* m = mask ? mask + s * t : nullptr;
        // Scores of each row block against the keys it can see; the rest of its rows is masked.
        for (int64_t r0 = 0; r0 < t; r0 += kBlock) {
          const int64_t rows = std::min(kBlock, t - r0), e = r0 + rows;
          gemm(false, true, rows, e, hd, static_cast<float>(scale), Q.p + r0 * Q.ld, Q.ld, K.p, K.ld, 0.0f, S + r0 * t, t);
          for (int64_t i = r0; i < e; ++i) {
            float* row = S + i * t;
            std::fill(row + i + 1, row + t, lowest);
            if (m)
              for (int64_t j = 0; j <= i; ++j)
                if (!m[j]) row[j] = lowest;
          }
        }
        at::Tensor P = probs.select(0, s).select(0, h);
        at::_softmax_out(P, scratch.tensor(), -1, false);
        const float* Pp = P.data_ptr<float>();
        for (int64_t r0 = 0; r0 < t; r0 += kBlock) {
          const int64_t rows = std::min(kBlock, t - r0), e = r0 + rows;
          gemm(false, false, rows, hd, e, 1.0f, Pp + r0 * t, t, V.p, V.ld, 0.0f, O.p + r0 * O.ld, O.ld);
        }
      }
    });
    ctx->save_for_backward({q, k, v, probs});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const at::Tensor g = unit_last(grads[0]);
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), hd = q.size(3);
    at::Tensor dq = heads_view_buffer(q), dk = heads_view_buffer(q), dv = heads_view_buffer(q);
    Scratch scratch(t, q.options());
    at::parallel_for(0, b * heads, 1, [&](int64_t begin, int64_t end) {
      float* dS = scratch.get();
      for (int64_t pair = begin; pair < end; ++pair) {
        const int64_t s = pair / heads, h = pair % heads;
        const Rows Q = rows_of(q, s, h), K = rows_of(k, s, h), V = rows_of(v, s, h), G = rows_of(g, s, h);
        const Rows dQ = rows_of(dq, s, h), dK = rows_of(dk, s, h), dV = rows_of(dv, s, h);
        const float* P = probs.data_ptr<float>() + pair * t * t;
        for (int64_t r0 = 0; r0 < t; r0 += kBlock) {
          const int64_t rows = std::min(kBlock, t - r0), e = r0 + rows;
          // dP = dO V^T, then the softmax's backward in place: dS = P (dP - sum_j P dP).
          gemm(false, true, rows, e, hd, 1.0f, G.p + r0 * G.ld, G.ld, V.p, V.ld, 0.0f, dS + r0 * t, t);
          for (int64_t i = r0; i < e; ++i) {
            const float* p = P + i * t;
            float* d = dS + i * t;
            float dot = 0.0f;
            for (int64_t j = 0; j <= i; ++j) dot += p[j] * d[j];
            for (int64_t j = 0; j < e; ++j) d[j] = p[j] * (d[j] - dot);
          }
          gemm(false, false, rows, hd, e, scale, dS + r0 * t, t, K.p, K.ld, 0.0f, dQ.p + r0 * dQ.ld, dQ.ld);
        }
        // Keys c0.. are seen by the queries from c0 on.
        for (int64_t c0 = 0; c0 < t; c0 += kBlock) {
          const int64_t cols = std::min(kBlock, t - c0), n = t - c0;
          gemm(true, false, cols, hd, n, 1.0f, P + c0 * t + c0, t, G.p + c0 * G.ld, G.ld, 0.0f, dV.p + c0 * dV.ld, dV.ld);
          gemm(true, false, cols, hd, n, scale, dS + c0 * t + c0, t, Q.p + c0 * Q.ld, Q.ld, 0.0f, dK.p + c0 * dK.ld, dK.ld);
        }
      }
    });
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool causal_attention_applies(int64_t batch, int64_t heads, int64_t t, const at::TensorOptions& options,
                              const at::Tensor& key_mask) {
  if (!options.device().is_cpu() || options.dtype() != at::kFloat) return false;
  if (t < 2 || batch * heads * t * t * 4 > kMaxKeptBytes) return false;
  if (key_mask.defined()) {
    if (key_mask.dim() != 2 || key_mask.size(0) != batch || key_mask.size(1) != t) return false;
    if (key_mask.select(1, 0).eq(0).any().item<bool>()) return false;
  }
  return true;
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                            double scale) {
  const bool ready = key_mask.defined() && key_mask.scalar_type() == at::kByte && key_mask.is_contiguous();
  const at::Tensor mask = !key_mask.defined() ? at::empty({0}, q.options().dtype(at::kByte))
                          : ready             ? key_mask
                                              : key_mask.ne(0).to(at::kByte).contiguous();
  return CausalAttentionFn::apply(q, k, v, mask, scale);
}

}  // namespace jfa
