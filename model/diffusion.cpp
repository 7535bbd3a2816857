// The diffusion process (model/diffusion.h): schedules on the host in double, tensor arithmetic
// by composing the binary ops, clamp and fill_normal.
#include "model/diffusion.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/activation.h"
#include "kernels/binary.h"
#include "kernels/random.h"
#include "model/module.h"

namespace ctsr {

// ---- names ------------------------------------------------------------------------------------

namespace {

template <class Enum, size_t N>
Enum parse_name(const std::string& text, const char* what, const std::pair<const char*, Enum> (&names)[N]) {
  std::string accepted;
  for (const auto& [name, value] : names) {
    if (text == name) return value;
    accepted += std::string(accepted.empty() ? "" : ", ") + name;
  }
  CTSR_FAIL("unknown ", what, " '", text, "' (accepted: ", accepted, ")");
}

constexpr std::pair<const char*, BetaSchedule> kBetaScheduleNames[] = {
    {"linear", BetaSchedule::linear}, {"scaled_linear", BetaSchedule::scaled_linear}, {"cosine", BetaSchedule::cosine}};
constexpr std::pair<const char*, PredictionType> kPredictionTypeNames[] = {
    {"epsilon", PredictionType::epsilon}, {"v", PredictionType::v}, {"sample", PredictionType::sample}};
constexpr std::pair<const char*, SamplerKind> kSamplerKindNames[] = {{"ddim", SamplerKind::ddim},
                                                                    {"ddpm", SamplerKind::ddpm}};

template <class Enum, size_t N>
const char* name_of(Enum value, const std::pair<const char*, Enum> (&names)[N]) {
  for (const auto& [name, v] : names) {
    if (v == value) return name;
  }
  return "unknown";
}

}  // namespace

const char* beta_schedule_name(BetaSchedule schedule) { return name_of(schedule, kBetaScheduleNames); }
const char* prediction_type_name(PredictionType type) { return name_of(type, kPredictionTypeNames); }
const char* sampler_kind_name(SamplerKind kind) { return name_of(kind, kSamplerKindNames); }
BetaSchedule parse_beta_schedule(const std::string& text) {
  return parse_name(text, "beta_schedule", kBetaScheduleNames);
}
PredictionType parse_prediction_type(const std::string& text) {
  return parse_name(text, "prediction_type", kPredictionTypeNames);
}
SamplerKind parse_sampler_kind(const std::string& text) { return parse_name(text, "sampler", kSamplerKindNames); }

// ---- configuration and schedule ---------------------------------------------------------------

namespace {

void validate_schedule_fields(const DiffusionConfig& config) {
  CTSR_CHECK(config.timesteps >= 1, "diffusion config: timesteps = ", config.timesteps, ", expected >= 1");
  if (config.beta_schedule != BetaSchedule::cosine) {
    CTSR_CHECK(std::isfinite(config.beta_start) && std::isfinite(config.beta_end), "diffusion config: beta_start = ",
               config.beta_start, " and beta_end = ", config.beta_end, " must be finite");
    if (config.beta_schedule == BetaSchedule::scaled_linear) {
      // The square roots are interpolated, so negative ends would be meaningless, not just bad.
      CTSR_CHECK(config.beta_start >= 0 && config.beta_end >= 0, "diffusion config: scaled_linear needs beta_start = ",
                 config.beta_start, " and beta_end = ", config.beta_end, " >= 0");
    }
  }
}

}  // namespace

void validate_diffusion_config(const DiffusionConfig& config) {
  validate_schedule_fields(config);
  CTSR_CHECK(config.sampling_steps >= 1 && config.sampling_steps <= config.timesteps,
             "diffusion config: sampling_steps = ", config.sampling_steps, ", expected in [1, timesteps = ",
             config.timesteps, "]");
  // Above 1 the DDIM direction coefficient sqrt(1 - abar_prev - sigma^2) can turn imaginary.
  CTSR_CHECK(std::isfinite(config.ddim_eta) && config.ddim_eta >= 0 && config.ddim_eta <= 1,
             "diffusion config: ddim_eta = ", config.ddim_eta, ", expected in [0, 1]");
  CTSR_CHECK(std::isfinite(config.clip_range) && config.clip_range > 0, "diffusion config: clip_range = ",
             config.clip_range, ", expected finite and > 0");
}

NoiseSchedule::NoiseSchedule(const DiffusionConfig& config) : kind_(config.beta_schedule) {
  validate_schedule_fields(config);
  const int64_t T = config.timesteps;
  betas_.resize(static_cast<size_t>(T));
  // linspace(a, b, T)[t]; T = 1 gives a, as numpy does.
  auto linspace = [T](double a, double b, int64_t t) {
    return T == 1 ? a : a + (b - a) * (static_cast<double>(t) / static_cast<double>(T - 1));
  };
  for (int64_t t = 0; t < T; ++t) {
    double beta = 0;
    switch (kind_) {
      case BetaSchedule::linear: beta = linspace(config.beta_start, config.beta_end, t); break;
      case BetaSchedule::scaled_linear: {
        const double root = linspace(std::sqrt(config.beta_start), std::sqrt(config.beta_end), t);
        beta = root * root;
        break;
      }
      case BetaSchedule::cosine: {
        constexpr double s = 0.008;
        auto f = [T](double u) {
          const double c = std::cos((u / static_cast<double>(T) + s) / (1 + s) * std::numbers::pi / 2);
          return c * c;
        };
        // The clip keeps the last betas (where f reaches 0) away from 1, so abar stays > 0.
        beta = std::min(1 - f(static_cast<double>(t + 1)) / f(static_cast<double>(t)), 0.999);
        break;
      }
    }
    CTSR_CHECK(beta > 0 && beta < 1, "noise schedule ", beta_schedule_name(kind_), " (timesteps = ", T,
               ", beta_start = ", config.beta_start, ", beta_end = ", config.beta_end, "): beta[", t, "] = ", beta,
               ", expected in (0, 1)");
    betas_[static_cast<size_t>(t)] = beta;
  }
  alphas_.resize(betas_.size());
  alphas_cumprod_.resize(betas_.size());
  double product = 1;
  for (size_t t = 0; t < betas_.size(); ++t) {
    alphas_[t] = 1 - betas_[t];
    product *= alphas_[t];
    alphas_cumprod_[t] = product;
  }
}

void NoiseSchedule::check_timestep(int64_t t, const std::string& what) const {
  CTSR_CHECK(t >= 0 && t < timesteps(), what, " = ", t, ", expected in [0, ", timesteps(), ")");
}

double NoiseSchedule::alpha_bar(int64_t t) const {
  if (t == -1) return 1.0;
  check_timestep(t, "alpha_bar t");
  return alphas_cumprod_[static_cast<size_t>(t)];
}

// ---- tensor helpers ---------------------------------------------------------------------------

namespace {

// x times a coefficient per sample (dim 0). One IEEE multiply per element either way: a single
// scale when every sample has the same coefficient, else mul by an [N, 1, ..., 1] tensor. So a
// sample's result does not depend on the batch it is in (scale and mul round alike).
Tensor times(const Tensor& x, const std::vector<double>& coefficient) {
  if (std::all_of(coefficient.begin(), coefficient.end(), [&](double c) { return c == coefficient[0]; }))
    return scale(x, coefficient[0]);
  std::vector<int64_t> dims(static_cast<size_t>(x.ndim()), 1);
  dims[0] = x.dim(0);
  Tensor c = x.dtype() == DType::float64
                 ? Tensor::from_vector<double>(coefficient, Shape(dims), x.device())
                 : Tensor::from_vector<float>(std::vector<float>(coefficient.begin(), coefficient.end()), Shape(dims),
                                              x.device());
  return mul(x, c);
}

// ca * a + cb * b, per sample.
Tensor combine(const std::vector<double>& ca, const Tensor& a, const std::vector<double>& cb, const Tensor& b) {
  return add(times(a, ca), times(b, cb));
}

// f(abar_t) for each sample's t.
template <class F>
std::vector<double> per_sample(const NoiseSchedule& schedule, const std::vector<int64_t>& t, F f) {
  std::vector<double> out;
  out.reserve(t.size());
  for (int64_t ti : t) out.push_back(f(schedule.alpha_bar(ti)));
  return out;
}

// A defined floating batch (ndim >= 1) with one timestep per sample, each in [0, T).
void check_batch(const NoiseSchedule& schedule, const char* op, const char* name, const Tensor& x,
                 const std::vector<int64_t>& t) {
  const std::string what = std::string(op) + " " + name;
  x.check_defined(what.c_str());
  CTSR_CHECK(x.ndim() >= 1, op, ": ", name, " has no batch dimension (shape ", x.shape().str(), ")");
  CTSR_CHECK(x.dtype() == DType::float32 || x.dtype() == DType::float64, op, ": ", name, " is ",
             dtype_name(x.dtype()), ", expected float32 or float64");
  CTSR_CHECK(static_cast<int64_t>(t.size()) == x.dim(0), op, ": ", t.size(), " timesteps for a batch of ", x.dim(0),
             " (", name, " has shape ", x.shape().str(), "); expected one per sample");
  for (size_t i = 0; i < t.size(); ++i) schedule.check_timestep(t[i], std::string(op) + " t[" + std::to_string(i) + "]");
}

// `other` has x's shape, dtype and device.
void check_like(const char* op, const char* x_name, const Tensor& x, const char* name, const Tensor& other) {
  const std::string what = std::string(op) + " " + name;
  other.check_defined(what.c_str());
  CTSR_CHECK(other.shape() == x.shape(), op, ": ", name, " has shape ", other.shape().str(), " but ", x_name, " has ",
             x.shape().str());
  check_same_dtype(op, {{x_name, &x}, {name, &other}});
  check_same_device(op, {{x_name, &x}, {name, &other}});
}

void check_config_matches(const NoiseSchedule& schedule, const DiffusionConfig& config, const char* op) {
  validate_diffusion_config(config);
  CTSR_CHECK(config.timesteps == schedule.timesteps(), op, ": config has timesteps = ", config.timesteps,
             " but the noise schedule has ", schedule.timesteps());
}

// x0 and, when wanted, eps; see interpret_output.
Prediction predict(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                   const Tensor& out, const std::vector<int64_t>& t, bool want_eps) {
  auto coefficient = [&](auto f) { return per_sample(schedule, t, f); };
  // eps from x0: (x_t - sqrt(abar) x0) / sqrt(1 - abar).
  auto eps_from_x0 = [&](const Tensor& x0) {
    return combine(coefficient([](double a) { return 1 / std::sqrt(1 - a); }), x_t,
                   coefficient([](double a) { return -std::sqrt(a) / std::sqrt(1 - a); }), x0);
  };

  Prediction p;
  switch (config.prediction_type) {
    case PredictionType::epsilon:
      p.x0 = combine(coefficient([](double a) { return 1 / std::sqrt(a); }), x_t,
                     coefficient([](double a) { return -std::sqrt(1 - a) / std::sqrt(a); }), out);
      p.eps = out;
      break;
    case PredictionType::v:
      p.x0 = combine(coefficient([](double a) { return std::sqrt(a); }), x_t,
                     coefficient([](double a) { return -std::sqrt(1 - a); }), out);
      if (want_eps) {
        p.eps = combine(coefficient([](double a) { return std::sqrt(1 - a); }), x_t,
                        coefficient([](double a) { return std::sqrt(a); }), out);
      }
      break;
    case PredictionType::sample:
      p.x0 = out;
      if (want_eps) p.eps = eps_from_x0(out);
      break;
  }
  if (config.clip_sample) {
    p.x0 = clamp(p.x0, -config.clip_range, config.clip_range);
    // eps is re-derived so that the pair still explains x_t (x_t = sqrt(abar) x0 + sqrt(1 - abar)
    // eps). The DDIM update re-noises x0 along eps; with the clipped x0 and the raw eps it would
    // jump to a point that no longer lies on a trajectory through x_t, whereas with the re-derived
    // eps x_prev stays a combination of x_t and the clipped x0 (for eta = 0:
    // x_prev = sqrt(abar_prev) x0 + sqrt((1 - abar_prev) / (1 - abar)) (x_t - sqrt(abar) x0)),
    // and DDIM with eta = 1 stays exactly the DDPM posterior step, which reads only x0 and x_t.
    // guided-diffusion's DDIM sampler does the same; diffusers' only with use_clipped_model_output.
    if (want_eps) p.eps = eps_from_x0(p.x0);
  }
  if (!want_eps) p.eps = Tensor();
  return p;
}

struct StepInputs {
  double abar_t, abar_prev;
};

StepInputs check_step(const NoiseSchedule& schedule, const DiffusionConfig& config, const char* op, const Tensor& x_t,
                      const Tensor& model_output, int64_t t, int64_t t_prev) {
  check_config_matches(schedule, config, op);
  check_batch(schedule, op, "x_t", x_t, std::vector<int64_t>(static_cast<size_t>(x_t.defined() ? x_t.dim(0) : 0), t));
  check_like(op, "x_t", x_t, "model_output", model_output);
  CTSR_CHECK(t_prev >= -1 && t_prev < t, op, ": t_prev = ", t_prev, " for t = ", t,
             ", expected -1 <= t_prev < t (-1 for the final step)");
  return {schedule.alpha_bar(t), schedule.alpha_bar(t_prev)};
}

}  // namespace

// ---- training ---------------------------------------------------------------------------------

Tensor q_sample(const NoiseSchedule& schedule, const Tensor& x0, const Tensor& noise, const std::vector<int64_t>& t) {
  check_batch(schedule, "q_sample", "x0", x0, t);
  check_like("q_sample", "x0", x0, "noise", noise);
  return combine(per_sample(schedule, t, [](double a) { return std::sqrt(a); }), x0,
                 per_sample(schedule, t, [](double a) { return std::sqrt(1 - a); }), noise);
}

Tensor training_target(const NoiseSchedule& schedule, PredictionType type, const Tensor& x0, const Tensor& noise,
                       const std::vector<int64_t>& t) {
  check_batch(schedule, "training_target", "x0", x0, t);
  check_like("training_target", "x0", x0, "noise", noise);
  switch (type) {
    case PredictionType::epsilon: return noise;
    case PredictionType::sample: return x0;
    case PredictionType::v:
      return combine(per_sample(schedule, t, [](double a) { return std::sqrt(a); }), noise,
                     per_sample(schedule, t, [](double a) { return -std::sqrt(1 - a); }), x0);
  }
  CTSR_FAIL("training_target: unknown prediction type ", static_cast<int>(type));
}

// ---- sampling ---------------------------------------------------------------------------------

Prediction interpret_output(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                            const Tensor& model_output, const std::vector<int64_t>& t) {
  check_config_matches(schedule, config, "interpret_output");
  check_batch(schedule, "interpret_output", "x_t", x_t, t);
  check_like("interpret_output", "x_t", x_t, "model_output", model_output);
  return predict(schedule, config, x_t, model_output, t, true);
}

std::vector<int64_t> sampling_timesteps(int64_t T, int64_t steps) {
  CTSR_CHECK(T >= 1, "sampling_timesteps: T = ", T, ", expected >= 1");
  CTSR_CHECK(steps >= 1 && steps <= T, "sampling_timesteps: steps = ", steps, ", expected in [1, T = ", T, "]");
  const int64_t stride = T / steps;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(steps));
  for (int64_t i = steps - 1; i >= 0; --i) out.push_back(i * stride);
  return out;
}

Tensor ddim_step(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                 const Tensor& model_output, int64_t t, int64_t t_prev, const Tensor& noise) {
  const StepInputs s = check_step(schedule, config, "ddim_step", x_t, model_output, t, t_prev);
  const std::vector<int64_t> ts(static_cast<size_t>(x_t.dim(0)), t);
  // The final step lands on x0 exactly (abar_prev = 1): no eps term, which also keeps an
  // infinite eps from turning into 0 * inf = NaN.
  if (t_prev == -1) return predict(schedule, config, x_t, model_output, ts, false).x0;
  const Prediction p = predict(schedule, config, x_t, model_output, ts, true);
  const double sigma =
      config.ddim_eta * std::sqrt((1 - s.abar_prev) / (1 - s.abar_t)) * std::sqrt(1 - s.abar_t / s.abar_prev);
  const double direction = std::sqrt(std::max(0.0, 1 - s.abar_prev - sigma * sigma));
  const size_t n = ts.size();
  Tensor x_prev = combine(std::vector<double>(n, std::sqrt(s.abar_prev)), p.x0, std::vector<double>(n, direction), p.eps);
  if (sigma > 0) {
    check_like("ddim_step", "x_t", x_t, "noise", noise);
    x_prev = add(x_prev, scale(noise, sigma));
  }
  return x_prev;
}

Tensor ddpm_step(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                 const Tensor& model_output, int64_t t, int64_t t_prev, const Tensor& noise) {
  const StepInputs s = check_step(schedule, config, "ddpm_step", x_t, model_output, t, t_prev);
  const std::vector<int64_t> ts(static_cast<size_t>(x_t.dim(0)), t);
  // The final step's posterior mean is x0 itself (coefficients 1 and 0) and its variance 0.
  const Tensor x0 = predict(schedule, config, x_t, model_output, ts, false).x0;
  if (t_prev == -1) return x0;
  const double beta = 1 - s.abar_t / s.abar_prev;  // the respaced process's beta
  const double x0_coefficient = std::sqrt(s.abar_prev) * beta / (1 - s.abar_t);
  const double xt_coefficient = std::sqrt(1 - beta) * (1 - s.abar_prev) / (1 - s.abar_t);
  const double variance = beta * (1 - s.abar_prev) / (1 - s.abar_t);
  const size_t n = ts.size();
  Tensor mean = combine(std::vector<double>(n, x0_coefficient), x0, std::vector<double>(n, xt_coefficient), x_t);
  check_like("ddpm_step", "x_t", x_t, "noise", noise);
  return add(mean, scale(noise, std::sqrt(variance)));
}

uint64_t sampling_noise_offset(uint64_t sample_key, uint64_t draw_index) {
  CTSR_CHECK(sample_key < (uint64_t(1) << 32), "sampling noise: sample key ", sample_key, " must be below 2^32");
  CTSR_CHECK(draw_index < (uint64_t(1) << 32), "sampling noise: draw index ", draw_index, " must be below 2^32");
  return (sample_key << 32) | draw_index;
}

namespace {

// Sample i's slice of `buffer` gets draw `draw_index` of its key.
void draw_per_sample(Tensor& buffer, uint64_t seed, const std::vector<uint64_t>& sample_keys, uint64_t draw_index) {
  for (size_t i = 0; i < sample_keys.size(); ++i) {
    Tensor slice = buffer.select(static_cast<int64_t>(i));
    fill_normal(slice, seed, sampling_noise_offset(sample_keys[i], draw_index));
  }
}

}  // namespace

Tensor sample(const NoiseSchedule& schedule, const DiffusionConfig& config, const Shape& shape, DType dtype,
              Device device, const Denoiser& denoiser, uint64_t seed, const std::vector<uint64_t>& sample_keys,
              const Tensor* x_T) {
  check_config_matches(schedule, config, "sample");
  CTSR_CHECK(shape.ndim() >= 1 && shape[0] >= 1, "sample: shape ", shape.str(),
             " needs a batch dimension with at least one sample");
  CTSR_CHECK(static_cast<int64_t>(sample_keys.size()) == shape[0], "sample: ", sample_keys.size(),
             " sample keys for a batch of ", shape[0], " (shape ", shape.str(), "); expected one per sample");
  CTSR_CHECK(dtype == DType::float32 || dtype == DType::float64, "sample: dtype ", dtype_name(dtype),
             ", expected float32 or float64");
  CTSR_CHECK(static_cast<bool>(denoiser), "sample: no denoiser given");
  for (uint64_t key : sample_keys) sampling_noise_offset(key, 0);  // fail before any work

  NoGradGuard no_grad;
  Tensor x;
  if (x_T) {
    x_T->check_defined("sample x_T");
    CTSR_CHECK(x_T->shape() == shape, "sample: x_T has shape ", x_T->shape().str(), ", expected ", shape.str());
    x_T->check_dtype(dtype, "sample x_T");
    x_T->check_device(device, "sample x_T");
    x = *x_T;  // never written: each step makes a new tensor
  } else {
    x = Tensor::empty(shape, dtype, device);
    draw_per_sample(x, seed, sample_keys, 0);
  }

  const std::vector<int64_t> timesteps = sampling_timesteps(config.timesteps, config.sampling_steps);
  const bool stochastic = config.sampler == SamplerKind::ddpm || config.ddim_eta > 0;
  Tensor noise;  // one buffer, refilled at every stochastic step
  if (stochastic && timesteps.size() > 1) noise = Tensor::empty(shape, dtype, device);
  for (size_t k = 0; k < timesteps.size(); ++k) {
    const int64_t t = timesteps[k];
    const int64_t t_prev = k + 1 < timesteps.size() ? timesteps[k + 1] : -1;
    const Tensor out = denoiser(x, t);
    CTSR_CHECK(out.defined() && out.shape() == shape && out.dtype() == dtype && out.device() == device,
               "sample: the denoiser returned ",
               out.defined() ? out.shape().str() + " " + dtype_name(out.dtype()) + " on " + out.device().str()
                             : std::string("an undefined tensor"),
               " at step ", k, " (t = ", t, "), expected ", shape.str(), " ", dtype_name(dtype), " on ", device.str());
    if (stochastic && t_prev >= 0) draw_per_sample(noise, seed, sample_keys, k + 1);
    x = config.sampler == SamplerKind::ddim ? ddim_step(schedule, config, x, out, t, t_prev, noise)
                                            : ddpm_step(schedule, config, x, out, t, t_prev, noise);
  }
  return x;
}

}  // namespace ctsr
