// Test oracle of conv_transpose3d (kernels/conv_transpose3d.h): the transposed convolution in
// float64 as a direct scatter loop over input voxels and taps, written from PyTorch's definition
// and independently of the CPU path in kernels/cpu. x [N, D, H, W, Ci], w [Ci, kD, kH, kW, Co],
// optional b [Co]; returns y [N, Do, Ho, Wo, Co] in float64.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/conv_transpose3d.h"
#include "tests/harness.h"

namespace ctsr::test::oracle {

// Direct transposed convolution in double, as PyTorch defines it: every input voxel scatters
// x * w into the output window at i * s - p + tap (dropped where it falls outside).
inline Tensor conv_transpose3d(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Conv3dParams& p) {
  Tensor x = to_double(x_in), w = to_double(w_in);
  const int64_t N = x.dim(0), D = x.dim(1), H = x.dim(2), W = x.dim(3), Ci = x.dim(4), Co = w.dim(4);
  const int64_t Do = (D - 1) * p.stride[0] - 2 * p.padding[0] + p.kernel[0];
  const int64_t Ho = (H - 1) * p.stride[1] - 2 * p.padding[1] + p.kernel[1];
  const int64_t Wo = (W - 1) * p.stride[2] - 2 * p.padding[2] + p.kernel[2];
  Tensor y = Tensor::zeros({N, Do, Ho, Wo, Co}, DType::float64);
  const double* xp = x.data<double>();
  const double* wp = w.data<double>();
  double* yp = y.data<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t id = 0; id < D; ++id)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t ci = 0; ci < Ci; ++ci)
            for (int64_t kd = 0; kd < p.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < p.kernel[1]; ++kh)
                for (int64_t kw = 0; kw < p.kernel[2]; ++kw) {
                  const int64_t od = id * p.stride[0] - p.padding[0] + kd;
                  const int64_t oh = ih * p.stride[1] - p.padding[1] + kh;
                  const int64_t ow = iw * p.stride[2] - p.padding[2] + kw;
                  if (od < 0 || od >= Do || oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                  const double v = xp[(((n * D + id) * H + ih) * W + iw) * Ci + ci];
                  const double* wr = wp + (((ci * p.kernel[0] + kd) * p.kernel[1] + kh) * p.kernel[2] + kw) * Co;
                  double* yr = yp + (((n * Do + od) * Ho + oh) * Wo + ow) * Co;
                  for (int64_t co = 0; co < Co; ++co) yr[co] += v * wr[co];
                }
  if (b_in.defined()) {
    std::vector<double> b = to_double(b_in).to_vector<double>();
    for (int64_t e = 0; e < y.numel(); ++e) yp[e] += b[size_t(e % Co)];
  }
  return y;
}

}  // namespace ctsr::test::oracle
