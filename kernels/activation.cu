// CUDA kernels for the activations (kernels/activation.h): one thread per element in a
// grid-stride loop, float32. Memory-bound; the layers fuse SiLU into GroupNorm where it counts.
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

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
