// SiLU and clamp: reference values, gradient checks in float64, and CUDA-path parity with the
// reference.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/activation.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

TEST(Silu, ReferenceGradcheck) {
  Tensor x = random_tensor({3, 5, 7}, 11, DType::float64, -4.0, 4.0);
  expect_gradcheck(
      "silu", {x}, [](const std::vector<Tensor>& in) { return std::vector<Tensor>{silu_forward(in[0])}; },
      [](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{silu_backward(in[0], dy[0])};
      });
}

TEST(Silu, ReferenceKnownValues) {
  Tensor x = Tensor::from_vector<double>({0.0, 1.0, -1.0, 20.0, -20.0}, {5});
  std::vector<double> y = silu_forward(x).to_vector<double>();
  EXPECT_DOUBLE_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.7310585786300049, 1e-15);
  EXPECT_NEAR(y[2], -0.2689414213699951, 1e-15);
  EXPECT_NEAR(y[3], 20.0, 1e-7);
  EXPECT_NEAR(y[4], -20.0 * 2.0611536181902037e-09, 1e-20);
}

TEST(Silu, FloatAndDoubleReferencesAgree) {
  Tensor x = random_tensor({25, 16, 16}, 3, DType::float32, -6, 6);
  EXPECT_TENSORS_CLOSE(silu_forward(x), silu_forward(to_double(x)), 1e-6, 1e-7);
}

using SiluParity = CudaPathTest;

TEST_P(SiluParity, ForwardAndBackwardMatchReference) {
  for (Shape shape : {Shape{1}, Shape{13, 8, 8}, Shape{3, 25, 16, 16, 5}}) {
    Tensor x = random_tensor(shape, 5, DType::float32, -6, 6);
    Tensor dy = random_tensor(shape, 6, DType::float32);
    Tensor y = silu_forward(x.to(device()));
    Tensor dx = silu_backward(x.to(device()), dy.to(device()));
    EXPECT_EQ(y.device(), device());
    EXPECT_TENSORS_CLOSE(y, silu_forward(x), 1e-6, 1e-6) << shape.str();
    EXPECT_TENSORS_CLOSE(dx, silu_backward(x, dy), 1e-6, 1e-6) << shape.str();
  }
}

TEST_P(SiluParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4}, 1, DType::float64).to(device());
  EXPECT_THROW(silu_forward(x), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(SiluParity);

TEST(Silu, BackwardRejectsMismatchedShapes) {
  Tensor x = random_tensor({4, 3}, 1);
  Tensor dy = random_tensor({3, 4}, 2);
  try {
    silu_backward(x, dy);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 3]"), std::string::npos) << e.what();
  }
}

// ---- clamp ------------------------------------------------------------------------------------

// Random values in [-3, 3) moved at least `margin` away from the kinks at lo and hi, so central
// differences with a step below the margin never straddle one.
Tensor away_from_kinks(const Shape& shape, uint64_t seed, double lo, double hi, double margin) {
  std::vector<double> v = random_tensor(shape, seed, DType::float64, -3.0, 3.0).to_vector<double>();
  for (double& x : v) {
    for (double kink : {lo, hi}) {
      if (std::abs(x - kink) < margin) x = x < kink ? kink - margin : kink + margin;
    }
  }
  return Tensor::from_vector<double>(v, shape);
}

TEST(Clamp, ReferenceKnownValuesNanAndBounds) {
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  Tensor x = Tensor::from_vector<double>({-2.0, -0.5, -0.5000001, 0.25, 0.75, 0.7500001, 3.0, nan, -inf, inf}, {10});
  std::vector<double> y = clamp(x, -0.5, 0.75).to_vector<double>();
  const std::vector<double> want = {-0.5, -0.5, -0.5, 0.25, 0.75, 0.75, 0.75, nan, -0.5, 0.75};
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) EXPECT_TRUE(std::isnan(y[i])) << i;
    else EXPECT_EQ(y[i], want[i]) << i;
  }
  // The gradient passes where lo <= x <= hi, the bounds included; NaN and outside get 0.
  Tensor dy = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {10});
  EXPECT_EQ(clamp_backward(x, dy, -0.5, 0.75).to_vector<double>(),
            (std::vector<double>{0, 2, 0, 4, 5, 0, 0, 0, 0, 0}));
  // One-sided with an infinite bound; the degenerate lo == hi maps everything to it.
  EXPECT_EQ(clamp(x.slice(0, 7), -inf, 0.0).to_vector<double>(),
            (std::vector<double>{-2.0, -0.5, -0.5000001, 0.0, 0.0, 0.0, 0.0}));
  EXPECT_EQ(clamp(x.slice(0, 7), 1.5, 1.5).to_vector<double>(), std::vector<double>(7, 1.5));
  EXPECT_EQ(clamp_backward(x.slice(0, 3), dy.slice(0, 3), -0.5, -0.5).to_vector<double>(),
            (std::vector<double>{0, 2, 0}));
}

TEST(Clamp, FloatBoundsAreRoundedToTheTensorsDtype) {
  // 0.1 is not a float: the float32 path clamps to float(0.1), the bound it can represent.
  Tensor x = Tensor::from_vector<float>({0.5f, -0.5f}, {2});
  std::vector<float> y = clamp(x, -0.1, 0.1).to_vector<float>();
  EXPECT_EQ(y[0], 0.1f);
  EXPECT_EQ(y[1], -0.1f);
}

TEST(Clamp, FloatAndDoubleReferencesAgree) {
  Tensor x = random_tensor({7, 11, 13}, 21, DType::float32, -2, 2);
  Tensor dy = random_tensor({7, 11, 13}, 22, DType::float32);
  // Exact op: the float result is the double result rounded (bounds are floats here).
  EXPECT_TRUE(tensors_equal(to_double(clamp(x, -1.25, 0.5)), clamp(to_double(x), -1.25, 0.5)));
  EXPECT_TRUE(tensors_equal(to_double(clamp_backward(x, dy, -1.25, 0.5)),
                            clamp_backward(to_double(x), to_double(dy), -1.25, 0.5)));
}

TEST(Clamp, ReferenceGradcheckAwayFromKinks) {
  const double lo = -0.7, hi = 1.3;
  Tensor x = away_from_kinks({5, 7, 3}, 31, lo, hi, 1e-3);
  // Some inputs on each side and inside, so every branch contributes.
  std::vector<double> v = x.to_vector<double>();
  EXPECT_GT(std::count_if(v.begin(), v.end(), [&](double a) { return a < lo; }), 5);
  EXPECT_GT(std::count_if(v.begin(), v.end(), [&](double a) { return a > hi; }), 5);
  EXPECT_GT(std::count_if(v.begin(), v.end(), [&](double a) { return a > lo && a < hi; }), 5);
  expect_gradcheck(
      "clamp", {x}, [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{clamp(in[0], lo, hi)}; },
      [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{clamp_backward(in[0], dy[0], lo, hi)};
      });
}

TEST(Clamp, RejectsBadBoundsAndMismatches) {
  Tensor x = random_tensor({4, 3}, 1);
  expect_error_mentions([&] { clamp(x, 1.0, -1.0); }, {"clamp", "[1, -1]", "lo <= hi"});
  expect_error_mentions([&] { clamp(x, std::nan(""), 1.0); }, {"clamp", "NaN"});
  expect_error_mentions([&] { clamp_backward(x, random_tensor({3, 4}, 2), -1, 1); }, {"[3, 4]", "[4, 3]"});
  expect_error_mentions([&] { clamp_backward(x, random_tensor({4, 3}, 2, DType::float64), -1, 1); },
                        {"clamp_backward", "float64"});
  Tensor ints = Tensor::zeros({3}, DType::int32);
  expect_error_mentions([&] { clamp(ints, -1, 1); }, {"clamp", "int32"});
}

using ClampParity = CudaPathTest;

TEST_P(ClampParity, ForwardAndBackwardEqualTheReferenceBitwise) {
  const double nan = std::nan("");
  for (DType dtype : {DType::float32, DType::float64}) {
    for (Shape shape : {Shape{1}, Shape{13, 7}, Shape{3, 25, 16, 16, 5}}) {
      Tensor x = random_tensor(shape, 41, dtype, -2.5, 2.5);
      Tensor dy = random_tensor(shape, 42, dtype);
      if (shape.numel() > 7) {  // a NaN and the bounds themselves, at awkward places
        Tensor xd = to_double(x);
        std::vector<double> v = xd.to_vector<double>();
        v[1] = nan, v[2] = -1.0, v[shape.numel() - 1] = 0.5;
        x = Tensor::from_vector<double>(v, shape);
        if (dtype == DType::float32) x = to_float(x);
      }
      Tensor y = clamp(x.to(device()), -1.0, 0.5);
      Tensor dx = clamp_backward(x.to(device()), dy.to(device()), -1.0, 0.5);
      EXPECT_EQ(y.device(), device());
      EXPECT_TRUE(tensors_equal(y, clamp(x, -1.0, 0.5))) << dtype_name(dtype) << " " << shape.str();
      EXPECT_TRUE(tensors_equal(dx, clamp_backward(x, dy, -1.0, 0.5))) << dtype_name(dtype) << " " << shape.str();
    }
  }
}

CTSR_INSTANTIATE_CUDA_PATHS(ClampParity);

}  // namespace
}  // namespace ctsr::test
