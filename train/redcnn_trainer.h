// The training loop of ctsr_train_redcnn: RED-CNN (model/redcnn.h), the learned baseline of every
// ctsr evaluation, trained on the pairs of a pairs.csv as the published network is: patches of
// axial slices, the low-dose slice in, its full-dose slice the target, MSE, Adam.
//
// Data: every pair's LD and HD volume read once (train/data/volume_patches.h VolumeSet, windowed by
// data.hu_window to [-1, 1]); the split is the pair's, as ctsr_vqae cache assigns it (the CSV's
// split column, else data.val_fraction by data.split_seed), so the held-out pairs are the ones
// ctsr_evaluate scores. Every volume must be at least training.patch_size along H and W, and a
// pair's LD and HD must have one shape.
//
// One optimiser step s (0-based) over B = training.batch_size patches: patch g is drawn from the
// four words of Philox4x32-10(counter g, stream_offset("RP", s), seed): word 0 the pair (its top
// bits, (word * n) >> 32) and, when training.augment, the in-plane transform (its low three bits:
// transpose, flip H, flip W, one of the 8 symmetries of the square, applied to LD and HD alike),
// words 1, 2, 3 the slice and the patch's first row and column, each mapped to [0, n) the same
// way. Then y = RedCnn(x_ld), loss = mean((y - x_hd)^2), backward, the global gradient norm (a
// NaN or Inf loss or norm skips the step; training.max_consecutive_skips in a row abort),
// clipping at training.max_grad_norm when positive, Adam at the scheduled learning rate. Every
// draw is keyed by (seed, step, patch): a resumed run computes what an uninterrupted one does.
//
// Validation on the held-out pairs: light, the MSE (and its PSNR) on validation.light_patches
// fixed patches (drawn once with step 0 of their own purpose, no transform); full, the first
// validation.num_volumes held-out LD volumes restored whole (restore_volume), clamped to [-1, 1]
// and scored against their HD (SSIM per axial slice and PSNR at validation.data_range), beside
// the input's own scores, with PNG panels LD / RED-CNN / HD / |RED-CNN - HD|.
//
// Output folder (output.dir): config.yaml, metrics.jsonl, tensorboard/, images/, checkpoints/
// (kind "redcnn") and redcnn.safetensors (model/redcnn.h write_redcnn_weights), rewritten at
// every checkpoint: what ctsr_evaluate --redcnn reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "model/redcnn.h"
#include "train/checkpoint.h"
#include "train/redcnn_config.h"
#include "train/run.h"
#include "train/run_support.h"
#include "train/task_options.h"

namespace ctsr::train {

using RedCnnTrainerOptions = TaskOptions;

struct RedCnnFullValidation {
  double ssim = 0, psnr = 0;              // RED-CNN's output against HD
  double ssim_input = 0, psnr_input = 0;  // the LD input against HD
  int64_t volumes = 0;
};

// One training patch: the pair, the slice, the patch's first row and column, and the in-plane
// transform (bit 0 transpose, bit 1 flip H, bit 2 flip W, applied in that order).
struct SlicePatch {
  int64_t pair = 0, slice = 0, row = 0, col = 0;
  int transform = 0;
  bool operator==(const SlicePatch&) const = default;
};

class RedCnnTrainer : private Task {
 public:
  // Checks everything before any work (the configuration, every pair's volumes and their shapes,
  // the output folder, the checkpoint to resume), naming the key or file at fault.
  RedCnnTrainer(const RedCnnTrainConfig& config, const RedCnnTrainerOptions& options);
  ~RedCnnTrainer();
  RedCnnTrainer(const RedCnnTrainer&) = delete;
  RedCnnTrainer& operator=(const RedCnnTrainer&) = delete;

  RunSummary run();

  double step() override;  // one optimiser step; its loss (NaN: skipped)
  double validate_light();  // the mean MSE over the fixed patches
  RedCnnFullValidation validate_full();
  std::filesystem::path save_checkpoint_now();  // and OUTPUT/redcnn.safetensors
  const TrainingState& state() const { return state_; }
  RedCnn& model() { return *model_; }
  const RedCnnTrainConfig& config() const { return config_; }
  int64_t train_pairs() const;
  int64_t held_out_pairs() const;
  // Patch g of step s (what step() trains on), and the batch [B, 1, P, P, 1] of LD inputs and
  // HD targets such patches cut.
  SlicePatch training_patch(int64_t s, int64_t g) const;
  std::pair<Tensor, Tensor> cut(const std::vector<SlicePatch>& patches) const;

 private:
  struct Data;
  // Task (train/run.h).
  TrainingState& training_state() override { return state_; }
  std::vector<std::string> metric_names() const override { return {"loss"}; }
  std::vector<double> metric_values() const override { return {last_loss_}; }
  double learning_rate(int64_t step) const override;
  double grad_norm() const override { return last_grad_norm_; }
  std::string progress_text(double loss) const override;
  std::string describe() const override;
  TierScores light_validation() override;
  TierScores full_validation() override;
  void write_checkpoint(const std::filesystem::path& path, const TrainingState& state) override;
  CheckpointInfo read_checkpoint(const std::filesystem::path& path) override;
  uint64_t seed() const override { return config_.seed; }
  std::string config_yaml() const override { return to_yaml(config_); }

  RedCnnTrainConfig config_;
  RedCnnTrainerOptions options_;
  std::filesystem::path out_dir_;
  std::unique_ptr<RedCnn> model_;
  std::unique_ptr<AdamMoments> adam_;
  TrainingState state_;
  double last_loss_ = 0, last_grad_norm_ = 0;
  std::unique_ptr<Run> run_;
  std::unique_ptr<Data> data_;
};

// Writes the weights of a ctsr_train_redcnn checkpoint (e.g. the best one) to `out`, in the format
// of OUTPUT/redcnn.safetensors. Needs neither the data nor the run's folder.
void export_redcnn_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& out);

}  // namespace ctsr::train
