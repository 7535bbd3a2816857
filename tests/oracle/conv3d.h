// Test oracle of conv3d (kernels/conv3d.h): the forward convolution in float64, written from
// the definition (nine nested loops over output voxels, output channels and taps; no im2col,
// no GEMM, no chunks) and independently of the CPU path in kernels/cpu. x [N, D, H, W, Ci],
// w [Co, kD, kH, kW, Ci], optional b [Co]; returns y [N, Do, Ho, Wo, Co] in float64.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/conv3d.h"
#include "tests/harness.h"

namespace ctsr::test::oracle {

// Direct convolution in double, written from the definition: no im2col, no GEMM, no chunks.
inline Tensor conv3d(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Conv3dParams& p) {
  Tensor x = to_double(x_in), w = to_double(w_in);
  const int64_t N = x.dim(0), D = x.dim(1), H = x.dim(2), W = x.dim(3), Ci = x.dim(4), Co = w.dim(0);
  const int64_t Do = (D + 2 * p.padding[0] - p.kernel[0]) / p.stride[0] + 1;
  const int64_t Ho = (H + 2 * p.padding[1] - p.kernel[1]) / p.stride[1] + 1;
  const int64_t Wo = (W + 2 * p.padding[2] - p.kernel[2]) / p.stride[2] + 1;
  Tensor y = Tensor::zeros({N, Do, Ho, Wo, Co}, DType::float64);
  const double* xp = x.data<double>();
  const double* wp = w.data<double>();
  std::vector<double> b = b_in.defined() ? to_double(b_in).to_vector<double>() : std::vector<double>(Co, 0.0);
  double* yp = y.data<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t od = 0; od < Do; ++od)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow)
          for (int64_t co = 0; co < Co; ++co) {
            double sum = b[co];
            for (int64_t kd = 0; kd < p.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < p.kernel[1]; ++kh)
                for (int64_t kw = 0; kw < p.kernel[2]; ++kw) {
                  const int64_t id = od * p.stride[0] - p.padding[0] + kd;
                  const int64_t ih = oh * p.stride[1] - p.padding[1] + kh;
                  const int64_t iw = ow * p.stride[2] - p.padding[2] + kw;
                  if (id < 0 || id >= D || ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  for (int64_t ci = 0; ci < Ci; ++ci) {
                    sum += xp[(((n * D + id) * H + ih) * W + iw) * Ci + ci] *
                           wp[(((co * p.kernel[0] + kd) * p.kernel[1] + kh) * p.kernel[2] + kw) * Ci + ci];
                  }
                }
            yp[(((n * Do + od) * Ho + oh) * Wo + ow) * Co + co] = sum;
          }
  return y;
}

}  // namespace ctsr::test::oracle
