// Reference random fills (kernels/random.h): one Philox call per element through uniform_at /
// normal_at, an independent route from the kernels' one call per group of four.
#include "kernels/random.h"

namespace ctsr::kernels::cpu {

template <class T>
void random_fill(T* t, int64_t n, RandomDistribution distribution, T base, T scale, uint64_t seed, uint64_t offset) {
  if (distribution == RandomDistribution::uniform) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) t[i] = random_affine(base, scale, philox::uniform_at(seed, offset, uint64_t(i)));
  } else {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) t[i] = random_affine(base, scale, philox::normal_at(seed, offset, uint64_t(i)));
  }
}

template void random_fill<float>(float*, int64_t, RandomDistribution, float, float, uint64_t, uint64_t);
template void random_fill<double>(double*, int64_t, RandomDistribution, double, double, uint64_t, uint64_t);

}  // namespace ctsr::kernels::cpu
