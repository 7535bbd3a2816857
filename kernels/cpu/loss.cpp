// Reference losses (kernels/loss.h): plain loops, float and double; sums in double.
#include "kernels/loss.h"

#include <cmath>

namespace ctsr::kernels::cpu {

namespace {
// torch's sign: 0 at 0 and for NaN.
inline double sign_of(double d) { return double(d > 0.0) - double(d < 0.0); }
}  // namespace

template <class T>
T pair_loss_forward(PairLoss kind, const T* pred, const T* target, int64_t n) {
  double sum = 0.0;
  if (kind == PairLoss::mse) {
#pragma omp parallel for reduction(+ : sum) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const double d = double(pred[i]) - double(target[i]);
      sum += d * d;
    }
  } else {
#pragma omp parallel for reduction(+ : sum) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) sum += std::fabs(double(pred[i]) - double(target[i]));
  }
  return T(sum / double(n));
}

template <class T>
void pair_loss_backward(PairLoss kind, const T* pred, const T* target, T dloss, int64_t n, T* dpred, T* dtarget) {
  if (kind == PairLoss::mse) {
    const double scale = 2.0 * double(dloss) / double(n);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dpred[i] = T(scale * (double(pred[i]) - double(target[i])));
  } else {
    // The scale is rounded to T once; times a sign it stays exact, so every path agrees bitwise.
    const T scale = T(double(dloss) / double(n));
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dpred[i] = T(sign_of(double(pred[i]) - double(target[i]))) * scale;
  }
  if (dtarget) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dtarget[i] = -dpred[i];
  }
}

template float pair_loss_forward<float>(PairLoss, const float*, const float*, int64_t);
template double pair_loss_forward<double>(PairLoss, const double*, const double*, int64_t);
template void pair_loss_backward<float>(PairLoss, const float*, const float*, float, int64_t, float*, float*);
template void pair_loss_backward<double>(PairLoss, const double*, const double*, double, int64_t, double*, double*);

}  // namespace ctsr::kernels::cpu
