#include "core/skinny.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <algorithm>

#include "core/lane_sums.h"

namespace jfa {
namespace {

constexpr int64_t kGroup = 4;     // rows of x a kernel takes at once (4 x 4 accumulators: 8 loads per 16 FMAs)
constexpr int64_t kMaxRows = 64;  // rows of x taken, in groups, while a block of W is in cache

// R rows of W at a time against all M rows of x (M * R <= 16): M * R accumulators of 16 floats in
// registers, each one output's chain of FMAs along K, their lanes summed together (lane_sums).
template <int M, int R>
__attribute__((target("avx512f,fma"))) void rows(const float* x, int64_t K, const float* W, int64_t n0, int64_t n1, float* y,
                                                 int64_t N) {
  static_assert(M * R <= 16);
  const int64_t tail = K % 16;
  const __mmask16 mask = static_cast<__mmask16>((1u << tail) - 1u);
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 xv[M];
      for (int m = 0; m < M; ++m) xv[m] = _mm512_loadu_ps(x + m * K + k);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_loadu_ps(W + (n + r) * K + k);
        for (int m = 0; m < M; ++m) acc[r * M + m] = _mm512_fmadd_ps(wv, xv[m], acc[r * M + m]);
      }
    }
    if (tail) {
      __m512 xv[M];
      for (int m = 0; m < M; ++m) xv[m] = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_maskz_loadu_ps(mask, W + (n + r) * K + k);
        for (int m = 0; m < M; ++m) acc[r * M + m] = _mm512_fmadd_ps(wv, xv[m], acc[r * M + m]);
      }
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, lane_sums(acc));
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) y[m * N + n + r] = sums[r * M + m];
  }
  if (n < n1) rows<M, 1>(x, K, W, n, n1, y, N);
}

// Rows of W per pass for M rows of x: 16, 8, 5 or 4.
template <int M>
void run(const float* x, int64_t K, const float* W, int64_t n0, int64_t n1, float* y, int64_t N) {
  rows<M, 16 / M>(x, K, W, n0, n1, y, N);
}

using Kernel = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);

template <int... Ms>
Kernel pick(int64_t m, std::integer_sequence<int, Ms...>) {
  Kernel out = nullptr;
  ((m == Ms + 1 ? (out = &run<Ms + 1>, true) : false) || ...);
  return out;
}

}  // namespace

bool skinny_applies(const at::Tensor& x, const at::Tensor& W) {
  if (!x.defined() || !W.defined() || x.dim() < 1 || W.dim() != 2) return false;
  if (!x.device().is_cpu() || !W.device().is_cpu() || x.scalar_type() != at::kFloat || W.scalar_type() != at::kFloat) return false;
  if (x.size(-1) != W.size(1) || x.numel() == 0) return false;
  const int64_t m = x.numel() / x.size(-1);
  if (m > kMaxRows) return false;
  if (at::GradMode::is_enabled() && (x.requires_grad() || W.requires_grad())) return false;
  return cpu_has_avx512();
}

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias) {
  const int64_t K = W.size(1), N = W.size(0);
  const at::Tensor xc = x.reshape({-1, K}).contiguous();
  const at::Tensor Wc = W.contiguous();
  const int64_t M = xc.size(0);
  at::Tensor y = at::empty({M, N}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const float* wp = Wc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Rows of W in blocks of 64: about 200 KiB of weights per block at 768, read from memory once and
  // taken against every group of rows of x while in cache. Each output is one chain of FMAs along K
  // and one reduction, whatever the group: a row's result does not depend on the others.
  at::parallel_for(0, (N + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk)
      for (int64_t g = 0; g < M; g += kGroup) {
        const int64_t rows_here = std::min(kGroup, M - g);
        pick(rows_here, std::make_integer_sequence<int, kGroup>())(xp + g * K, K, wp, blk * 64, std::min(N, (blk + 1) * 64), yp + g * N, N);
      }
  });
  if (bias.defined()) y.add_(bias);
  auto shape = x.sizes().vec();
  shape.back() = N;
  return y.view(shape);
}

}  // namespace jfa
