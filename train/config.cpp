#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>

#include "kernels/conv3d.h"
#include "runtime/error.h"

namespace ctsr::train {

namespace {

// One key of the schema: how to read it from a YAML node and how to write it back. `expected`
// is the type in words, for errors.
struct Field {
  std::string key;
  std::string expected;
  std::function<void(const YAML::Node&)> set;  // throws YAML::Exception (or ctsr::Error) on a bad value
  std::function<void(YAML::Emitter&)> emit;
};

template <class T>
Field scalar_field(const std::string& key, T& value, const char* expected) {
  return {key, expected, [&value](const YAML::Node& n) {
            if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
            value = n.as<T>();
          },
          [&value](YAML::Emitter& e) { e << value; }};
}

Field int_field(const std::string& key, int64_t& v) { return scalar_field(key, v, "an integer"); }
Field uint_field(const std::string& key, uint64_t& v) { return scalar_field(key, v, "a non-negative integer"); }
Field bool_field(const std::string& key, bool& v) { return scalar_field(key, v, "true or false"); }
Field string_field(const std::string& key, std::string& v) { return scalar_field(key, v, "a string"); }

Field double_field(const std::string& key, double& v) {
  Field f = scalar_field(key, v, "a number");
  // Full precision, so the resolved configuration reads back to the same doubles.
  f.emit = [&v](YAML::Emitter& e) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    std::string text = s.str();
    if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
    e << text;
  };
  return f;
}

template <class T>
Field list_field(const std::string& key, std::vector<T>& v, const char* expected) {
  return {key, expected,
          [&v](const YAML::Node& n) {
            if (!n.IsSequence()) throw YAML::BadConversion(n.Mark());
            std::vector<T> out;
            for (const auto& item : n) {
              if (!item.IsScalar()) throw YAML::BadConversion(item.Mark());
              out.push_back(item.as<T>());
            }
            v = out;
          },
          [&v](YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (const auto& x : v) e << static_cast<T>(x);
            e << YAML::EndSeq;
          }};
}

// An enumeration kept as its enum, read and written through its names.
template <class E>
Field choice_field(const std::string& key, E& v, E (*parse)(const std::string&), const char* (*name)(E),
                   const char* expected) {
  return {key, expected,
          [&v, parse](const YAML::Node& n) {
            if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
            v = parse(n.as<std::string>());
          },
          [&v, name](YAML::Emitter& e) { e << name(v); }};
}

Field bool_list_field(const std::string& key, std::vector<bool>& v) {
  return {key, "a list of true/false",
          [&v](const YAML::Node& n) {
            if (!n.IsSequence()) throw YAML::BadConversion(n.Mark());
            std::vector<bool> out;
            for (const auto& item : n) out.push_back(item.as<bool>());
            v = out;
          },
          [&v](YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (bool x : v) e << x;
            e << YAML::EndSeq;
          }};
}

// The schema, bound to one configuration object. The order is the order of the files.
std::vector<Field> schema(TrainConfig& c) {
  UNetConfig& m = c.model;
  DiffusionConfig& d = c.diffusion;
  return {
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
      int_field("training.max_steps", c.training.max_steps),
      double_field("training.learning_rate", c.training.learning_rate),
      string_field("training.lr_scheduler", c.training.lr_scheduler),
      double_field("training.warmup_ratio", c.training.warmup_ratio),
      double_field("training.max_grad_norm", c.training.max_grad_norm),
      int_field("training.max_consecutive_skips", c.training.max_consecutive_skips),
      int_field("training.log_every", c.training.log_every),
      int_field("training.checkpoint_every", c.training.checkpoint_every),
      int_field("training.keep_checkpoints", c.training.keep_checkpoints),
      double_field("optimizer.beta1", c.optimizer.beta1),
      double_field("optimizer.beta2", c.optimizer.beta2),
      double_field("optimizer.eps", c.optimizer.eps),
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
  };
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

[[noreturn]] void unknown_key(const std::string& source, const std::string& key, const std::vector<Field>& fields) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const Field& f : fields) {
    const size_t dist = edit_distance(key, f.key);
    if (dist < best_distance) best_distance = dist, best = f.key;
  }
  if (best_distance <= std::max<size_t>(3, key.size() / 4))
    CTSR_FAIL(source, ": unknown key '", key, "' (did you mean '", best, "'?)");
  CTSR_FAIL(source, ": unknown key '", key, "' (the keys are listed in configs/diffusion.yaml)");
}

void set_value(const std::string& source, const std::string& key, const YAML::Node& value,
               const std::vector<Field>& fields) {
  for (const Field& f : fields) {
    if (f.key != key) continue;
    try {
      f.set(value);
    } catch (const YAML::Exception&) {
      std::string shown = YAML::Dump(value);
      std::replace(shown.begin(), shown.end(), '\n', ' ');
      CTSR_FAIL(source, ": '", key, "' is '", shown, "', expected ", f.expected);
    } catch (const Error& e) {
      CTSR_FAIL(source, ": '", key, "': ", e.what());
    }
    return;
  }
  unknown_key(source, key, fields);
}

// Walks a mapping; leaves (scalars, sequences, nulls) are values of dotted keys.
void read_node(const std::string& source, const YAML::Node& node, const std::string& prefix,
               const std::vector<Field>& fields) {
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.as<std::string>();
    if (kv.second.IsMap()) read_node(source, kv.second, key + ".", fields);
    else set_value(source, key, kv.second, fields);
  }
}

TrainConfig from_yaml_root(const YAML::Node& root, const std::string& source) {
  TrainConfig c;
  if (root.IsNull()) return c;
  CTSR_CHECK(root.IsMap(), source, ": the configuration must be a YAML mapping of sections (model:, training:, ...)");
  const std::vector<Field> fields = schema(c);
  read_node(source, root, "", fields);
  return c;
}

}  // namespace

int64_t TrainConfig::warmup_steps() const {
  return static_cast<int64_t>(std::ceil(training.warmup_ratio * double(training.max_steps)));
}

TrainConfig load_train_config(const std::filesystem::path& path) {
  const std::string source = path.string();
  CTSR_CHECK(std::filesystem::is_regular_file(path), source, ": no such configuration file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(source);
  } catch (const YAML::Exception& e) {
    CTSR_FAIL(source, ": not valid YAML: ", e.what());
  }
  TrainConfig c = from_yaml_root(root, source);
  try {
    validate(c);
  } catch (const Error& e) {
    CTSR_FAIL(source, ": ", e.what());
  }
  return c;
}

TrainConfig train_config_from_yaml(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    CTSR_FAIL(source, ": the stored configuration is not valid YAML: ", e.what());
  }
  return from_yaml_root(root, source);
}

void apply_override(TrainConfig& config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  const std::string source = "--set " + assignment;
  CTSR_CHECK(eq != std::string::npos && eq > 0, source, ": expected key=value (for example training.max_steps=200)");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    CTSR_FAIL(source, ": the value '", text, "' is not valid YAML: ", e.what());
  }
  set_value(source, key, value, schema(config));
}

void validate(const TrainConfig& c) {
  c.model.validate();
  const TrainingConfig& t = c.training;
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
  positive("training.max_consecutive_skips", t.max_consecutive_skips);
  positive("training.log_every", t.log_every);
  non_negative("training.checkpoint_every", t.checkpoint_every);
  positive("training.keep_checkpoints", t.keep_checkpoints);
  const OptimizerConfig& o = c.optimizer;
  CTSR_CHECK(o.beta1 >= 0 && o.beta1 < 1, "optimizer.beta1 is ", o.beta1, "; expected a value in [0, 1)");
  CTSR_CHECK(o.beta2 >= 0 && o.beta2 < 1, "optimizer.beta2 is ", o.beta2, "; expected a value in [0, 1)");
  CTSR_CHECK(o.eps > 0, "optimizer.eps is ", o.eps, "; expected a positive number");
  CTSR_CHECK(o.weight_decay >= 0, "optimizer.weight_decay is ", o.weight_decay, "; expected 0 or more");
  CTSR_CHECK(c.ema.decay >= 0 && c.ema.decay <= 1, "ema.decay is ", c.ema.decay, "; expected a value in [0, 1]");
  const ValidationConfig& v = c.validation;
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
  try {
    parse_conv_engine(c.kernels.conv);
  } catch (const Error&) {
    CTSR_FAIL("kernels.conv is '", c.kernels.conv, "'; expected custom or cudnn");
  }
  validate_diffusion_config(c.diffusion);
}

std::string to_yaml(const TrainConfig& config) {
  TrainConfig copy = config;
  const std::vector<Field> fields = schema(copy);
  YAML::Emitter e;
  e << YAML::BeginMap;
  std::string section;
  for (const Field& f : fields) {
    const size_t dot = f.key.find('.');
    const std::string s = dot == std::string::npos ? "" : f.key.substr(0, dot);
    if (s != section) {
      if (!section.empty()) e << YAML::EndMap;
      if (!s.empty()) e << YAML::Key << s << YAML::Value << YAML::BeginMap;
      section = s;
    }
    e << YAML::Key << (dot == std::string::npos ? f.key : f.key.substr(dot + 1)) << YAML::Value;
    f.emit(e);
  }
  if (!section.empty()) e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::string> train_config_keys() {
  TrainConfig c;
  std::vector<std::string> keys;
  for (const Field& f : schema(c)) keys.push_back(f.key);
  return keys;
}

double learning_rate_at(const TrainConfig& c, int64_t step) {
  const double lr = c.training.learning_rate;
  const int64_t warmup = c.warmup_steps(), total = c.training.max_steps;
  // Step s (0-based) of the warm-up uses (s + 1) / warmup of the rate, so no step is wasted at 0.
  if (step < warmup) return lr * double(step + 1) / double(warmup);
  if (c.training.lr_scheduler == "constant" || total <= warmup) return lr;
  const double progress = double(step - warmup) / double(total - warmup);  // 0 at the end of warm-up
  if (c.training.lr_scheduler == "cosine") return lr * 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
  return lr * std::max(0.0, 1.0 - progress);
}

}  // namespace ctsr::train
