// CUDA kernel for dropout (kernels/dropout.h), float32. One Philox4x32-10 call yields the four
// uniforms of elements 4q .. 4q+3 (counter q, see runtime/philox.h), so each thread takes one
// such quad: a quarter of the generator work of one call per element, and the same bits as the
// reference's uniform_at(seed, offset, i). Memory-bound: one read and one write per element.
#include "runtime/kernel_prelude.h"

#include "kernels/dropout.h"
#include "runtime/philox.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

__global__ void dropout_kernel(const float* __restrict__ in, int64_t n, float p, float scale, uint64_t seed,
                               uint64_t offset, float* __restrict__ out) {
  const int64_t quads = (n + 3) / 4;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < quads; q += int64_t(gridDim.x) * blockDim.x) {
    const philox::Words w = philox::philox4x32_10(uint64_t(q), offset, seed);
    const int64_t base = 4 * q;
    for (int j = 0; j < 4; ++j) {
      const int64_t i = base + j;
      if (i < n) out[i] = philox::uniform01(w.v[j]) >= p ? in[i] * scale : 0.0f;
    }
  }
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

}  // namespace

void dropout_apply(const Tensor& in, float p, float scale, uint64_t seed, uint64_t offset, Tensor& out) {
  in.check_dtype(DType::float32, "dropout (CUDA) input");
  const int64_t quads = (in.numel() + 3) / 4;
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(quads, kThreads)));
  launch_kernel(in.device(), dropout_kernel, blocks, kThreads, 0, in.data<float>(), in.numel(), p, scale, seed,
                offset, out.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
