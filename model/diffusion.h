// The diffusion process of the second stage, independent of any network: noise schedules, the
// forward (noising) process and training targets, and the DDIM / DDPM samplers, which call the
// network through a Denoiser closure. Specification: unet3d-diffusion.md, "Diffusion process".
//
// Notation: T timesteps t = 0 .. T-1, betas b_t, alphas a_t = 1 - b_t, abar_t = prod_{s<=t} a_s.
// The forward process is x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with eps ~ N(0, I).
//
// The schedule lives on the host in double. Tensor work composes existing ops (kernels/binary.h
// add/sub/mul/scale, kernels/activation.h clamp, kernels/random.h fill_normal), so every function
// runs on cpu in float32 and float64 and on the CUDA paths (cuda, cuda_on_cpu) in the dtypes those
// ops take there (float32 today: the binary kernels reject float64 on CUDA paths). Coefficients
// are computed in double and rounded to the tensor's dtype once.
//
// Tensors are batched along dim 0 (N samples, any trailing shape, e.g. channels-last latents
// [N, D, H, W, C]). Per-sample timesteps `t` hold one entry per sample; the per-sample
// coefficients travel as an [N, 1, ..., 1] tensor that the binary ops broadcast.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr {

enum class BetaSchedule { linear, scaled_linear, cosine };
enum class PredictionType { epsilon, v, sample };
enum class SamplerKind { ddim, ddpm };

// Names as in the configuration ("linear", "scaled_linear", "cosine"; "epsilon", "v", "sample";
// "ddim", "ddpm"). parse_* throws naming the text and the accepted values.
const char* beta_schedule_name(BetaSchedule schedule);
const char* prediction_type_name(PredictionType type);
const char* sampler_kind_name(SamplerKind kind);
BetaSchedule parse_beta_schedule(const std::string& text);
PredictionType parse_prediction_type(const std::string& text);
SamplerKind parse_sampler_kind(const std::string& text);

struct DiffusionConfig {
  int64_t timesteps = 1000;                // T
  BetaSchedule beta_schedule = BetaSchedule::linear;
  double beta_start = 1e-4, beta_end = 0.02;  // linear and scaled_linear; cosine ignores them
  PredictionType prediction_type = PredictionType::epsilon;
  SamplerKind sampler = SamplerKind::ddim;
  int64_t sampling_steps = 50;             // in [1, T]
  double ddim_eta = 0.0;                   // in [0, 1]: 0 deterministic DDIM, 1 DDPM-like variance
  bool clip_sample = true;                 // latents live in [-1, 1]: x0 predictions are clipped
  double clip_range = 1.0;                 // to [-clip_range, clip_range], > 0
};

// Throws naming the field, its value and what is expected (T >= 1, steps in [1, T], eta in
// [0, 1], clip_range > 0, beta_start and beta_end finite). The schedule checks its betas itself.
void validate_diffusion_config(const DiffusionConfig& config);

// betas, alphas and alphas_cumprod for t = 0 .. T-1, in double:
//   linear:        b_t = linspace(beta_start, beta_end, T)[t]
//   scaled_linear: b_t = linspace(sqrt(beta_start), sqrt(beta_end), T)[t]^2
//   cosine:        b_t = min(1 - f(t + 1) / f(t), 0.999), f(u) = cos((u / T + s) / (1 + s) * pi / 2)^2,
//                  s = 0.008 (Nichol & Dhariwal 2021; abar_t = f(t + 1) / f(0) before the clip)
// linspace with T = 1 is its start. Every beta must lie in (0, 1); the constructor throws
// naming the first that does not, its t and the schedule otherwise.
class NoiseSchedule {
 public:
  explicit NoiseSchedule(const DiffusionConfig& config);
  int64_t timesteps() const { return static_cast<int64_t>(betas_.size()); }
  BetaSchedule kind() const { return kind_; }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas() const { return alphas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  // abar_t for t in [0, T), and 1 for t = -1 (the "previous" timestep of the last sampling
  // step); anything else throws naming t and T.
  double alpha_bar(int64_t t) const;
  // Throws unless 0 <= t < T, naming `what` (e.g. "q_sample t[2]").
  void check_timestep(int64_t t, const std::string& what) const;

 private:
  BetaSchedule kind_;
  std::vector<double> betas_, alphas_, alphas_cumprod_;
};

// ---- training ---------------------------------------------------------------------------------

// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t[i] for sample i. x0 and noise: same shape,
// dtype and device, N = x0.dim(0) = t.size().
Tensor q_sample(const NoiseSchedule& schedule, const Tensor& x0, const Tensor& noise, const std::vector<int64_t>& t);

// What the network learns to output:
//   epsilon: noise (the tensor itself, not a copy)
//   v:       sqrt(abar_t) noise - sqrt(1 - abar_t) x0
//   sample:  x0 (the tensor itself)
Tensor training_target(const NoiseSchedule& schedule, PredictionType type, const Tensor& x0, const Tensor& noise,
                       const std::vector<int64_t>& t);

// ---- sampling ---------------------------------------------------------------------------------

struct Prediction {
  Tensor x0;   // the predicted clean sample (clipped when config.clip_sample)
  Tensor eps;  // the predicted noise, consistent with x0: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
};

// x0 and eps from the network output of any prediction type at per-sample timesteps t:
//   epsilon: eps = out,                                x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
//   v:       x0 = sqrt(abar) x_t - sqrt(1 - abar) v,   eps = sqrt(1 - abar) x_t + sqrt(abar) v
//   sample:  x0 = out,                                 eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
// With config.clip_sample, x0 is clamped to [-clip_range, clip_range] and eps recomputed from
// the clamped x0 (see diffusion.cpp for why). model_output must match x_t's shape, dtype, device.
Prediction interpret_output(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                            const Tensor& model_output, const std::vector<int64_t>& t);

// The sampling timesteps, descending: i * (T / steps) for i = steps-1 .. 0 (integer division,
// diffusers' "leading" spacing), e.g. T = 1000, steps = 50 -> 980, 960, ..., 20, 0. steps in [1, T].
std::vector<int64_t> sampling_timesteps(int64_t T, int64_t steps);

// One reverse step from timestep t to t_prev (t_prev < t, or -1 for the final step, where
// abar_prev = 1), for the whole batch at one t. model_output is the network's output at
// (x_t, t); noise (x_t's shape) is the standard normal draw of this step, read only where the
// step is stochastic (it may be an undefined Tensor otherwise).
//
// DDIM (Song et al. 2021), eta = config.ddim_eta, (x0, eps) from interpret_output:
//   sigma  = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)
//   x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise
// Stochastic when sigma > 0 (eta > 0 and t_prev >= 0).
Tensor ddim_step(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                 const Tensor& model_output, int64_t t, int64_t t_prev, const Tensor& noise);

// DDPM ancestral step of the respaced process (improved DDPM, Nichol & Dhariwal 2021):
//   beta' = 1 - abar_t / abar_prev
//   mean  = sqrt(abar_prev) beta' / (1 - abar_t) x0 + sqrt(1 - beta') (1 - abar_prev) / (1 - abar_t) x_t
//   var   = beta' (1 - abar_prev) / (1 - abar_t)        (the posterior variance, "fixed small")
//   x_prev = mean + sqrt(var) noise, and x_prev = mean (= x0) at the final step (t_prev = -1).
// With steps == T (t_prev = t - 1) this is plain DDPM: beta' = b_t.
Tensor ddpm_step(const NoiseSchedule& schedule, const DiffusionConfig& config, const Tensor& x_t,
                 const Tensor& model_output, int64_t t, int64_t t_prev, const Tensor& noise);

// The network's output for the batch x_t, all samples at timestep t (x_t's shape, dtype, device).
using Denoiser = std::function<Tensor(const Tensor& x_t, int64_t t)>;

// Draw index k of sample key `key` uses Philox key `seed` and counter offset
//   offset = (key << 32) | k,     key < 2^32, k < 2^32,
// through fill_normal(sample i's slice, seed, offset): element j of the slice is
// philox::normal_at(seed, offset, j). Draw 0 is the initial noise x_T; draw k + 1 is the noise
// of sampling step k (k = 0 for the first step, from timesteps[0]), drawn only when that step is
// stochastic (DDPM before the final step; DDIM with eta > 0). Callers that also draw other
// noise from Philox (training) should give sampling its own seed.
uint64_t sampling_noise_offset(uint64_t sample_key, uint64_t draw_index);

// Runs the configured sampler (config.sampler, config.sampling_steps steps over
// sampling_timesteps) from x_T to x_0 for a batch of `shape` (shape[0] = N samples, one key each
// in sample_keys) and returns x_0. Sample i's noise comes only from (seed, sample_keys[i]), as
// above, so its trajectory does not depend on which other samples share its batch (given a
// denoiser that treats samples independently). x_T, when given (shape, dtype, device as asked),
// replaces the initial noise draw. The denoiser runs under a NoGradGuard (model/module.h): its
// layers save nothing for backward. Memory stays flat over the steps (one noise buffer, the
// current x, and each step's temporaries).
Tensor sample(const NoiseSchedule& schedule, const DiffusionConfig& config, const Shape& shape, DType dtype,
              Device device, const Denoiser& denoiser, uint64_t seed, const std::vector<uint64_t>& sample_keys,
              const Tensor* x_T = nullptr);

}  // namespace ctsr
