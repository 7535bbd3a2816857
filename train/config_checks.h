// The checks of the keys the training programs' configurations share (ctsr_train_vqae's
// train/vqae_config.h, ctsr_train_redcnn's train/redcnn_config.h): the schedule, Adam's settings,
// the two validation tiers, the output folder and the convolution engine. Each failure names the key,
// the value and what was expected. Also the schema fields of those keys (train/config_schema.h)
// that every training program's configuration lists in the same order, diffusion's included.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include "kernels/conv3d.h"
#include "runtime/error.h"
#include "train/config_schema.h"

namespace ctsr::train::checks {

inline void positive(const char* key, int64_t v) { CTSR_CHECK(v > 0, key, " is ", v, "; expected a positive integer"); }
inline void non_negative(const char* key, int64_t v) { CTSR_CHECK(v >= 0, key, " is ", v, "; expected 0 or more"); }
inline void unit_interval(const char* key, double v) {
  CTSR_CHECK(v >= 0 && v < 1, key, " is ", v, "; expected a value in [0, 1)");
}

// training.{batch_size, max_steps, learning_rate, lr_scheduler, warmup_ratio, max_grad_norm,
// max_consecutive_skips, log_every, checkpoint_every, keep_checkpoints}, optimizer.{beta1, beta2, eps},
// validation.{light_every, light_patches, full_every, num_volumes, data_range, panels}, output.dir,
// kernels.conv.
template <class Config>
void validate_run_keys(const Config& c) {
  const auto& t = c.training;
  positive("training.batch_size", t.batch_size);
  positive("training.max_steps", t.max_steps);
  CTSR_CHECK(t.learning_rate > 0 && std::isfinite(t.learning_rate), "training.learning_rate is ", t.learning_rate,
             "; expected a positive number");
  CTSR_CHECK(t.lr_scheduler == "linear" || t.lr_scheduler == "cosine" || t.lr_scheduler == "constant",
             "training.lr_scheduler is '", t.lr_scheduler, "'; expected constant, linear or cosine");
  unit_interval("training.warmup_ratio", t.warmup_ratio);
  CTSR_CHECK(t.max_grad_norm >= 0, "training.max_grad_norm is ", t.max_grad_norm, "; expected 0 (off) or more");
  positive("training.max_consecutive_skips", t.max_consecutive_skips);
  positive("training.log_every", t.log_every);
  non_negative("training.checkpoint_every", t.checkpoint_every);
  positive("training.keep_checkpoints", t.keep_checkpoints);

  unit_interval("optimizer.beta1", c.optimizer.beta1);
  unit_interval("optimizer.beta2", c.optimizer.beta2);
  CTSR_CHECK(c.optimizer.eps > 0, "optimizer.eps is ", c.optimizer.eps, "; expected a positive number");

  const auto& v = c.validation;
  non_negative("validation.light_every", v.light_every);
  positive("validation.light_patches", v.light_patches);
  non_negative("validation.full_every", v.full_every);
  positive("validation.num_volumes", v.num_volumes);
  CTSR_CHECK(v.data_range > 0, "validation.data_range is ", v.data_range, "; expected a positive number");
  non_negative("validation.panels", v.panels);
  CTSR_CHECK(!c.output_dir.empty(), "output.dir is empty; expected the run's output folder");
  try {
    parse_conv_engine(c.conv_engine);
  } catch (const Error&) {
    CTSR_FAIL("kernels.conv is '", c.conv_engine, "'; expected custom or cudnn");
  }
}

}  // namespace ctsr::train::checks

namespace ctsr::train::shared_fields {

using config::Field;

// The blocks one after the other: a schema's fields in the order of its file.
inline std::vector<Field> join(std::initializer_list<std::vector<Field>> blocks) {
  std::vector<Field> out;
  for (const auto& block : blocks) out.insert(out.end(), block.begin(), block.end());
  return out;
}

// data.{val_fraction, split_seed, memory_limit_mb, prefetch_batches}, then training.{patch_size,
// batch_size}: the volume pipeline of the VQ-AE and RED-CNN tasks (train/data/volume_patches.h).
template <class Data, class Training>
std::vector<Field> volume_data(Data& d, Training& t) {
  return {
      config::double_field("data.val_fraction", d.val_fraction),
      config::uint_field("data.split_seed", d.split_seed),
      config::int_field("data.memory_limit_mb", d.memory_limit_mb),
      config::int_field("data.prefetch_batches", d.prefetch_batches),
      config::int_field("training.patch_size", t.patch_size),
      config::int_field("training.batch_size", t.batch_size),
  };
}

// training.{max_steps, learning_rate, lr_scheduler, warmup_ratio}, then `between` (a task's own
// keys, e.g. its loss weights), then training.{max_grad_norm, max_consecutive_skips, log_every,
// checkpoint_every, keep_checkpoints}.
template <class Training>
std::vector<Field> schedule(Training& t, const std::vector<Field>& between = {}) {
  return join({{
                   config::int_field("training.max_steps", t.max_steps),
                   config::double_field("training.learning_rate", t.learning_rate),
                   config::string_field("training.lr_scheduler", t.lr_scheduler),
                   config::double_field("training.warmup_ratio", t.warmup_ratio),
               },
               between,
               {
                   config::double_field("training.max_grad_norm", t.max_grad_norm),
                   config::int_field("training.max_consecutive_skips", t.max_consecutive_skips),
                   config::int_field("training.log_every", t.log_every),
                   config::int_field("training.checkpoint_every", t.checkpoint_every),
                   config::int_field("training.keep_checkpoints", t.keep_checkpoints),
               }});
}

// optimizer.{beta1, beta2, eps}.
template <class Optimizer>
std::vector<Field> adam(Optimizer& o) {
  return {
      config::double_field("optimizer.beta1", o.beta1),
      config::double_field("optimizer.beta2", o.beta2),
      config::double_field("optimizer.eps", o.eps),
  };
}

// validation.{light_every, light_patches, full_every, num_volumes, data_range, panels}: the
// patch-and-volume tiers of ctsr_train_vqae and ctsr_train_redcnn.
template <class Validation>
std::vector<Field> volume_validation(Validation& v) {
  return {
      config::int_field("validation.light_every", v.light_every),
      config::int_field("validation.light_patches", v.light_patches),
      config::int_field("validation.full_every", v.full_every),
      config::int_field("validation.num_volumes", v.num_volumes),
      config::double_field("validation.data_range", v.data_range),
      config::int_field("validation.panels", v.panels),
  };
}

// A configuration file read through `schema_of` and checked with validate(Config) (a missing or
// unknown key, a bad value or combination names the file and the key).
template <class Config>
Config load_file(const std::filesystem::path& path, config::Schema (*schema_of)(Config&)) {
  Config c;
  config::read_config_file(path, schema_of(c), [&] { validate(c); });
  return c;
}

// A configuration's YAML text (as stored in a checkpoint); `source` names it in errors.
template <class Config>
Config from_yaml_text(const std::string& text, const std::string& source, config::Schema (*schema_of)(Config&)) {
  Config c;
  config::read_yaml(config::load_yaml_text(text, source), source, schema_of(c));
  return c;
}

}  // namespace ctsr::train::shared_fields
