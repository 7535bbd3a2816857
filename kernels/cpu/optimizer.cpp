// Reference AdamW, sum of squares, scaling and weight EMA (kernels/optimizer.h), float and
// double, one tensor at a time. The AdamW and EMA element updates are the header's adamw_update
// and ema_value, the same functions the CUDA kernels run, so the paths agree bit for bit; their
// independent checks are the comparison with torch.optim.AdamW (tests/data/adamw_golden.txt) and
// with the EMA formula in double. The sum of squares runs in double, in index order.
#include "kernels/optimizer.h"

namespace ctsr::kernels::cpu {

template <class T>
void adamw_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamWScalars<T>& scalars) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) adamw_update<T>(param[i], exp_avg[i], exp_avg_sq[i], grad[i], scalars);
}

template <class T>
double sum_of_squares(const T* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}

template <class T>
void scale(T* x, int64_t n, T factor) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * factor;
}

template <class T>
void ema_update(T* ema, const T* param, int64_t n, const EmaScalars<T>& scalars) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) ema[i] = ema_value<T>(ema[i], param[i], scalars);
}

#define CTSR_INSTANTIATE(T)                                                                       \
  template void adamw_step<T>(T*, const T*, T*, T*, int64_t, const AdamWScalars<T>&);            \
  template double sum_of_squares<T>(const T*, int64_t);                                          \
  template void scale<T>(T*, int64_t, T);                                                        \
  template void ema_update<T>(T*, const T*, int64_t, const EmaScalars<T>&);
CTSR_INSTANTIATE(float)
CTSR_INSTANTIATE(double)
#undef CTSR_INSTANTIATE

}  // namespace ctsr::kernels::cpu
