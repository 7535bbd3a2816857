// Reference sinusoidal timestep embedding (kernels/timestep_embedding.h): everything in double
// (frequencies, arguments, sin / cos, the backward sums), rounded once to the output type, so the
// float32 reference is the correctly rounded value up to double's error (~1e-13 at t f ~ 1000).
#include <cmath>
#include <vector>

#include "kernels/timestep_embedding.h"

namespace ctsr::kernels::cpu {

namespace {

std::vector<double> frequencies(int64_t half) {
  std::vector<double> f(static_cast<size_t>(half));
  const double log_max_period = std::log(10000.0);
  for (int64_t i = 0; i < half; ++i) f[i] = std::exp(-log_max_period * double(i) / double(half));
  return f;
}

}  // namespace

template <class TIn, class T>
void timestep_embedding_forward(const TIn* t, int64_t n, int64_t dim, T* emb) {
  const int64_t half = dim / 2;
  const std::vector<double> f = frequencies(half);
#pragma omp parallel for if (n * dim > 65536)
  for (int64_t s = 0; s < n; ++s) {
    const double ts = double(t[s]);
    for (int64_t i = 0; i < half; ++i) {
      const double a = ts * f[i];
      emb[s * dim + i] = T(std::cos(a));
      emb[s * dim + half + i] = T(std::sin(a));
    }
  }
}

template <class T>
void timestep_embedding_backward(const T* t, int64_t n, int64_t dim, const T* demb, T* dt) {
  const int64_t half = dim / 2;
  const std::vector<double> f = frequencies(half);
#pragma omp parallel for if (n * dim > 65536)
  for (int64_t s = 0; s < n; ++s) {
    const double ts = double(t[s]);
    double sum = 0.0;
    for (int64_t i = 0; i < half; ++i) {
      const double a = ts * f[i];
      sum += double(demb[s * dim + i]) * (-f[i] * std::sin(a)) + double(demb[s * dim + half + i]) * (f[i] * std::cos(a));
    }
    dt[s] = T(sum);
  }
}

template void timestep_embedding_forward<float, float>(const float*, int64_t, int64_t, float*);
template void timestep_embedding_forward<double, float>(const double*, int64_t, int64_t, float*);
template void timestep_embedding_forward<int32_t, float>(const int32_t*, int64_t, int64_t, float*);
template void timestep_embedding_forward<int64_t, float>(const int64_t*, int64_t, int64_t, float*);
template void timestep_embedding_forward<float, double>(const float*, int64_t, int64_t, double*);
template void timestep_embedding_forward<double, double>(const double*, int64_t, int64_t, double*);
template void timestep_embedding_forward<int32_t, double>(const int32_t*, int64_t, int64_t, double*);
template void timestep_embedding_forward<int64_t, double>(const int64_t*, int64_t, int64_t, double*);
template void timestep_embedding_backward<float>(const float*, int64_t, int64_t, const float*, float*);
template void timestep_embedding_backward<double>(const double*, int64_t, int64_t, const double*, double*);

}  // namespace ctsr::kernels::cpu
