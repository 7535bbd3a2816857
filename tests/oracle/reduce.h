// Test oracle of sum_to_shape (kernels/reduce.h) in float64, written independently of the CPU
// path in kernels/cpu: every element of x (float64) is added to the output element its explicit
// multi-index maps to under broadcasting to `target`; returns the sums in target's row-major order.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::test::oracle {

// Sums by explicit multi-indices, independent of the broadcast layout.
inline std::vector<double> sum_to(const Tensor& x, const Shape& target) {
  const Shape& s = x.shape();
  const int pad = s.ndim() - target.ndim();
  std::vector<double> out(size_t(target.numel()), 0.0);
  const double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t rest = i, index = 0, stride = 1;
    for (int d = s.ndim() - 1; d >= 0; --d) {
      const int64_t coordinate = rest % s[d];
      rest /= s[d];
      if (d >= pad) {
        if (target[d - pad] != 1) index += coordinate * stride;
        stride *= target[d - pad];
      }
    }
    out[size_t(index)] += p[i];
  }
  return out;
}

}  // namespace ctsr::test::oracle
