// Activations, elementwise over tensors of any shape.
//   silu(x) = x * sigmoid(x);  d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
// Backward recomputes s from x (saved by the layer), so nothing else is stored.
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (float32).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
Tensor silu_forward(const Tensor& x);
Tensor silu_backward(const Tensor& x, const Tensor& dy);
}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  void silu_forward(const Tensor& x, Tensor& y);
  void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx);
)

namespace ctsr::kernels::cpu {
template <class T> void silu_forward(const T* x, T* y, int64_t n);
template <class T> void silu_backward(const T* x, const T* dy, T* dx, int64_t n);
}  // namespace ctsr::kernels::cpu
