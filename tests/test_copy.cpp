// fill, copy and cast: the conversion rule checked by hand (round-to-nearest-even ties for
// bfloat16 and float16, the single rounding from float64, saturating truncation to integers,
// modular integer narrowing), every path bitwise equal to the reference for all 49 dtype pairs,
// copies independent of their source at every access width, and cast_backward as the cast back.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/copy.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

const DType kAllDTypes[] = {DType::float32, DType::float64, DType::bfloat16, DType::float16,
                            DType::int32,   DType::int64,   DType::uint8};

// The devices whose known-value checks run in this binary (the GPU runs in the parity suites).
std::vector<Device> host_devices() {
  std::vector<Device> devices{Device::cpu()};
#if CTSR_HAVE_CUDA_ON_CPU
  devices.push_back(Device::cuda_on_cpu());
#endif
  return devices;
}

template <class T>
std::vector<uint16_t> bits_of(const Tensor& t) {
  std::vector<uint16_t> bits;
  for (T v : t.to_vector<T>()) bits.push_back(v.bits);
  return bits;
}

double p2(int e) { return std::ldexp(1.0, e); }

TEST(Cast, FloatToBfloat16RoundsToNearestEven) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // bfloat16 keeps 8 significant bits: near 1 the spacing is 2^-7, so 1 + 2^-8 is a tie.
  const std::vector<float> x{1.0f,
                             float(1 + p2(-8)),              // tie -> 1 (even)
                             float(1 + 3 * p2(-8)),          // tie -> 1 + 2^-6 (even)
                             float(1 + p2(-8) + p2(-20)),    // above the tie -> 1 + 2^-7
                             float(-(1 + p2(-8))),           // negative tie -> -1
                             float(-(1 + 3 * p2(-8))),       // -> -(1 + 2^-6)
                             std::numeric_limits<float>::max(),  // rounds up to inf
                             -0.0f,
                             float(p2(-149)),                // far below bfloat16's smallest subnormal
                             nan};
  const std::vector<uint16_t> expected{0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf80, 0xbf82, 0x7f80, 0x8000, 0x0000};
  for (Device device : host_devices()) {
    Tensor y = cast(Tensor::from_vector(x, {int64_t(x.size())}, device), DType::bfloat16);
    EXPECT_EQ(y.device(), device);
    std::vector<uint16_t> bits = bits_of<bfloat16>(y);
    for (size_t i = 0; i < expected.size(); ++i)
      EXPECT_EQ(bits[i], expected[i]) << "element " << i << " (" << x[i] << ") on " << device.str();
    EXPECT_TRUE(std::isnan(float(bfloat16::from_bits(bits.back())))) << device.str();
  }
}

TEST(Cast, FloatToFloat16RoundsToNearestEven) {
  const std::vector<float> x{float(1 + p2(-11)),      // tie -> 1
                             float(1 + 3 * p2(-11)),  // tie -> 1 + 2^-9
                             65504.0f,  65519.0f,     // largest half, and just below its rounding edge
                             65520.0f,                // rounds to inf
                             float(p2(-24)),          // smallest subnormal
                             float(p2(-25)),          // tie between 0 and 2^-24 -> 0
                             float(3 * p2(-25)),      // tie between 2^-24 and 2^-23 -> 2^-23
                             -2.5f};
  const std::vector<uint16_t> expected{0x3c00, 0x3c02, 0x7bff, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x0002, 0xc100};
  for (Device device : host_devices()) {
    std::vector<uint16_t> bits = bits_of<float16>(cast(Tensor::from_vector(x, {int64_t(x.size())}, device), DType::float16));
    EXPECT_EQ(bits, expected) << device.str();
  }
}

// float64 -> 16 bits rounds once: 1 + 2^-8 + 2^-30 is above the bfloat16 tie, but rounding to
// float first would land exactly on the tie and then round down to 1.
TEST(Cast, Float64ToSixteenBitsRoundsOnce) {
  const std::vector<double> x{1 + p2(-8) + p2(-30), 1 + p2(-8), 1 + p2(-11) + p2(-40), 1e300, -1e-300};
  for (Device device : host_devices()) {
    Tensor t = Tensor::from_vector(x, {5}, device);
    std::vector<uint16_t> bf = bits_of<bfloat16>(cast(t, DType::bfloat16));
    std::vector<uint16_t> half = bits_of<float16>(cast(t, DType::float16));
    EXPECT_EQ(bf, (std::vector<uint16_t>{0x3f81, 0x3f80, 0x3f80, 0x7f80, 0x8000})) << device.str();
    EXPECT_EQ(half, (std::vector<uint16_t>{0x3c04, 0x3c04, 0x3c01, 0x7c00, 0x8000})) << device.str();
  }
}

TEST(Cast, FloatToIntegerTruncatesAndSaturates) {
  const std::vector<float> x{-2.7f, 2.7f, -0.5f, 0.5f, 3e9f, -3e9f, std::numeric_limits<float>::quiet_NaN(),
                             1e19f, 255.9f, 256.0f, -1.0f, -std::numeric_limits<float>::infinity()};
  for (Device device : host_devices()) {
    Tensor t = Tensor::from_vector(x, {int64_t(x.size())}, device);
    EXPECT_EQ(cast(t, DType::int32).to_vector<int32_t>(),
              (std::vector<int32_t>{-2, 2, 0, 0, INT32_MAX, INT32_MIN, 0, INT32_MAX, 255, 256, -1, INT32_MIN}))
        << device.str();
    EXPECT_EQ(cast(t, DType::int64).to_vector<int64_t>(),
              (std::vector<int64_t>{-2, 2, 0, 0, 3000000000, -3000000000, 0, INT64_MAX, 255, 256, -1, INT64_MIN}))
        << device.str();
    EXPECT_EQ(cast(t, DType::uint8).to_vector<uint8_t>(),
              (std::vector<uint8_t>{0, 2, 0, 0, 255, 0, 0, 255, 255, 255, 0, 0}))
        << device.str();
  }
}

TEST(Cast, IntegerConversions) {
  for (Device device : host_devices()) {
    Tensor i32 = Tensor::from_vector<int32_t>({300, -1, 70000, 257, 259, -7}, {6}, device);
    EXPECT_EQ(cast(i32, DType::uint8).to_vector<uint8_t>(), (std::vector<uint8_t>{44, 255, 112, 1, 3, 249}));
    EXPECT_EQ(cast(i32, DType::int64).to_vector<int64_t>(), (std::vector<int64_t>{300, -1, 70000, 257, 259, -7}));
    EXPECT_EQ(cast(i32, DType::float32).to_vector<float>(), (std::vector<float>{300, -1, 70000, 257, 259, -7}));
    // bfloat16 spacing at 256 is 2: 257 and 259 are ties (-> 256 and 260, the even mantissas).
    EXPECT_EQ(bits_of<bfloat16>(cast(i32, DType::bfloat16))[3], 0x4380) << device.str();
    EXPECT_EQ(bits_of<bfloat16>(cast(i32, DType::bfloat16))[4], 0x4382) << device.str();
    Tensor i64 = Tensor::from_vector<int64_t>({(int64_t(1) << 40) + 5, -(int64_t(1) << 40) - 5}, {2}, device);
    EXPECT_EQ(cast(i64, DType::int32).to_vector<int32_t>(), (std::vector<int32_t>{5, -5})) << device.str();
    Tensor u8 = Tensor::from_vector<uint8_t>({200, 0, 255}, {3}, device);
    EXPECT_EQ(cast(u8, DType::float64).to_vector<double>(), (std::vector<double>{200, 0, 255})) << device.str();
    EXPECT_EQ(cast(u8, DType::int32).to_vector<int32_t>(), (std::vector<int32_t>{200, 0, 255})) << device.str();
  }
}

TEST(Cast, SixteenBitWideningIsExact) {
  for (Device device : host_devices()) {
    // bfloat16 1.5 -> float16 exactly; 1e5 is beyond float16's range; 2^-30 below its subnormals.
    Tensor bf = cast(Tensor::from_vector<float>({1.5f, 1e5f, float(p2(-30)), -3.0f}, {4}, device), DType::bfloat16);
    EXPECT_EQ(bits_of<float16>(cast(bf, DType::float16)), (std::vector<uint16_t>{0x3e00, 0x7c00, 0x0000, 0xc200}));
    Tensor half = Tensor::from_vector<float16>({float16::from_bits(0x0001), float16::from_bits(0x7bff)}, {2}, device);
    EXPECT_EQ(cast(half, DType::float64).to_vector<double>(), (std::vector<double>{p2(-24), 65504.0}));
  }
}

// One source tensor per dtype, with values that exercise each conversion: fractions of both
// signs, ties at bfloat16 and float16 precision, values beyond every integer range, inf, NaN,
// -0, subnormals; integers that wrap when narrowed.
Tensor source_of(DType dtype, int64_t n, uint64_t seed) {
  Tensor r = random_tensor({n}, seed, DType::float64, -300.0, 300.0);
  std::vector<double> v = r.to_vector<double>();
  const double specials[] = {1 + p2(-8), 1 + 3 * p2(-8), -(1 + p2(-11)), 65520.0, 1e10, -1e10, 3e38, 1e300,
                             std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::quiet_NaN(), -0.0, p2(-140), p2(-25), 255.5, -0.75};
  for (size_t k = 0; k < std::size(specials) && k * 7 < v.size(); ++k) v[k * 7] = specials[k];
  switch (dtype) {
    case DType::float64: return Tensor::from_vector(v, {n});
    case DType::int32: {
      std::vector<int32_t> out;
      for (double d : v) out.push_back(std::isfinite(d) ? int32_t(std::fmod(d * 1000.0, 2e9)) : 7);
      return Tensor::from_vector(out, {n});
    }
    case DType::int64: {
      std::vector<int64_t> out;
      for (double d : v) out.push_back(std::isfinite(d) ? int64_t(std::fmod(d * 1e6, 9e18)) : -7);
      return Tensor::from_vector(out, {n});
    }
    case DType::uint8: {
      std::vector<uint8_t> out;
      for (double d : v) out.push_back(uint8_t(std::isfinite(d) ? std::fmod(std::fabs(d), 256.0) : 3.0));
      return Tensor::from_vector(out, {n});
    }
    default: return cast(Tensor::from_vector(v, {n}), dtype);  // reference conversion from float64
  }
}

using CopyParity = CudaPathTest;

TEST_P(CopyParity, CastIsBitwiseEqualToReferenceForEveryDTypePair) {
  for (DType from : kAllDTypes) {
    Tensor x = source_of(from, 3 * 1000 + 7, 17 + uint64_t(from));
    Tensor xd = x.to(device());
    for (DType to : kAllDTypes) {
      Tensor y = cast(xd, to);
      EXPECT_EQ(y.device(), device());
      EXPECT_EQ(y.dtype(), to);
      EXPECT_TRUE(tensors_equal(y, cast(x, to))) << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST_P(CopyParity, FillIsBitwiseEqualToReference) {
  for (DType dtype : kAllDTypes) {
    for (double value : {0.1, -2.7, 1 + p2(-8) + p2(-30), 300.0, 1e300}) {
      Tensor ref = Tensor::empty({5, 7, 3}, dtype);
      Tensor t = Tensor::empty({5, 7, 3}, dtype, device());
      fill(ref, value);
      fill(t, value);
      EXPECT_TRUE(tensors_equal(t, ref)) << dtype_name(dtype) << " " << value;
      // The value is converted by the cast rule.
      EXPECT_TRUE(tensors_equal(t, cast(Tensor::from_vector<double>(std::vector<double>(105, value), {5, 7, 3}), dtype)))
          << dtype_name(dtype) << " " << value;
    }
  }
  Tensor f = Tensor::empty({25, 16, 16}, DType::float32, device());
  fill(f, 0.1);
  for (float v : f.to_vector<float>()) ASSERT_EQ(v, 0.1f);
}

// Sizes and offsets chosen so that each access width (8, 4, 2, 1 bytes) is taken.
TEST_P(CopyParity, CopyIsBitwiseAndIndependentOfItsSource) {
  for (DType dtype : kAllDTypes) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(13), int64_t(16), int64_t(3 * 25 * 16 * 16 * 5)}) {
      Tensor x = source_of(dtype, n, 5 + uint64_t(n)).to(device());
      Tensor y = copy(x);
      EXPECT_EQ(y.device(), device());
      EXPECT_NE(y.raw_data(), x.raw_data());
      EXPECT_TRUE(tensors_equal(y, x)) << dtype_name(dtype) << " n = " << n;
      Tensor before = y.to(Device::cpu());
      fill(x, 3.0);
      EXPECT_TRUE(tensors_equal(y, before)) << "the copy changed with its source";
    }
  }
  // An odd byte offset (a row view of uint8) and a 2-byte offset (float16): narrower words.
  Tensor bytes = source_of(DType::uint8, 5 * 3, 9).reshape({5, 3});
  Tensor view = bytes.to(device()).slice(1, 4);
  EXPECT_TRUE(tensors_equal(copy(view), bytes.slice(1, 4)));
  Tensor halves = source_of(DType::float16, 5 * 3, 10).reshape({5, 3});
  EXPECT_TRUE(tensors_equal(copy(halves.to(device()).slice(1, 5)), halves.slice(1, 5)));
}

TEST_P(CopyParity, CastBackwardCastsTheGradientBack) {
  Tensor dy32 = random_tensor({3, 25, 16, 16, 5}, 21, DType::float32);
  for (DType input : {DType::bfloat16, DType::float16, DType::float64, DType::float32}) {
    // The forward cast input -> float32 has gradient dy32 cast back to the input's dtype.
    Tensor dx = cast_backward(dy32.to(device()), input);
    EXPECT_EQ(dx.dtype(), input);
    EXPECT_TRUE(tensors_equal(dx, cast(dy32, input))) << dtype_name(input);
  }
  // float64 -> float32 -> float64: the gradient widens exactly.
  Tensor dx64 = cast_backward(dy32.to(device()), DType::float64);
  EXPECT_TRUE(tensors_equal(dx64, to_double(dy32)));
  // float32 -> bfloat16: dy arrives in bfloat16 and widens exactly to float32.
  Tensor dybf = cast(dy32, DType::bfloat16);
  EXPECT_TRUE(tensors_equal(cast_backward(dybf.to(device()), DType::float32), to_float(dybf)));
}

CTSR_INSTANTIATE_CUDA_PATHS(CopyParity);

TEST(Cast, SameDTypeIsACopy) {
  Tensor x = random_tensor({4, 5}, 3);
  Tensor y = cast(x, DType::float32);
  EXPECT_NE(y.raw_data(), x.raw_data());
  EXPECT_TRUE(tensors_equal(y, x));
}

TEST(Cast, BackwardRejectsIntegerDTypesNamingThem) {
  Tensor dy = Tensor::from_vector<int32_t>({1, 2, 3}, {3});
  try {
    cast_backward(dy, DType::float32);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cast_backward"), std::string::npos) << m;
    EXPECT_NE(m.find("dy [3] is int32"), std::string::npos) << m;
  }
  try {
    cast_backward(random_tensor({3}, 1), DType::uint8);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input was uint8"), std::string::npos) << e.what();
  }
  Tensor undefined;
  EXPECT_THROW(copy(undefined), Error);
  EXPECT_THROW(fill(undefined, 1.0), Error);
}

}  // namespace
}  // namespace ctsr::test
