// Device code: a block-wide sum of one double per thread through shared memory, the same pairwise
// tree (stride Threads/2, Threads/4, ..., 1) wherever it is used, so the result does not depend on
// the order in which threads run. Shared by kernels/metrics.cu and kernels/optimizer.cu; included
// after runtime/kernel_prelude.h, in an anonymous namespace (each kernel file has its own copy).
#pragma once

namespace ctsr::kernels::CTSR_KERNEL_NS {
namespace {

// Threads: the block size, a power of two; shared: Threads doubles. Every thread of the block
// must call it (it synchronises); every thread gets the sum.
template <int Threads>
CTSR_DEVICE_INLINE double block_sum(double value, double* shared) {
  static_assert(Threads > 0 && (Threads & (Threads - 1)) == 0, "block_sum: Threads must be a power of two");
  const int t = int(threadIdx.x);
  shared[t] = value;
  __syncthreads();
  for (int stride = Threads / 2; stride > 0; stride /= 2) {
    if (t < stride) shared[t] += shared[t + stride];
    __syncthreads();
  }
  return shared[0];
}

}  // namespace
}  // namespace ctsr::kernels::CTSR_KERNEL_NS
