// Reference activations: plain loops, float and double.
#include <cmath>

#include "kernels/activation.h"

namespace ctsr::kernels::cpu {

template <class T>
static T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
void silu_forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid(x[i]);
}

template <class T>
void silu_backward(const T* x, const T* dy, T* dx, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <class T>
void clamp(const T* x, T lo, T hi, T* y, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    // Written as comparisons, not std::min/std::max chains, so that the NaN rule is explicit.
    if (v < lo) y[i] = lo;
    else if (v > hi) y[i] = hi;
    else y[i] = v;
  }
}

template <class T>
void clamp_backward(const T* x, const T* dy, T lo, T hi, T* dx, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const bool inside = x[i] >= lo && x[i] <= hi;  // false for NaN
    dx[i] = inside ? dy[i] : T(0);
  }
}

template void silu_forward<float>(const float*, float*, int64_t);
template void silu_forward<double>(const double*, double*, int64_t);
template void silu_backward<float>(const float*, const float*, float*, int64_t);
template void silu_backward<double>(const double*, const double*, double*, int64_t);
template void clamp<float>(const float*, float, float, float*, int64_t);
template void clamp<double>(const double*, double, double, double*, int64_t);
template void clamp_backward<float>(const float*, const float*, float, float, float*, int64_t);
template void clamp_backward<double>(const double*, const double*, double, double, double*, int64_t);

}  // namespace ctsr::kernels::cpu
