// Dropout with a counter-based mask: nothing is stored between forward and backward.
//   keep_i = philox::uniform_at(seed, offset, element_base + i) >= p      (i the flat element index)
//   y_i    = keep_i ? x_i * scale : 0,   scale = 1 / (1 - p)
// Backward regenerates the same mask from (seed, offset, element_base): dx_i = keep_i ? dy_i * scale : 0.
// element_base places the tensor inside a larger one: samples [a, b) of a batch, dropped with
// element_base = a * (elements per sample), get exactly the mask they get as part of the whole
// batch (element_base 0), so the masks do not depend on how a batch is split (micro-batches,
// ranks). With element_base 0 element i draws the i-th uniform of the stream (seed, offset).
// p is compared as the float32 nearest to it, against uniforms that are exact multiples of
// 2^-24, and scale is rounded once on the host (float32 for float tensors), so the mask and the
// values are bit-identical on the reference, the CUDA-on-CPU executor and the GPU.
// p must lie in [0, 1); p = 0 is the identity. With a fixed (seed, offset) the op is linear.
// bfloat16 (the operand of a bf16 convolution in mixed precision): x_i * scale in float32, rounded
// once to bf16 (nearest, ties to even) on every path, so still bitwise equal across paths.
// Paths: cpu reference (float32, float64, bfloat16 through float32), CUDA and CUDA-on-CPU
// (float32, bfloat16).
#pragma once

#include <cstdint>

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t element_base = 0);
Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset, uint64_t element_base = 0);
}  // namespace ctsr

// y = mask(x) * scale: forward and backward are the same map.
CTSR_DECLARE_LAUNCHERS(
  void dropout_apply(const Tensor& in, float p, float scale, uint64_t seed, uint64_t offset, uint64_t element_base,
                     Tensor& out);
)

namespace ctsr::kernels::cpu {
template <class T>
void dropout_apply(const T* in, int64_t n, float p, T scale, uint64_t seed, uint64_t offset, uint64_t element_base,
                   T* out);
}  // namespace ctsr::kernels::cpu
