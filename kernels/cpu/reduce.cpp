// Reference sums over broadcast dims and their adjoint (repeating over them): plain loops, float
// and double, sums accumulated in double in input order (the truth the CUDA paths are held to).
#include <vector>

#include "kernels/reduce.h"

namespace ctsr::kernels::cpu {

template <class T>
void sum_broadcast_dims(const T* x, const T* weight, T* out, const BroadcastLayout& layout, double scale) {
  std::vector<double> sums(static_cast<size_t>(layout.kept_numel), 0.0);
  if (layout.same_shape()) {
    for (int64_t i = 0; i < layout.full_numel; ++i) sums[size_t(i)] = weight ? double(x[i]) * double(weight[i]) : double(x[i]);
  } else {
    for (int64_t i = 0; i < layout.full_numel; ++i) {
      const double term = weight ? double(x[i]) * double(weight[i]) : double(x[i]);
      sums[size_t(broadcast_small_index(layout, i))] += term;
    }
  }
  for (int64_t j = 0; j < layout.kept_numel; ++j) out[j] = static_cast<T>(sums[size_t(j)] * scale);
}

template <class T>
void repeat_broadcast_dims(const T* x, T* y, const BroadcastLayout& layout, double scale) {
  const int64_t n = layout.full_numel;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(double(x[broadcast_small_index(layout, i)]) * scale);
}

template void sum_broadcast_dims<float>(const float*, const float*, float*, const BroadcastLayout&, double);
template void sum_broadcast_dims<double>(const double*, const double*, double*, const BroadcastLayout&, double);
template void repeat_broadcast_dims<float>(const float*, float*, const BroadcastLayout&, double);
template void repeat_broadcast_dims<double>(const double*, double*, const BroadcastLayout&, double);

}  // namespace ctsr::kernels::cpu
