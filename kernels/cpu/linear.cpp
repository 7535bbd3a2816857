// Reference bias add and bias gradient of the fully connected layer (kernels/linear.h); its
// GEMMs run through ctsr::gemm (OpenBLAS) in the dispatch. Plain loops, float and double; the
// column sums accumulate in double.
#include <vector>

#include "kernels/linear.h"

namespace ctsr::kernels::cpu {

template <class T>
void linear_bias_add(const T* bias, int64_t rows, int64_t out, T* y) {
#pragma omp parallel for if (rows * out > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
  }
}

template <class T>
void linear_bias_grad_accumulate(const T* dy, int64_t rows, int64_t out, T* dbias) {
  std::vector<double> sum(static_cast<size_t>(out), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) sum[o] += double(dy[r * out + o]);
  }
  for (int64_t o = 0; o < out; ++o) dbias[o] = T(double(dbias[o]) + sum[o]);
}

template void linear_bias_add<float>(const float*, int64_t, int64_t, float*);
template void linear_bias_add<double>(const double*, int64_t, int64_t, double*);
template void linear_bias_grad_accumulate<float>(const float*, int64_t, int64_t, float*);
template void linear_bias_grad_accumulate<double>(const double*, int64_t, int64_t, double*);

}  // namespace ctsr::kernels::cpu
