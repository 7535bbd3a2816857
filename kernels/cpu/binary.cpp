// Reference binary ops and scale: plain loops, float and double. b's gradient is the reference
// sum over broadcast dims (kernels/cpu/reduce.cpp), in double.
#include "kernels/binary.h"
#include "kernels/reduce.h"

namespace ctsr::kernels::cpu {

template <class T>
static T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
  }
  return T(0);
}

template <class T>
void binary_forward(BinaryOp op, const T* a, const T* b, T* y, const BroadcastLayout& layout) {
  const int64_t n = layout.full_numel;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = apply(op, a[i], b[broadcast_small_index(layout, i)]);
}

template <class T>
void scale(const T* x, T alpha, T* y, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

template <class T>
void binary_backward_b(BinaryOp op, const T* a, const T* dy, T* db, const BroadcastLayout& layout) {
  sum_broadcast_dims<T>(dy, op == BinaryOp::mul ? a : nullptr, db, layout, op == BinaryOp::sub ? -1.0 : 1.0);
}

template void binary_forward<float>(BinaryOp, const float*, const float*, float*, const BroadcastLayout&);
template void binary_forward<double>(BinaryOp, const double*, const double*, double*, const BroadcastLayout&);
template void scale<float>(const float*, float, float*, int64_t);
template void scale<double>(const double*, double, double*, int64_t);
template void binary_backward_b<float>(BinaryOp, const float*, const float*, float*, const BroadcastLayout&);
template void binary_backward_b<double>(BinaryOp, const double*, const double*, double*, const BroadcastLayout&);

}  // namespace ctsr::kernels::cpu
