// Dispatch of the binary ops and scale to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/binary.h"

#include "kernels/copy.h"
#include "kernels/reference_dispatch.h"

namespace ctsr {

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
  }
  return "unknown binary op";
}

namespace {

// a and b (and dy) on one device with one dtype, b broadcasting to a.
BroadcastLayout check_operands(const char* op, const Tensor& a, const Tensor& b) {
  a.check_defined(op);
  b.check_defined(op);
  check_same_device(op, {{"a", &a}, {"b", &b}});
  check_same_dtype(op, {{"a", &a}, {"b", &b}});
  return broadcast_layout(op, "a", a.shape(), "b", b.shape());
}

Tensor forward(BinaryOp op, const char* name, const Tensor& a, const Tensor& b, const BroadcastLayout& layout) {
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(name, a, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::binary_forward<T>(op, a.data<T>(), b.data<T>(), y.data<T>(), layout);
    });
  } else {
    CTSR_LAUNCH(a.device(), binary_forward, op, a, b, layout, y);
  }
  return y;
}

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  const BroadcastLayout layout = check_operands(name, a, b);
  return forward(op, name, a, b, layout);
}

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }

Tensor scale(const Tensor& x, double alpha) {
  x.check_defined("scale x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("scale", x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::scale<T>(x.data<T>(), T(alpha), y.data<T>(), x.numel());
    });
  } else {
    CTSR_LAUNCH(x.device(), scale, x, alpha, y);
  }
  return y;
}

Tensor scale_backward(const Tensor& dy, double alpha) { return scale(dy, alpha); }

BinaryGrads binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& dy) {
  const char* name = op == BinaryOp::add ? "add backward" : op == BinaryOp::sub ? "sub backward" : "mul backward";
  const BroadcastLayout layout = check_operands(name, a, b);
  dy.check_defined(name);
  check_same_device(name, {{"a", &a}, {"dy", &dy}});
  check_same_dtype(name, {{"a", &a}, {"dy", &dy}});
  CTSR_CHECK(dy.shape() == a.shape(), name, ": dy has shape ", dy.shape().str(), " but a has ", a.shape().str(),
             " (dy is the gradient of the output, which has a's shape)");
  BinaryGrads grads;
  // A fresh tensor, never dy itself: callers accumulate into gradients.
  grads.da = op == BinaryOp::mul ? forward(BinaryOp::mul, name, dy, b, layout) : copy(dy);
  grads.db = Tensor::empty(b.shape(), b.dtype(), b.device());
  if (a.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(name, a, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::binary_backward_b<T>(op, a.data<T>(), dy.data<T>(), grads.db.data<T>(), layout);
    });
  } else {
    CTSR_LAUNCH(a.device(), binary_backward_b, op, a, dy, layout, grads.db);
  }
  return grads;
}

}  // namespace ctsr
