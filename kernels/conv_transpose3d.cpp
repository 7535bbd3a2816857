// Dispatch of the transposed 3D convolution: argument checks in its own terms (x, weight
// [Ci, kD, kH, kW, Co], bias [Co]), then the conv3d op of the adjoint convolution on whichever
// path and engine conv3d would use (kernels/conv3d.cpp).
#include "kernels/conv_transpose3d.h"

#include <string>

namespace ctsr {

namespace {

constexpr const char* kAxisNames[3] = {"D", "H", "W"};

// The conv3d whose adjoint is this transposed convolution: its input is our output (channels
// Co, size Do), its output our input (channels Ci, size D), its weight ours.
kernels::Conv3dShape adjoint_shape(const char* op, const Shape& x_shape, const Shape& w_shape,
                                   const Conv3dParams& params) {
  CTSR_CHECK(x_shape.ndim() == 5, op, ": x must be [N, D, H, W, C] (channels last), got shape ", x_shape.str());
  CTSR_CHECK(w_shape.ndim() == 5, op, ": weight must be [C_in, kD, kH, kW, C_out], got shape ", w_shape.str());
  CTSR_CHECK(x_shape[4] == w_shape[0], op, ": x ", x_shape.str(), " has ", x_shape[4], " channels but weight ",
             w_shape.str(), " takes ", w_shape[0], " input channels (weight is [C_in, kD, kH, kW, C_out])");
  CTSR_CHECK(x_shape[4] >= 1 && w_shape[4] >= 1, op, ": x ", x_shape.str(), " and weight ", w_shape.str(),
             " must have at least one channel each");
  CTSR_CHECK(x_shape[0] >= 0, op, ": x has a negative batch size");
  for (int a = 0; a < 3; ++a) {
    CTSR_CHECK(w_shape[1 + a] == params.kernel[a], op, ": weight ", w_shape.str(), " has kernel size ",
               w_shape[1 + a], " along ", kAxisNames[a], " but the parameters say ", params.str());
  }
  const std::array<int64_t, 3> out = conv_transpose3d_output_size(op, {x_shape[1], x_shape[2], x_shape[3]}, params);
  const Shape y_shape{x_shape[0], out[0], out[1], out[2], w_shape[4]};
  kernels::Conv3dShape s = kernels::conv3d_shape(op, y_shape, "y", w_shape, "weight", params);
  CTSR_CHECK(s.od == x_shape[1] && s.oh == x_shape[2] && s.ow == x_shape[3], op, ": internal: the adjoint of ",
             params.str(), " maps ", y_shape.str(), " to ", s.od, "x", s.oh, "x", s.ow, ", not to x ", x_shape.str());
  return s;
}

void prepare_accumulator(const char* op, const char* name, Tensor& t, const Shape& shape, const Tensor& like) {
  if (!t.defined()) {
    t = Tensor::zeros(shape, like.dtype(), like.device());
    return;
  }
  const std::string what = std::string(op) + " " + name;
  t.check_shape(shape, what.c_str());
  t.check_dtype(like.dtype(), what.c_str());
  t.check_device(like.device(), what.c_str());
}

}  // namespace

std::array<int64_t, 3> conv_transpose3d_output_size(const char* op, const std::array<int64_t, 3>& in,
                                                    const Conv3dParams& p) {
  std::array<int64_t, 3> out{};
  for (int a = 0; a < 3; ++a) {
    CTSR_CHECK(p.kernel[a] >= 1 && p.stride[a] >= 1 && p.padding[a] >= 0, op, ": invalid parameters along ",
               kAxisNames[a], " (", p.str(), "): kernel and stride must be >= 1, padding >= 0");
    CTSR_CHECK(in[a] >= 1, op, ": input size ", in[a], " along ", kAxisNames[a], " must be >= 1");
    out[a] = (in[a] - 1) * p.stride[a] - 2 * p.padding[a] + p.kernel[a];
    CTSR_CHECK(out[a] >= 1, op, ": output size along ", kAxisNames[a], " would be (", in[a], " - 1) * ", p.stride[a],
               " - 2 * ", p.padding[a], " + ", p.kernel[a], " = ", out[a], "; the padding is too large");
  }
  return out;
}

Tensor conv_transpose3d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params) {
  const char* op = "conv_transpose3d_forward";
  x.check_defined("conv_transpose3d_forward x");
  weight.check_defined("conv_transpose3d_forward weight");
  check_same_device(op, {{"x", &x}, {"weight", &weight}, {"bias", &bias}});
  check_same_dtype(op, {{"x", &x}, {"weight", &weight}, {"bias", &bias}});
  const kernels::Conv3dShape s = adjoint_shape(op, x.shape(), weight.shape(), params);
  if (bias.defined()) {
    CTSR_CHECK(bias.ndim() == 1 && bias.dim(0) == s.ci, op, ": bias ", bias.shape().str(), " must be [", s.ci,
               "], one value per output channel of weight ", weight.shape().str());
  }
  Tensor y = Tensor::empty(Shape{s.n, s.d, s.h, s.w, s.ci}, x.dtype(), x.device());
  kernels::conv3d_run_backward_data(op, s, x, weight, bias, y);
  return y;
}

Tensor conv_transpose3d_backward_data(const Tensor& dy, const Tensor& weight, const Shape& x_shape,
                                      const Conv3dParams& params) {
  const char* op = "conv_transpose3d_backward_data";
  dy.check_defined("conv_transpose3d_backward_data dy");
  weight.check_defined("conv_transpose3d_backward_data weight");
  check_same_device(op, {{"dy", &dy}, {"weight", &weight}});
  check_same_dtype(op, {{"dy", &dy}, {"weight", &weight}});
  const kernels::Conv3dShape s = adjoint_shape(op, x_shape, weight.shape(), params);
  dy.check_shape(Shape{s.n, s.d, s.h, s.w, s.ci}, "conv_transpose3d_backward_data dy");
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  kernels::conv3d_run_forward(op, s, dy, weight, Tensor(), dx);
  return dx;
}

void conv_transpose3d_backward_weight(const Tensor& x, const Tensor& dy, const Conv3dParams& params, Tensor& dweight) {
  const char* op = "conv_transpose3d_backward_weight";
  x.check_defined("conv_transpose3d_backward_weight x");
  dy.check_defined("conv_transpose3d_backward_weight dy");
  check_same_device(op, {{"x", &x}, {"dy", &dy}});
  check_same_dtype(op, {{"x", &x}, {"dy", &dy}});
  CTSR_CHECK(x.ndim() == 5, op, ": x must be [N, D, H, W, C] (channels last), got shape ", x.shape().str());
  CTSR_CHECK(dy.ndim() == 5, op, ": dy must be [N, Do, Ho, Wo, C_out], got shape ", dy.shape().str());
  const Shape w_shape{x.dim(4), params.kernel[0], params.kernel[1], params.kernel[2], dy.dim(4)};
  const kernels::Conv3dShape s = adjoint_shape(op, x.shape(), w_shape, params);
  dy.check_shape(Shape{s.n, s.d, s.h, s.w, s.ci}, "conv_transpose3d_backward_weight dy");
  prepare_accumulator(op, "dweight", dweight, w_shape, x);
  // The adjoint convolution's input is our dy and its output gradient our x.
  kernels::conv3d_run_backward_weight(op, s, dy, x, dweight);
}

void conv_transpose3d_backward_bias(const Tensor& dy, Tensor& dbias) {
  const char* op = "conv_transpose3d_backward_bias";
  dy.check_defined("conv_transpose3d_backward_bias dy");
  CTSR_CHECK(dy.ndim() == 5, op, ": dy must be [N, Do, Ho, Wo, C_out], got shape ", dy.shape().str());
  const int64_t channels = dy.dim(4);
  prepare_accumulator(op, "dbias", dbias, Shape{channels}, dy);
  kernels::conv3d_run_backward_bias(op, dy, channels == 0 ? 0 : dy.numel() / channels, channels, dbias);
}

}  // namespace ctsr
