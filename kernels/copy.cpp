// Dispatch of fill, copy and cast to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/copy.h"

#include "kernels/cast_value.h"

namespace ctsr {

void fill(Tensor& t, double value) {
  t.check_defined("fill t");
  if (t.device().kind == DeviceKind::cpu) {
    visit_dtype(t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::fill_elements<T>(t.data<T>(), cast_rules::cast_value<T>(value), t.numel());
    });
  } else {
    CTSR_LAUNCH(t.device(), fill, t, value);
  }
}

Tensor copy(const Tensor& src) {
  src.check_defined("copy src");
  Tensor y = Tensor::empty(src.shape(), src.dtype(), src.device());
  if (src.device().kind == DeviceKind::cpu) {
    visit_dtype(src.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::copy_elements<T>(src.data<T>(), y.data<T>(), src.numel());
    });
  } else {
    CTSR_LAUNCH(src.device(), copy, src, y);
  }
  return y;
}

Tensor cast(const Tensor& x, DType to) {
  x.check_defined("cast x");
  Tensor y = Tensor::empty(x.shape(), to, x.device());
  if (x.device().kind == DeviceKind::cpu) {
    visit_dtype(x.dtype(), [&](auto from_tag) {
      using From = decltype(from_tag);
      visit_dtype(to, [&](auto to_tag) {
        using To = decltype(to_tag);
        kernels::cpu::cast_elements<From, To>(x.data<From>(), y.data<To>(), x.numel());
      });
    });
  } else {
    CTSR_LAUNCH(x.device(), cast, x, y);
  }
  return y;
}

Tensor cast_backward(const Tensor& dy, DType input_dtype) {
  dy.check_defined("cast_backward dy");
  CTSR_CHECK(dtype_is_floating(dy.dtype()), "cast_backward: dy ", dy.shape().str(), " is ", dtype_name(dy.dtype()),
             ", expected a floating dtype (float32, float64, bfloat16, float16)");
  CTSR_CHECK(dtype_is_floating(input_dtype), "cast_backward: the cast's input was ", dtype_name(input_dtype),
             ", which has no gradient (expected a floating dtype)");
  return cast(dy, input_dtype);
}

}  // namespace ctsr
