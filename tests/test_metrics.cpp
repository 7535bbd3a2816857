// SSIM and PSNR: scikit-image's values (tests/data/ssim_golden.txt, from
// tools/pytorch/make_ssim_golden.py) on the reference path in float32 and float64 and on every
// CUDA path; ssim(x, x) == 1 and PSNR of a known MSE exactly; CUDA-path parity with the float64
// reference on shapes with several and partial tiles, on locally flat data with a large mean,
// and on several PSNR chunks; determinism and executor thread order; bad arguments.
#include <algorithm>
#include <cmath>
#include <functional>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/metrics.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

// ---- golden data ------------------------------------------------------------------------------

struct GoldenCase {
  std::string name;
  int64_t b = 0, d = 0, h = 0, w = 0;
  double data_range = 0;
  std::string scale, pattern;
  uint32_t seed = 0, noise_seed = 0;
  int noise_shift = 0;
  std::vector<double> per_slice, per_sample, mse, psnr;
};

std::vector<double> read_values(std::istringstream& line, const std::string& expected_key, size_t count) {
  std::string key;
  line >> key;
  CTSR_CHECK(key == expected_key, "ssim_golden.txt: expected '", expected_key, "', found '", key, "'");
  std::vector<double> values(count);
  for (double& v : values) CTSR_CHECK(bool(line >> v), "ssim_golden.txt: too few values for ", expected_key);
  return values;
}

const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    const std::string path = std::string(CTSR_TEST_DATA_DIR) + "/ssim_golden.txt";
    std::ifstream file(path);
    CTSR_CHECK(file.good(), "cannot open ", path);
    std::vector<GoldenCase> out;
    std::string text;
    std::vector<std::string> lines;
    while (std::getline(file, text)) {
      if (!text.empty() && text[0] != '#') lines.push_back(text);
    }
    for (size_t i = 0; i + 5 < lines.size(); i += 6) {
      GoldenCase c;
      std::istringstream head(lines[i]);
      std::string key;
      head >> key >> c.name >> c.b >> c.d >> c.h >> c.w >> c.data_range >> c.scale >> c.pattern >> c.seed >>
          c.noise_seed >> c.noise_shift;
      CTSR_CHECK(key == "case" && !head.fail(), "ssim_golden.txt: bad case line '", lines[i], "'");
      std::istringstream l1(lines[i + 1]), l2(lines[i + 2]), l3(lines[i + 3]), l4(lines[i + 4]);
      c.per_slice = read_values(l1, "per_slice", size_t(c.b * c.d));
      c.per_sample = read_values(l2, "per_sample", size_t(c.b));
      c.mse = read_values(l3, "mse", size_t(c.b));
      c.psnr = read_values(l4, "psnr", size_t(c.b));
      CTSR_CHECK(lines[i + 5] == "end", "ssim_golden.txt: expected 'end' after case ", c.name);
      out.push_back(c);
    }
    CTSR_CHECK(out.size() >= 5, "ssim_golden.txt: only ", out.size(), " cases");
    return out;
  }();
  return cases;
}

// The integer recipe of make_ssim_golden.py, bit for bit.
struct Lcg {
  uint32_t state;
  uint32_t draw() {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  }
};

struct Inputs {
  Tensor pred, target;  // float32 [B, D, H, W] on the cpu
};

Inputs golden_inputs(const GoldenCase& c) {
  constexpr int64_t kOne = int64_t(1) << 23;
  const int64_t n = c.b * c.d * c.h * c.w;
  std::vector<float> pred(static_cast<size_t>(n)), target(pred.size());
  Lcg stream_p{c.seed}, stream_n{c.noise_seed};
  auto to_float = [&](int64_t v) {
    if (c.scale == "pm1") return float(double(v) / double(kOne));
    CTSR_CHECK(c.scale == "01", "unknown scale ", c.scale);
    return float(double(v + kOne) / double(2 * kOne));
  };
  size_t i = 0;
  for (int64_t b = 0; b < c.b; ++b)
    for (int64_t d = 0; d < c.d; ++d)
      for (int64_t h = 0; h < c.h; ++h)
        for (int64_t w = 0; w < c.w; ++w, ++i) {
          const int64_t dp = stream_p.draw(), dn = stream_n.draw();
          int64_t p = 0;
          if (c.pattern == "uniform") {
            p = dp - kOne;
          } else if (c.pattern == "smooth") {
            p = ((h + 2 * w + 3 * d + 5 * b) % 64) * (int64_t(1) << 18) - kOne + (dp >> 10) - (int64_t(1) << 13);
          } else if (c.pattern == "blocks") {
            p = w < c.w / 2 ? -kOne : h < c.h / 2 ? (int64_t(1) << 21) : dp - kOne;
          } else {
            CTSR_FAIL("unknown pattern ", c.pattern);
          }
          const int64_t noise = (dn >> c.noise_shift) - (kOne >> c.noise_shift);
          int64_t t = std::min(std::max(p + noise, -kOne), kOne);
          if (c.pattern == "blocks" && d % 2 == 0) t = p;
          pred[i] = to_float(p);
          target[i] = to_float(t);
        }
  const Shape shape{c.b, c.d, c.h, c.w};
  return {Tensor::from_vector(pred, shape), Tensor::from_vector(target, shape)};
}

Tensor values_tensor(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }

// Compares one path's SSIM / PSNR with the golden values: absolute tolerances for SSIM and PSNR
// (float32 results of ~50 dB are 4e-6 apart), relative for MSE.
struct Tolerance {
  double ssim, psnr, mse_rtol;
};

void expect_matches_golden(const GoldenCase& c, const Tensor& pred, const Tensor& target, const Tolerance& tol) {
  SCOPED_TRACE(c.name + " on " + pred.device().str() + " " + dtype_name(pred.dtype()));
  const SsimResult s = ssim(pred, target, c.data_range);
  const PsnrResult p = psnr(pred, target, c.data_range);
  EXPECT_EQ(s.per_slice.device(), pred.device());
  EXPECT_EQ(s.per_slice.dtype(), pred.dtype());
  EXPECT_TENSORS_CLOSE(s.per_slice, values_tensor(c.per_slice, {c.b, c.d}), 0, tol.ssim);
  EXPECT_TENSORS_CLOSE(s.per_sample, values_tensor(c.per_sample, {c.b}), 0, tol.ssim);
  EXPECT_TENSORS_CLOSE(p.mse, values_tensor(c.mse, {c.b}), tol.mse_rtol, 0);
  EXPECT_TENSORS_CLOSE(p.psnr, values_tensor(c.psnr, {c.b}), 0, tol.psnr);
}

// float32 results: the rounding of the outputs (every path computes in double inside).
constexpr Tolerance kFloat32Tolerance{1e-6, 1e-5, 1e-6};

TEST(Metrics, GoldenInputsAreNotTrivial) {
  // Guards the recipe itself: the golden file must score real differences and both extremes.
  double lowest = 1, highest = 0;
  for (const GoldenCase& c : golden_cases()) {
    for (double v : c.per_slice) lowest = std::min(lowest, v), highest = std::max(highest, v);
  }
  EXPECT_LT(lowest, 0.7);
  EXPECT_GT(highest, 0.999);
}

TEST(Metrics, ReferenceMatchesScikitImage) {
  for (const GoldenCase& c : golden_cases()) {
    const Inputs in = golden_inputs(c);
    // float64: the same arithmetic as scikit-image's float64 run, up to summation order.
    expect_matches_golden(c, to_double(in.pred), to_double(in.target), Tolerance{1e-12, 1e-10, 1e-12});
    expect_matches_golden(c, in.pred, in.target, kFloat32Tolerance);
  }
}

// ---- exact values -----------------------------------------------------------------------------

template <class F>
void for_every_path(F&& f) {
  f(Device::cpu());
#if CTSR_HAVE_CUDA_ON_CPU
  f(Device::cuda_on_cpu());
#endif
  if (cuda_available()) f(Device::cuda(0));
}

TEST(Metrics, SsimOfAVolumeWithItselfIsOne) {
  // x == y makes the two factors' numerators and denominators equal operation for operation,
  // so every path gives exactly 1.
  Tensor x = random_tensor({2, 3, 19, 26}, 5, DType::float32, -1, 1);
  for_every_path([&](Device device) {
    SCOPED_TRACE(device.str());
    Tensor xd = x.to(device);
    const SsimResult s = ssim(xd, xd);
    for (float v : s.per_slice.to_vector<float>()) EXPECT_EQ(v, 1.0f);
    for (float v : s.per_sample.to_vector<float>()) EXPECT_EQ(v, 1.0f);
    const PsnrResult p = psnr(xd, xd);
    for (float v : p.mse.to_vector<float>()) EXPECT_EQ(v, 0.0f);
    for (float v : p.psnr.to_vector<float>()) EXPECT_EQ(v, std::numeric_limits<float>::infinity());
  });
  const SsimResult s64 = ssim(to_double(x), to_double(x));
  for (double v : s64.per_sample.to_vector<double>()) EXPECT_EQ(v, 1.0);
}

TEST(Metrics, PsnrOfAKnownMse) {
  // target = pred + 1/16 everywhere, exactly (pred are multiples of 2^-10 in [-0.5, 0.5)):
  // mse = 2^-8, psnr = 10 log10(2^2 / 2^-8) = 100 log10(2) dB for data_range 2; and with
  // sample 1 shifted by 1/8 instead, mse = 2^-6.
  const Shape shape{2, 3, 5, 7};
  std::vector<float> pred(static_cast<size_t>(shape.numel())), target(pred.size());
  for (size_t i = 0; i < pred.size(); ++i) {
    pred[i] = float(int64_t(i * 37 % 1024) - 512) / 1024.0f;
    target[i] = pred[i] + (i < pred.size() / 2 ? 0.0625f : 0.125f);
  }
  Tensor p = Tensor::from_vector(pred, shape), t = Tensor::from_vector(target, shape);
  const double expected_psnr[2] = {10 * std::log10(4.0 * 256), 10 * std::log10(4.0 * 64)};
  for_every_path([&](Device device) {
    SCOPED_TRACE(device.str());
    const PsnrResult r = psnr(p.to(device), t.to(device), 2.0);
    std::vector<float> mse = r.mse.to_vector<float>(), db = r.psnr.to_vector<float>();
    EXPECT_EQ(mse[0], 1.0f / 256);
    EXPECT_EQ(mse[1], 1.0f / 64);
    EXPECT_NEAR(db[0], expected_psnr[0], 2e-6);
    EXPECT_NEAR(db[1], expected_psnr[1], 2e-6);
  });
  const PsnrResult r1 = psnr(to_double(p), to_double(t), 1.0);  // data_range 1: 6.02 dB less
  EXPECT_NEAR(r1.psnr.to_vector<double>()[0], 10 * std::log10(256.0), 1e-12);
}

TEST(Metrics, SsimOfAConstantShift) {
  // y = x + c on a constant x: no variance anywhere, so S = (2 a b + C1) / (a^2 + b^2 + C1)
  // with a = x, b = x + c at every pixel.
  const double a = 0.25, b = -0.5, c1 = (0.01 * 2) * (0.01 * 2);
  const double expected = (2 * a * b + c1) / (a * a + b * b + c1);
  std::vector<float> x(size_t(1 * 2 * 13 * 12), float(a)), y(x.size(), float(b));
  Tensor xt = Tensor::from_vector(x, {1, 2, 13, 12}), yt = Tensor::from_vector(y, {1, 2, 13, 12});
  for_every_path([&](Device device) {
    SCOPED_TRACE(device.str());
    const SsimResult s = ssim(xt.to(device), yt.to(device));
    EXPECT_NEAR(s.per_sample.to_vector<float>()[0], expected, 1e-6);
  });
}

// ---- CUDA paths -------------------------------------------------------------------------------

using MetricsParity = CudaPathTest;

TEST_P(MetricsParity, MatchesScikitImage) {
  for (const GoldenCase& c : golden_cases()) {
    const Inputs in = golden_inputs(c);
    expect_matches_golden(c, in.pred.to(device()), in.target.to(device()), kFloat32Tolerance);
  }
}

// Several 32 x 32 tiles per slice, the last ones partial (interior 60 x 35 and 1 x 3), batch 3.
TEST_P(MetricsParity, SeveralTilesMatchReference) {
  for (const Shape& shape : {Shape{3, 5, 70, 45}, Shape{2, 3, 11, 13}, Shape{1, 2, 75, 16}}) {
    SCOPED_TRACE(shape.str());
    Tensor x = random_tensor(shape, 11, DType::float32, -1, 1);
    Tensor noise = random_tensor(shape, 12, DType::float32, -0.2, 0.2);
    std::vector<float> yv = x.to_vector<float>(), nv = noise.to_vector<float>();
    for (size_t i = 0; i < yv.size(); ++i) yv[i] = std::clamp(yv[i] + nv[i], -1.0f, 1.0f);
    Tensor y = Tensor::from_vector(yv, shape);
    const SsimResult ref = ssim(to_double(x), to_double(y), 2.0);
    const SsimResult out = ssim(x.to(device()), y.to(device()), 2.0);
    EXPECT_TENSORS_CLOSE(out.per_slice, ref.per_slice, 0, 1e-6);
    EXPECT_TENSORS_CLOSE(out.per_sample, ref.per_sample, 0, 1e-6);
  }
}

// Nearly flat windows far from 0: values 0.8 +- 0.002 (soft tissue after windowing looks like
// this), variances ~1e-6 next to C2 = 9e-4 (data_range 1). Variances taken as uxx - ux^2 in
// float32 would subtract two numbers near 0.64 and keep ~1e-7 of absolute error: 1e-4 of SSIM.
TEST_P(MetricsParity, FlatRegionsWithLargeMean) {
  const Shape shape{2, 3, 40, 40};
  Tensor x = random_tensor(shape, 21, DType::float32, 0.798, 0.802);
  Tensor y = random_tensor(shape, 22, DType::float32, 0.798, 0.802);
  for (double range : {2.0, 1.0}) {
    SCOPED_TRACE("data_range " + std::to_string(range));
    const SsimResult ref = ssim(to_double(x), to_double(y), range);
    const SsimResult out = ssim(x.to(device()), y.to(device()), range);
    EXPECT_TENSORS_CLOSE(out.per_slice, ref.per_slice, 0, 1e-6);
  }
}

// Samples of 7 * 33 * 19 = 4389 elements: two PSNR chunks each, the second partial.
TEST_P(MetricsParity, PsnrMatchesReference) {
  const Shape shape{3, 7, 33, 19};
  Tensor x = random_tensor(shape, 31, DType::float32, -1, 1);
  Tensor y = random_tensor(shape, 32, DType::float32, -1, 1);
  const PsnrResult ref = psnr(to_double(x), to_double(y), 2.0);
  const PsnrResult out = psnr(x.to(device()), y.to(device()), 2.0);
  EXPECT_TENSORS_CLOSE(out.mse, ref.mse, 1e-6, 0);
  EXPECT_TENSORS_CLOSE(out.psnr, ref.psnr, 0, 1e-5);
  // A [B, N] layout is the same computation.
  const PsnrResult flat = psnr(x.reshape({3, -1}).to(device()), y.reshape({3, -1}).to(device()), 2.0);
  EXPECT_TRUE(tensors_equal(flat.psnr, out.psnr));
}

TEST_P(MetricsParity, DeterministicAndIndependentOfThreadOrder) {
  const Shape shape{2, 4, 45, 37};
  Tensor x = random_tensor(shape, 41, DType::float32).to(device());
  Tensor y = random_tensor(shape, 42, DType::float32).to(device());
  auto run = [&] {
    const SsimResult s = ssim(x, y);
    const PsnrResult p = psnr(x, y);
    return std::vector<Tensor>{s.per_slice, s.per_sample, p.psnr, p.mse};
  };
  const std::vector<Tensor> first = run(), second = run();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(tensors_equal(first[i], second[i])) << i;
  if (device().kind != DeviceKind::cuda_on_cpu) return;
  struct RestoreOrder {
    ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
  } restore;
  cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
  const std::vector<Tensor> reversed = run();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(tensors_equal(reversed[i], first[i])) << i;
}

TEST_P(MetricsParity, RejectsFloat64) {
  Tensor x = random_tensor({1, 1, 11, 11}, 1, DType::float64).to(device());
  EXPECT_THROW(ssim(x, x), Error);
  EXPECT_THROW(psnr(x, x), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(MetricsParity);

// ---- bad arguments ------------------------------------------------------------------------------

TEST(Metrics, RejectsBadArguments) {
  Tensor small = random_tensor({1, 2, 10, 16}, 1);
  expect_error_mentions([&] { ssim(small, small); }, {"ssim", "10 x 16", "H >= 11"});
  Tensor narrow = random_tensor({1, 2, 16, 9}, 1);
  expect_error_mentions([&] { ssim(narrow, narrow); }, {"16 x 9", "W >= 11"});
  Tensor x = random_tensor({2, 3, 12, 12}, 2), y = random_tensor({2, 3, 12, 13}, 3);
  expect_error_mentions([&] { ssim(x, y); }, {"ssim", "[2, 3, 12, 12]", "[2, 3, 12, 13]"});
  expect_error_mentions([&] { psnr(x, y); }, {"psnr", "differ in shape"});
  expect_error_mentions([&] { ssim(x.reshape({2, 3, 12, 12, 1}), x.reshape({2, 3, 12, 12, 1})); }, {"[B, D, H, W]"});
  expect_error_mentions([&] { ssim(x, x, 0.0); }, {"data_range", "0"});
  expect_error_mentions([&] { psnr(x, x, -2.0); }, {"data_range", "-2"});
  expect_error_mentions([&] { ssim(x, to_double(x)); }, {"ssim"});
  expect_error_mentions([&] { psnr(x.reshape({-1}), x.reshape({-1})); }, {"[B, ...]"});
  Tensor no_slices = Tensor::empty({2, 0, 12, 12});
  expect_error_mentions([&] { ssim(no_slices, no_slices); }, {"no slices"});
  // An empty batch is not an error: it has no scores.
  Tensor empty = Tensor::empty({0, 3, 12, 12});
  EXPECT_EQ(ssim(empty, empty).per_sample.numel(), 0);
  EXPECT_EQ(psnr(empty, empty).psnr.numel(), 0);
#if CTSR_HAVE_CUDA_ON_CPU
  expect_error_mentions([&] { ssim(x, x.to(Device::cuda_on_cpu())); }, {"cuda_on_cpu", "cpu"});
#endif
}

}  // namespace
}  // namespace ctsr::test
