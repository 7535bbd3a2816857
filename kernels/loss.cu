// CUDA kernels for the losses (kernels/loss.h), float32.
//
// The forward (mse and l1) is a deterministic two-pass reduction:
//   1. error_partial   a grid of B blocks walks the elements grid-stride; each thread sums its
//                      (pred - target)^2 or |pred - target| in a register, the block combines its
//                      threads with warp shuffles and one shared-memory step -> partial[b]
//   2. finalize_mean   one block sums the B partials (thread t takes t, t + 256, ... in order,
//                      then the same block reduction) and divides by n
// B depends on n only (never on the device), and every combination happens in a fixed order, so
// the loss is bitwise reproducible run to run; nothing uses atomics. The float32 sums see at most
// ceil(n / (B * 256)) terms per thread before the tree, so their rounding error stays near
// (n / (B * 256) + log2(B * 256)) * 2^-24 relative (the tests allow 2e-6 against the float64
// reference).
// Backward is elementwise: dpred = 2 dloss / n * (pred - target) or sign(pred - target) * (dloss
// / n), dtarget = -dpred (when wanted), with dloss read from device memory by every thread (no
// host synchronisation). The L1 scale is formed in double and rounded once, as on the reference
// path, and the sign of the float32 difference is the sign of the exact one (a rounded
// difference of finite floats is 0 only when they are equal), so the L1 gradient is bitwise the
// reference's.
#include "runtime/kernel_prelude.h"

#include "kernels/loss.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr unsigned kThreads = 256;      // a multiple of 32: every warp is full
constexpr unsigned kMaxPartials = 1024;  // blocks of pass 1
constexpr int64_t kItemsPerThread = 8;   // below this many elements per thread, fewer blocks

// Sum over a warp; lane 0 ends with the total (fixed shuffle tree).
CTSR_DEVICE_INLINE float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); thread 0 ends with the total.
// Every thread of the block must call it.
CTSR_DEVICE_INLINE float block_sum(float v) {
  CTSR_STATIC_SHARED(warp_totals, float[32]);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  float total = 0.0f;
  if (warp == 0) {
    total = warp_sum(lane < warps ? warp_totals[lane] : 0.0f);
  }
  __syncthreads();  // warp_totals may be reused by a later call
  return total;
}

// The summed term of each loss.
CTSR_DEVICE_INLINE float error_term(PairLoss kind, float d) { return kind == PairLoss::mse ? d * d : fabsf(d); }

// torch's sign: 0 at 0 and for NaN.
CTSR_DEVICE_INLINE float sign_of(float d) { return float(d > 0.0f) - float(d < 0.0f); }

__global__ void error_partial_kernel(PairLoss kind, const float* __restrict__ pred, const float* __restrict__ target,
                                     int64_t n, float* __restrict__ partial) {
  float sum = 0.0f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    sum += error_term(kind, pred[i] - target[i]);
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void finalize_mean_kernel(const float* __restrict__ partial, int64_t partials, int64_t n,
                                     float* __restrict__ loss) {
  float sum = 0.0f;
  for (int64_t p = threadIdx.x; p < partials; p += blockDim.x) sum += partial[p];
  sum = block_sum(sum);
  if (threadIdx.x == 0) loss[0] = float(double(sum) / double(n));  // one rounding, exact n
}

// dtarget may be null (not wanted).
__global__ void pair_loss_backward_kernel(PairLoss kind, const float* __restrict__ pred,
                                          const float* __restrict__ target, const float* __restrict__ dloss, int64_t n,
                                          float* __restrict__ dpred, float* __restrict__ dtarget) {
  const float scale = kind == PairLoss::mse ? float(2.0 * double(dloss[0]) / double(n))
                                            : float(double(dloss[0]) / double(n));
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = pred[i] - target[i];
    const float g = kind == PairLoss::mse ? scale * d : sign_of(d) * scale;
    dpred[i] = g;
    if (dtarget) dtarget[i] = -g;
  }
}

constexpr unsigned kMaxBlocks = 4096;  // elementwise kernels: grid-stride beyond this

}  // namespace

void pair_loss_forward(PairLoss kind, const Tensor& pred, const Tensor& target, Tensor& loss) {
  pred.check_dtype(DType::float32, kind == PairLoss::mse ? "mse_loss (CUDA) pred" : "l1_loss (CUDA) pred");
  const int64_t n = pred.numel();
  const unsigned partials = unsigned(std::clamp<int64_t>((n + kThreads * kItemsPerThread - 1) /
                                                             (kThreads * kItemsPerThread),
                                                         1, kMaxPartials));
  Tensor partial = Tensor::empty(Shape{int64_t(partials)}, DType::float32, pred.device());
  launch_kernel(pred.device(), error_partial_kernel, partials, kThreads, 0, kind, pred.data<float>(),
                target.data<float>(), n, partial.data<float>());
  launch_kernel(pred.device(), finalize_mean_kernel, 1, kThreads, 0, partial.data<float>(), int64_t(partials), n,
                loss.data<float>());
}

void pair_loss_backward(PairLoss kind, const Tensor& pred, const Tensor& target, const Tensor& dloss, Tensor& dpred,
                        Tensor& dtarget) {
  pred.check_dtype(DType::float32,
                   kind == PairLoss::mse ? "mse_loss_backward (CUDA) pred" : "l1_loss_backward (CUDA) pred");
  const int64_t n = pred.numel();
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads)));
  launch_kernel(pred.device(), pair_loss_backward_kernel, blocks, kThreads, 0, kind, pred.data<float>(),
                target.data<float>(), dloss.data<float>(), n, dpred.data<float>(),
                dtarget.defined() ? dtarget.data<float>() : nullptr);
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
