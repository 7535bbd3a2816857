// The diffusion process (model/diffusion.h): schedules, q_sample, training targets, output
// interpretation, DDIM / DDPM steps and full DDIM trajectories against an independent NumPy
// implementation (tests/data/diffusion/golden.txt, from tools/pytorch/make_diffusion_golden.py)
// in float64 and float32 on cpu and the CUDA paths; the schedules' shape and monotonicity; round
// trips of every prediction type; x0 / eps consistency and clipping; DDIM with eta = 1 against
// DDPM; the sampler's noise keys (a batch equals its samples run alone, the documented Philox
// offsets, the same bits on every path); and bad input.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/binary.h"
#include "kernels/copy.h"
#include "kernels/random.h"
#include "model/diffusion.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

// ---- golden data and the input recipe of make_diffusion_golden.py -------------------------------

const std::map<std::string, std::vector<double>>& golden() {
  static const std::map<std::string, std::vector<double>> records = [] {
    const std::string path = std::string(CTSR_TEST_DATA_DIR) + "/diffusion/golden.txt";
    std::ifstream file(path);
    CTSR_CHECK(file.good(), "cannot open ", path);
    std::map<std::string, std::vector<double>> out;
    for (std::string text; std::getline(file, text);) {
      if (text.empty() || text[0] == '#') continue;
      std::istringstream line(text);
      std::string name;
      int64_t count = 0;
      CTSR_CHECK(bool(line >> name >> count) && count > 0, path, ": bad record '", text.substr(0, 60), "'");
      std::vector<double> values(static_cast<size_t>(count));
      for (double& v : values) CTSR_CHECK(bool(line >> v), path, ": too few values for ", name);
      out[name] = std::move(values);
    }
    CTSR_CHECK(out.size() >= 50, path, ": only ", out.size(), " records");
    return out;
  }();
  return records;
}

const std::vector<double>& want(const std::string& name) {
  auto it = golden().find(name);
  CTSR_CHECK(it != golden().end(), "golden.txt has no record ", name);
  return it->second;
}

struct PatternSpec {
  int64_t mult, add, mod, div;
};
// pattern[i] = ((mult i + add) mod mod - (mod - 1) / 2) / div: exact in float32.
const std::map<std::string, PatternSpec> kPatterns = {
    {"x0", {7, 3, 17, 8}},        {"noise", {5, 1, 13, 4}},          {"x_t", {3, 2, 19, 8}},
    {"output", {11, 5, 23, 8}},  {"step_noise", {13, 7, 29, 16}},
};

Tensor pattern(const std::string& name, const Shape& shape, DType dtype = DType::float64,
               Device device = Device::cpu()) {
  const PatternSpec p = kPatterns.at(name);
  std::vector<double> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<double>((p.mult * int64_t(i) + p.add) % p.mod - (p.mod - 1) / 2) / static_cast<double>(p.div);
  Tensor t = Tensor::from_vector<double>(v, shape);
  return (dtype == DType::float32 ? to_float(t) : t).to(device);
}

const Shape kForwardShape{3, 2, 3, 5, 2};
const Shape kStepShape{2, 3, 5, 2, 3};

// Tolerances relative to the golden tensor's largest magnitude (float32 rounds each coefficient
// and each operation once; several terms of that magnitude meet in a result).
double tolerance(DType dtype) { return dtype == DType::float64 ? 1e-12 : 1e-6; }

// Worst error of any golden comparison in this process, per dtype, printed by the tests.
double worst_error[2] = {0, 0};

// max |got - want| / max |want|, and the elementwise check |got - want| <= tol (|want| + max |want|).
void expect_golden(const Tensor& got, const std::string& name, const std::string& context = "") {
  const std::vector<double>& w = want(name);
  ASSERT_EQ(got.numel(), static_cast<int64_t>(w.size())) << name;
  const std::vector<double> g = to_double(got.to(Device::cpu())).to_vector<double>();
  double scale = 0, err = 0;
  for (double v : w) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < w.size(); ++i) err = std::max(err, std::isnan(g[i]) ? INFINITY : std::abs(g[i] - w[i]));
  const double relative = err / scale;
  double& worst = worst_error[got.dtype() == DType::float64 ? 1 : 0];
  worst = std::max(worst, relative);
  const double tol = tolerance(got.dtype());
  EXPECT_LE(relative, tol) << name << " " << dtype_name(got.dtype()) << " on " << got.device().str() << " " << context;
  EXPECT_TENSORS_CLOSE(to_double(got.to(Device::cpu())), Tensor::from_vector<double>(w, got.shape()), tol,
                       tol * scale)
      << name << " " << context;
}

void print_worst(const char* what) {
  std::printf("[ golden   ] %s: worst error / max |golden| so far: float32 %.3g, float64 %.3g\n", what,
              worst_error[0], worst_error[1]);
}

DiffusionConfig config_for(const std::string& schedule, int64_t T, const std::string& prediction = "epsilon",
                           bool clip = true) {
  DiffusionConfig c;
  c.beta_schedule = parse_beta_schedule(schedule);
  c.timesteps = T;
  c.sampling_steps = std::min<int64_t>(T, 10);
  c.prediction_type = parse_prediction_type(prediction);
  c.clip_sample = clip;
  return c;
}

std::vector<int64_t> golden_timesteps(const std::string& name) {
  std::vector<int64_t> t;
  for (double v : want(name)) t.push_back(static_cast<int64_t>(v));
  return t;
}

// The fake denoiser of the golden trajectories: 0.5 x_t + c t, per element.
Denoiser fake_denoiser(double c) {
  return [c](const Tensor& x, int64_t t) {
    Tensor offset = Tensor::empty({1}, x.dtype(), x.device());
    fill(offset, c * static_cast<double>(t));
    return add(scale(x, 0.5), offset);
  };
}

// ---- the golden cases (make_diffusion_golden.py lists the same) ----------------------------------

struct ForwardCase {
  const char* name;
  const char* schedule;
  int64_t T;
  std::vector<int64_t> t;
};
const std::vector<ForwardCase> kForwardCases = {
    {"linear1000", "linear", 1000, {0, 417, 999}},
    {"cosine37", "cosine", 37, {36, 5, 17}},
};

struct InterpretCase {
  const char* name;
  const char* schedule;
  int64_t T;
  const char* prediction;
  bool clip;
  std::vector<int64_t> t;
};
const std::vector<InterpretCase> kInterpretCases = {
    {"eps_clip", "linear", 1000, "epsilon", true, {3, 417, 250}},
    {"eps_noclip", "linear", 1000, "epsilon", false, {3, 417, 250}},
    {"v_clip", "linear", 1000, "v", true, {999, 417, 3}},
    {"v_noclip", "cosine", 37, "v", false, {30, 2, 17}},
    {"sample_clip", "scaled_linear", 1000, "sample", true, {3, 500, 900}},
};

struct StepCase {
  const char* name;
  const char* sampler;
  const char* schedule;
  int64_t T;
  const char* prediction;
  bool clip;
  double eta;
  int64_t t, t_prev;
};
const std::vector<StepCase> kStepCases = {
    {"ddim_eta0", "ddim", "linear", 1000, "epsilon", true, 0.0, 500, 480},
    {"ddim_eta05", "ddim", "linear", 1000, "epsilon", true, 0.5, 500, 480},
    {"ddim_v_eta05", "ddim", "cosine", 37, "v", false, 0.5, 24, 18},
    {"ddim_final", "ddim", "linear", 1000, "epsilon", true, 0.5, 20, -1},
    {"ddpm_respaced", "ddpm", "linear", 1000, "epsilon", true, 0.0, 500, 480},
    {"ddpm_plain", "ddpm", "scaled_linear", 1000, "sample", true, 0.0, 10, 9},
    {"ddpm_v", "ddpm", "cosine", 37, "v", false, 0.0, 12, 6},
    {"ddpm_final", "ddpm", "linear", 1000, "epsilon", true, 0.0, 20, -1},
};

struct TrajectoryCase {
  const char* name;
  const char* schedule;
  int64_t T, steps;
  const char* prediction;
  bool clip;
  double c;
};
const std::vector<TrajectoryCase> kTrajectoryCases = {
    {"linear_eps", "linear", 1000, 5, "epsilon", true, 0.001},
    {"cosine_v", "cosine", 37, 6, "v", false, 0.01},
    {"scaled_sample", "scaled_linear", 1000, 4, "sample", true, 0.001},
};

void check_forward_golden(DType dtype, Device device) {
  for (const ForwardCase& c : kForwardCases) {
    const NoiseSchedule schedule(config_for(c.schedule, c.T));
    Tensor x0 = pattern("x0", kForwardShape, dtype, device);
    Tensor noise = pattern("noise", kForwardShape, dtype, device);
    const std::string prefix = std::string("forward/") + c.name + "/";
    expect_golden(q_sample(schedule, x0, noise, c.t), prefix + "q_sample");
    expect_golden(training_target(schedule, PredictionType::v, x0, noise, c.t), prefix + "target_v");
    // epsilon and sample targets are the inputs themselves
    EXPECT_EQ(training_target(schedule, PredictionType::epsilon, x0, noise, c.t).raw_data(), noise.raw_data());
    EXPECT_EQ(training_target(schedule, PredictionType::sample, x0, noise, c.t).raw_data(), x0.raw_data());
  }
}

void check_interpret_golden(DType dtype, Device device) {
  for (const InterpretCase& c : kInterpretCases) {
    const DiffusionConfig config = config_for(c.schedule, c.T, c.prediction, c.clip);
    const NoiseSchedule schedule(config);
    Prediction p = interpret_output(schedule, config, pattern("x_t", kForwardShape, dtype, device),
                                    pattern("output", kForwardShape, dtype, device), c.t);
    const std::string prefix = std::string("interpret/") + c.name + "/";
    expect_golden(p.x0, prefix + "x0");
    expect_golden(p.eps, prefix + "eps");
  }
}

void check_step_golden(DType dtype, Device device) {
  for (const StepCase& c : kStepCases) {
    DiffusionConfig config = config_for(c.schedule, c.T, c.prediction, c.clip);
    config.sampler = parse_sampler_kind(c.sampler);
    config.ddim_eta = c.eta;
    const NoiseSchedule schedule(config);
    Tensor x_t = pattern("x_t", kStepShape, dtype, device);
    Tensor out = pattern("output", kStepShape, dtype, device);
    Tensor noise = pattern("step_noise", kStepShape, dtype, device);
    Tensor x_prev = config.sampler == SamplerKind::ddim ? ddim_step(schedule, config, x_t, out, c.t, c.t_prev, noise)
                                                        : ddpm_step(schedule, config, x_t, out, c.t, c.t_prev, noise);
    EXPECT_EQ(x_prev.device(), device);
    expect_golden(x_prev, std::string("step/") + c.name);
  }
}

void check_trajectory_golden(DType dtype, Device device) {
  for (const TrajectoryCase& c : kTrajectoryCases) {
    DiffusionConfig config = config_for(c.schedule, c.T, c.prediction, c.clip);
    config.sampling_steps = c.steps;
    config.sampler = SamplerKind::ddim;
    config.ddim_eta = 0.0;
    const NoiseSchedule schedule(config);
    const std::string prefix = std::string("trajectory/") + c.name + "/";
    const std::vector<int64_t> timesteps = sampling_timesteps(c.T, c.steps);
    ASSERT_EQ(timesteps, golden_timesteps(prefix + "timesteps"));
    // The denoiser sees every intermediate state: x_T, then the state after each step.
    std::vector<Tensor> seen;
    std::vector<int64_t> seen_t;
    const Denoiser inner = fake_denoiser(c.c);
    const Denoiser recording = [&](const Tensor& x, int64_t t) {
      seen.push_back(x.clone());
      seen_t.push_back(t);
      return inner(x, t);
    };
    const Tensor x_T = pattern("x_t", kStepShape, dtype, device);
    const Tensor x = sample(schedule, config, kStepShape, dtype, device, recording, 1, {0, 1}, &x_T);
    ASSERT_EQ(seen.size(), timesteps.size());
    EXPECT_EQ(seen_t, timesteps);
    EXPECT_TRUE(tensors_equal(seen[0], x_T));
    for (size_t k = 1; k < seen.size(); ++k) expect_golden(seen[k], prefix + "after_step" + std::to_string(k - 1));
    expect_golden(x, prefix + "after_step" + std::to_string(timesteps.size() - 1));
  }
}

// ---- names and configuration ------------------------------------------------------------------

TEST(DiffusionNames, ParseAndNameRoundTrip) {
  for (auto s : {BetaSchedule::linear, BetaSchedule::scaled_linear, BetaSchedule::cosine})
    EXPECT_EQ(parse_beta_schedule(beta_schedule_name(s)), s);
  for (auto p : {PredictionType::epsilon, PredictionType::v, PredictionType::sample})
    EXPECT_EQ(parse_prediction_type(prediction_type_name(p)), p);
  for (auto k : {SamplerKind::ddim, SamplerKind::ddpm}) EXPECT_EQ(parse_sampler_kind(sampler_kind_name(k)), k);
  EXPECT_STREQ(beta_schedule_name(BetaSchedule::scaled_linear), "scaled_linear");
  EXPECT_STREQ(prediction_type_name(PredictionType::v), "v");
  EXPECT_STREQ(sampler_kind_name(SamplerKind::ddpm), "ddpm");
}

TEST(DiffusionNames, UnknownNamesListTheAcceptedOnes) {
  expect_error_mentions([] { parse_beta_schedule("quadratic"); },
                        {"beta_schedule", "'quadratic'", "linear, scaled_linear, cosine"});
  expect_error_mentions([] { parse_prediction_type("eps"); }, {"prediction_type", "'eps'", "epsilon, v, sample"});
  expect_error_mentions([] { parse_sampler_kind("DDIM"); }, {"sampler", "'DDIM'", "ddim, ddpm"});
}

TEST(DiffusionConfigTest, DefaultsAreTheSpecsAndValid) {
  const DiffusionConfig c;
  EXPECT_EQ(c.timesteps, 1000);
  EXPECT_EQ(c.beta_schedule, BetaSchedule::linear);
  EXPECT_EQ(c.beta_start, 1e-4);
  EXPECT_EQ(c.beta_end, 0.02);
  EXPECT_EQ(c.prediction_type, PredictionType::epsilon);
  EXPECT_EQ(c.sampler, SamplerKind::ddim);
  EXPECT_EQ(c.sampling_steps, 50);
  EXPECT_EQ(c.ddim_eta, 0.0);
  EXPECT_TRUE(c.clip_sample);
  EXPECT_EQ(c.clip_range, 1.0);
  validate_diffusion_config(c);
}

TEST(DiffusionConfigTest, BadValuesNameTheField) {
  auto bad = [](auto edit, std::vector<std::string> parts) {
    DiffusionConfig c;
    edit(c);
    expect_error_mentions([&] { validate_diffusion_config(c); }, parts);
  };
  bad([](DiffusionConfig& c) { c.timesteps = 0; }, {"timesteps = 0", ">= 1"});
  bad([](DiffusionConfig& c) { c.sampling_steps = 1001; }, {"sampling_steps = 1001", "[1, timesteps = 1000]"});
  bad([](DiffusionConfig& c) { c.sampling_steps = 0; }, {"sampling_steps = 0"});
  bad([](DiffusionConfig& c) { c.ddim_eta = 1.5; }, {"ddim_eta = 1.5", "[0, 1]"});
  bad([](DiffusionConfig& c) { c.ddim_eta = -0.1; }, {"ddim_eta = -0.1"});
  bad([](DiffusionConfig& c) { c.clip_range = 0; }, {"clip_range = 0", "> 0"});
  bad([](DiffusionConfig& c) { c.beta_end = NAN; }, {"beta_end = nan", "finite"});
}

// ---- schedules --------------------------------------------------------------------------------

TEST(NoiseScheduleTest, MatchesGoldenAtProbedTimesteps) {
  for (const char* kind : {"linear", "scaled_linear", "cosine"}) {
    for (int64_t T : {1000, 37}) {
      const NoiseSchedule s(config_for(kind, T));
      ASSERT_EQ(s.timesteps(), T);
      const std::string prefix = std::string("schedule/") + kind + "/" + std::to_string(T) + "/";
      const std::vector<int64_t> probes = golden_timesteps(prefix + "t");
      const std::vector<double>& betas = want(prefix + "betas");
      const std::vector<double>& abar = want(prefix + "alphas_cumprod");
      for (size_t i = 0; i < probes.size(); ++i) {
        const size_t t = static_cast<size_t>(probes[i]);
        EXPECT_NEAR(s.betas()[t], betas[i], 1e-14 * betas[i]) << prefix << t;
        EXPECT_NEAR(s.alphas_cumprod()[t], abar[i], 1e-12 * abar[i]) << prefix << t;
        EXPECT_EQ(s.alphas()[t], 1 - s.betas()[t]);
        EXPECT_EQ(s.alpha_bar(probes[i]), s.alphas_cumprod()[t]);
        worst_error[1] = std::max(worst_error[1], std::abs(s.alphas_cumprod()[t] - abar[i]) / abar[i]);
      }
    }
  }
  print_worst("schedules");
}

TEST(NoiseScheduleTest, ShapeAndMonotonicity) {
  for (const char* kind : {"linear", "scaled_linear", "cosine"}) {
    for (int64_t T : {1000, 37, 2, 1}) {
      const NoiseSchedule s(config_for(kind, T));
      ASSERT_EQ(s.betas().size(), size_t(T));
      ASSERT_EQ(s.alphas().size(), size_t(T));
      ASSERT_EQ(s.alphas_cumprod().size(), size_t(T));
      EXPECT_EQ(s.kind(), parse_beta_schedule(kind));
      for (int64_t t = 0; t < T; ++t) {
        const size_t i = size_t(t);
        EXPECT_GT(s.betas()[i], 0);
        EXPECT_LT(s.betas()[i], 1);
        if (t > 0) {
          EXPECT_GT(s.betas()[i], s.betas()[i - 1]) << kind << " T=" << T << " t=" << t;  // increasing noise
          EXPECT_LT(s.alphas_cumprod()[i], s.alphas_cumprod()[i - 1]) << kind << " T=" << T << " t=" << t;
        }
        EXPECT_GT(s.alphas_cumprod()[i], 0);
      }
      EXPECT_EQ(s.alpha_bar(-1), 1.0);
      if (std::string(kind) != "cosine") {
        EXPECT_NEAR(s.betas().front(), 1e-4, 1e-19) << kind;
        if (T > 1) {
          EXPECT_NEAR(s.betas().back(), 0.02, 1e-17) << kind;
        }
      }
    }
  }
  // The cosine schedule's last beta is the clipped one; the linear schedule ends near zero signal.
  EXPECT_EQ(NoiseSchedule(config_for("cosine", 1000)).betas().back(), 0.999);
  EXPECT_LT(NoiseSchedule(config_for("linear", 1000)).alphas_cumprod().back(), 1e-4);
}

TEST(NoiseScheduleTest, BadSchedulesAreRejected) {
  expect_error_mentions([] { NoiseSchedule(config_for("linear", 0)); }, {"timesteps = 0", ">= 1"});
  DiffusionConfig c = config_for("linear", 100);
  c.beta_end = 1.5;
  expect_error_mentions([&] { NoiseSchedule s(c); }, {"noise schedule linear", "beta[", "expected in (0, 1)"});
  c.beta_start = 0.0, c.beta_end = 0.02;
  expect_error_mentions([&] { NoiseSchedule s(c); }, {"beta[0] = 0", "(0, 1)"});
  c.beta_schedule = BetaSchedule::scaled_linear, c.beta_start = -1e-4;
  expect_error_mentions([&] { NoiseSchedule s(c); }, {"scaled_linear", "beta_start = -0.0001", ">= 0"});
  const NoiseSchedule s(config_for("linear", 37));
  expect_error_mentions([&] { s.alpha_bar(37); }, {"t = 37", "[0, 37)"});
  expect_error_mentions([&] { s.alpha_bar(-2); }, {"t = -2"});
}

TEST(SamplingTimesteps, LeadingSpacing) {
  std::vector<int64_t> expected;
  for (int64_t t = 980; t >= 0; t -= 20) expected.push_back(t);
  EXPECT_EQ(sampling_timesteps(1000, 50), expected);
  EXPECT_EQ(sampling_timesteps(37, 6), (std::vector<int64_t>{30, 24, 18, 12, 6, 0}));
  EXPECT_EQ(sampling_timesteps(10, 3), (std::vector<int64_t>{6, 3, 0}));
  EXPECT_EQ(sampling_timesteps(1000, 1), std::vector<int64_t>{0});
  std::vector<int64_t> all = sampling_timesteps(37, 37);
  ASSERT_EQ(all.size(), 37u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], 36 - int64_t(i));
  expect_error_mentions([] { sampling_timesteps(1000, 1001); }, {"steps = 1001", "[1, T = 1000]"});
  expect_error_mentions([] { sampling_timesteps(1000, 0); }, {"steps = 0"});
  expect_error_mentions([] { sampling_timesteps(0, 1); }, {"T = 0"});
}

// ---- golden values on the reference path --------------------------------------------------------

TEST(DiffusionGolden, ForwardProcessCpu) {
  for (DType dtype : {DType::float64, DType::float32}) check_forward_golden(dtype, Device::cpu());
  print_worst("forward");
}

TEST(DiffusionGolden, InterpretOutputCpu) {
  for (DType dtype : {DType::float64, DType::float32}) check_interpret_golden(dtype, Device::cpu());
  print_worst("interpret");
}

TEST(DiffusionGolden, SingleStepsCpu) {
  for (DType dtype : {DType::float64, DType::float32}) check_step_golden(dtype, Device::cpu());
  print_worst("steps");
}

TEST(DiffusionGolden, DdimTrajectoriesCpu) {
  for (DType dtype : {DType::float64, DType::float32}) check_trajectory_golden(dtype, Device::cpu());
  print_worst("trajectories");
}

// ---- properties -------------------------------------------------------------------------------

// From the target of each prediction type at x_t = q_sample(x0, eps), interpret_output recovers
// x0 and eps (no clipping: x0 here leaves [-1, 1]).
double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = to_double(a).to_vector<double>(), vb = to_double(b).to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

TEST(DiffusionProperties, EveryPredictionTypeRoundTrips) {
  double worst_round_trip = 0;
  const Shape shape{3, 4, 5, 3, 2};
  Tensor x0 = random_tensor(shape, 3, DType::float64, -1.5, 1.5);
  Tensor eps = random_tensor(shape, 4, DType::float64, -2, 2);
  for (const char* kind : {"linear", "cosine"}) {
    for (const char* prediction : {"epsilon", "v", "sample"}) {
      const DiffusionConfig config = config_for(kind, 1000, prediction, false);
      const NoiseSchedule schedule(config);
      const std::vector<int64_t> t = {0, 613, 999};
      Tensor x_t = q_sample(schedule, x0, eps, t);
      Prediction p = interpret_output(schedule, config, x_t,
                                      training_target(schedule, config.prediction_type, x0, eps, t), t);
      // Exact up to rounding, grown by the formula's conditioning: v needs no division (factor
      // 1); epsilon divides by sqrt(abar) (~157 at t = 999 linear, ~2e4 cosine), sample by
      // sqrt(1 - abar) (~100 at t = 0).
      double condition = 1;
      for (int64_t ti : t) {
        const double a = schedule.alpha_bar(ti);
        if (config.prediction_type == PredictionType::epsilon) condition = std::max(condition, 1 / std::sqrt(a));
        if (config.prediction_type == PredictionType::sample) condition = std::max(condition, 1 / std::sqrt(1 - a));
      }
      EXPECT_TENSORS_CLOSE(p.x0, x0, 0, 1e-14 * condition) << kind << " " << prediction;
      EXPECT_TENSORS_CLOSE(p.eps, eps, 0, 1e-14 * condition) << kind << " " << prediction;
      worst_round_trip = std::max({worst_round_trip, max_abs_difference(p.x0, x0) / condition,
                                   max_abs_difference(p.eps, eps) / condition});
    }
  }
  std::printf("[ round    ] worst round-trip error / condition factor: %.3g\n", worst_round_trip);
}

// x0 and eps always explain x_t, clipped or not; clipping bounds x0 and is active here.
TEST(DiffusionProperties, PredictionIsConsistentAndClipped) {
  const Shape shape{4, 3, 5, 7};
  Tensor x_t = random_tensor(shape, 8, DType::float64, -1.2, 1.2);
  Tensor out = random_tensor(shape, 9, DType::float64, -1.5, 1.5);
  const std::vector<int64_t> t = {5, 250, 700, 999};
  for (const char* prediction : {"epsilon", "v", "sample"}) {
    for (double clip_range : {0.0, 1.0, 0.5}) {
      DiffusionConfig config = config_for("linear", 1000, prediction, clip_range > 0);
      if (clip_range > 0) config.clip_range = clip_range;
      const NoiseSchedule schedule(config);
      Prediction p = interpret_output(schedule, config, x_t, out, t);
      EXPECT_TENSORS_CLOSE(q_sample(schedule, p.x0, p.eps, t), x_t, 1e-12, 1e-12) << prediction << " " << clip_range;
      const std::vector<double> x0 = p.x0.to_vector<double>();
      const double largest = std::abs(*std::max_element(x0.begin(), x0.end(), [](double a, double b) {
        return std::abs(a) < std::abs(b);
      }));
      if (clip_range > 0) {
        EXPECT_EQ(largest, clip_range) << prediction;  // active, and nothing beyond it
        EXPECT_GT(std::count(x0.begin(), x0.end(), clip_range), 0) << prediction;
        EXPECT_GT(std::count(x0.begin(), x0.end(), -clip_range), 0) << prediction;
      } else {
        EXPECT_GT(largest, 1.0) << prediction;  // unclipped predictions leave the range here
      }
    }
  }
}

// With eta = 1, DDIM's sigma is the DDPM posterior's standard deviation and its mean the
// posterior mean: two routes through different formulas to the same x_prev.
TEST(DiffusionProperties, DdimWithEtaOneIsDdpm) {
  const Shape shape{2, 5, 3, 4};
  Tensor x_t = random_tensor(shape, 1, DType::float64, -1.2, 1.2);
  Tensor out = random_tensor(shape, 2, DType::float64, -1.5, 1.5);
  Tensor noise = random_tensor(shape, 3, DType::float64, -2, 2);
  for (const char* prediction : {"epsilon", "v", "sample"}) {
    DiffusionConfig config = config_for("cosine", 1000, prediction, true);
    config.ddim_eta = 1.0;
    const NoiseSchedule schedule(config);
    for (auto [t, t_prev] : {std::pair<int64_t, int64_t>{999, 979}, {500, 499}, {40, 0}, {20, -1}}) {
      EXPECT_TENSORS_CLOSE(ddim_step(schedule, config, x_t, out, t, t_prev, noise),
                           ddpm_step(schedule, config, x_t, out, t, t_prev, noise), 1e-12, 1e-12)
          << prediction << " t=" << t << " t_prev=" << t_prev;
    }
  }
}

// Deterministic steps read no noise; the final step returns the (clipped) x0 prediction.
TEST(DiffusionProperties, StepsWithoutNoise) {
  const Shape shape{2, 3, 4};
  Tensor x_t = random_tensor(shape, 11, DType::float64, -1, 1);
  Tensor out = random_tensor(shape, 12, DType::float64, -1, 1);
  const DiffusionConfig config = config_for("linear", 1000);
  const NoiseSchedule schedule(config);
  Tensor x_prev = ddim_step(schedule, config, x_t, out, 500, 480, Tensor());
  EXPECT_TRUE(x_prev.defined());
  const Tensor x0 = interpret_output(schedule, config, x_t, out, {20, 20}).x0;
  EXPECT_TRUE(tensors_equal(ddim_step(schedule, config, x_t, out, 20, -1, Tensor()), x0));
  EXPECT_TRUE(tensors_equal(ddpm_step(schedule, config, x_t, out, 20, -1, Tensor()), x0));
  // A stochastic step without its noise says so.
  expect_error_mentions([&] { ddpm_step(schedule, config, x_t, out, 500, 480, Tensor()); }, {"ddpm_step", "noise"});
}

// ---- the sampler's randomness -------------------------------------------------------------------

DiffusionConfig stochastic_config(SamplerKind sampler) {
  DiffusionConfig config = config_for("linear", 100, "epsilon", true);
  config.sampler = sampler;
  config.sampling_steps = 7;
  config.ddim_eta = sampler == SamplerKind::ddim ? 0.5 : 0.0;
  return config;
}

void check_batch_equals_samples_alone(DType dtype, Device device) {
  const std::vector<uint64_t> keys = {7, 11, 4000000000ull};
  for (SamplerKind sampler : {SamplerKind::ddim, SamplerKind::ddpm}) {
    const DiffusionConfig config = stochastic_config(sampler);
    const NoiseSchedule schedule(config);
    const Tensor batch = sample(schedule, config, Shape{3, 3, 5, 4, 2}, dtype, device, fake_denoiser(0.003), 42, keys);
    EXPECT_EQ(batch.device(), device);
    for (size_t i = 0; i < keys.size(); ++i) {
      const Tensor alone =
          sample(schedule, config, Shape{1, 3, 5, 4, 2}, dtype, device, fake_denoiser(0.003), 42, {keys[i]});
      EXPECT_TRUE(tensors_equal(batch.select(int64_t(i)).clone(), alone.select(0).clone()))
          << sampler_kind_name(sampler) << " sample " << i << " " << dtype_name(dtype);
    }
    // and the samples differ from each other (their own noise), and from another seed's
    EXPECT_FALSE(tensors_equal(batch.select(0).clone(), batch.select(1).clone()));
    const Tensor other_seed = sample(schedule, config, Shape{3, 3, 5, 4, 2}, dtype, device, fake_denoiser(0.003), 43, keys);
    EXPECT_FALSE(tensors_equal(batch.select(2).clone(), other_seed.select(2).clone()));
  }
}

TEST(DiffusionSampler, BatchEqualsItsSamplesRunAloneCpu) {
  for (DType dtype : {DType::float64, DType::float32}) check_batch_equals_samples_alone(dtype, Device::cpu());
}

// The noise is exactly the documented Philox stream: sample() equals the steps run by hand.
TEST(DiffusionSampler, NoiseFollowsTheDocumentedOffsets) {
  const Shape shape{2, 3, 4, 5};
  const std::vector<uint64_t> keys = {3, 9};
  const uint64_t seed = 1234;
  for (SamplerKind sampler : {SamplerKind::ddpm, SamplerKind::ddim}) {
    const DiffusionConfig config = stochastic_config(sampler);
    const NoiseSchedule schedule(config);
    auto draw = [&](uint64_t k) {
      Tensor t = Tensor::empty(shape, DType::float64);
      for (size_t i = 0; i < keys.size(); ++i) {
        Tensor slice = t.select(int64_t(i));
        fill_normal(slice, seed, (keys[i] << 32) | k);
        EXPECT_EQ(sampling_noise_offset(keys[i], k), (keys[i] << 32) | k);
      }
      return t;
    };
    Tensor x = draw(0);
    const std::vector<int64_t> ts = sampling_timesteps(config.timesteps, config.sampling_steps);
    const Denoiser denoiser = fake_denoiser(0.002);
    for (size_t k = 0; k < ts.size(); ++k) {
      const int64_t t_prev = k + 1 < ts.size() ? ts[k + 1] : -1;
      Tensor noise = t_prev >= 0 ? draw(k + 1) : Tensor();
      x = sampler == SamplerKind::ddim ? ddim_step(schedule, config, x, denoiser(x, ts[k]), ts[k], t_prev, noise)
                                       : ddpm_step(schedule, config, x, denoiser(x, ts[k]), ts[k], t_prev, noise);
    }
    EXPECT_TRUE(tensors_equal(sample(schedule, config, shape, DType::float64, Device::cpu(), denoiser, seed, keys), x))
        << sampler_kind_name(sampler);
  }
}

TEST(DiffusionSampler, ReproducibleAndGivenXTReplacesTheInitialDraw) {
  const DiffusionConfig config = stochastic_config(SamplerKind::ddpm);
  const NoiseSchedule schedule(config);
  const Shape shape{2, 3, 3};
  const Tensor a = sample(schedule, config, shape, DType::float32, Device::cpu(), fake_denoiser(0.001), 5, {1, 2});
  const Tensor b = sample(schedule, config, shape, DType::float32, Device::cpu(), fake_denoiser(0.001), 5, {1, 2});
  EXPECT_TRUE(tensors_equal(a, b));
  // x_T equal to draw 0 gives the same result; another x_T a different one.
  Tensor x_T = Tensor::empty(shape, DType::float32);
  for (int64_t i = 0; i < 2; ++i) {
    Tensor slice = x_T.select(i);
    fill_normal(slice, 5, sampling_noise_offset(uint64_t(i + 1), 0));
  }
  EXPECT_TRUE(tensors_equal(
      sample(schedule, config, shape, DType::float32, Device::cpu(), fake_denoiser(0.001), 5, {1, 2}, &x_T), a));
  Tensor other = scale(x_T, 0.5);
  EXPECT_FALSE(tensors_equal(
      sample(schedule, config, shape, DType::float32, Device::cpu(), fake_denoiser(0.001), 5, {1, 2}, &other), a));
}

// ---- bad input --------------------------------------------------------------------------------

TEST(DiffusionErrors, TimestepsShapesAndMismatches) {
  const DiffusionConfig config = config_for("linear", 1000);
  const NoiseSchedule schedule(config);
  Tensor x = pattern("x0", kForwardShape);
  Tensor noise = pattern("noise", kForwardShape);
  expect_error_mentions([&] { q_sample(schedule, x, noise, {0, 1000, 2}); }, {"q_sample t[1] = 1000", "[0, 1000)"});
  expect_error_mentions([&] { q_sample(schedule, x, noise, {0, -1, 2}); }, {"q_sample t[1] = -1"});
  expect_error_mentions([&] { q_sample(schedule, x, noise, {0, 1}); }, {"2 timesteps for a batch of 3"});
  expect_error_mentions([&] { q_sample(schedule, x, pattern("noise", {3, 2, 3, 5, 1}), {0, 1, 2}); },
                        {"noise has shape [3, 2, 3, 5, 1]", "x0 has [3, 2, 3, 5, 2]"});
  expect_error_mentions([&] { q_sample(schedule, x, to_float(noise), {0, 1, 2}); }, {"q_sample", "float32"});
  expect_error_mentions([&] { training_target(schedule, PredictionType::v, x, pattern("noise", {3, 60}), {0, 1, 2}); },
                        {"training_target", "[3, 60]"});
  expect_error_mentions([&] { interpret_output(schedule, config, x, pattern("output", {3, 2, 3, 5, 3}), {1, 2, 3}); },
                        {"interpret_output", "model_output has shape [3, 2, 3, 5, 3]"});
  expect_error_mentions([&] { ddim_step(schedule, config, x, noise, 1000, 980, Tensor()); },
                        {"ddim_step t[0] = 1000", "[0, 1000)"});
  expect_error_mentions([&] { ddim_step(schedule, config, x, noise, 500, 500, Tensor()); },
                        {"ddim_step", "t_prev = 500 for t = 500"});
  expect_error_mentions([&] { ddpm_step(schedule, config, x, noise, 500, -2, Tensor()); }, {"t_prev = -2"});
  DiffusionConfig eta = config;
  eta.ddim_eta = 0.5;
  expect_error_mentions([&] { ddim_step(schedule, eta, x, noise, 500, 480, pattern("noise", {3, 1})); },
                        {"ddim_step", "noise has shape [3, 1]"});
  expect_error_mentions([&] { ddim_step(NoiseSchedule(config_for("linear", 37)), config, x, noise, 5, 4, Tensor()); },
                        {"config has timesteps = 1000", "schedule has 37"});
}

TEST(DiffusionErrors, SamplerArguments) {
  const DiffusionConfig config = stochastic_config(SamplerKind::ddpm);
  const NoiseSchedule schedule(config);
  const Denoiser good = fake_denoiser(0.001);
  const Shape shape{2, 3};
  expect_error_mentions([&] { sample(schedule, config, shape, DType::float32, Device::cpu(), good, 1, {1}); },
                        {"1 sample keys for a batch of 2"});
  expect_error_mentions(
      [&] { sample(schedule, config, shape, DType::float32, Device::cpu(), good, 1, {1, uint64_t(1) << 32}); },
      {"sample key 4294967296", "2^32"});
  expect_error_mentions([&] { sample(schedule, config, shape, DType::int32, Device::cpu(), good, 1, {1, 2}); },
                        {"dtype int32"});
  Tensor wrong = Tensor::zeros({2, 4});
  expect_error_mentions([&] { sample(schedule, config, shape, DType::float32, Device::cpu(), good, 1, {1, 2}, &wrong); },
                        {"x_T has shape [2, 4]", "expected [2, 3]"});
  const Denoiser bad = [](const Tensor& x, int64_t) { return x.reshape({6}); };
  expect_error_mentions([&] { sample(schedule, config, shape, DType::float32, Device::cpu(), bad, 1, {1, 2}); },
                        {"denoiser returned [6]", "step 0 (t = 84)", "expected [2, 3]"});
  DiffusionConfig too_many = config;
  too_many.sampling_steps = 101;
  expect_error_mentions([&] { sample(schedule, too_many, shape, DType::float32, Device::cpu(), good, 1, {1, 2}); },
                        {"sampling_steps = 101"});
}

// ---- the CUDA paths -----------------------------------------------------------------------------

using DiffusionCudaPaths = CudaPathTest;

TEST_P(DiffusionCudaPaths, GoldenInFloat32) {
  check_forward_golden(DType::float32, device());
  check_interpret_golden(DType::float32, device());
  check_step_golden(DType::float32, device());
  check_trajectory_golden(DType::float32, device());
  print_worst(device().str().c_str());
}

// Every op the sampler composes gives the same bits on every path, so the samples do too.
TEST_P(DiffusionCudaPaths, SamplerEqualsTheReferenceBitwise) {
  for (SamplerKind sampler : {SamplerKind::ddim, SamplerKind::ddpm}) {
    for (const char* prediction : {"epsilon", "v"}) {
      DiffusionConfig config = stochastic_config(sampler);
      config.prediction_type = parse_prediction_type(prediction);
      const NoiseSchedule schedule(config);
      const Shape shape{3, 5, 4, 4, 3};
      const Tensor on_device = sample(schedule, config, shape, DType::float32, device(), fake_denoiser(0.004), 9, {0, 1, 2});
      const Tensor reference = sample(schedule, config, shape, DType::float32, Device::cpu(), fake_denoiser(0.004), 9, {0, 1, 2});
      EXPECT_EQ(on_device.device(), device());
      EXPECT_TRUE(tensors_equal(on_device, reference)) << sampler_kind_name(sampler) << " " << prediction;
    }
  }
}

TEST_P(DiffusionCudaPaths, BatchEqualsItsSamplesRunAlone) { check_batch_equals_samples_alone(DType::float32, device()); }

CTSR_INSTANTIATE_CUDA_PATHS(DiffusionCudaPaths);

}  // namespace
}  // namespace ctsr::test
