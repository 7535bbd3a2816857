// CUDA kernels for add / sub / mul with a broadcast second operand, and scale (kernels/binary.h),
// float32, one thread per output element in a grid-stride loop.
// The forward reads b through the collapsed broadcast layout: same shape reads b[i], a scalar
// b[0], anything else b[broadcast_small_index(layout, i)] (i % C for a per-channel vector, at
// most two divisions for the layer patterns). b is small and hot in cache in the broadcast cases,
// so the kernel streams a and y.
// The backward's db is a deterministic reduction (kernels/reduce_device.h) of dy, or of dy * a
// for mul, over b's broadcast dims; da is dy (copied) or dy * b (this forward).
#include "runtime/kernel_prelude.h"

#include "kernels/binary.h"
#include "kernels/reduce_device.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

enum class BPattern { same_shape, scalar, broadcast };

template <BinaryOp op>
CTSR_DEVICE_INLINE float apply(float a, float b) {
  if constexpr (op == BinaryOp::add) return a + b;
  else if constexpr (op == BinaryOp::sub) return a - b;
  else return a * b;
}

template <BinaryOp op, BPattern pattern>
__global__ void binary_forward_kernel(const float* __restrict__ a, const float* __restrict__ b, BroadcastLayout layout,
                                      float* __restrict__ y) {
  const int64_t n = layout.full_numel;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float bv;
    if constexpr (pattern == BPattern::same_shape) bv = b[i];
    else if constexpr (pattern == BPattern::scalar) bv = b[0];
    else bv = b[broadcast_small_index(layout, i)];
    y[i] = apply<op>(a[i], bv);
  }
}

__global__ void scale_kernel(const float* __restrict__ x, float alpha, float* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = alpha * x[i];
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

unsigned grid_for(int64_t n) { return std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads))); }

template <BinaryOp op>
void launch_forward(const Tensor& a, const Tensor& b, const BroadcastLayout& layout, Tensor& y) {
  const unsigned grid = grid_for(layout.full_numel);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* py = y.data<float>();
  if (layout.same_shape())
    launch_kernel(a.device(), binary_forward_kernel<op, BPattern::same_shape>, grid, kThreads, 0, pa, pb, layout, py);
  else if (layout.scalar())
    launch_kernel(a.device(), binary_forward_kernel<op, BPattern::scalar>, grid, kThreads, 0, pa, pb, layout, py);
  else
    launch_kernel(a.device(), binary_forward_kernel<op, BPattern::broadcast>, grid, kThreads, 0, pa, pb, layout, py);
}

}  // namespace

void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const BroadcastLayout& layout, Tensor& y) {
  a.check_dtype(DType::float32, "binary (CUDA) a");
  switch (op) {
    case BinaryOp::add: launch_forward<BinaryOp::add>(a, b, layout, y); break;
    case BinaryOp::sub: launch_forward<BinaryOp::sub>(a, b, layout, y); break;
    case BinaryOp::mul: launch_forward<BinaryOp::mul>(a, b, layout, y); break;
  }
}

void scale(const Tensor& x, double alpha, Tensor& y) {
  x.check_dtype(DType::float32, "scale (CUDA) x");
  launch_kernel(x.device(), scale_kernel, grid_for(x.numel()), kThreads, 0, x.data<float>(), float(alpha),
                y.data<float>(), x.numel());
}

void binary_backward_b(BinaryOp op, const Tensor& a, const Tensor& dy, const BroadcastLayout& layout, Tensor& db) {
  dy.check_dtype(DType::float32, "binary backward (CUDA) dy");
  const ReduceTerms terms{dy.data<float>(), op == BinaryOp::mul ? a.data<float>() : nullptr};
  run_reduction(dy.device(), terms, reduce_index_of(layout), op == BinaryOp::sub ? -1.0f : 1.0f, db.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
