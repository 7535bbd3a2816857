// 3D transposed convolution (PyTorch ConvTranspose3d semantics: zero padding, no output
// padding, no dilation, one group), forward and the three backwards.
//
// Layout: channels-last. x [N, D, H, W, Ci], weight [Ci, kD, kH, kW, Co], bias [Co] (optional),
// y [N, Do, Ho, Wo, Co] with Do = (D - 1) sD - 2 pD + kD per axis (k4 s2 p1 doubles every size):
//   y[n, o, co] = b[co] + sum_{i, ci : o = i s - p + tap} x[n, i, ci] * w[ci, tap, co]
// The weight is PyTorch's [Ci, Co, kD, kH, kW] with the output channels moved last. Stored this
// way it is exactly the conv3d weight ([C_out, kD, kH, kW, C_in]) of the convolution
// C: Co -> Ci with the same kernel, stride and padding, whose adjoint this op is (C maps a
// [Do, Ho, Wo] volume back to [D, H, W]). So every op is a conv3d op (kernels/conv3d.h), on
// every path and with either GPU engine:
//   forward          y  = C^T x + b           conv3d backward_data (with the bias fused)
//   backward_data    dx = C dy                conv3d forward
//   backward_weight  dw += d<x, C(dy)>/dw     conv3d backward_weight with x and dy swapped
//   backward_bias    db += sum of dy over every voxel
// backward_weight and backward_bias ACCUMULATE (created as zeros when undefined); a layer saves
// x in forward for backward_weight. Paths, dtypes and the engine rules are conv3d's.
#pragma once

#include <array>

#include "kernels/conv3d.h"
#include "runtime/tensor.h"

namespace ctsr {

// Output size per axis, (in - 1) s - 2 p + k. Throws, naming `op`, the axis and the values,
// when params are invalid or the output would be empty.
std::array<int64_t, 3> conv_transpose3d_output_size(const char* op, const std::array<int64_t, 3>& in,
                                                    const Conv3dParams& params);

// bias may be an undefined Tensor (no bias).
Tensor conv_transpose3d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params);
// dx of shape x_shape ([N, D, H, W, Ci]).
Tensor conv_transpose3d_backward_data(const Tensor& dy, const Tensor& weight, const Shape& x_shape,
                                      const Conv3dParams& params);
// dweight += dL/dw ([Ci, kD, kH, kW, Co], Ci from x, Co from dy); created as zeros when undefined.
void conv_transpose3d_backward_weight(const Tensor& x, const Tensor& dy, const Conv3dParams& params, Tensor& dweight);
// dbias += sum of dy over every voxel ([Co]); created as zeros when undefined.
void conv_transpose3d_backward_bias(const Tensor& dy, Tensor& dbias);

}  // namespace ctsr
