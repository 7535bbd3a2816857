// Filling, copying and dtype conversion, elementwise over tensors of any shape and dtype.
//   fill(t, v)            every element of t becomes v converted to t's dtype (by the cast rule)
//   copy(x)               a new tensor on x's device with x's bytes (through a kernel on CUDA paths)
//   cast(x, to)           each element converted to `to` by the rule in kernels/cast_value.h:
//                         round to nearest even between floating types (once, even from float64 to
//                         bfloat16/float16), truncation toward zero (saturating, NaN -> 0) from
//                         floating to integer, static_cast between integers
//   cast_backward(dy, t)  the gradient of cast: dy cast back to the input's floating dtype t
// Nothing is saved for backward. Paths: cpu reference, CUDA and CUDA-on-CPU, all seven dtypes,
// bitwise equal to each other (the conversions are exact functions of the input bits).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
void fill(Tensor& t, double value);
Tensor copy(const Tensor& src);
Tensor cast(const Tensor& x, DType to);
Tensor cast_backward(const Tensor& dy, DType input_dtype);
}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  void fill(Tensor& y, double value);
  void copy(const Tensor& x, Tensor& y);
  void cast(const Tensor& x, Tensor& y);
)

namespace ctsr::kernels::cpu {
template <class T> void fill_elements(T* y, T value, int64_t n);
template <class T> void copy_elements(const T* x, T* y, int64_t n);
template <class From, class To> void cast_elements(const From* x, To* y, int64_t n);
}  // namespace ctsr::kernels::cpu
