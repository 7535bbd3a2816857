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

template void silu_forward<float>(const float*, float*, int64_t);
template void silu_forward<double>(const double*, double*, int64_t);
template void silu_backward<float>(const float*, const float*, float*, int64_t);
template void silu_backward<double>(const double*, const double*, double*, int64_t);

}  // namespace ctsr::kernels::cpu
