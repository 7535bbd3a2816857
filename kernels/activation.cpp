// Dispatch of the activation ops to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/activation.h"

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

}  // namespace ctsr
