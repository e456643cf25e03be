// The flashback divergence's rows on a GPU in one kernel: per row of (N, V) logits, both softmaxes
// (online max and sum), the KL terms and d loss / d z, reading each row three times and writing
// the gradient once, in the logits' own dtype. libtorch's path (core/divergence.cpp, the reference)
// materialises p, q and log p - log q as float32 (chunk x V) buffers and runs a dozen kernels per chunk.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda/cuda.h"

namespace jfa::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

// Block-wide sum of one float per thread; every thread gets the result.
__device__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // shared is reused between calls
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < (blockDim.x >> 5) ? shared[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Online (max, sum of exp(x - max)) pairs, merged.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) { m = m2; s = s2; return; }
  const float hi = fmaxf(m, m2);
  s = s * __expf(m - hi) + s2 * __expf(m2 - hi);
  m = hi;
}

__device__ float block_lse(float m, float s, float* shared_m, float* shared_s) {
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
  __syncthreads();
  m = lane < (blockDim.x >> 5) ? shared_m[lane] : -INFINITY;
  s = lane < (blockDim.x >> 5) ? shared_s[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  return m + logf(s);
}

// One block per row. kind: 0 forward KL(q||p), 1 reverse KL(p||q), 2 symmetric; p = softmax(z/T), q = softmax(r/T).
template <typename T>
__global__ void kl_rows_kernel(const T* __restrict__ z, const T* __restrict__ r, const float* __restrict__ mask,
                               int64_t V, int kind, float inv_t, float grad_scale, float* __restrict__ row_loss,
                               T* __restrict__ grad) {
  __shared__ float sa[32], sb[32], sc[32], sd[32];
  const int64_t row = blockIdx.x;
  const T* zr = z + row * V;
  const T* rr = r + row * V;
  T* gr = grad ? grad + row * V : nullptr;
  const float m = mask[row];
  if (m == 0.0f) {  // not a real token: no loss, no gradient
    if (threadIdx.x == 0) row_loss[row] = 0.0f;
    if (gr) for (int64_t i = threadIdx.x; i < V; i += blockDim.x) store(gr, i, 0.0f);
    return;
  }
  float mz = -INFINITY, sz = 0.0f, mr = -INFINITY, sr = 0.0f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    merge(mz, sz, load(zr, i) * inv_t, 1.0f);
    merge(mr, sr, load(rr, i) * inv_t, 1.0f);
  }
  const float lse_z = block_lse(mz, sz, sa, sb);
  const float lse_r = block_lse(mr, sr, sc, sd);
  float pd = 0.0f, qd = 0.0f;  // sum p (log p - log q), sum q (log p - log q)
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float lp = load(zr, i) * inv_t - lse_z, lq = load(rr, i) * inv_t - lse_r, d = lp - lq;
    pd += __expf(lp) * d;
    qd += __expf(lq) * d;
  }
  const float rev = block_sum(pd, sa);   // KL(p||q)
  const float fwd = -block_sum(qd, sb);  // KL(q||p)
  if (threadIdx.x == 0) row_loss[row] = m * (kind == 0 ? fwd : kind == 1 ? rev : fwd + rev);
  if (!gr) return;
  const float w = m * grad_scale;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float lp = load(zr, i) * inv_t - lse_z, lq = load(rr, i) * inv_t - lse_r;
    const float p = __expf(lp), q = __expf(lq), d = lp - lq;
    // d/dz KL(q||p) = p - q; d/dz KL(p||q) = p (d - KL(p||q)).
    const float g = kind == 0 ? p - q : kind == 1 ? p * (d - rev) : p * (d - rev + 1.0f) - q;
    store(gr, i, g * w);
  }
}

template <typename T>
void launch(const at::Tensor& z, const at::Tensor& r, const at::Tensor& mask, int kind, double temperature,
            double grad_scale, at::Tensor& row_loss, at::Tensor& grad, cudaStream_t stream) {
  const int64_t N = z.size(0), V = z.size(1);
  kl_rows_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
      reinterpret_cast<const T*>(z.data_ptr()), reinterpret_cast<const T*>(r.data_ptr()), mask.data_ptr<float>(), V, kind,
      static_cast<float>(1.0 / temperature), static_cast<float>(grad_scale), row_loss.data_ptr<float>(),
      grad.defined() ? reinterpret_cast<T*>(grad.data_ptr()) : nullptr);
}

}  // namespace

bool kl_rows(const at::Tensor& z, const at::Tensor& r, const at::Tensor& mask, double grad_scale, int kind,
             double temperature, at::Tensor& row_loss, at::Tensor& grad) {
  const auto type = z.scalar_type();
  if (!z.is_cuda() || z.dim() != 2 || r.scalar_type() != type || (type != at::kFloat && type != at::kBFloat16)) return false;
  if (z.size(0) == 0 || z.size(0) > 0x7fffffff) return false;
  const at::Tensor zc = z.contiguous(), rc = r.contiguous();
  const at::Tensor mc = mask.to(z.device(), at::kFloat).contiguous();
  c10::cuda::CUDAGuard guard(z.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(z.device().index()).stream();
  if (type == at::kFloat)
    launch<float>(zc, rc, mc, kind, temperature, grad_scale / temperature, row_loss, grad, stream);
  else
    launch<__nv_bfloat16>(zc, rc, mc, kind, temperature, grad_scale / temperature, row_loss, grad, stream);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("flashbackDivergence: CUDA kernel failed: ") + cudaGetErrorString(err));
  return true;
}

}  // namespace jfa::cuda
