// CUDA kernels of the random fills (kernels/random.h), float32 and float64. One Philox4x32-10
// call yields the four words of elements 4q .. 4q+3 (counter q, see runtime/philox.h), so each
// thread takes one such group: four uniforms, or two Box-Muller pairs (words 0, 1 and 2, 3),
// exactly the draws the reference's uniform_at / normal_at make one element at a time. The last
// group of a size that is not a multiple of 4 computes its words and writes only the elements
// that exist. Memory-bound for uniforms; the normals' log / sqrt / sin / cos (all portable,
// explicitly rounded, see philox.h) cost a little more than the write.
#include "runtime/kernel_prelude.h"

#include "kernels/random.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

template <class T, bool Normal>
__global__ void random_fill_kernel(T* __restrict__ out, int64_t n, T base, T scale, uint64_t seed,
                                   uint64_t offset) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < groups; q += int64_t(gridDim.x) * blockDim.x) {
    const philox::Words w = philox::philox4x32_10(uint64_t(q), offset, seed);
    float draw[4];
    if constexpr (Normal) {
      philox::normal_pair(w.v[0], w.v[1], &draw[0], &draw[1]);
      philox::normal_pair(w.v[2], w.v[3], &draw[2], &draw[3]);
    } else {
      for (int j = 0; j < 4; ++j) draw[j] = philox::uniform01(w.v[j]);
    }
    const int64_t first = 4 * q;
    if (first + 4 <= n) {
      for (int j = 0; j < 4; ++j) out[first + j] = random_affine(base, scale, draw[j]);
    } else {
      for (int j = 0; first + j < n; ++j) out[first + j] = random_affine(base, scale, draw[j]);
    }
  }
}

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

template <class T>
void launch(Tensor& t, RandomDistribution distribution, double base, double scale, uint64_t seed, uint64_t offset) {
  const int64_t n = t.numel(), groups = (n + 3) / 4;
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(groups, kThreads)));
  auto kernel = distribution == RandomDistribution::normal ? random_fill_kernel<T, true> : random_fill_kernel<T, false>;
  launch_kernel(t.device(), kernel, blocks, kThreads, 0, t.data<T>(), n, T(base), T(scale), seed, offset);
}

}  // namespace

void random_fill(Tensor& t, RandomDistribution distribution, double base, double scale, uint64_t seed,
                 uint64_t offset) {
  switch (t.dtype()) {
    case DType::float32: launch<float>(t, distribution, base, scale, seed, offset); return;
    case DType::float64: launch<double>(t, distribution, base, scale, seed, offset); return;
    default: CTSR_FAIL("random_fill (CUDA): t is ", dtype_name(t.dtype()), ", expected float32 or float64");
  }
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
