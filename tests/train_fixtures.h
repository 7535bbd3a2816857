// Small latent caches and training configurations for the tests of ctsr_train, the trainer and
// ctsr_infer: a cache in the layout ctsr_vqae cache writes (checksums and completion marker included), with random latents [8, 3, 5, 4] (odd
// sizes; the VQ-AE's volumes are 8x that per axis), and a UNet small enough to train in seconds.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "model/vqae.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/volume.h"
#include "runtime/formats/safetensors.h"
#include "runtime/philox.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "train/config.h"
#include "train/data/cache_entry.h"
#include "train/data/latent_cache.h"
#include "train/metrics_log.h"
#include "train/trainer.h"

namespace ctsr::train {

inline const std::string kVqae = std::string(CTSR_TEST_DATA_DIR) + "/vqae/tiny.ckpt";  // n_hiddens 4, num_groups 2

// Latents [8, 3, 5, 4]: odd sizes; volumes of the VQ-AE are 8x that per axis.
constexpr int64_t kC = 8, kD = 3, kH = 5, kW = 4;

struct FakeCacheOptions {
  int64_t train = 7, val = 3;
  bool nan_in_train = false;
  bool hd_volumes = false;  // write the LD and HD volumes and name them in the metadata
  bool dicom_volumes = false;  // ... as DICOM series folders (in HU, window -200,200) instead of .npy
  float latent_min = -1.0f, latent_max = 1.0f;
  bool complete = true;  // write the completion marker, as a finished ctsr_vqae cache run does
};

// A latent cache in the layout of ctsr_vqae cache: random latents in [-1, 1] (HD a smooth
// function of LD plus noise, so there is something to learn).
inline void write_cache(const std::filesystem::path& dir, const FakeCacheOptions& o) {
  for (auto [split, count] : {std::pair<const char*, int64_t>{"train", o.train}, {"val", o.val}}) {
    std::filesystem::create_directories(dir / split);
    for (int64_t i = 0; i < count; ++i) {
      const std::string id = std::string(split) + "_" + std::to_string(i);
      const uint64_t seed = (split[0] == 't' ? 1000 : 2000) + uint64_t(i);
      Tensor ld = test::random_tensor({kC, kD, kH, kW}, seed, DType::float32, -0.9, 0.9);
      Tensor hd = Tensor::empty(ld.shape());
      const float* l = ld.data<float>();
      float* h = hd.data<float>();
      for (int64_t k = 0; k < ld.numel(); ++k)
        h[k] = 0.8f * l[k] + 0.1f * philox::uniform_at(seed, 9, uint64_t(k)) - 0.05f;
      if (o.nan_in_train && split[0] == 't') h[5] = std::nanf("");
      CacheEntryInfo entry;
      entry.id = id;
      entry.window = {-200, 200};
      entry.patch_size = 0;
      entry.spacing_xyz = std::array<double, 3>{1, 1, 2.5};
      entry.latent_min = o.latent_min;
      entry.latent_max = o.latent_max;
      entry.weights = "test";
      if (o.hd_volumes) {
        // The volumes the pair came from (.npy: already on [-1, 1]); LD a noisy HD.
        const auto hd_path = dir / (id + "_hd.npy"), ld_path = dir / (id + "_ld.npy");
        Tensor hd_volume = test::random_tensor({8 * kD, 8 * kH, 8 * kW}, seed + 77, DType::float32, -1, 1);
        Tensor ld_volume = test::random_tensor({8 * kD, 8 * kH, 8 * kW}, seed + 78, DType::float32, -0.3, 0.3);
        for (int64_t k = 0; k < ld_volume.numel(); ++k)
          ld_volume.data<float>()[k] = std::clamp(ld_volume.data<float>()[k] + hd_volume.data<float>()[k], -1.0f, 1.0f);
        if (o.dicom_volumes) {
          const auto hd_series = dir / (id + "_hd"), ld_series = dir / (id + "_ld");
          io::Volume v;
          v.geometry.spacing_xyz = {1, 1, 2.5};
          v.geometry.affine[2][2] = 2.5;
          v.data = io::unit_to_hu(hd_volume, entry.window);
          io::write_volume(hd_series, v);
          v.data = io::unit_to_hu(ld_volume, entry.window);
          io::write_volume(ld_series, v);
          entry.hd_path = hd_series.string();
          entry.ld_path = ld_series.string();
        } else {
          io::write_npy(hd_path, hd_volume);
          io::write_npy(ld_path, ld_volume);
          entry.hd_path = hd_path.string();
          entry.ld_path = ld_path.string();
        }
      }
      write_cache_entry(dir / split / (id + ".safetensors"), ld, hd, entry);  // with checksums
    }
  }
  if (o.complete) write_cache_complete_marker(dir, {.encoded = o.train + o.val, .train = o.train, .val = o.val}, {});
}

// The training lines of a metrics.jsonl without their timing (samples_per_s), to compare runs.
inline std::vector<nlohmann::json> training_lines(const std::filesystem::path& metrics) {
  std::vector<nlohmann::json> out;
  for (auto& j : read_metrics(metrics))
    if (!j.contains("tier")) {
      j.erase("samples_per_s");  // a timing, not a result
      out.push_back(j);
    }
  return out;
}

inline DiffusionTrainConfig small_config(const std::filesystem::path& dir) {
  DiffusionTrainConfig c;
  c.training.precision = "fp32";  // the run loop's tests; bf16 has its own (test_trainer.cpp)
  c.seed = 42;
  c.model.in_channels = 16;
  c.model.out_channels = 8;
  c.model.model_channels = 16;
  c.model.channel_mult = {1, 2};
  c.model.num_blocks = 1;
  c.model.attention_levels = {false, true};
  c.model.head_channels = 32;
  c.model.time_embed_dim = 24;
  c.model.norm_groups = 4;
  c.diffusion.sampling_steps = 4;
  c.data.cache_dir = (dir / "cache").string();
  c.data.vqae_weights = "";
  c.training.batch_size = 4;
  c.training.gradient_accumulation_steps = 2;
  c.training.max_steps = 6;
  c.training.learning_rate = 1e-3;
  c.training.warmup_ratio = 0.2;
  c.training.log_every = 1;
  c.training.checkpoint_every = 0;
  c.validation.light_every = 3;
  c.validation.light_samples = 3;
  c.validation.full_every = 0;
  c.validation.batch_size = 2;
  c.output.dir = (dir / "run").string();
  return c;
}
inline DiffusionTrainConfig small_config(const test::TempDir& dir) { return small_config(dir.path()); }

// A checkpoint of small_config trained `steps` steps on a cache in dir/cache of latents within
// kVqae's codebook bounds (as ctsr_infer and ctsr_evaluate check), sampling in `sampling_steps`.
inline std::filesystem::path train_small_checkpoint(const std::filesystem::path& dir, int64_t steps,
                                                    int64_t sampling_steps = 3) {
  auto vqae = Vqae::load(kVqae, 2, Device::cpu());
  write_cache(dir / "cache", {.train = 3, .val = 2, .hd_volumes = true, .latent_min = vqae->code_min(),
                              .latent_max = vqae->code_max()});
  DiffusionTrainConfig c = small_config(dir);
  c.training.max_steps = steps;
  c.validation.light_every = 0;
  c.diffusion.sampling_steps = sampling_steps;
  TrainerOptions o;
  o.progress = false;
  std::ostringstream sink;
  o.log = &sink;
  Trainer(c, o).run();
  return checkpoint_path(dir / "run" / "checkpoints", steps);
}

}  // namespace ctsr::train
