// AdamW, the global gradient norm, clipping and the weight EMA: torch.optim.AdamW's states
// (tests/data/adamw_golden.txt, from tools/pytorch/make_adamw_golden.py) on every path, the
// first step in closed form, bitwise agreement of the reference and the CUDA paths (many
// tensors: several multi-tensor groups, several chunks, aligned and unaligned tensors), norms
// of known tensors, clipping by exactly the specified factor, the EMA against its formula in
// double, and bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/optimizer.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

// ---- golden data ------------------------------------------------------------------------------

struct GoldenTensor {
  Shape shape;
  uint32_t param_seed = 0, grad_seed = 0;
  int grad_exp = 0;
  std::vector<double> param, exp_avg, exp_avg_sq;  // after the last step
};

struct GoldenConfig {
  std::string name;
  AdamWConfig config;
  int steps = 0;
  std::vector<GoldenTensor> tensors;
};

std::vector<double> read_values(const std::string& text, const std::string& expected_key, int64_t count) {
  std::istringstream line(text);
  std::string key;
  line >> key;
  CTSR_CHECK(key == expected_key, "adamw_golden.txt: expected '", expected_key, "', found '", key, "'");
  std::vector<double> values(static_cast<size_t>(count));
  for (double& v : values) CTSR_CHECK(bool(line >> v), "adamw_golden.txt: too few values for ", expected_key);
  return values;
}

const std::vector<GoldenConfig>& golden_configs() {
  static const std::vector<GoldenConfig> configs = [] {
    const std::string path = std::string(CTSR_TEST_DATA_DIR) + "/adamw_golden.txt";
    std::ifstream file(path);
    CTSR_CHECK(file.good(), "cannot open ", path);
    std::vector<std::string> lines;
    for (std::string text; std::getline(file, text);) {
      if (!text.empty() && text[0] != '#') lines.push_back(text);
    }
    std::vector<GoldenConfig> out;
    size_t i = 0;
    while (i < lines.size()) {
      GoldenConfig g;
      std::istringstream head(lines[i++]);
      std::string key;
      int count = 0;
      head >> key >> g.name >> g.config.lr >> g.config.beta1 >> g.config.beta2 >> g.config.eps >>
          g.config.weight_decay >> g.steps >> count;
      CTSR_CHECK(key == "config" && !head.fail(), "adamw_golden.txt: bad config line");
      for (int k = 0; k < count; ++k) {
        GoldenTensor t;
        std::istringstream th(lines.at(i++));
        int ndim = 0;
        th >> key >> ndim;
        std::vector<int64_t> dims(static_cast<size_t>(ndim));
        for (int64_t& d : dims) th >> d;
        th >> t.param_seed >> t.grad_seed >> t.grad_exp;
        CTSR_CHECK(key == "tensor" && !th.fail(), "adamw_golden.txt: bad tensor line");
        t.shape = Shape(dims);
        t.param = read_values(lines.at(i++), "param", t.shape.numel());
        t.exp_avg = read_values(lines.at(i++), "exp_avg", t.shape.numel());
        t.exp_avg_sq = read_values(lines.at(i++), "exp_avg_sq", t.shape.numel());
        g.tensors.push_back(t);
      }
      CTSR_CHECK(lines.at(i++) == "end", "adamw_golden.txt: expected 'end' after ", g.name);
      out.push_back(g);
    }
    CTSR_CHECK(out.size() >= 2, "adamw_golden.txt: only ", out.size(), " configs");
    return out;
  }();
  return configs;
}

// The integer recipe of make_adamw_golden.py.
struct Lcg {
  uint32_t state;
  std::vector<float> values(int64_t n, int exp2 = 0) {
    std::vector<float> out(static_cast<size_t>(n));
    for (float& v : out) {
      state = state * 1664525u + 1013904223u;
      v = std::ldexp(float(int64_t(state >> 8) - (int64_t(1) << 23)) / 8388608.0f, -exp2);
    }
    return out;
  }
};

// float32 values within `ulps` units in the last place (by the bit patterns' distance), or
// within `atol`.
::testing::AssertionResult within_ulps(const Tensor& actual, const std::vector<double>& expected, int ulps,
                                       double atol = 0) {
  std::vector<float> a = to_float(actual).to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) {
    const float e = float(expected[i]);
    int32_t ia, ie;
    std::memcpy(&ia, &a[i], 4);
    std::memcpy(&ie, &e, 4);
    if (ia < 0) ia = int32_t(0x80000000u - uint32_t(ia));  // sign-magnitude to a monotonic line
    if (ie < 0) ie = int32_t(0x80000000u - uint32_t(ie));
    const int64_t distance = std::abs(int64_t(ia) - int64_t(ie));
    if (distance > ulps && !(std::fabs(double(a[i]) - double(e)) <= atol)) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs expected " << e << " ("
                                           << distance << " ulps apart, " << ulps << " allowed, or " << atol
                                           << " absolute)";
    }
  }
  return ::testing::AssertionSuccess();
}

struct State {
  std::vector<Tensor> params, grads, exp_avg, exp_avg_sq;
  // Guarded tensors (many_tensors): each is a view into a storage with guard values around it.
  struct Guard {
    Tensor storage;
    int64_t begin, end;  // the view's elements within storage
  };
  std::vector<Guard> guards;
  static constexpr float kGuard = 12345.0f;
  // No kernel wrote outside its tensors.
  ::testing::AssertionResult guards_intact() const {
    for (size_t k = 0; k < guards.size(); ++k) {
      const std::vector<float> all = guards[k].storage.to_vector<float>();
      for (int64_t i = 0; i < int64_t(all.size()); ++i) {
        if ((i < guards[k].begin || i >= guards[k].end) && all[size_t(i)] != kGuard) {
          return ::testing::AssertionFailure() << "guard element " << i << " of storage " << k << " was overwritten";
        }
      }
    }
    return ::testing::AssertionSuccess();
  }
  std::vector<Tensor*> param_ptrs() {
    std::vector<Tensor*> v;
    for (Tensor& t : params) v.push_back(&t);
    return v;
  }
  std::vector<const Tensor*> param_const_ptrs() const {
    std::vector<const Tensor*> v;
    for (const Tensor& t : params) v.push_back(&t);
    return v;
  }
  std::vector<const Tensor*> grad_ptrs() const {
    std::vector<const Tensor*> v;
    for (const Tensor& t : grads) v.push_back(&t);
    return v;
  }
  std::vector<Tensor*> avg_ptrs() {
    std::vector<Tensor*> v;
    for (Tensor& t : exp_avg) v.push_back(&t);
    return v;
  }
  std::vector<Tensor*> avg_sq_ptrs() {
    std::vector<Tensor*> v;
    for (Tensor& t : exp_avg_sq) v.push_back(&t);
    return v;
  }
  void step(const AdamWConfig& config, int64_t t) {
    adamw_step(param_ptrs(), grad_ptrs(), avg_ptrs(), avg_sq_ptrs(), config, t);
  }
};

// Runs a golden configuration on `device` in `dtype`.
State run_golden(const GoldenConfig& g, Device device, DType dtype) {
  State s;
  std::vector<Lcg> grad_streams;
  for (const GoldenTensor& t : g.tensors) {
    Tensor p = Tensor::from_vector(Lcg{t.param_seed}.values(t.shape.numel()), t.shape);
    if (dtype == DType::float64) p = to_double(p);
    s.params.push_back(p.to(device));
    s.exp_avg.push_back(Tensor::zeros(t.shape, dtype, device));
    s.exp_avg_sq.push_back(Tensor::zeros(t.shape, dtype, device));
    s.grads.push_back(Tensor());
    grad_streams.push_back(Lcg{t.grad_seed});
  }
  for (int step = 1; step <= g.steps; ++step) {
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      Tensor grad = Tensor::from_vector(grad_streams[i].values(g.tensors[i].shape.numel(), g.tensors[i].grad_exp),
                                        g.tensors[i].shape);
      if (dtype == DType::float64) grad = to_double(grad);
      s.grads[i] = grad.to(device);
    }
    s.step(g.config, step);
  }
  return s;
}

// torch's vectorised float32 kernels fuse the multiply-add of add_(alpha) where ours round twice,
// so the two agree to an ulp or two per step, not bitwise: 4 ulps after up to 5 steps. The first
// moment is a signed running sum that cancels; its rounding error is relative to its terms, the
// gradients, not to itself: a few ulps of the gradient scale instead.
constexpr int kTorchUlps = 4;
double exp_avg_atol(const GoldenTensor& t) { return std::ldexp(4.0, -24 - t.grad_exp); }

void expect_matches_torch(const GoldenConfig& g, Device device) {
  SCOPED_TRACE(g.name + " on " + device.str());
  const State s = run_golden(g, device, DType::float32);
  for (size_t i = 0; i < g.tensors.size(); ++i) {
    const GoldenTensor& t = g.tensors[i];
    SCOPED_TRACE("tensor " + std::to_string(i) + " " + t.shape.str());
    EXPECT_TRUE(within_ulps(s.params[i], t.param, kTorchUlps));
    EXPECT_TRUE(within_ulps(s.exp_avg[i], t.exp_avg, kTorchUlps, exp_avg_atol(t)));
    EXPECT_TRUE(within_ulps(s.exp_avg_sq[i], t.exp_avg_sq, kTorchUlps));
  }
}

TEST(AdamW, ReferenceMatchesTorch) {
  for (const GoldenConfig& g : golden_configs()) expect_matches_torch(g, Device::cpu());
}

TEST(AdamW, Float64ReferenceMatchesTorch) {
  // Same inputs in double: torch's float32 results are within float32 rounding of them.
  for (const GoldenConfig& g : golden_configs()) {
    SCOPED_TRACE(g.name);
    const State s = run_golden(g, Device::cpu(), DType::float64);
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      const GoldenTensor& t = g.tensors[i];
      // torch's parameter error is float32 rounding of p plus that of the lr-sized updates.
      EXPECT_TENSORS_CLOSE(s.params[i], Tensor::from_vector(t.param, t.shape), 1e-6, 1e-6 * g.config.lr);
      EXPECT_TENSORS_CLOSE(s.exp_avg[i], Tensor::from_vector(t.exp_avg, t.shape), 1e-6, exp_avg_atol(t));
      EXPECT_TENSORS_CLOSE(s.exp_avg_sq[i], Tensor::from_vector(t.exp_avg_sq, t.shape), 2e-6, 0);
    }
  }
}

TEST(AdamW, FirstStepInClosedForm) {
  // Step 1 from zero state: m_hat = g and v_hat = g^2, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps).
  const AdamWConfig config{1e-3, 0.9, 0.99, 1e-3, 0.05};
  Tensor p = random_tensor({3, 5}, 1, DType::float64), g = random_tensor({3, 5}, 2, DType::float64);
  Tensor m = Tensor::zeros({3, 5}, DType::float64), v = Tensor::zeros({3, 5}, DType::float64);
  const std::vector<double> p0 = p.to_vector<double>(), gv = g.to_vector<double>();
  adamw_step({&p}, {&g}, {&m}, {&v}, config, 1);
  const std::vector<double> p1 = p.to_vector<double>(), m1 = m.to_vector<double>(), v1 = v.to_vector<double>();
  for (size_t i = 0; i < p0.size(); ++i) {
    EXPECT_NEAR(p1[i], p0[i] * (1 - 1e-3 * 0.05) - 1e-3 * gv[i] / (std::fabs(gv[i]) + 1e-3), 1e-15);
    EXPECT_NEAR(m1[i], 0.1 * gv[i], 1e-15);
    EXPECT_NEAR(v1[i], 0.01 * gv[i] * gv[i], 1e-15);
  }
}

TEST(AdamW, ResumingAtALaterStepUsesItsBiasCorrection) {
  // A step-t update from given state equals the formula with 1 - beta^t, not 1 - beta.
  const AdamWConfig config{1e-2, 0.9, 0.999, 1e-8, 0.0};
  Tensor p = Tensor::from_vector<double>({1.0}, {1}), g = Tensor::from_vector<double>({0.5}, {1});
  Tensor m = Tensor::from_vector<double>({0.2}, {1}), v = Tensor::from_vector<double>({0.04}, {1});
  adamw_step({&p}, {&g}, {&m}, {&v}, config, 10);
  const double m1 = 0.9 * 0.2 + 0.1 * 0.5, v1 = 0.999 * 0.04 + 0.001 * 0.25;
  const double m_hat = m1 / (1 - std::pow(0.9, 10)), v_hat = v1 / (1 - std::pow(0.999, 10));
  const double expected = 1.0 - 1e-2 * m_hat / (std::sqrt(v_hat) + 1e-8);
  EXPECT_NEAR(p.to_vector<double>()[0], expected, 1e-15);
}

// ---- CUDA paths -------------------------------------------------------------------------------

using OptimizerParity = CudaPathTest;

TEST_P(OptimizerParity, AdamWMatchesTorch) {
  for (const GoldenConfig& g : golden_configs()) expect_matches_torch(g, device());
}

// 45 tensors (two multi-tensor groups of 32 and 13), sizes 1 to 3 chunks and not multiples of
// 4, some starting 4 bytes into their storage (the scalar path), the rest aligned (packs of 4).
// Every tensor is a view with guard values before and after it.
State many_tensors(Device device, uint64_t seed) {
  State s;
  const int64_t sizes[] = {1, 3, 4, 5, 17, 64, 4095, 4096, 4097, 8195, 12289, 130};
  for (int i = 0; i < 45; ++i) {
    const int64_t n = sizes[i % 12];
    const int64_t offset = i % 5 == 3 ? 1 : 0;  // one float in: not 16-byte aligned
    auto make = [&](uint64_t k, double lo, double hi) {
      Tensor t = random_tensor({n}, seed + 100 * uint64_t(i) + k, DType::float32, lo, hi);
      std::vector<float> guarded(static_cast<size_t>(n + 8), State::kGuard);
      const std::vector<float> values = t.to_vector<float>();
      std::copy(values.begin(), values.end(), guarded.begin() + offset);
      Tensor storage = Tensor::from_vector(guarded, {n + 8}, device);
      s.guards.push_back({storage, offset, offset + n});
      return storage.slice(offset, offset + n);
    };
    s.params.push_back(make(1, -1, 1));
    s.grads.push_back(make(2, -0.01, 0.01));
    s.exp_avg.push_back(make(3, -0.01, 0.01));
    s.exp_avg_sq.push_back(make(4, 0.0, 1e-4));
  }
  return s;
}

TEST_P(OptimizerParity, AdamWIsBitwiseTheReference) {
  // Both run adamw_update: the same correctly rounded float32 operations in the same order, no
  // contraction, so the results are identical, not merely close.
  State ref = many_tensors(Device::cpu(), 7), dev = many_tensors(device(), 7);
  int aligned = 0;
  for (const Tensor& p : dev.params) aligned += reinterpret_cast<uintptr_t>(p.raw_data()) % 16 == 0;
  ASSERT_GT(aligned, 0);  // both the packed and the scalar path run
  ASSERT_LT(aligned, int(dev.params.size()));
  const AdamWConfig config{};
  for (int64_t step = 1; step <= 3; ++step) {
    ref.step(config, step);
    dev.step(config, step);
  }
  for (size_t i = 0; i < ref.params.size(); ++i) {
    ASSERT_TRUE(tensors_equal(dev.params[i], ref.params[i])) << "params[" << i << "]";
    ASSERT_TRUE(tensors_equal(dev.exp_avg[i], ref.exp_avg[i])) << "exp_avg[" << i << "]";
    ASSERT_TRUE(tensors_equal(dev.exp_avg_sq[i], ref.exp_avg_sq[i])) << "exp_avg_sq[" << i << "]";
  }
  EXPECT_TRUE(dev.guards_intact());
  EXPECT_TRUE(ref.guards_intact());
}

TEST_P(OptimizerParity, NormOfKnownTensors) {
  // sqrt(3^2 + 4^2 + 12^2) = 13 exactly, with an empty tensor in between.
  Tensor a = Tensor::from_vector<float>({3, 4}, {2}).to(device());
  Tensor b = Tensor::zeros({0}, DType::float32, device());
  Tensor c = Tensor::from_vector<float>({12}, {1, 1}).to(device());
  EXPECT_EQ(global_grad_norm({&a, &b, &c}), 13.0);
  EXPECT_EQ(global_grad_norm({}), 0.0);
  // 5000 copies of 0.5 (two chunks of one tensor): sqrt(1250).
  std::vector<float> halves(5000, 0.5f);
  Tensor h = Tensor::from_vector(halves, {5000}).to(device());
  EXPECT_EQ(global_grad_norm({&h}), double(float(std::sqrt(1250.0))));
}

TEST_P(OptimizerParity, NormMatchesReference) {
  State s = many_tensors(device(), 11), ref = many_tensors(Device::cpu(), 11);
  const double on_device = global_grad_norm(s.grad_ptrs()), on_cpu = global_grad_norm(ref.grad_ptrs());
  double exact = 0;  // in double, independently
  for (const Tensor& g : ref.grads)
    for (float v : g.to_vector<float>()) exact += double(v) * double(v);
  // Both sum in double and round once to float32; only the order differs, so they agree to the
  // float32 rounding of the same double value (equal unless it lies within 1e-16 of a tie).
  EXPECT_NEAR(on_device, on_cpu, 1e-7 * on_cpu);
  EXPECT_EQ(on_cpu, double(float(std::sqrt(exact))));
}

TEST_P(OptimizerParity, ClipScalesByMaxNormOverNormPlusEpsilon) {
  for (Device dev : {Device::cpu(), device()}) {
    SCOPED_TRACE(dev.str());
    State s = many_tensors(dev, 13);
    std::vector<Tensor> before;
    for (const Tensor& g : s.grads) before.push_back(g.clone());
    const double norm = global_grad_norm(s.grad_ptrs());
    std::vector<Tensor*> grads;
    for (Tensor& g : s.grads) grads.push_back(&g);
    // Above the norm: nothing changes, bit for bit.
    EXPECT_EQ(clip_grad_norm(grads, norm * 1.5), norm);
    for (size_t i = 0; i < before.size(); ++i) ASSERT_TRUE(tensors_equal(s.grads[i], before[i])) << i;
    // Below: every element times float(max_norm / (norm + 1e-6)), one rounding.
    const double max_norm = norm / 3;
    EXPECT_EQ(clip_grad_norm(grads, max_norm), norm);
    const float factor = float(max_norm / (norm + 1e-6));
    for (size_t i = 0; i < before.size(); ++i) {
      std::vector<float> b = before[i].to_vector<float>(), a = s.grads[i].to_vector<float>();
      for (size_t k = 0; k < b.size(); ++k) ASSERT_EQ(a[k], b[k] * factor) << "grads[" << i << "][" << k << "]";
    }
    EXPECT_NEAR(global_grad_norm(s.grad_ptrs()), max_norm, 1e-5 * max_norm);
    EXPECT_TRUE(s.guards_intact());
  }
}

TEST_P(OptimizerParity, EmaIsBitwiseTheReference) {
  // The many_tensors lists (two groups, aligned and unaligned, 1 to 3 chunks): exp_avg serves as
  // the EMA of params. Three updates at different decays, then bit-for-bit comparison.
  State ref = many_tensors(Device::cpu(), 17), dev = many_tensors(device(), 17);
  for (double decay : {0.999, 0.9, 0.3}) {
    ema_update(ref.avg_ptrs(), ref.param_const_ptrs(), decay);
    ema_update(dev.avg_ptrs(), dev.param_const_ptrs(), decay);
  }
  for (size_t i = 0; i < ref.exp_avg.size(); ++i) {
    ASSERT_TRUE(tensors_equal(dev.exp_avg[i], ref.exp_avg[i])) << "ema[" << i << "]";
    ASSERT_TRUE(tensors_equal(dev.params[i], ref.params[i])) << "params[" << i << "] changed";
  }
  EXPECT_TRUE(dev.guards_intact());
  EXPECT_TRUE(ref.guards_intact());
}

TEST_P(OptimizerParity, EmaDecayZeroCopiesAndDecayOneKeeps) {
  for (Device dev : {Device::cpu(), device()}) {
    SCOPED_TRACE(dev.str());
    State s = many_tensors(dev, 19);
    const std::vector<Tensor*> ema = s.avg_ptrs();
    const std::vector<const Tensor*> params = s.param_const_ptrs();
    std::vector<Tensor> before;
    for (const Tensor& e : s.exp_avg) before.push_back(e.clone());
    ema_update(ema, params, 1.0);
    for (size_t i = 0; i < before.size(); ++i) ASSERT_TRUE(tensors_equal(s.exp_avg[i], before[i])) << i;
    ema_update(ema, params, 0.0);
    for (size_t i = 0; i < before.size(); ++i) ASSERT_TRUE(tensors_equal(s.exp_avg[i], s.params[i])) << i;
    EXPECT_TRUE(s.guards_intact());
  }
}

// The reference against decay * ema + (1 - decay) * p written out in double: identical in
// float64 (the same correctly rounded operations), and in float32 within the roundings of d and
// 1 - d to float, of the two products and of the sum: each at most 2^-24 relative, together at
// most 3 * 2^-24 (1.5 ulp at 2^-23) of |d ema| + |(1 - d) p|.
TEST(Ema, ReferenceMatchesTheFormulaInDouble) {
  const Shape shapes[] = {{7}, {3, 5, 11}, {1}, {4099}};
  for (double decay : {0.9999, 0.9, 0.5, 0.123}) {
    SCOPED_TRACE("decay " + std::to_string(decay));
    for (DType dtype : {DType::float64, DType::float32}) {
      std::vector<Tensor> ema, params;
      for (size_t k = 0; k < std::size(shapes); ++k) {
        ema.push_back(random_tensor(shapes[k], 30 + k, dtype, -3, 3));
        params.push_back(random_tensor(shapes[k], 40 + k, dtype, -3, 3));
      }
      std::vector<std::vector<double>> e0;
      for (const Tensor& e : ema) e0.push_back(to_double(e).to_vector<double>());
      std::vector<Tensor*> ema_ptrs;
      std::vector<const Tensor*> param_ptrs;
      for (size_t k = 0; k < ema.size(); ++k) ema_ptrs.push_back(&ema[k]), param_ptrs.push_back(&params[k]);
      ema_update(ema_ptrs, param_ptrs, decay);
      double worst_ulps = 0;
      for (size_t k = 0; k < ema.size(); ++k) {
        const std::vector<double> e1 = to_double(ema[k]).to_vector<double>(), p = to_double(params[k]).to_vector<double>();
        for (size_t i = 0; i < p.size(); ++i) {
          const double exact = decay * e0[k][i] + (1 - decay) * p[i];
          if (dtype == DType::float64) {
            ASSERT_EQ(e1[i], exact) << "tensor " << k << " element " << i;
          } else {
            const double scale = std::fabs(decay * e0[k][i]) + std::fabs((1 - decay) * p[i]);
            const double ulp = std::ldexp(1.0, -23) * scale;
            ASSERT_LE(std::fabs(e1[i] - exact), 1.5 * ulp * (1 + 1e-12)) << "tensor " << k << " element " << i;
            worst_ulps = std::max(worst_ulps, std::fabs(e1[i] - exact) / ulp);
          }
        }
      }
      if (dtype == DType::float32) {
        std::printf("[ measured ] ema_update float32, decay %.4f: worst error %.3f ulp (2^-23 of the terms)\n", decay,
                    worst_ulps);
        EXPECT_GT(worst_ulps, 0.0);  // float32 really rounds: the comparison is not vacuous
      }
    }
  }
}

TEST(Ema, RejectsBadArguments) {
  Tensor e = random_tensor({3, 4}, 1), p = random_tensor({3, 4}, 2), q = random_tensor({5}, 3);
  expect_error_mentions([&] { ema_update({&e}, {&p, &q}, 0.9); }, {"ema_update", "1 ema and 2 params", "equally long"});
  expect_error_mentions([&] { ema_update({&e}, {&q}, 0.9); }, {"params[0]", "[5]", "ema[0]", "[3, 4]"});
  for (double decay : {-0.1, 1.5, std::nan("")})
    expect_error_mentions([&] { ema_update({&e}, {&p}, decay); }, {"decay", "[0, 1]"});
  expect_error_mentions([&] { ema_update({&e}, {&e}, 0.9); }, {"same memory"});
  expect_error_mentions([&] { ema_update({&e}, {nullptr}, 0.9); }, {"params[0]", "null"});
  Tensor p64 = random_tensor({3, 4}, 4, DType::float64);
  expect_error_mentions([&] { ema_update({&e}, {&p64}, 0.9); }, {"params[0]", "float64"});
#if CTSR_HAVE_CUDA_ON_CPU
  Tensor p_executor = p.to(Device::cuda_on_cpu());
  expect_error_mentions([&] { ema_update({&e}, {&p_executor}, 0.9); }, {"params[0]", "cuda_on_cpu"});
  Tensor e64 = random_tensor({3}, 5, DType::float64).to(Device::cuda_on_cpu());
  Tensor p64e = random_tensor({3}, 6, DType::float64).to(Device::cuda_on_cpu());
  expect_error_mentions([&] { ema_update({&e64}, {&p64e}, 0.9); }, {"ema_update", "float64"});
#endif
  ema_update({}, {}, 0.5);  // nothing to do is not an error
}

TEST(GradNorm, ClipOnTheReferenceInFloat64) {
  Tensor a = Tensor::from_vector<double>({3, 4}, {2}), b = Tensor::from_vector<double>({12}, {1});
  EXPECT_EQ(clip_grad_norm({&a, &b}, 6.5), 13.0);
  const double factor = 6.5 / (13.0 + 1e-6);
  EXPECT_EQ(a.to_vector<double>()[0], 3 * factor);
  EXPECT_EQ(b.to_vector<double>()[0], 12 * factor);
}

CTSR_INSTANTIATE_CUDA_PATHS(OptimizerParity);

// ---- bad arguments ------------------------------------------------------------------------------

TEST(AdamW, RejectsBadArguments) {
  Tensor p = random_tensor({3, 4}, 1), g = random_tensor({3, 4}, 2);
  Tensor m = Tensor::zeros({3, 4}), v = Tensor::zeros({3, 4});
  Tensor q = random_tensor({5}, 3), gq = random_tensor({5}, 4), mq = Tensor::zeros({5}), vq = Tensor::zeros({5});
  const AdamWConfig config{};
  expect_error_mentions([&] { adamw_step({&p, &q}, {&g}, {&m, &mq}, {&v, &vq}, config, 1); },
               {"adamw_step", "2 params, 1 grads", "equally long"});
  Tensor bad_g = random_tensor({3, 5}, 5);
  expect_error_mentions([&] { adamw_step({&p, &q}, {&g, &bad_g}, {&m, &mq}, {&v, &vq}, config, 1); },
               {"grads[1]", "[3, 5]", "params[1]", "[5]"});
  Tensor bad_v = Tensor::zeros({4, 3});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&bad_v}, config, 1); }, {"exp_avg_sq[0]", "[4, 3]"});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&m}, config, 1); }, {"same memory"});
  expect_error_mentions([&] { adamw_step({&p}, {nullptr}, {&m}, {&v}, config, 1); }, {"grads[0]", "null"});
  Tensor g64 = random_tensor({3, 4}, 6, DType::float64);
  expect_error_mentions([&] { adamw_step({&p}, {&g64}, {&m}, {&v}, config, 1); }, {"grads[0]", "float64"});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&v}, config, 0); }, {"step 0", ">= 1"});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&v}, AdamWConfig{1e-3, 1.0, 0.999, 1e-8, 0}, 1); },
               {"beta1"});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&v}, AdamWConfig{-1e-3, 0.9, 0.999, 1e-8, 0}, 1); }, {"lr"});
  expect_error_mentions([&] { adamw_step({&p}, {&g}, {&m}, {&v}, AdamWConfig{1e-3, 0.9, 0.999, 1e-8, -1}, 1); },
               {"weight_decay"});
#if CTSR_HAVE_CUDA_ON_CPU
  Tensor g_executor = g.to(Device::cuda_on_cpu());
  expect_error_mentions([&] { adamw_step({&p}, {&g_executor}, {&m}, {&v}, config, 1); }, {"grads[0]", "cuda_on_cpu"});
#endif
  // Nothing to do is not an error.
  adamw_step({}, {}, {}, {}, config, 1);
}

TEST(GradNorm, RejectsBadArguments) {
  Tensor a = random_tensor({3}, 1), b = random_tensor({3}, 2, DType::float64);
  expect_error_mentions([&] { global_grad_norm({&a, &b}); }, {"global_grad_norm", "grads[1]", "float64"});
  expect_error_mentions([&] { global_grad_norm({&a, nullptr}); }, {"grads[1]", "null"});
  expect_error_mentions([&] { clip_grad_norm({&a}, 0.0); }, {"clip_grad_norm", "max_norm"});
  expect_error_mentions([&] { clip_grad_norm({&a}, std::nan("")); }, {"max_norm"});
}

}  // namespace
}  // namespace ctsr::test
