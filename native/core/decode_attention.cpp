#include "core/decode_attention.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "core/errors.h"
#include "core/lane_sums.h"

namespace jfa {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kMaxChunks = 16;  // head_dim up to 256: the output row stays in registers
// Work (multiply-adds) a thread takes at least, so that a small step does not pay for a parallel region.
constexpr int64_t kGrainWork = 32768;

// e^x for x <= 0 (x = -inf gives 0): x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to
// r^7 (relative error under 1e-8 there), times 2^n.
__attribute__((target("avx512f,fma"))) inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 hidden = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~hidden), _mm512_scalef_ps(p, n));
}

struct Views {
  const float *q, *k, *v;
  const uint8_t* mask;  // (b, total) or null
  float* out;           // (b, 1, heads, hd)
  int64_t q_row, q_head, k_row, k_head, k_key, v_row, v_head, v_key;
  int64_t heads, group, total, hd;
  float scale;
};

// One (row, head): scores, their softmax and the weighted values, C chunks of 16 along head_dim.
template <int C>
__attribute__((target("avx512f,fma"))) void one_head(const Views& a, int64_t row, int64_t head, float* scores) {
  const float* q = a.q + row * a.q_row + head * a.q_head;
  const int64_t kv = head / a.group;
  const float* k = a.k + row * a.k_row + kv * a.k_head;
  const float* v = a.v + row * a.v_row + kv * a.v_head;
  const uint8_t* visible = a.mask ? a.mask + row * a.total : nullptr;
  const float hidden = -std::numeric_limits<float>::infinity();
  __m512 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm512_loadu_ps(q + c * kLanes);
  // Scores 16 keys at a time: each key's products as one vector, the 16 vectors summed across lanes
  // together. Every key's sum takes the same order, wherever it falls among the 16.
  int64_t j0 = 0;
  __m512 part[kLanes];
  for (; j0 < a.total; j0 += kLanes) {
    const int64_t n = std::min(kLanes, a.total - j0);
    for (int64_t i = 0; i < kLanes; ++i) {
      if (i >= n) {
        part[i] = _mm512_setzero_ps();
        continue;
      }
      const float* kj = k + (j0 + i) * a.k_key;
      __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kj));
      for (int c = 1; c < C; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kj + c * kLanes), acc);
      part[i] = acc;
    }
    const __m512 sums = _mm512_mul_ps(lane_sums(part), _mm512_set1_ps(a.scale));
    _mm512_mask_storeu_ps(scores + j0, static_cast<__mmask16>((1u << n) - 1u), sums);
  }
  float top = hidden;
  for (int64_t j = 0; j < a.total; ++j) {
    if (visible && !visible[j]) scores[j] = hidden;
    else top = std::max(top, scores[j]);
  }
  // No visible key: uniform weights over all of them (an additive mask of the lowest finite value).
  if (top == hidden) {
    std::fill(scores, scores + a.total, 0.0f);
    top = 0.0f;
    visible = nullptr;
  }
  const __m512 shift = _mm512_set1_ps(top);
  __m512 sum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + kLanes <= a.total; j += kLanes) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + j), shift));
    _mm512_storeu_ps(scores + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < a.total) {
    const __mmask16 m = static_cast<__mmask16>((1u << (a.total - j)) - 1u);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), shift));
    _mm512_mask_storeu_ps(scores + j, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (j = 0; j < a.total; ++j) {
    if (visible && !visible[j]) continue;
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* vj = v + j * a.v_key;
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + c * kLanes), acc[c]);
  }
  const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  float* out = a.out + (row * a.heads + head) * a.hd;
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + c * kLanes, _mm512_div_ps(acc[c], total));
}

using HeadFn = void (*)(const Views&, int64_t, int64_t, float*);

template <int... C>
constexpr HeadFn pick(int chunks, std::integer_sequence<int, C...>) {
  HeadFn fn = nullptr;
  ((fn = chunks == C + 1 ? &one_head<C + 1> : fn), ...);
  return fn;
}

}  // namespace

bool decode_attention_fits(int64_t heads, int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options) {
  return cpu_has_avx512() && options.device().is_cpu() && options.dtype() == at::kFloat && head_dim % kLanes == 0 &&
         head_dim / kLanes <= kMaxChunks && kv_heads >= 1 && heads % kv_heads == 0;
}

at::Tensor decode_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& key_mask, double scale) {
  if (q_in.dim() != 4 || k_in.dim() != 4 || q_in.size(2) != 1 || k_in.sizes() != v_in.sizes() || k_in.size(0) != q_in.size(0) ||
      k_in.size(3) != q_in.size(3) || k_in.size(2) < 1 || !decode_attention_fits(q_in.size(1), k_in.size(1), q_in.size(3), q_in.options()) ||
      k_in.scalar_type() != at::kFloat || v_in.scalar_type() != at::kFloat)
    throw_range("decode_attention: q (b, heads, 1, head_dim) and k, v (b, kv_heads, keys, head_dim) float32 that decode_attention_fits takes");
  const auto unit = [](const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); };
  const at::Tensor q = unit(q_in), k = unit(k_in), v = unit(v_in);
  const int64_t b = q.size(0), heads = q.size(1), hd = q.size(3), total = k.size(2);
  if (key_mask.defined() && (key_mask.scalar_type() != at::kByte || !key_mask.is_contiguous() || key_mask.dim() != 2 ||
                             key_mask.size(0) != b || key_mask.size(1) != total))
    throw_range("decode_attention: the key mask must be (batch, keys) uint8 and contiguous");
  at::Tensor out = at::empty({b, 1, heads, hd}, q.options());
  Views a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), key_mask.defined() ? key_mask.data_ptr<uint8_t>() : nullptr,
          out.data_ptr<float>(), q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
          heads, heads / k.size(1), total, hd, static_cast<float>(scale)};
  const HeadFn fn = pick(static_cast<int>(hd / kLanes), std::make_integer_sequence<int, kMaxChunks>{});
  const int64_t grain = std::max<int64_t>(1, kGrainWork / (2 * total * hd));
  at::parallel_for(0, b * heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(total));
    for (int64_t i = begin; i < end; ++i) fn(a, i / heads, i % heads, scores.data());
  });
  return out.transpose(1, 2);
}

}  // namespace jfa
