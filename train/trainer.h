// The training loop of ctsr_train (../shared/specs/unet3d-diffusion.md): conditional latent
// diffusion of the UNet on the latent cache, with two-tier validation, checkpoints and logs.
//
// One optimiser step s (0-based) over the global batch of B = training.batch_size samples, in
// gradient_accumulation_steps micro-batches of B / accumulation:
//   sample g of the step (g = 0 .. B-1) is dataset sample SampleOrder::at(s * B + g);
//   its timestep t_g = floor(T * u), u = Philox uniform (seed, stream (timestep, s), element g);
//   its noise from Philox (seed, stream (noise, s * B + g)); dropout as UNet3D::set_dropout_rng
//   with step s and the micro-batch's first g;
//   x_t = q_sample(hd, noise, t), prediction = UNet(concat(x_t, ld), t), loss = MSE to the target
//   of diffusion.prediction_type, backward with each micro-batch's loss scaled by 1/accumulation;
// then: global gradient norm; a NaN or Inf loss or norm skips the update (logged; too many in a
// row abort); clipping at training.max_grad_norm; AdamW at learning_rate_at(s); EMA of weights.
// Every random draw is keyed by (seed, step, sample), so a resumed run repeats exactly what an
// uninterrupted one computes, and a sample's draws do not depend on how the batch is split.
//
// Output folder (output.dir): config.yaml (the resolved configuration), metrics.jsonl,
// tensorboard/ (event files: scalars and validation images), images/ (validation PNG panels),
// checkpoints/ (train/checkpoint.h).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/diffusion.h"
#include "model/unet.h"
#include "model/vqae.h"
#include "runtime/communicator.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data_parallel.h"
#include "train/run.h"
#include "train/task_options.h"
#include <nlohmann/json.hpp>

namespace ctsr::train {

struct TrainerOptions : DataParallelTaskOptions {
  // Train on a latent cache without its completion marker (train/data/latent_cache.h: a
  // ctsr_vqae cache run that was interrupted, failed, or is still going), with a warning; by
  // default such a cache is refused (ctsr_train --allow-incomplete-cache).
  bool allow_incomplete_cache = false;
};

struct FullValidation {
  double ssim = 0, psnr = 0;                                  // SR against the target
  double ssim_input_roundtrip = 0, psnr_input_roundtrip = 0;  // the decoded LD latent against the target
  int64_t samples = 0;
  bool target_is_volume = true;  // false: scored against the decoded HD latent (no HD volumes found)
};

// The diffusion task of the run loop (train/run.h), which owns the schedule, validation cadence,
// checkpoints, signals, resuming and logs.
// The training crop of sample `sample` of step `step` (training.latent_crop): its first voxel
// along d, h, w, each uniform over the positions where a crop^3 window fits in `latent` ([C, d, h,
// w]), from words 1, 2, 3 of Philox4x32-10(counter sample, stream_offset("LC", step), seed), each
// mapped to [0, n) by (word * n) >> 32.
std::array<int64_t, 3> latent_crop_origin(uint64_t seed, int64_t step, int64_t sample, const Shape& latent, int64_t crop);
// The windows of a batch [B, d, h, w, C]: sample b's crop^3 window at origins[b], [B, crop, crop, crop, C].
Tensor crop_latents(const Tensor& batch, const std::vector<std::array<int64_t, 3>>& origins, int64_t crop);

class Trainer : private Task {
 public:
  // Checks everything that can be checked before work starts (the cache, its shapes against the
  // model, the VQ-AE, the output folder, the checkpoint to resume), naming the key at fault.
  Trainer(const DiffusionTrainConfig& config, const TrainerOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains to training.max_steps (or until SIGINT/SIGTERM), validating and saving on schedule.
  RunSummary run();

  // The pieces, for tests and tools.
  double step() override;           // one optimiser step; returns its mean loss (NaN: skipped)
  double validate_light();          // the light tier's loss
  FullValidation validate_full();   // the full tier (needs data.vqae_weights)
  std::filesystem::path save_checkpoint_now();
  const TrainingState& state() const { return state_; }
  UNet3D& model() { return *model_; }
  UNet3D& ema_model() { return *ema_; }
  const DiffusionTrainConfig& config() const { return config_; }

 private:
  struct Data;
  // Task (train/run.h).
  TrainingState& training_state() override { return state_; }
  std::vector<std::string> metric_names() const override { return {"loss"}; }
  std::vector<double> metric_values() const override { return {last_loss_}; }
  double learning_rate(int64_t step) const override { return learning_rate_at(config_, step); }
  double grad_norm() const override { return last_grad_norm_; }
  std::string progress_text(double loss) const override;
  std::string describe() const override;
  TierScores light_validation() override;
  TierScores full_validation() override;
  void write_checkpoint(const std::filesystem::path& path, const TrainingState& state) override;
  CheckpointInfo read_checkpoint(const std::filesystem::path& path) override;
  uint64_t seed() const override { return config_.seed; }
  std::string config_yaml() const override { return to_yaml(config_); }

  void log_line(const std::string& text) { run_->log(text); }
  UNet3D& eval_model();
  double panel_sigma();  // the comparison panels' Gaussian sigma (NaN: the volumes are not readable)
  Tensor eval_denoise(UNet3D& net, const Tensor& x_t, const Tensor& ld, const std::vector<int64_t>& t);
  std::vector<Parameter*> trained() { return model_->parameters(); }
  bool is_root() const { return comm_->rank() == 0; }
  // The first sample of this rank's micro-batch j within the global batch of a step.
  int64_t first_sample(int64_t j) const { return comm_->rank() * per_rank_ + j * micro_; }

  DiffusionTrainConfig config_;
  TrainerOptions options_;
  std::filesystem::path out_dir_;
  NoiseSchedule schedule_;
  std::unique_ptr<Run> run_;
  Communicator* comm_ = nullptr;  // the run's
  int64_t per_rank_ = 0, micro_ = 0;  // samples per step on this rank, per micro-batch
  std::unique_ptr<UNet3D> model_, ema_;
  std::unique_ptr<DataParallel> dp_;  // flat gradients in buckets, their reduction, AdamW
  TrainingState state_;
  double last_loss_ = 0, last_grad_norm_ = 0;
  std::unique_ptr<Data> data_;
  std::unique_ptr<Vqae> vqae_;
  std::map<std::string, std::string> cache_info_;  // checkpoint "extra": what the run trained on
};

}  // namespace ctsr::train
