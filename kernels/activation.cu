// CUDA kernels for the activations (kernels/activation.h): one thread per element in a
// grid-stride loop; SiLU in float32, clamp in float32 and float64. Memory-bound; the layers
// fuse SiLU into GroupNorm where it counts.
#include "runtime/kernel_prelude.h"

#include "kernels/activation.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void silu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = v * sigmoid(v);
  }
}

__global__ void silu_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                     int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const float s = sigmoid(v);
    dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
  }
}

// Comparisons rather than fminf/fmaxf: those return the bound for a NaN x, and NaN must stay NaN.
template <class T>
__global__ void clamp_kernel(const T* __restrict__ x, T lo, T hi, T* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T v = x[i];
    y[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

template <class T>
__global__ void clamp_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy, T lo, T hi,
                                      T* __restrict__ dx, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T v = x[i];
    dx[i] = (v >= lo && v <= hi) ? dy[i] : T(0);  // the bounds pass the gradient; NaN does not
  }
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

unsigned grid_for(int64_t n) { return std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads))); }

}  // namespace

void silu_forward(const Tensor& x, Tensor& y) {
  x.check_dtype(DType::float32, "silu_forward (CUDA) x");
  launch_kernel(x.device(), silu_forward_kernel, grid_for(x.numel()), kThreads, 0, x.data<float>(), y.data<float>(),
                x.numel());
}

void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  x.check_dtype(DType::float32, "silu_backward (CUDA) x");
  launch_kernel(x.device(), silu_backward_kernel, grid_for(x.numel()), kThreads, 0, x.data<float>(),
                dy.data<float>(), dx.data<float>(), x.numel());
}

void clamp(const Tensor& x, double lo, double hi, Tensor& y) {
  if (x.dtype() == DType::float64) {
    launch_kernel(x.device(), clamp_kernel<double>, grid_for(x.numel()), kThreads, 0, x.data<double>(), lo, hi,
                  y.data<double>(), x.numel());
  } else {
    x.check_dtype(DType::float32, "clamp (CUDA) x");
    launch_kernel(x.device(), clamp_kernel<float>, grid_for(x.numel()), kThreads, 0, x.data<float>(), float(lo),
                  float(hi), y.data<float>(), x.numel());
  }
}

void clamp_backward(const Tensor& x, const Tensor& dy, double lo, double hi, Tensor& dx) {
  if (x.dtype() == DType::float64) {
    launch_kernel(x.device(), clamp_backward_kernel<double>, grid_for(x.numel()), kThreads, 0, x.data<double>(),
                  dy.data<double>(), lo, hi, dx.data<double>(), x.numel());
  } else {
    x.check_dtype(DType::float32, "clamp_backward (CUDA) x");
    launch_kernel(x.device(), clamp_backward_kernel<float>, grid_for(x.numel()), kThreads, 0, x.data<float>(),
                  dy.data<float>(), float(lo), float(hi), dx.data<float>(), x.numel());
  }
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
