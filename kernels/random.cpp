// Dispatch of the random fills (kernels/random.h) to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/random.h"

#include <cmath>
#include <string>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

void fill(const char* op, Tensor& t, kernels::RandomDistribution distribution, double base, double scale,
          uint64_t seed, uint64_t offset) {
  const std::string what = std::string(op) + " t";
  t.check_defined(what.c_str());
  CTSR_CHECK(t.dtype() == DType::float32 || t.dtype() == DType::float64, what, ": tensor ", t.shape().str(), " is ",
             dtype_name(t.dtype()), ", expected float32 or float64");
  if (t.numel() == 0) return;
  if (t.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, t, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::random_fill<T>(t.data<T>(), t.numel(), distribution, T(base), T(scale), seed, offset);
    });
  } else {
    CTSR_LAUNCH(t.device(), random_fill, t, distribution, base, scale, seed, offset);
  }
}

}  // namespace

void fill_uniform(Tensor& t, uint64_t seed, uint64_t offset, double lo, double hi) {
  CTSR_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "fill_uniform: the range [lo, hi) = [", lo, ", ", hi,
             ") must be finite with lo < hi");
  fill("fill_uniform", t, kernels::RandomDistribution::uniform, lo, hi - lo, seed, offset);
}

void fill_normal(Tensor& t, uint64_t seed, uint64_t offset, double mean, double std) {
  CTSR_CHECK(std::isfinite(mean), "fill_normal: mean = ", mean, " must be finite");
  CTSR_CHECK(std::isfinite(std) && std >= 0.0, "fill_normal: std = ", std, " must be finite and >= 0");
  fill("fill_normal", t, kernels::RandomDistribution::normal, mean, std, seed, offset);
}

}  // namespace ctsr
