#include "train/redcnn_config.h"

#include <cmath>

#include "runtime/error.h"
#include "train/config_checks.h"
#include "train/config_schema.h"

namespace ctsr::train {

namespace {

using namespace config;

Schema schema_of(RedCnnTrainConfig& c) {
  RedCnnTrainConfig::Data& d = c.data;
  RedCnnTrainConfig::Training& t = c.training;
  return {shared_fields::join({
              {
                  uint_field("seed", c.seed),
                  int_field("model.channels", c.model.channels),
                  int_field("model.kernel", c.model.kernel),
                  int_field("model.in_channels", c.model.in_channels),
                  string_field("data.pairs", d.pairs),
                  string_field("data.guide_dir", d.guide_dir),
                  hu_window_field("data.hu_window", d.hu_window),
              },
              shared_fields::volume_data(d, t),
              {
                  bool_field("training.augment", t.augment),
                  string_field("training.init_weights", t.init_weights),
              },
              shared_fields::schedule(t),
              shared_fields::adam(c.optimizer),
              shared_fields::volume_validation(c.validation),
              {
                  string_field("output.dir", c.output_dir),
                  string_field("kernels.conv", c.conv_engine),
              },
          }),
          "configs/redcnn.yaml"};
}

}  // namespace

int64_t RedCnnTrainConfig::warmup_steps() const {
  return static_cast<int64_t>(std::ceil(training.warmup_ratio * double(training.max_steps)));
}

RedCnnTrainConfig load_redcnn_train_config(const std::filesystem::path& path) { return shared_fields::load_file(path, schema_of); }

RedCnnTrainConfig redcnn_train_config_from_yaml(const std::string& text, const std::string& source) {
  return shared_fields::from_yaml_text(text, source, schema_of);
}

void apply_redcnn_override(RedCnnTrainConfig& c, const std::string& assignment) {
  apply_assignment(assignment, schema_of(c));
}

void validate(const RedCnnTrainConfig& c) {
  using namespace checks;
  positive("model.channels", c.model.channels);
  CTSR_CHECK(c.model.kernel >= 1 && c.model.kernel % 2 == 1, "model.kernel is ", c.model.kernel,
             "; expected an odd size of at least 1");
  CTSR_CHECK(c.model.in_channels == 1 || c.model.in_channels == 2, "model.in_channels is ", c.model.in_channels,
             "; expected 1 (RED-CNN on the low-dose volume) or 2 (the refiner: it and data.guide_dir's volume)");
  const RedCnnTrainConfig::Data& d = c.data;
  CTSR_CHECK((c.model.in_channels == 2) == !d.guide_dir.empty(), "model.in_channels is ", c.model.in_channels,
             " and data.guide_dir is '", d.guide_dir, "'; expected a guide folder exactly when in_channels is 2");
  CTSR_CHECK(!d.pairs.empty(), "data.pairs is empty; expected a pairs.csv (columns ld,hd[,id][,split])");
  CTSR_CHECK(d.hu_window.lo < d.hu_window.hi, "data.hu_window is [", d.hu_window.lo, ", ", d.hu_window.hi,
             "]; expected low < high");
  unit_interval("data.val_fraction", d.val_fraction);
  non_negative("data.memory_limit_mb", d.memory_limit_mb);
  positive("data.prefetch_batches", d.prefetch_batches);
  const int64_t smallest = 5 * (c.model.kernel - 1) + 1;
  CTSR_CHECK(c.training.patch_size >= smallest, "training.patch_size is ", c.training.patch_size, "; expected at least ",
             smallest, " (five ", c.model.kernel, " x ", c.model.kernel, " convolutions without padding)");
  validate_run_keys(c);
}

std::string to_yaml(const RedCnnTrainConfig& config) {
  RedCnnTrainConfig copy = config;
  return emit_yaml(schema_of(copy));
}

}  // namespace ctsr::train
