// CUDA kernels for the sums over broadcast dims and the repeat that is their adjoint
// (kernels/reduce.h), float32. The reductions are kernels/reduce_device.h's deterministic
// thread-per-output / block-per-output passes; the repeat is one thread per output element
// reading its source through the broadcast layout (one or two integer divisions).
#include "runtime/kernel_prelude.h"

#include "kernels/reduce.h"
#include "kernels/reduce_device.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

__global__ void repeat_broadcast_dims_kernel(const float* __restrict__ x, BroadcastLayout layout, float scale,
                                             float* __restrict__ y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < layout.full_numel;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[broadcast_small_index(layout, i)] * scale;
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

unsigned grid_for(int64_t n) { return std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads))); }

}  // namespace

void sum_broadcast_dims(const Tensor& x, const BroadcastLayout& layout, double scale, Tensor& out) {
  x.check_dtype(DType::float32, "sum_broadcast_dims (CUDA) x");
  run_reduction(x.device(), ReduceTerms{x.data<float>(), nullptr}, reduce_index_of(layout), float(scale),
                out.data<float>());
}

void repeat_broadcast_dims(const Tensor& x, const BroadcastLayout& layout, double scale, Tensor& y) {
  x.check_dtype(DType::float32, "repeat_broadcast_dims (CUDA) x");
  launch_kernel(x.device(), repeat_broadcast_dims_kernel, grid_for(layout.full_numel), kThreads, 0, x.data<float>(),
                layout, float(scale), y.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
