// Sinusoidal timestep embedding: known values (t = 0; a hand-computed t = 999, dim = 8), the
// spec's frequencies, integer steps, float64 gradient checks (small and large t), CUDA-path
// parity under a float32 error bound that grows with |t| (derived in timestep_embedding.cu), and
// the error messages for bad inputs.
#include <cmath>
#include <functional>
#include <string>

#include "kernels/timestep_embedding.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

TEST(TimestepEmbedding, StepZeroIsCosOneSinZero) {
  for (DType dtype : {DType::float32, DType::float64}) {
    Tensor t = dtype == DType::float32 ? Tensor::from_vector<float>({0.0f, 0.0f}, {2})
                                       : Tensor::from_vector<double>({0.0, 0.0}, {2});
    Tensor emb = timestep_embedding(t, 16);
    EXPECT_EQ(emb.shape(), (Shape{2, 16}));
    EXPECT_EQ(emb.dtype(), dtype);
    const std::vector<double> v = to_double(emb).to_vector<double>();
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < 8; ++i) {
        EXPECT_EQ(v[s * 16 + i], 1.0) << "cos " << i;
        EXPECT_EQ(v[s * 16 + 8 + i], 0.0) << "sin " << i;
      }
    }
  }
}

// dim = 8: half = 4, f = 10000^(-i/4) = 1, 0.1, 0.01, 0.001; arguments 999, 99.9, 9.99, 0.999.
// Values from mpmath at 30 digits.
TEST(TimestepEmbedding, HandComputedValueAtStep999) {
  const double expected[8] = {0.99964985298082646,  0.80745865769954665, -0.8444696962887725,  0.54114350656157204,
                              -0.026460752737064127, -0.58992416131740726, -0.53560333461429115, 0.8409302618566214};
  // float64 t: exact up to double's rounding of f and of t f (~1e-13 at 999 rad).
  std::vector<double> v = timestep_embedding(Tensor::from_vector<double>({999.0}, {1}), 8).to_vector<double>();
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(v[i], expected[i], 1e-12) << i;
  // int64 t on the reference: computed in double, rounded once to float32.
  std::vector<float> vf = timestep_embedding(Tensor::from_vector<int64_t>({999}, {1}), 8).to_vector<float>();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(vf[i], float(expected[i])) << i;
}

TEST(TimestepEmbedding, FrequenciesFollowTheSpec) {
  // At t = 1 the embedding is cos(f_i), sin(f_i): recover f_i = atan2(sin, cos).
  const int64_t dim = 128, half = 64;
  std::vector<double> v = timestep_embedding(Tensor::from_vector<double>({1.0}, {1}), dim).to_vector<double>();
  for (int64_t i = 0; i < half; ++i) {
    const double f = std::exp(-std::log(10000.0) * double(i) / double(half));
    EXPECT_NEAR(std::atan2(v[half + i], v[i]), f, 1e-14) << i;
  }
  EXPECT_NEAR(std::atan2(v[half + half - 1], v[half - 1]), std::pow(10000.0, -63.0 / 64.0), 1e-15);
}

TEST(TimestepEmbedding, IntegerStepsMatchFloatSteps) {
  const std::vector<int32_t> steps = {0, 1, 17, 500, 998, 999};
  std::vector<float> as_float(steps.begin(), steps.end());
  std::vector<int64_t> as_int64(steps.begin(), steps.end());
  const int64_t n = int64_t(steps.size());
  Tensor ref = timestep_embedding(Tensor::from_vector(as_float, {n}), 64);
  EXPECT_TRUE(tensors_equal(timestep_embedding(Tensor::from_vector(steps, {n}), 64), ref));
  EXPECT_TRUE(tensors_equal(timestep_embedding(Tensor::from_vector(as_int64, {n}), 64), ref));
}

TEST(TimestepEmbedding, FloatAndDoubleReferencesAgree) {
  Tensor t = random_tensor({33}, 1, DType::float32, 0, 1000);
  EXPECT_TENSORS_CLOSE(timestep_embedding(t, 96), timestep_embedding(to_double(t), 96), 0, 6e-8);
  Tensor demb = random_tensor({33, 96}, 2, DType::float32);
  EXPECT_TENSORS_CLOSE(timestep_embedding_backward(t, 96, demb),
                       timestep_embedding_backward(to_double(t), 96, to_double(demb)), 1e-6, 1e-6);
}

void gradcheck_embedding(const std::string& name, double lo, double hi, int64_t n, int64_t dim, uint64_t seed) {
  Tensor t = random_tensor({n}, seed, DType::float64, lo, hi);
  expect_gradcheck(
      name, {t},
      [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{timestep_embedding(in[0], dim)}; },
      [dim](const std::vector<Tensor>& in, const std::vector<Tensor>& demb) {
        return std::vector<Tensor>{timestep_embedding_backward(in[0], dim, demb[0])};
      });
}

TEST(TimestepEmbedding, ReferenceGradcheck) {
  gradcheck_embedding("timestep_embedding dim 10, t in [-3, 50)", -3, 50, 6, 10, 11);
  gradcheck_embedding("timestep_embedding dim 2", 0, 20, 3, 2, 12);
  gradcheck_embedding("timestep_embedding dim 32, t in [900, 999)", 900, 999, 5, 32, 13);
}

TEST(TimestepEmbedding, RejectsBadInputs) {
  Tensor t = Tensor::from_vector<float>({1.0f, 2.0f}, {2});
  std::string m = error_message([&] { timestep_embedding(t, 7); });
  expect_contains(m, "timestep_embedding");
  expect_contains(m, "dim = 7");
  expect_contains(m, "even");
  m = error_message([&] { timestep_embedding(t, 0); });
  expect_contains(m, "dim = 0");

  m = error_message([&] { timestep_embedding(t.reshape({2, 1}), 8); });
  expect_contains(m, "t must be [N]");
  expect_contains(m, "[2, 1]");

  m = error_message([&] { timestep_embedding(Tensor::zeros({2}, DType::uint8), 8); });
  expect_contains(m, "t is uint8");
  expect_contains(m, "expected float32, float64, int32 or int64");

  m = error_message([&] { timestep_embedding_backward(Tensor::zeros({2}, DType::int64), 8, random_tensor({2, 8}, 1)); });
  expect_contains(m, "t is int64");

  m = error_message([&] { timestep_embedding_backward(t, 8, random_tensor({2, 6}, 1)); });
  expect_contains(m, "timestep_embedding_backward demb");
  expect_contains(m, "expected [2, 8]");

  m = error_message([&] { timestep_embedding_backward(t, 8, random_tensor({2, 8}, 1, DType::float64)); });
  expect_contains(m, "demb is float64");
}

// ---- CUDA paths -------------------------------------------------------------------------------

// Float32 error bound of the CUDA kernels against the float64 reference (derivation in
// timestep_embedding.cu): argument error <= 3.4e-7 |t|, plus ~2 ulp from sinf / cosf and the
// output rounding; 4e-7 |t| + 5e-7 leaves a little room. 4e-4 at t = 999.
double embedding_atol(double max_t) { return 4e-7 * max_t + 5e-7; }

Tensor steps_for_parity(int64_t n, uint64_t seed) {
  // The extremes of the model's range plus random (non-integer) steps in [0, 1000).
  Tensor t = random_tensor({n}, seed, DType::float32, 0, 1000);
  float* p = t.data<float>();
  p[0] = 0.0f, p[1] = 1.0f, p[2] = 999.0f, p[3] = 0.5f;
  return t;
}

using TimestepEmbeddingParity = CudaPathTest;

TEST_P(TimestepEmbeddingParity, ForwardMatchesReference) {
  for (int64_t dim : {2, 8, 128, 320}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    Tensor t = steps_for_parity(37, uint64_t(dim));
    Tensor emb = timestep_embedding(t.to(device()), dim);
    EXPECT_EQ(emb.device(), device());
    EXPECT_EQ(emb.dtype(), DType::float32);
    EXPECT_TENSORS_CLOSE(emb, timestep_embedding(to_double(t), dim), 0, embedding_atol(1000));
    // Small steps: the bound shrinks with |t| and the kernel must keep up.
    Tensor small = random_tensor({37}, 5, DType::float32, 0, 2);
    EXPECT_TENSORS_CLOSE(timestep_embedding(small.to(device()), dim), timestep_embedding(to_double(small), dim), 0,
                         embedding_atol(2));
  }
}

TEST_P(TimestepEmbeddingParity, IntegerStepsMatchFloatStepsOnDevice) {
  const std::vector<int32_t> steps = {0, 3, 250, 999, 1, 42, 777};
  std::vector<float> as_float(steps.begin(), steps.end());
  std::vector<int64_t> as_int64(steps.begin(), steps.end());
  const int64_t n = int64_t(steps.size());
  Tensor ref = timestep_embedding(Tensor::from_vector(as_float, {n}, device()), 128);
  EXPECT_TRUE(tensors_equal(timestep_embedding(Tensor::from_vector(steps, {n}, device()), 128), ref));
  EXPECT_TRUE(tensors_equal(timestep_embedding(Tensor::from_vector(as_int64, {n}, device()), 128), ref));
}

TEST_P(TimestepEmbeddingParity, BackwardMatchesReference) {
  for (int64_t dim : {2, 10, 128, 320}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t n = 37, half = dim / 2;
    Tensor t = steps_for_parity(n, 100 + uint64_t(dim));
    Tensor demb = random_tensor({n, dim}, 200 + uint64_t(dim));
    Tensor dt = timestep_embedding_backward(t.to(device()), dim, demb.to(device()));
    EXPECT_EQ(dt.device(), device());
    // Each of the 2 half terms (|demb| < 1) carries f_i times the forward's error, and the float32
    // sum adds ~dim ulps of sum_i 2 f_i.
    double sum_f = 0;
    for (int64_t i = 0; i < half; ++i) sum_f += std::exp(-std::log(10000.0) * double(i) / double(half));
    const double atol = 2 * sum_f * (embedding_atol(1000) + double(dim) * 6e-8);
    EXPECT_TENSORS_CLOSE(dt, timestep_embedding_backward(to_double(t), dim, to_double(demb)), 0, atol);
  }
}

TEST_P(TimestepEmbeddingParity, RejectsFloat64OnCudaPaths) {
  Tensor t = Tensor::from_vector<double>({1.0, 2.0}, {2}, device());
  std::string m = error_message([&] { timestep_embedding(t, 8); });
  expect_contains(m, "t is float64");
  m = error_message([&] { timestep_embedding_backward(t, 8, random_tensor({2, 8}, 1, DType::float64).to(device())); });
  expect_contains(m, "expected float32");
}

CTSR_INSTANTIATE_CUDA_PATHS(TimestepEmbeddingParity);

}  // namespace
}  // namespace ctsr::test
