// CUDA kernel for dropout (kernels/dropout.h), float32 and bfloat16. One Philox4x32-10 call
// yields the four uniforms of stream elements 4q .. 4q+3 (counter q, see runtime/philox.h), so
// each thread takes one such quad: a quarter of the generator work of one call per element, and
// the same bits as the reference's uniform_at(seed, offset, element_base + i). The quads are those of the stream,
// not of the tensor: with an element_base that is not a multiple of 4 the first and last quads
// cover the tensor only in part. Memory-bound: one read and one write per element.
#include "runtime/kernel_prelude.h"

#include "kernels/dropout.h"
#include "kernels/reference_dispatch.h"
#include "runtime/philox.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

// Tensor element i is stream element element_base + i; quads [first_quad, first_quad + quads)
// cover the stream range [element_base, element_base + n).
// T: float, or bfloat16 (the product taken in float and rounded once as it is stored).
template <class T>
__global__ void dropout_kernel(const T* __restrict__ in, int64_t n, float p, float scale, uint64_t seed,
                               uint64_t offset, uint64_t element_base, uint64_t first_quad, int64_t quads,
                               T* __restrict__ out) {
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < quads; q += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t quad = first_quad + uint64_t(q);
    const philox::Words w = philox::philox4x32_10(quad, offset, seed);
    for (int j = 0; j < 4; ++j) {
      // Unsigned wrap-around makes stream elements before element_base huge, so one test suffices.
      const uint64_t i = 4 * quad + uint64_t(j) - element_base;
      if (i < uint64_t(n)) out[i] = T(philox::uniform01(w.v[j]) >= p ? float(in[i]) * scale : 0.0f);
    }
  }
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

}  // namespace

void dropout_apply(const Tensor& in, float p, float scale, uint64_t seed, uint64_t offset, uint64_t element_base,
                   Tensor& out) {
  const uint64_t n = uint64_t(in.numel());
  const uint64_t first_quad = element_base / 4, last_quad = (element_base + n - 1) / 4;  // n > 0 (dispatch)
  const int64_t quads = int64_t(last_quad - first_quad + 1);
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(quads, kThreads)));
  with_operand_type(in, "dropout (CUDA) input", [&](auto tag) {
    using T = decltype(tag);
    launch_kernel(in.device(), dropout_kernel<T>, blocks, kThreads, 0, in.data<T>(), in.numel(), p, scale, seed,
                  offset, element_base, first_quad, quads, out.data<T>());
  });
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
