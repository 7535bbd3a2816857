// Dispatch of the activation ops to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/activation.h"

#include <cmath>

#include "kernels/reference_dispatch.h"

namespace ctsr {

Tensor silu_forward(const Tensor& x) {
  x.check_defined("silu_forward x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("silu_forward", x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::silu_forward<T>(x.data<T>(), y.data<T>(), x.numel());
    });
  } else {
    CTSR_LAUNCH(x.device(), silu_forward, x, y);
  }
  return y;
}

Tensor silu_backward(const Tensor& x, const Tensor& dy) {
  x.check_defined("silu_backward x");
  dy.check_shape(x.shape(), "silu_backward dy");
  check_same_device("silu_backward", {{"x", &x}, {"dy", &dy}});
  check_same_dtype("silu_backward", {{"x", &x}, {"dy", &dy}});
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("silu_backward", x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::silu_backward<T>(x.data<T>(), dy.data<T>(), dx.data<T>(), x.numel());
    });
  } else {
    CTSR_LAUNCH(x.device(), silu_backward, x, dy, dx);
  }
  return dx;
}

namespace {

// lo <= hi, neither NaN (an infinite bound clamps one side only).
void check_clamp_bounds(const char* op, double lo, double hi) {
  CTSR_CHECK(!std::isnan(lo) && !std::isnan(hi) && lo <= hi, op, ": bounds [lo, hi] = [", lo, ", ", hi,
             "] must not be NaN and need lo <= hi");
}

}  // namespace

Tensor clamp(const Tensor& x, double lo, double hi) {
  x.check_defined("clamp x");
  check_clamp_bounds("clamp", lo, hi);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("clamp", x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::clamp<T>(x.data<T>(), T(lo), T(hi), y.data<T>(), x.numel());
    });
  } else {
    CTSR_LAUNCH(x.device(), clamp, x, lo, hi, y);
  }
  return y;
}

Tensor clamp_backward(const Tensor& x, const Tensor& dy, double lo, double hi) {
  x.check_defined("clamp_backward x");
  dy.check_defined("clamp_backward dy");
  dy.check_shape(x.shape(), "clamp_backward dy");
  check_same_device("clamp_backward", {{"x", &x}, {"dy", &dy}});
  check_same_dtype("clamp_backward", {{"x", &x}, {"dy", &dy}});
  check_clamp_bounds("clamp_backward", lo, hi);
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("clamp_backward", x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::clamp_backward<T>(x.data<T>(), dy.data<T>(), T(lo), T(hi), dx.data<T>(), x.numel());
    });
  } else {
    CTSR_LAUNCH(x.device(), clamp_backward, x, dy, lo, hi, dx);
  }
  return dx;
}

}  // namespace ctsr
