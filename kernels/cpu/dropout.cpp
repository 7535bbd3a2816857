// Reference dropout (kernels/dropout.h): one Philox uniform per element, element by element.
#include "kernels/dropout.h"

#include "runtime/philox.h"

namespace ctsr::kernels::cpu {

template <class T>
void dropout_apply(const T* in, int64_t n, float p, T scale, uint64_t seed, uint64_t offset, uint64_t element_base,
                   T* out) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox::uniform_at(seed, offset, element_base + uint64_t(i)) >= p;
    out[i] = keep ? in[i] * scale : T(0);
  }
}

template void dropout_apply<float>(const float*, int64_t, float, float, uint64_t, uint64_t, uint64_t, float*);
template void dropout_apply<double>(const double*, int64_t, float, double, uint64_t, uint64_t, uint64_t, double*);

}  // namespace ctsr::kernels::cpu
