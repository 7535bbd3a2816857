// Dispatch of the sums, means and broadcasts to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/reduce.h"

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

// out = scale * x summed over the dims where `shape` has 1; out has `shape`.
Tensor reduce_to(const char* op, const Tensor& x, const Shape& shape, bool mean) {
  x.check_defined(op);
  const BroadcastLayout layout = broadcast_layout(op, "x", x.shape(), "shape", shape);
  const double scale = mean ? 1.0 / double(layout.broadcast_numel) : 1.0;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::sum_broadcast_dims<T>(x.data<T>(), nullptr, out.data<T>(), layout, scale);
    });
  } else {
    CTSR_LAUNCH(x.device(), sum_broadcast_dims, x, layout, scale, out);
  }
  return out;
}

// y = dy repeated over the dims where dy has 1 (divided by their count for a mean); y has `shape`.
Tensor repeat_to(const char* op, const Tensor& dy, const Shape& shape, bool mean, const char* dy_name = "dy",
                 const char* shape_name = "x_shape") {
  dy.check_defined(op);
  const BroadcastLayout layout = broadcast_layout(op, shape_name, shape, dy_name, dy.shape());
  const double scale = mean ? 1.0 / double(layout.broadcast_numel) : 1.0;
  Tensor y = Tensor::empty(shape, dy.dtype(), dy.device());
  if (dy.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, dy, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::repeat_broadcast_dims<T>(dy.data<T>(), y.data<T>(), layout, scale);
    });
  } else {
    CTSR_LAUNCH(dy.device(), repeat_broadcast_dims, dy, layout, scale, y);
  }
  return y;
}

// A whole-tensor sum sees x as one dim (x may have any number of dims, even none).
Shape flat(const Shape& s) { return Shape{s.numel()}; }

void check_scalar_gradient(const char* op, const Tensor& dy) {
  dy.check_defined(op);
  CTSR_CHECK(dy.numel() == 1, op, ": dy has shape ", dy.shape().str(), ", expected [1] (the gradient of a scalar)");
}

}  // namespace

Tensor sum(const Tensor& x) {
  x.check_defined("sum x");
  return reduce_to("sum", x.reshape(flat(x.shape())), Shape{1}, false);
}

Tensor mean(const Tensor& x) {
  x.check_defined("mean x");
  return reduce_to("mean", x.reshape(flat(x.shape())), Shape{1}, true);
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) { return reduce_to("sum_to_shape", x, shape, false); }

Tensor mean_to_shape(const Tensor& x, const Shape& shape) { return reduce_to("mean_to_shape", x, shape, true); }

Tensor broadcast_to(const Tensor& x, const Shape& shape) { return repeat_to("broadcast_to", x, shape, false, "x", "shape"); }

Tensor sum_backward(const Tensor& dy, const Shape& x_shape) {
  check_scalar_gradient("sum_backward", dy);
  return repeat_to("sum_backward", dy.reshape({1}), flat(x_shape), false).reshape(x_shape);
}

Tensor mean_backward(const Tensor& dy, const Shape& x_shape) {
  check_scalar_gradient("mean_backward", dy);
  return repeat_to("mean_backward", dy.reshape({1}), flat(x_shape), true).reshape(x_shape);
}

Tensor sum_to_shape_backward(const Tensor& dy, const Shape& x_shape) {
  return repeat_to("sum_to_shape_backward", dy, x_shape, false);
}

Tensor mean_to_shape_backward(const Tensor& dy, const Shape& x_shape) {
  return repeat_to("mean_to_shape_backward", dy, x_shape, true);
}

}  // namespace ctsr
