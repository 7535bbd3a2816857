// Dispatch of dropout to the reference, CUDA or CUDA-on-CPU path. Forward and backward apply
// the same map (mask, then scale), so both go through dropout_apply.
#include "kernels/dropout.h"

#include <cmath>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

Tensor apply(const char* op, const Tensor& in, double p, uint64_t seed, uint64_t offset) {
  in.check_defined(op);
  CTSR_CHECK(p >= 0.0 && p < 1.0, op, ": drop probability p = ", p, " must lie in [0, 1)");
  // The float nearest p decides the mask on every path (a p within 2^-25 of 1 rounds to 1.0f
  // and drops everything, which is what such a p means; scale stays finite).
  const float p32 = static_cast<float>(p);
  Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
  if (in.numel() == 0) return out;
  const double scale = 1.0 / (1.0 - p);
  if (in.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, in, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::dropout_apply<T>(in.data<T>(), in.numel(), p32, T(scale), seed, offset, out.data<T>());
    });
  } else {
    CTSR_LAUNCH(in.device(), dropout_apply, in, p32, float(scale), seed, offset, out);
  }
  return out;
}

}  // namespace

Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  return apply("dropout_forward", x, p, seed, offset);
}

Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset) {
  return apply("dropout_backward", dy, p, seed, offset);
}

}  // namespace ctsr
