// Random fills from the counter-based Philox4x32-10 generator (runtime/philox.h):
//   fill_uniform: t_i = lo + (hi - lo) u_i,     u_i = philox::uniform_at(seed, offset, i) in [0, 1)
//   fill_normal:  t_i = mean + std z_i,         z_i = philox::normal_at(seed, offset, i)
// i is the flat element index: element i uses Philox counter (i / 4, offset) and word i % 4, so
// a fill is a pure function of (seed, offset, i) and any slice of it can be regenerated. The
// draws are float32; float64 tensors get the same draws widened, then the affine map in double.
// The affine map is rounded once per operation (never contracted into a fused multiply-add:
// the GPU build uses the __f*_rn / __d*_rn intrinsics), and lo, hi - lo, mean and std are
// rounded once on the host, so every path produces the same bits. (For lo, hi other than 0, 1,
// rounding may give hi itself, as with any float uniform in [lo, hi).)
// Paths: cpu reference (one generator call per element), CUDA and CUDA-on-CPU (one thread per
// group of 4 elements, one generator call per group); float32 and float64 on all of them.
#pragma once

#include <cstdint>

#include "kernels/launchers.h"
#include "runtime/host_device.h"
#include "runtime/philox.h"
#include "runtime/tensor.h"

namespace ctsr {

void fill_uniform(Tensor& t, uint64_t seed, uint64_t offset, double lo = 0.0, double hi = 1.0);
void fill_normal(Tensor& t, uint64_t seed, uint64_t offset, double mean = 0.0, double std = 1.0);

}  // namespace ctsr

namespace ctsr::kernels {

enum class RandomDistribution : int { uniform, normal };

// base + scale * draw, each operation rounded (shared by the reference and the kernels).
CTSR_HD inline float random_affine(float base, float scale, float draw) {
  return philox::add(base, philox::mul(scale, draw));
}
CTSR_HD inline double random_affine(double base, double scale, float draw) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(base, __dmul_rn(scale, double(draw)));
#else
  return base + scale * double(draw);
#endif
}

}  // namespace ctsr::kernels

// t (float32 or float64) = base + scale * draw for every element.
CTSR_DECLARE_LAUNCHERS(
  void random_fill(Tensor& t, RandomDistribution distribution, double base, double scale, uint64_t seed,
                   uint64_t offset);
)

namespace ctsr::kernels::cpu {
template <class T>
void random_fill(T* t, int64_t n, RandomDistribution distribution, T base, T scale, uint64_t seed, uint64_t offset);
}  // namespace ctsr::kernels::cpu
