// Activations, elementwise over tensors of any shape.
//   silu(x) = x * sigmoid(x);  d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
//   clamp(x, lo, hi) = lo if x < lo, hi if x > hi, else x; a NaN x stays NaN (the comparisons
//     are false for it, unlike fminf/fmaxf, which would return the bound and hide the NaN).
//     lo and hi are rounded to x's dtype once; lo <= hi, either may be infinite.
//   clamp_backward(x, dy, lo, hi) = dy where lo <= x <= hi, else 0. The bounds themselves pass
//     the gradient (PyTorch's convention, so gradients agree with a PyTorch port, and the
//     degenerate lo == hi still passes it at x == lo); a NaN x is outside and gets 0. It is a
//     selection, not a product: a NaN dy outside the range gives 0, inside it gives NaN.
// Backward recomputes what it needs from x (saved by the layer), so nothing else is stored.
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (silu float32; clamp float32
// and float64, since the samplers clamp in either). clamp is exact: every path gives the same bits.
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
Tensor silu_forward(const Tensor& x);
Tensor silu_backward(const Tensor& x, const Tensor& dy);
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor clamp_backward(const Tensor& x, const Tensor& dy, double lo, double hi);
}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  void silu_forward(const Tensor& x, Tensor& y);
  void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx);
  void clamp(const Tensor& x, double lo, double hi, Tensor& y);
  void clamp_backward(const Tensor& x, const Tensor& dy, double lo, double hi, Tensor& dx);
)

namespace ctsr::kernels::cpu {
template <class T> void silu_forward(const T* x, T* y, int64_t n);
template <class T> void silu_backward(const T* x, const T* dy, T* dx, int64_t n);
template <class T> void clamp(const T* x, T lo, T hi, T* y, int64_t n);
template <class T> void clamp_backward(const T* x, const T* dy, T lo, T hi, T* dx, int64_t n);
}  // namespace ctsr::kernels::cpu
