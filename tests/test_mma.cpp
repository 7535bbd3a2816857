// The warp-level matrix primitives of kernels/mma.h: one mma.sync m16n8k16 bf16 tile loaded and
// stored by the documented fragment layout matches the float64 product on the executor (and on a
// GPU, where the layout is the hardware's); each of three wrong fragment indices (in A, B and C)
// makes it fail, so the test can tell a right layout from a wrong one; a partial warp is an error.
#include <cmath>

#include "tests/executor_kernels.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

struct MmaOperands {
  Tensor a, b, c;  // [16, 16] bf16, [16, 8] bf16, [16, 8] float32
};

MmaOperands operands(uint64_t seed) {
  return {random_tensor({16, 16}, seed, DType::bfloat16, -2.0, 2.0), random_tensor({16, 8}, seed + 1, DType::bfloat16),
          random_tensor({16, 8}, seed + 2)};
}

// D = A B + C in float64, and the sum of |terms| behind each element.
std::pair<Tensor, Tensor> reference(const MmaOperands& o) {
  const std::vector<double> a = to_double(o.a).to_vector<double>(), b = to_double(o.b).to_vector<double>();
  const std::vector<double> c = to_double(o.c).to_vector<double>();
  std::vector<double> d(128), m(128);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double sum = c[i * 8 + j], mag = std::fabs(c[i * 8 + j]);
      for (int k = 0; k < 16; ++k) sum += a[i * 16 + k] * b[k * 8 + j], mag += std::fabs(a[i * 16 + k] * b[k * 8 + j]);
      d[i * 8 + j] = sum, m[i * 8 + j] = mag;
    }
  }
  return {Tensor::from_vector(d, Shape{16, 8}), Tensor::from_vector(m, Shape{16, 8})};
}

Tensor run_tile(const MmaOperands& o, Device device, int mutation, unsigned threads = 32) {
  Tensor d = o.c.to(device);
  CTSR_LAUNCH(device, mma_tile, o.a.to(device), o.b.to(device), d, mutation, threads);
  return d.to(Device::cpu());
}

using MmaParity = CudaPathTest;

// 16 products and C: 17 additions per element.
constexpr double kTerms = 17;

TEST_P(MmaParity, TileMatchesFloat64Reference) {
  for (uint64_t seed : {11, 12, 13}) {
    const MmaOperands o = operands(seed);
    const auto [d_ref, magnitude] = reference(o);
    EXPECT_TRUE(within_bf16_bound(run_tile(o, device(), 0), d_ref, magnitude, kTerms, false)) << "seed " << seed;
  }
}

TEST_P(MmaParity, EachWrongFragmentIndexIsCaught) {
  const MmaOperands o = operands(21);
  const auto [d_ref, magnitude] = reference(o);
  ASSERT_TRUE(within_bf16_bound(run_tile(o, device(), 0), d_ref, magnitude, kTerms, false));
  for (int mutation : {1, 2, 3}) {
    EXPECT_FALSE(within_bf16_bound(run_tile(o, device(), mutation), d_ref, magnitude, kTerms, false))
        << "mutation " << mutation << " (see tests/executor_kernels.h) went unnoticed";
  }
}

CTSR_INSTANTIATE_CUDA_PATHS(MmaParity);

// mma.sync is .aligned: the whole warp takes part. A block of 16 threads has half a warp.
TEST(MmaExecutor, PartialWarpIsAnError) {
  const MmaOperands o = operands(31);
  const std::string message = error_message([&] { run_tile(o, Device::cuda_on_cpu(), 0, 16); });
  EXPECT_NE(message.find("mma.sync"), std::string::npos) << message;
  EXPECT_NE(message.find("whole warp"), std::string::npos) << message;
}

}  // namespace
}  // namespace ctsr::test
