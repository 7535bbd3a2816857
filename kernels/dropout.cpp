// Dispatch of dropout to the reference, CUDA or CUDA-on-CPU path. Forward and backward apply
// the same map (mask, then scale), so both go through dropout_apply.
#include "kernels/dropout.h"

#include <cmath>
#include <cstdint>

#include "kernels/copy.h"
#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

Tensor apply(const char* op, const Tensor& in, double p, uint64_t seed, uint64_t offset, uint64_t element_base) {
  in.check_defined(op);
  CTSR_CHECK(p >= 0.0 && p < 1.0, op, ": drop probability p = ", p, " must lie in [0, 1)");
  CTSR_CHECK(element_base <= UINT64_MAX - uint64_t(in.numel()), op, ": element_base ", element_base, " plus ",
             in.numel(), " elements passes the end of the Philox stream (2^64 elements)");
  // The float nearest p decides the mask on every path (a p within 2^-25 of 1 rounds to 1.0f
  // and drops everything, which is what such a p means; scale stays finite).
  const float p32 = static_cast<float>(p);
  Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
  if (in.numel() == 0) return out;
  const double scale = 1.0 / (1.0 - p);
  if (in.device().kind == DeviceKind::cpu && in.dtype() == DType::bfloat16) {
    // float32 arithmetic on the widened values, rounded once (cast's rule), as the CUDA kernel.
    return cast(apply(op, cast(in, DType::float32), p, seed, offset, element_base), DType::bfloat16);
  }
  if (in.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, in, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::dropout_apply<T>(in.data<T>(), in.numel(), p32, T(scale), seed, offset, element_base,
                                        out.data<T>());
    });
  } else {
    CTSR_LAUNCH(in.device(), dropout_apply, in, p32, float(scale), seed, offset, element_base, out);
  }
  return out;
}

}  // namespace

Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t element_base) {
  return apply("dropout_forward", x, p, seed, offset, element_base);
}

Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset, uint64_t element_base) {
  return apply("dropout_backward", dy, p, seed, offset, element_base);
}

}  // namespace ctsr
