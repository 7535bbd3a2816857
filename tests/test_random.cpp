// Random fills and the Philox generator under them: Random123's known-answer vectors for
// Philox4x32-10, the element -> (counter, word) mapping, bitwise equality of the reference, the
// CUDA-on-CPU executor and the GPU at odd sizes, independence of seeds and offsets, the affine
// parameters, float64 widening, and the statistics of 1e6 draws (moments, range, normal tails).
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "kernels/random.h"
#include "runtime/philox.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

// philox4x32_10(counter_lo, counter_hi, key) takes the 4 counter words as two 64-bit halves
// (word 0 the low half of counter_lo) and the 2 key words as one 64-bit value (word 0 low).
philox::Words philox_words(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  return philox::philox4x32_10(uint64_t(c0) | uint64_t(c1) << 32, uint64_t(c2) | uint64_t(c3) << 32,
                               uint64_t(k0) | uint64_t(k1) << 32);
}

void expect_words(const philox::Words& w, uint32_t e0, uint32_t e1, uint32_t e2, uint32_t e3) {
  EXPECT_EQ(w.v[0], e0);
  EXPECT_EQ(w.v[1], e1);
  EXPECT_EQ(w.v[2], e2);
  EXPECT_EQ(w.v[3], e3);
}

// Random123's kat_vectors for philox4x32 with 10 rounds.
TEST(Philox, KnownAnswerVectors) {
  expect_words(philox_words(0, 0, 0, 0, 0, 0), 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  const uint32_t ones = 0xffffffffu;
  expect_words(philox_words(ones, ones, ones, ones, ones, ones), 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  // The digits-of-pi vector: counter 243f6a88 85a308d3 13198a2e 03707344, key a4093822 299f31d0.
  expect_words(philox_words(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u),
               0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

// Element i is word i % 4 of counter (i / 4, offset) under key seed; normals pair words (0, 1)
// and (2, 3).
TEST(Philox, ElementMapsToCounterAndWord) {
  const uint64_t seed = 0x123456789abcdefull, offset = philox::stream_offset(2, 77);
  for (uint64_t i : {0ull, 1ull, 2ull, 3ull, 4ull, 1001ull, 51203ull}) {
    const philox::Words w = philox::philox4x32_10(i / 4, offset, seed);
    EXPECT_EQ(philox::uniform_at(seed, offset, i), philox::uniform01(w.v[i % 4])) << i;
    float z0, z1;
    const unsigned pair = unsigned(i % 4) / 2;
    philox::normal_pair(w.v[2 * pair], w.v[2 * pair + 1], &z0, &z1);
    EXPECT_EQ(philox::normal_at(seed, offset, i), i % 2 ? z1 : z0) << i;
  }
  EXPECT_EQ(philox::uniform01(0u), 0.0f);
  EXPECT_EQ(philox::uniform01(0xffffffffu), 1.0f - 5.9604644775390625e-8f);  // largest is 1 - 2^-24
}

TEST(RandomFill, ReferenceIsPhiloxElementByElement) {
  Tensor u = Tensor::empty({1001}), z = Tensor::empty({1001});
  fill_uniform(u, 9, 4, 0.0, 1.0);
  fill_normal(z, 9, 4);
  for (int64_t i = 0; i < 1001; ++i) {
    ASSERT_EQ(u.data<float>()[i], philox::uniform_at(9, 4, uint64_t(i))) << i;
    ASSERT_EQ(z.data<float>()[i], philox::normal_at(9, 4, uint64_t(i))) << i;
  }
}

TEST(RandomFill, ParametersAreAppliedOnce) {
  Tensor u = Tensor::empty({999}), z = Tensor::empty({999});
  fill_uniform(u, 3, 1, -2.5, 4.0);
  fill_normal(z, 3, 1, 3.0, 2.0);
  for (int64_t i = 0; i < 999; ++i) {
    const float draw_u = philox::uniform_at(3, 1, uint64_t(i)), draw_z = philox::normal_at(3, 1, uint64_t(i));
    ASSERT_EQ(u.data<float>()[i], -2.5f + 6.5f * draw_u) << i;
    ASSERT_EQ(z.data<float>()[i], 3.0f + 2.0f * draw_z) << i;
    ASSERT_GE(u.data<float>()[i], -2.5f);
    ASSERT_LT(u.data<float>()[i], 4.0f);
  }
}

TEST(RandomFill, Float64GetsTheFloat32DrawsWidened) {
  Tensor f = Tensor::empty({4099}), d = Tensor::empty({4099}, DType::float64);
  fill_normal(f, 5, 6);
  fill_normal(d, 5, 6);
  EXPECT_TRUE(tensors_equal(d, to_double(f)));
  fill_uniform(f, 5, 7);
  fill_uniform(d, 5, 7);
  EXPECT_TRUE(tensors_equal(d, to_double(f)));
  // With parameters the map is evaluated in double.
  fill_uniform(d, 5, 7, -1.0, 3.0);
  const std::vector<float> draws = f.to_vector<float>();
  for (size_t i = 0; i < draws.size(); ++i) ASSERT_EQ(d.data<double>()[i], -1.0 + 4.0 * double(draws[i])) << i;
}

TEST(RandomFill, SeedsAndOffsetsGiveDifferentStreams) {
  const int64_t n = 4096;
  auto draw = [&](uint64_t seed, uint64_t offset) {
    Tensor t = Tensor::empty({n});
    fill_normal(t, seed, offset);
    return t;
  };
  Tensor base = draw(42, 0);
  EXPECT_TRUE(tensors_equal(draw(42, 0), base));
  for (auto [seed, offset] : {std::pair<uint64_t, uint64_t>{43, 0}, {42, 1}, {42, philox::stream_offset(1, 0)},
                              {0, 0}, {42ull << 32, 0}}) {
    Tensor other = draw(seed, offset);
    int64_t equal = 0;
    for (int64_t i = 0; i < n; ++i) equal += other.data<float>()[i] == base.data<float>()[i];
    EXPECT_LT(equal, 4) << "seed " << seed << " offset " << offset << ": " << equal << " equal elements";
  }
}

struct Moments {
  double mean = 0, variance = 0, skewness = 0, excess_kurtosis = 0, min = INFINITY, max = -INFINITY;
};

Moments moments_of(const std::vector<double>& v) {
  Moments m;
  const double n = double(v.size());
  for (double x : v) m.mean += x, m.min = std::min(m.min, x), m.max = std::max(m.max, x);
  m.mean /= n;
  double m2 = 0, m3 = 0, m4 = 0;
  for (double x : v) {
    const double d = x - m.mean;
    m2 += d * d, m3 += d * d * d, m4 += d * d * d * d;
  }
  m2 /= n, m3 /= n, m4 /= n;
  m.variance = m2;
  m.skewness = m3 / std::pow(m2, 1.5);
  m.excess_kurtosis = m4 / (m2 * m2) - 3.0;
  return m;
}

// Bounds are 5 standard errors of each statistic at n = 1e6 (a correct generator fails one with
// probability ~6e-7): uniform mean sigma = sqrt(1/12 / n) = 2.9e-4, variance sigma =
// sqrt(1/180 / n) = 7.5e-5.
TEST(RandomFill, UniformStatistics) {
  const int64_t n = 1000000;
  Tensor t = Tensor::empty({n});
  fill_uniform(t, 2024, philox::stream_offset(1, 3));
  const std::vector<double> v = to_double(t).to_vector<double>();
  const Moments m = moments_of(v);
  EXPECT_NEAR(m.mean, 0.5, 5 * 2.9e-4);
  EXPECT_NEAR(m.variance, 1.0 / 12.0, 5 * 7.5e-5);
  EXPECT_GE(m.min, 0.0);
  EXPECT_LT(m.max, 1.0);
  EXPECT_LT(m.min, 1e-4);  // P(min > 1e-4) = (1 - 1e-4)^1e6 ~ e^-100
  EXPECT_GT(m.max, 1.0 - 1e-4);
  // Ten equal bins: each count ~ Binomial(n, 0.1), sigma 300.
  std::vector<int64_t> bins(10, 0);
  for (double x : v) ++bins[std::min<size_t>(9, size_t(x * 10))];
  for (int b = 0; b < 10; ++b) EXPECT_NEAR(double(bins[b]), 100000.0, 5 * 300.0) << "bin " << b;
}

// Normal: mean sigma = 1e-3, variance sigma = sqrt(2 / n) = 1.41e-3, skewness sigma = sqrt(6 / n)
// = 2.4e-3, excess kurtosis sigma = sqrt(24 / n) = 4.9e-3. Tails: P(|z| > 3) = 0.0026998, count
// sigma sqrt(n p (1 - p)) = 52; P(|z| > 4) = 6.334e-5, count sigma ~8.
TEST(RandomFill, NormalStatistics) {
  const int64_t n = 1000000;
  Tensor t = Tensor::empty({n});
  fill_normal(t, 77, philox::stream_offset(2, 9));
  const std::vector<double> v = to_double(t).to_vector<double>();
  const Moments m = moments_of(v);
  EXPECT_NEAR(m.mean, 0.0, 5 * 1e-3);
  EXPECT_NEAR(std::sqrt(m.variance), 1.0, 5 * 1.41e-3 / 2);
  EXPECT_NEAR(m.skewness, 0.0, 5 * 2.4e-3);
  EXPECT_NEAR(m.excess_kurtosis, 0.0, 5 * 4.9e-3);
  int64_t beyond3 = 0, beyond4 = 0;
  for (double x : v) beyond3 += std::fabs(x) > 3.0, beyond4 += std::fabs(x) > 4.0;
  EXPECT_NEAR(double(beyond3) / double(n), 0.0026998, 5 * 52.0 / double(n));
  EXPECT_NEAR(double(beyond4), 63.34, 5 * 8.0);
  EXPECT_LT(m.max, 6.5);  // Box-Muller from 24-bit uniforms reaches at most sqrt(-2 ln 2^-24) = 5.77
  EXPECT_GT(m.min, -6.5);
}

TEST(RandomFill, RejectsBadInputs) {
  Tensor ints = Tensor::zeros({3}, DType::int32);
  std::string m = error_message([&] { fill_uniform(ints, 1, 0); });
  expect_contains(m, "fill_uniform t");
  expect_contains(m, "int32");
  expect_contains(m, "expected float32 or float64");
  Tensor x = Tensor::empty({3});
  m = error_message([&] { fill_uniform(x, 1, 0, 1.0, 1.0); });
  expect_contains(m, "[1, 1)");
  expect_contains(m, "lo < hi");
  m = error_message([&] { fill_normal(x, 1, 0, 0.0, -1.0); });
  expect_contains(m, "std = -1");
  m = error_message([&] { fill_normal(x, 1, 0, std::nan(""), 1.0); });
  expect_contains(m, "mean = nan");
  Tensor undefined;
  m = error_message([&] { fill_normal(undefined, 1, 0); });
  expect_contains(m, "fill_normal t");
}

// ---- CUDA paths -------------------------------------------------------------------------------

using RandomFillParity = CudaPathTest;

// Bit-identical to the reference at sizes that leave 1, 2 or 3 elements in the last group of
// four, in float32 and float64, with default and non-default parameters.
TEST_P(RandomFillParity, BitwiseEqualToReference) {
  const uint64_t seed = 0xfeedfacecafebeefull;
  for (int64_t n : {int64_t(1), int64_t(5), int64_t(1001), int64_t(25 * 16 * 16 * 8 + 3), int64_t(4098)}) {
    for (DType dtype : {DType::float32, DType::float64}) {
      SCOPED_TRACE("n " + std::to_string(n) + " " + dtype_name(dtype));
      const uint64_t offset = philox::stream_offset(1, uint64_t(n));
      Tensor ref = Tensor::empty({n}, dtype), dev = Tensor::empty({n}, dtype, device());
      fill_uniform(ref, seed, offset);
      fill_uniform(dev, seed, offset);
      EXPECT_TRUE(tensors_equal(dev, ref)) << "uniform";
      fill_uniform(ref, seed, offset, -3.25, 0.7);
      fill_uniform(dev, seed, offset, -3.25, 0.7);
      EXPECT_TRUE(tensors_equal(dev, ref)) << "uniform [-3.25, 0.7)";
      fill_normal(ref, seed, offset);
      fill_normal(dev, seed, offset);
      EXPECT_TRUE(tensors_equal(dev, ref)) << "normal";
      fill_normal(ref, seed + 1, offset, 0.3, 1.7);
      fill_normal(dev, seed + 1, offset, 0.3, 1.7);
      EXPECT_TRUE(tensors_equal(dev, ref)) << "normal (0.3, 1.7)";
    }
  }
}

// A multi-dimensional tensor is filled by flat index, like a 1-D one.
TEST_P(RandomFillParity, ShapeDoesNotChangeTheStream) {
  Tensor flat = Tensor::empty({3 * 13 * 8 * 8 * 5}, DType::float32, device());
  Tensor shaped = Tensor::empty({3, 13, 8, 8, 5}, DType::float32, device());
  fill_normal(flat, 11, 12);
  fill_normal(shaped, 11, 12);
  EXPECT_TRUE(tensors_equal(shaped.reshape(flat.shape()), flat));
}

TEST_P(RandomFillParity, RejectsIntegerTensors) {
  Tensor t = Tensor::zeros({8}, DType::int64, device());
  std::string m = error_message([&] { fill_normal(t, 1, 2); });
  expect_contains(m, "int64");
}

CTSR_INSTANTIATE_CUDA_PATHS(RandomFillParity);

}  // namespace
}  // namespace ctsr::test
