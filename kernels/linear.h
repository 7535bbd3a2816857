// Fully connected layer over the last dimension:
//   y = x W^T + b,   x [..., in] seen as [rows, in] (leading dims flattened), W [out, in], b [out]
// y has x's leading dims and `out` last. b is optional: an undefined tensor means no bias.
// Backward (the layer saves x; W is its own parameter):
//   dx  = dy W                     [rows, in], returned
//   dW += dy^T x                   [out, in], ACCUMULATED (created as zeros when undefined)
//   db += sum over rows of dy      [out],     ACCUMULATED when db is not null (same rule)
// so gradient accumulation over micro-batches is free (the layer contract of model/module.h).
// GEMMs go through ctsr::gemm on every path (OpenBLAS on cpu and, by cuBLAS's column-major
// route, on cuda_on_cpu; cuBLAS on a GPU). The bias add and the bias gradient's column sums are
// our kernels; the column sums are deterministic (fixed chunks of rows, combined in order).
// Paths: cpu reference (float32, float64; column sums in double), CUDA and CUDA-on-CPU (float32).
// bfloat16 (mixed precision): x, W and dy in bf16, b, dW and db in float32, y and dx in bf16. The
// op is then conv3d's pointwise convolution on [1, rows, 1, 1, in] (kernels/conv3d.h), so it runs
// on conv3d's tensor-core kernels on the CUDA paths and on its bf16 reference on cpu.
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);
Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor& dweight, Tensor* dbias);

}  // namespace ctsr

// y [rows, out] += b broadcast over rows; db [out] += column sums of dy [rows, out].
CTSR_DECLARE_LAUNCHERS(
  void linear_bias_add(const Tensor& bias, int64_t rows, Tensor& y);
  void linear_bias_grad_accumulate(const Tensor& dy, int64_t rows, Tensor& dbias);
)

namespace ctsr::kernels::cpu {
template <class T> void linear_bias_add(const T* bias, int64_t rows, int64_t out, T* y);
template <class T> void linear_bias_grad_accumulate(const T* dy, int64_t rows, int64_t out, T* dbias);
}  // namespace ctsr::kernels::cpu
