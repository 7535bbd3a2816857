// Reference losses (kernels/loss.h): plain loops, float and double; sums in double.
#include "kernels/loss.h"

namespace ctsr::kernels::cpu {

template <class T>
T mse_loss_forward(const T* pred, const T* target, int64_t n) {
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(pred[i]) - double(target[i]);
    sum += d * d;
  }
  return T(sum / double(n));
}

template <class T>
void mse_loss_backward(const T* pred, const T* target, T dloss, int64_t n, T* dpred, T* dtarget) {
  const double scale = 2.0 * double(dloss) / double(n);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T g = T(scale * (double(pred[i]) - double(target[i])));
    dpred[i] = g;
    dtarget[i] = -g;
  }
}

template float mse_loss_forward<float>(const float*, const float*, int64_t);
template double mse_loss_forward<double>(const double*, const double*, int64_t);
template void mse_loss_backward<float>(const float*, const float*, float, int64_t, float*, float*);
template void mse_loss_backward<double>(const double*, const double*, double, int64_t, double*, double*);

}  // namespace ctsr::kernels::cpu
