#include "train/config.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>

#include "kernels/conv3d.h"
#include "runtime/error.h"
#include "train/config_checks.h"
#include "train/config_schema.h"

namespace ctsr::train {

namespace {

using config::Field;
using config::bool_field;
using config::bool_list_field;
using config::choice_field;
using config::double_field;
using config::int_field;
using config::list_field;
using config::string_field;
using config::uint_field;

// The schema, bound to one configuration object. The order is the order of the files.
std::vector<Field> schema(DiffusionTrainConfig& c) {
  UNetConfig& m = c.model;
  DiffusionConfig& d = c.diffusion;
  return shared_fields::join({
      {
          uint_field("seed", c.seed),
          int_field("model.in_channels", m.in_channels),
          int_field("model.out_channels", m.out_channels),
          int_field("model.model_channels", m.model_channels),
          list_field<int64_t>("model.channel_mult", m.channel_mult, "a list of integers"),
          int_field("model.num_blocks", m.num_blocks),
          bool_list_field("model.attention_levels", m.attention_levels),
          int_field("model.head_channels", m.head_channels),
          int_field("model.time_embed_dim", m.time_embed_dim),
          double_field("model.dropout", m.dropout),
          int_field("model.norm_groups", m.norm_groups),
          double_field("model.norm_eps", m.norm_eps),
          bool_field("model.checkpoint_res_blocks", m.checkpoint_res_blocks),
          int_field("diffusion.timesteps", d.timesteps),
          choice_field("diffusion.beta_schedule", d.beta_schedule, parse_beta_schedule, beta_schedule_name,
                       "linear, scaled_linear or cosine"),
          double_field("diffusion.beta_start", d.beta_start),
          double_field("diffusion.beta_end", d.beta_end),
          choice_field("diffusion.prediction_type", d.prediction_type, parse_prediction_type, prediction_type_name,
                       "epsilon, v or sample"),
          choice_field("diffusion.sampler", d.sampler, parse_sampler_kind, sampler_kind_name, "ddim or ddpm"),
          int_field("diffusion.sampling_steps", d.sampling_steps),
          double_field("diffusion.ddim_eta", d.ddim_eta),
          bool_field("diffusion.clip_sample", d.clip_sample),
          double_field("diffusion.clip_range", d.clip_range),
          string_field("data.cache_dir", c.data.cache_dir),
          string_field("data.vqae_weights", c.data.vqae_weights),
          int_field("data.vqae_num_groups", c.data.vqae_num_groups),
          int_field("data.prefetch_batches", c.data.prefetch_batches),
          int_field("training.batch_size", c.training.batch_size),
          int_field("training.gradient_accumulation_steps", c.training.gradient_accumulation_steps),
      },
      shared_fields::schedule(c.training),
      {
          int_field("training.latent_crop", c.training.latent_crop),
          string_field("training.precision", c.training.precision),
      },
      shared_fields::adam(c.optimizer),
      {
          double_field("optimizer.weight_decay", c.optimizer.weight_decay),
          double_field("ema.decay", c.ema.decay),
          bool_field("ema.warmup", c.ema.warmup),
          int_field("validation.light_every", c.validation.light_every),
          int_field("validation.light_samples", c.validation.light_samples),
          int_field("validation.full_every", c.validation.full_every),
          int_field("validation.num_samples", c.validation.num_samples),
          int_field("validation.batch_size", c.validation.batch_size),
          double_field("validation.data_range", c.validation.data_range),
          int_field("validation.panels", c.validation.panels),
          bool_field("validation.use_ema", c.validation.use_ema),
          string_field("output.dir", c.output.dir),
          bool_field("distributed.zero1", c.distributed.zero1),
          double_field("distributed.bucket_mb", c.distributed.bucket_mb),
          double_field("distributed.timeout_s", c.distributed.timeout_s),
          string_field("kernels.conv", c.kernels.conv),
      },
  });
}

config::Schema schema_of(DiffusionTrainConfig& c) { return {schema(c), "configs/diffusion.yaml"}; }

DiffusionTrainConfig from_yaml_root(const YAML::Node& root, const std::string& source) {
  DiffusionTrainConfig c;
  config::read_yaml(root, source, schema_of(c));
  return c;
}

}  // namespace

int64_t DiffusionTrainConfig::warmup_steps() const {
  return static_cast<int64_t>(std::ceil(training.warmup_ratio * double(training.max_steps)));
}

DiffusionTrainConfig load_train_config(const std::filesystem::path& path) {
  return shared_fields::load_file(path, schema_of);
}

DiffusionTrainConfig train_config_from_yaml(const std::string& text, const std::string& source) {
  return from_yaml_root(config::load_yaml_text(text, source), source);
}

void apply_override(DiffusionTrainConfig& config, const std::string& assignment) {
  config::apply_assignment(assignment, schema_of(config));
}

void validate(const DiffusionTrainConfig& c) {
  c.model.validate();
  const DiffusionTrainConfig::Training& t = c.training;
  auto positive = [](const char* key, int64_t v) { CTSR_CHECK(v > 0, key, " is ", v, "; expected a positive integer"); };
  auto non_negative = [](const char* key, int64_t v) { CTSR_CHECK(v >= 0, key, " is ", v, "; expected 0 or more"); };
  positive("training.batch_size", t.batch_size);
  positive("training.gradient_accumulation_steps", t.gradient_accumulation_steps);
  CTSR_CHECK(t.batch_size % t.gradient_accumulation_steps == 0, "training.batch_size ", t.batch_size,
             " is not divisible by training.gradient_accumulation_steps ", t.gradient_accumulation_steps,
             " (every micro-batch must have the same size)");
  positive("training.max_steps", t.max_steps);
  CTSR_CHECK(t.learning_rate > 0 && std::isfinite(t.learning_rate), "training.learning_rate is ", t.learning_rate,
             "; expected a positive number");
  CTSR_CHECK(t.lr_scheduler == "linear" || t.lr_scheduler == "cosine" || t.lr_scheduler == "constant",
             "training.lr_scheduler is '", t.lr_scheduler, "'; expected linear, cosine or constant");
  CTSR_CHECK(t.warmup_ratio >= 0 && t.warmup_ratio < 1, "training.warmup_ratio is ", t.warmup_ratio,
             "; expected a value in [0, 1)");
  CTSR_CHECK(t.max_grad_norm >= 0, "training.max_grad_norm is ", t.max_grad_norm, "; expected 0 (off) or more");
  CTSR_CHECK(t.latent_crop >= 0, "training.latent_crop is ", t.latent_crop, "; expected 0 (whole latents) or a size");
  positive("training.max_consecutive_skips", t.max_consecutive_skips);
  positive("training.log_every", t.log_every);
  non_negative("training.checkpoint_every", t.checkpoint_every);
  positive("training.keep_checkpoints", t.keep_checkpoints);
  const DiffusionTrainConfig::Optimizer& o = c.optimizer;
  CTSR_CHECK(o.beta1 >= 0 && o.beta1 < 1, "optimizer.beta1 is ", o.beta1, "; expected a value in [0, 1)");
  CTSR_CHECK(o.beta2 >= 0 && o.beta2 < 1, "optimizer.beta2 is ", o.beta2, "; expected a value in [0, 1)");
  CTSR_CHECK(o.eps > 0, "optimizer.eps is ", o.eps, "; expected a positive number");
  CTSR_CHECK(o.weight_decay >= 0, "optimizer.weight_decay is ", o.weight_decay, "; expected 0 or more");
  CTSR_CHECK(c.ema.decay >= 0 && c.ema.decay <= 1, "ema.decay is ", c.ema.decay, "; expected a value in [0, 1]");
  const DiffusionTrainConfig::Validation& v = c.validation;
  non_negative("validation.light_every", v.light_every);
  non_negative("validation.full_every", v.full_every);
  positive("validation.light_samples", v.light_samples);
  positive("validation.num_samples", v.num_samples);
  positive("validation.batch_size", v.batch_size);
  non_negative("validation.panels", v.panels);
  CTSR_CHECK(v.data_range > 0, "validation.data_range is ", v.data_range, "; expected a positive number");
  positive("data.prefetch_batches", c.data.prefetch_batches);
  non_negative("data.vqae_num_groups", c.data.vqae_num_groups);
  CTSR_CHECK(!c.data.cache_dir.empty(), "data.cache_dir is empty; expected the latent cache folder (ctsr_vqae cache)");
  CTSR_CHECK(!c.output.dir.empty(), "output.dir is empty; expected the run's output folder");
  CTSR_CHECK(v.full_every == 0 || !c.data.vqae_weights.empty(), "data.vqae_weights is empty, but validation.full_every is ",
             v.full_every, "; the full validation tier decodes with the VQ-AE (give its weights, or set full_every 0)");
  CTSR_CHECK(c.model.in_channels == 2 * c.model.out_channels, "model.in_channels ", c.model.in_channels,
             " is not twice model.out_channels ", c.model.out_channels,
             " (the input is the noisy latent and the condition latent, concatenated)");
  CTSR_CHECK(c.distributed.bucket_mb > 0, "distributed.bucket_mb is ", c.distributed.bucket_mb,
             "; expected a positive size in MiB");
  CTSR_CHECK(c.distributed.timeout_s > 0, "distributed.timeout_s is ", c.distributed.timeout_s,
             "; expected a positive number of seconds");
  CTSR_CHECK(c.training.precision == "bf16" || c.training.precision == "fp32", "training.precision is '",
             c.training.precision, "'; expected bf16 or fp32");
  try {
    parse_conv_engine(c.kernels.conv);
  } catch (const Error&) {
    CTSR_FAIL("kernels.conv is '", c.kernels.conv, "'; expected custom or cudnn");
  }
  validate_diffusion_config(c.diffusion);
}

std::string to_yaml(const DiffusionTrainConfig& config) {
  DiffusionTrainConfig copy = config;
  return config::emit_yaml(schema_of(copy));
}

std::vector<std::string> train_config_keys() {
  DiffusionTrainConfig c;
  return config::keys_of(schema_of(c));
}

double scheduled_learning_rate(double lr, const std::string& scheduler, int64_t warmup, int64_t total, int64_t step) {
  // Step s (0-based) of the warm-up uses (s + 1) / warmup of the rate, so no step is wasted at 0.
  if (step < warmup) return lr * double(step + 1) / double(warmup);
  if (scheduler == "constant" || total <= warmup) return lr;
  const double progress = double(step - warmup) / double(total - warmup);  // 0 at the end of warm-up
  if (scheduler == "cosine") return lr * 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
  return lr * std::max(0.0, 1.0 - progress);
}

double learning_rate_at(const DiffusionTrainConfig& c, int64_t step) {
  return scheduled_learning_rate(c.training.learning_rate, c.training.lr_scheduler, c.warmup_steps(),
                                 c.training.max_steps, step);
}

}  // namespace ctsr::train
