#include "train/vqae_config.h"

#include <cmath>

#include "kernels/conv3d.h"
#include "runtime/error.h"
#include "train/config_checks.h"
#include "train/config_schema.h"

namespace ctsr::train {

namespace {

using namespace config;

// The schema, in the order of configs/vqae_8x.yaml: ctsr_vqae's sections first.
Schema schema_of(VqaeTrainConfig& c) {
  VqaeTrainConfig::Model& m = c.model;
  VqaeTrainConfig::Data& d = c.data;
  VqaeTrainConfig::Training& t = c.training;
  CodebookEmaConfig& ema = c.codebook.ema;
  return {shared_fields::join({
              {
                  uint_field("seed", c.seed),
                  int_field("model.num_groups", m.num_groups),
                  int_field("model.n_hiddens", m.n_hiddens),
                  int_field("model.levels", m.levels),
                  int_field("model.embedding_dim", m.embedding_dim),
                  int_field("model.n_codes", m.n_codes),
                  string_field("model.init_weights", m.init_weights),
                  int_field("encode.patch_size", c.encode.patch_size),
                  hu_window_field("encode.hu_window", c.encode.hu_window),
                  int_field("decode.slab", c.decode.slab),
                  string_field("data.pairs", d.pairs),
                  string_field("data.folder", d.folder),
                  string_field("data.volumes", d.volumes),
              },
              shared_fields::volume_data(d, t),
              shared_fields::schedule(t,
                                      {
                                          double_field("training.l1_weight", t.l1_weight),
                                          double_field("training.mse_weight", t.mse_weight),
                                      }),
              shared_fields::adam(c.optimizer),
              {
                  double_field("codebook.decay", ema.decay),
                  double_field("codebook.commitment", c.codebook.commitment),
                  double_field("codebook.restart_threshold", ema.restart_threshold),
                  bool_field("codebook.restart_dead_codes", ema.restart_dead_codes),
                  double_field("codebook.smoothing", ema.smoothing),
              },
              shared_fields::volume_validation(c.validation),
              {
                  string_field("output.dir", c.output_dir),
                  bool_field("distributed.zero1", c.distributed.zero1),
                  double_field("distributed.bucket_mb", c.distributed.bucket_mb),
                  double_field("distributed.timeout_s", c.distributed.timeout_s),
                  string_field("kernels.conv", c.conv_engine),
              },
          }),
          "configs/vqae_8x.yaml"};
}

}  // namespace

VqaeConfig VqaeTrainConfig::vqae() const {
  VqaeConfig v;
  v.n_hiddens = model.n_hiddens;
  v.levels = model.levels;
  v.embedding_dim = model.embedding_dim;
  v.n_codes = model.n_codes;
  v.num_groups = model.num_groups;
  return v;
}

int64_t VqaeTrainConfig::warmup_steps() const {
  return static_cast<int64_t>(std::ceil(training.warmup_ratio * double(training.max_steps)));
}

VqaeTrainConfig load_vqae_train_config(const std::filesystem::path& path) { return shared_fields::load_file(path, schema_of); }

VqaeTrainConfig vqae_train_config_from_yaml(const std::string& text, const std::string& source) {
  return shared_fields::from_yaml_text(text, source, schema_of);
}

void apply_vqae_override(VqaeTrainConfig& c, const std::string& assignment) { apply_assignment(assignment, schema_of(c)); }

void validate(const VqaeTrainConfig& c) {
  using namespace checks;
  const VqaeTrainConfig::Model& m = c.model;
  positive("model.n_hiddens", m.n_hiddens);
  CTSR_CHECK(m.levels >= 1 && m.levels <= 6, "model.levels is ", m.levels, "; expected 1 to 6 halvings per axis");
  positive("model.embedding_dim", m.embedding_dim);
  // The CUDA nearest-code kernel keeps a latent row in registers (kernels/codebook.h).
  CTSR_CHECK(m.embedding_dim <= 64, "model.embedding_dim is ", m.embedding_dim,
             "; expected at most 64 (the codebook kernels' limit)");
  CTSR_CHECK(m.n_codes >= 2, "model.n_codes is ", m.n_codes, "; expected at least 2 codes");
  positive("model.num_groups", m.num_groups);
  const std::string groups = c.vqae().num_groups_problem();
  CTSR_CHECK(groups.empty(), "model.num_groups: ", groups);

  non_negative("encode.patch_size", c.encode.patch_size);
  CTSR_CHECK(c.encode.hu_window.lo < c.encode.hu_window.hi, "encode.hu_window is [", c.encode.hu_window.lo, ", ",
             c.encode.hu_window.hi, "]; expected low < high");
  non_negative("decode.slab", c.decode.slab);

  const VqaeTrainConfig::Data& d = c.data;
  CTSR_CHECK(d.pairs.empty() != d.folder.empty(), "data.pairs ('", d.pairs, "') and data.folder ('", d.folder,
             "'): expected exactly one of them (a pairs.csv, or a folder of volumes); set the other to ''");
  CTSR_CHECK(d.volumes == "hd" || d.volumes == "ld" || d.volumes == "both", "data.volumes is '", d.volumes,
             "'; expected hd, ld or both");
  unit_interval("data.val_fraction", d.val_fraction);
  non_negative("data.memory_limit_mb", d.memory_limit_mb);
  positive("data.prefetch_batches", d.prefetch_batches);

  const VqaeTrainConfig::Training& t = c.training;
  const int64_t multiple = int64_t(1) << m.levels;
  CTSR_CHECK(t.patch_size > 0 && t.patch_size % multiple == 0, "training.patch_size is ", t.patch_size,
             "; expected a positive multiple of ", multiple, " (2^model.levels, the model's downsampling)");
  CTSR_CHECK(t.l1_weight > 0 && std::isfinite(t.l1_weight), "training.l1_weight is ", t.l1_weight,
             "; expected a positive number");
  CTSR_CHECK(t.mse_weight >= 0 && std::isfinite(t.mse_weight), "training.mse_weight is ", t.mse_weight,
             "; expected 0 (off) or a positive number");
  const CodebookEmaConfig& ema = c.codebook.ema;
  CTSR_CHECK(ema.decay >= 0 && ema.decay <= 1, "codebook.decay is ", ema.decay, "; expected a value in [0, 1]");
  CTSR_CHECK(c.codebook.commitment >= 0 && std::isfinite(c.codebook.commitment), "codebook.commitment is ",
             c.codebook.commitment, "; expected 0 or more");
  CTSR_CHECK(std::isfinite(ema.restart_threshold), "codebook.restart_threshold is ", ema.restart_threshold,
             "; expected a finite number");
  CTSR_CHECK(ema.smoothing >= 0 && std::isfinite(ema.smoothing), "codebook.smoothing is ", ema.smoothing,
             "; expected 0 or more");

  CTSR_CHECK(c.distributed.bucket_mb > 0, "distributed.bucket_mb is ", c.distributed.bucket_mb,
             "; expected a positive size in MiB");
  CTSR_CHECK(c.distributed.timeout_s > 0, "distributed.timeout_s is ", c.distributed.timeout_s,
             "; expected a positive number of seconds");

  validate_run_keys(c);
}

std::string to_yaml(const VqaeTrainConfig& config) {
  VqaeTrainConfig copy = config;
  return emit_yaml(schema_of(copy));
}

std::vector<std::string> vqae_train_config_keys() {
  VqaeTrainConfig c;
  return keys_of(schema_of(c));
}

}  // namespace ctsr::train
