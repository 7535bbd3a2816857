// Elementwise add, sub and mul with broadcasting of the second operand, and scaling by a constant.
//   binary(op, a, b) = a op b, where b broadcasts to a by the rule of kernels/broadcast.h: b has
//   a's dims or fewer (left-padded with 1s), each equal to a's or 1. The layer patterns, for
//   channels-last a [N, D, H, W, C]: same shape, a per-channel vector [C] (or [1, 1, 1, 1, C]), a
//   per-sample [N, 1, 1, 1, 1], a per-sample-per-channel [N, 1, 1, 1, C], a scalar [1].
//   scale(x, alpha) = alpha * x (alpha rounded to x's dtype first).
// Backward: binary_backward(op, a, b, dy) -> {da, db}, da with a's shape, db with b's:
//   add: da = dy,      db = sum of dy over b's broadcast dims
//   sub: da = dy,      db = -(sum of dy ...)
//   mul: da = dy * b,  db = sum of dy * a ...
// The sums are kernels/reduce.h's deterministic reductions (no float atomics): a rerun gives the
// same bits. Only mul's backward reads a and b; add and sub take them for their shapes.
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (float32). The forward is
// bitwise equal on every path (one IEEE operation per element).
#pragma once

#include "kernels/broadcast.h"
#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

enum class BinaryOp { add, sub, mul };
const char* binary_op_name(BinaryOp op);  // "add", "sub", "mul"

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double alpha);

struct BinaryGrads {
  Tensor da;  // a's shape
  Tensor db;  // b's shape
};
BinaryGrads binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& dy);
Tensor scale_backward(const Tensor& dy, double alpha);  // alpha * dy

}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  // y = a op b, b read through `layout` (b against a).
  void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const BroadcastLayout& layout, Tensor& y);
  void scale(const Tensor& x, double alpha, Tensor& y);
  // db = sign * sum over the layout's broadcast dims of dy (times a when op is mul).
  void binary_backward_b(BinaryOp op, const Tensor& a, const Tensor& dy, const BroadcastLayout& layout, Tensor& db);
)

namespace ctsr::kernels::cpu {
template <class T>
void binary_forward(BinaryOp op, const T* a, const T* b, T* y, const BroadcastLayout& layout);
template <class T>
void scale(const T* x, T alpha, T* y, int64_t n);
// db as in the launcher, summed in double (kernels/cpu/reduce.cpp).
template <class T>
void binary_backward_b(BinaryOp op, const T* a, const T* dy, T* db, const BroadcastLayout& layout);
}  // namespace ctsr::kernels::cpu
