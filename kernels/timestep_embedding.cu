// CUDA kernels of the sinusoidal timestep embedding (kernels/timestep_embedding.h), float32.
//
// Forward: one thread per (sample, frequency), writing the cos and sin halves (consecutive
// threads write consecutive elements of both). Backward: one warp per sample; lane l takes
// frequencies l, l + 32, ... in order and a fixed shuffle tree sums the lanes (deterministic,
// no atomics).
//
// Precision. The arguments t f_i reach |t| (f_0 = 1), ~1000 rad at the model's largest step, so
// the kernels use expf / sinf / cosf, whose argument reduction is exact over the whole range
// (__sinf / __cosf reduce in float and lose all accuracy out there). What float32 cannot avoid
// is the rounding of the argument itself: the exponent -ln(10000) i / half is rounded twice
// (relative 2^-23 at |x| <= 9.2), expf adds <= 2 ulp, the product t f one more rounding, so the
// argument is off by up to |t| (2 u / e + 3 u f) ~ 3.4e-7 |t| (u = 2^-24; f ln(1/f) <= 1/e),
// ~3.4e-4 rad at t = 999, and sin / cos pass that on unchanged. This is the same error a float32
// PyTorch embedding has; the tests bound it by 4e-7 |t| + 5e-7 against the float64 reference.
#include "runtime/kernel_prelude.h"

#include "kernels/timestep_embedding.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr float kLogMaxPeriod = 9.21034037f;  // ln(10000), rounded to float
constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;

CTSR_DEVICE_INLINE float frequency(int64_t i, int64_t half) {
  return expf(-kLogMaxPeriod * float(i) / float(half));
}

template <class TIn>
__global__ void embedding_forward_kernel(const TIn* __restrict__ t, int64_t n, int64_t half,
                                         float* __restrict__ emb) {
  const int64_t total = n * half;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = k / half, i = k % half;
    const float a = float(t[s]) * frequency(i, half);
    float* row = emb + s * 2 * half;
    row[i] = cosf(a);
    row[half + i] = sinf(a);
  }
}

__global__ void embedding_backward_kernel(const float* __restrict__ t, int64_t n, int64_t half,
                                          const float* __restrict__ demb, float* __restrict__ dt) {
  const int64_t s = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (s >= n) return;  // whole warps only: blockDim.x is a multiple of 32
  const float ts = t[s];
  const float* row = demb + s * 2 * half;
  float sum = 0.0f;
  for (int64_t i = lane; i < half; i += 32) {
    const float f = frequency(i, half);
    const float a = ts * f;
    sum += row[i] * (-f * sinf(a)) + row[half + i] * (f * cosf(a));
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) dt[s] = sum;
}

template <class TIn>
void launch_forward(const Tensor& t, int64_t half, Tensor& emb) {
  const int64_t total = t.numel() * half;
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(total, kThreads)));
  launch_kernel(t.device(), embedding_forward_kernel<TIn>, blocks, kThreads, 0, t.data<TIn>(), t.numel(), half,
                emb.data<float>());
}

}  // namespace

void timestep_embedding_forward(const Tensor& t, int64_t dim, Tensor& emb) {
  emb.check_dtype(DType::float32, "timestep_embedding (CUDA) emb");
  switch (t.dtype()) {
    case DType::float32: launch_forward<float>(t, dim / 2, emb); return;
    case DType::int32: launch_forward<int32_t>(t, dim / 2, emb); return;
    case DType::int64: launch_forward<int64_t>(t, dim / 2, emb); return;
    default:
      CTSR_FAIL("timestep_embedding (CUDA): t is ", dtype_name(t.dtype()), ", expected float32, int32 or int64");
  }
}

void timestep_embedding_backward(const Tensor& t, int64_t dim, const Tensor& demb, Tensor& dt) {
  t.check_dtype(DType::float32, "timestep_embedding_backward (CUDA) t");
  constexpr unsigned samples_per_block = kThreads / 32;
  launch_kernel(t.device(), embedding_backward_kernel, blocks_for(t.numel(), samples_per_block), kThreads, 0,
                t.data<float>(), t.numel(), dim / 2, demb.data<float>(), dt.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
