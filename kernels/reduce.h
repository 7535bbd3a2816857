// Sums and means over broadcast dims, and their backward (repeating back over those dims).
//   sum(x), mean(x)                 every element -> shape [1]
//   sum_to_shape(x, shape)          sums over the dims where `shape` has 1 (the broadcasting rule of
//   mean_to_shape(x, shape)         kernels/broadcast.h: shape may have fewer dims, left-padded),
//                                   so [N, D, H, W, C] -> [C] or [1, 1, 1, 1, C] sums per channel
//   broadcast_to(x, shape)          x repeated over the dims where x has 1 (the adjoint of the sum)
//   *_backward(dy, x_shape)         dy repeated back to x_shape, times 1 (sum) or 1/count (mean)
// Nothing is saved for backward but x's shape. Paths: cpu reference (float32, float64; sums in
// double), CUDA and CUDA-on-CPU (float32, float accumulation, deterministic: no atomics, and the
// order of every sum depends only on the shapes, so a run repeats bit for bit on one device).
//
// CUDA reduction strategy (kernels/reduce_device.h): for `outputs` sums of `extent` terms each,
//   extent < 128                     a thread per output, one pass
//   the innermost dim is kept and    a thread per output: neighbouring threads read neighbouring
//   outputs >= 32                    addresses (per-channel sums); the extent is split into chunks
//                                    so that ~64K threads run, and the chunks' partial sums
//                                    [splits, outputs] are reduced again
//   otherwise                        a block per output: strided per-thread sums, a shared-memory
//                                    tree down to one warp, then warp shuffles; the extent is split
//                                    so that ~1K blocks run, partial sums [outputs, splits] reduced again
// The binary ops' backward (kernels/binary.h) reduces dy (or dy * a) to b's shape the same way.
#pragma once

#include <algorithm>
#include <vector>

#include "kernels/broadcast.h"
#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
Tensor sum(const Tensor& x);
Tensor mean(const Tensor& x);
Tensor sum_to_shape(const Tensor& x, const Shape& shape);
Tensor mean_to_shape(const Tensor& x, const Shape& shape);
Tensor broadcast_to(const Tensor& x, const Shape& shape);

Tensor sum_backward(const Tensor& dy, const Shape& x_shape);
Tensor mean_backward(const Tensor& dy, const Shape& x_shape);
Tensor sum_to_shape_backward(const Tensor& dy, const Shape& x_shape);
Tensor mean_to_shape_backward(const Tensor& dy, const Shape& x_shape);
}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  // out (layout.kept_numel elements) = scale * sum of x over the layout's broadcast groups.
  void sum_broadcast_dims(const Tensor& x, const BroadcastLayout& layout, double scale, Tensor& out);
  // y (layout.full_numel elements) = scale * x repeated over the layout's broadcast groups.
  void repeat_broadcast_dims(const Tensor& x, const BroadcastLayout& layout, double scale, Tensor& y);
)

namespace ctsr::kernels::cpu {
// out[j] = scale * sum over the full elements i that map to j of x[i] (times weight[i] when
// weight is not null), accumulated in double.
template <class T>
void sum_broadcast_dims(const T* x, const T* weight, T* out, const BroadcastLayout& layout, double scale);
template <class T>
void repeat_broadcast_dims(const T* x, T* y, const BroadcastLayout& layout, double scale);
}  // namespace ctsr::kernels::cpu

namespace ctsr::kernels {

// How the CUDA paths reduce `outputs` sums of `extent` terms each. Fixed constants, not the
// device's size, so the summation order (and the result) is the same on every GPU and on the
// executor.
enum class ReduceKernel { thread_per_output, block_per_output };
struct ReducePass {
  ReduceKernel kernel;
  int64_t splits;  // > 1: the pass writes partial sums over chunks of `chunk` terms
  int64_t chunk;
};

inline constexpr int64_t kReduceBlockMinExtent = 128;
inline constexpr int64_t kReduceTargetThreads = 65536;
inline constexpr int64_t kReduceThreadMinChunk = 32;
inline constexpr int64_t kReduceTargetBlocks = 1024;
inline constexpr int64_t kReduceBlockMinChunk = 2048;

// inner_reduced: the terms of one output are contiguous at the innermost level (a per-sample
// sum), as opposed to neighbouring outputs being contiguous (a per-channel sum).
inline ReducePass choose_reduce_pass(int64_t outputs, int64_t extent, bool inner_reduced) {
  if (extent < kReduceBlockMinExtent) return {ReduceKernel::thread_per_output, 1, extent};
  ReducePass pass;
  int64_t splits;
  if (!inner_reduced && outputs >= 32) {
    pass.kernel = ReduceKernel::thread_per_output;
    splits = std::min(kReduceTargetThreads / outputs, extent / kReduceThreadMinChunk);
  } else {
    pass.kernel = ReduceKernel::block_per_output;
    splits = std::min(kReduceTargetBlocks / outputs, extent / kReduceBlockMinChunk);
  }
  splits = std::max<int64_t>(splits, 1);
  pass.chunk = (extent + splits - 1) / splits;
  pass.splits = (extent + pass.chunk - 1) / pass.chunk;
  return pass;
}

// Every pass of one reduction: the first reduces the input, each later one the partial sums
// of the one before ([splits, outputs] after a thread pass, [outputs, splits] after a block pass).
inline std::vector<ReducePass> reduce_plan(int64_t outputs, int64_t extent, bool inner_reduced) {
  std::vector<ReducePass> passes;
  for (;;) {
    const ReducePass pass = choose_reduce_pass(outputs, extent, inner_reduced);
    passes.push_back(pass);
    if (pass.splits == 1) return passes;
    inner_reduced = pass.kernel == ReduceKernel::block_per_output || outputs == 1;
    extent = pass.splits;
  }
}

// The innermost non-trivial group of a layout is summed over (see choose_reduce_pass).
inline bool layout_inner_reduced(const BroadcastLayout& layout) {
  return layout.groups > 0 && !layout.kept[layout.groups - 1];
}

}  // namespace ctsr::kernels
