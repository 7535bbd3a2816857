// Reference fill, copy and cast: plain loops over every dtype, converting with the shared rule
// (kernels/cast_value.h).
#include "kernels/cast_value.h"
#include "kernels/copy.h"

namespace ctsr::kernels::cpu {

template <class T>
void fill_elements(T* y, T value, int64_t n) {
#pragma omp parallel for if (n > 262144)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

template <class T>
void copy_elements(const T* x, T* y, int64_t n) {
#pragma omp parallel for if (n > 262144)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i];
}

template <class From, class To>
void cast_elements(const From* x, To* y, int64_t n) {
#pragma omp parallel for if (n > 262144)
  for (int64_t i = 0; i < n; ++i) y[i] = cast_rules::cast_value<To>(x[i]);
}

#define CTSR_COPY_INSTANTIATE_ONE(T)                       \
  template void fill_elements<T>(T*, T, int64_t);          \
  template void copy_elements<T>(const T*, T*, int64_t);
#define CTSR_CAST_INSTANTIATE(From, To) template void cast_elements<From, To>(const From*, To*, int64_t);
#define CTSR_CAST_INSTANTIATE_FROM(From)  \
  CTSR_COPY_INSTANTIATE_ONE(From)         \
  CTSR_CAST_INSTANTIATE(From, float)      \
  CTSR_CAST_INSTANTIATE(From, double)     \
  CTSR_CAST_INSTANTIATE(From, bfloat16)   \
  CTSR_CAST_INSTANTIATE(From, float16)    \
  CTSR_CAST_INSTANTIATE(From, int32_t)    \
  CTSR_CAST_INSTANTIATE(From, int64_t)    \
  CTSR_CAST_INSTANTIATE(From, uint8_t)
CTSR_CAST_INSTANTIATE_FROM(float)
CTSR_CAST_INSTANTIATE_FROM(double)
CTSR_CAST_INSTANTIATE_FROM(bfloat16)
CTSR_CAST_INSTANTIATE_FROM(float16)
CTSR_CAST_INSTANTIATE_FROM(int32_t)
CTSR_CAST_INSTANTIATE_FROM(int64_t)
CTSR_CAST_INSTANTIATE_FROM(uint8_t)

}  // namespace ctsr::kernels::cpu
