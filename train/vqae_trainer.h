// The training loop of ctsr_train_vqae: stage 1 of the PatchVolume VQ-AE (3D-MedDiffusion,
// ../shared/specs/patchvolume-vqae.md) on random patches of CT volumes, without the original's
// adversarial and perceptual losses (out of scope).
//
// One optimiser step s (0-based) over B = training.batch_size patches:
//   patch g of the step (g = 0 .. B-1): draw_patch (train/data/volume_patches.h) over the training
//     volumes with offset stream_offset(patch purpose, s) and counter g; under mpirun/srun with R
//     ranks, rank r takes the patches g = r B/R .. (r+1) B/R - 1 (the diffusion trainer's split), so
//     the ranks together see exactly the patches of one process;
//   step 0 only: the codebook is initialised from the batch's latents (CodebookEma::initialize_from,
//     as the original does on its first training forward; with R ranks, from the whole batch's
//     latents, gathered);
//   z_e = encode(x), indices = nearest codes, z_q = their vectors, recon = decode(z_q), the
//     straight-through pass of Vqae::forward_train;
//   loss = training.l1_weight * mean|recon - x| + codebook.commitment * mean((z_e - z_q)^2);
//   backward: the decoder's gradient passes to z_e unchanged plus the commitment's (z_q is
//     constant); no gradient for the image;
//   global gradient norm; a NaN or Inf loss or norm skips the step (no update of the weights or
//     the codebook; logged; training.max_consecutive_skips in a row abort); clipping at
//     training.max_grad_norm when positive; Adam (AdamW with weight decay 0) at the scheduled
//     learning rate with optimizer.beta1/beta2 (0.5, 0.9);
//   the EMA codebook update from (z_e, indices) with restarts of dead codes drawn by Philox under
//     (seed, step s) (model/codebook_ema.h). The decoder saw the codebook before this update, as in
//     the original, where the update happens inside the codebook's forward.
// Data parallel (R > 1 ranks, the program started by mpirun or srun): each rank's losses are means
// over its B/R patches; the backward scales them by 1/R, so the gradients summed over the ranks
// (train/data_parallel.h: all-reduce, or with distributed.zero1 reduce-scatter, sharded Adam and
// all-gather) are the gradient of the global batch's mean loss; the logged losses are the global
// batch's means; the codebook's counts and sums are summed over the ranks before the EMA update
// and its restart candidates drawn from the whole batch's latents (CodebookEma::update_across_ranks),
// so every rank keeps the same codebook and the perplexity is the global batch's. One process
// (R = 1) runs the plain path, without DataParallel. Validation shares its patches and volumes over
// the ranks (each scored once); rank 0 writes the checkpoints, the weights and the pictures.
// Every random draw is keyed by (seed, step, patch): a resumed run computes exactly what an
// uninterrupted one does (the checkpoint holds the weights, Adam's moments and the codebook's
// three buffers).
//
// Validation, on the held-out volumes: light, the loss on validation.light_patches fixed patches
// (draw_patch with step 0 of their own purpose); full, the first validation.num_volumes volumes
// (cropped to a multiple of the patch size) encoded as ctsr_vqae cache does (patch_encode at
// training.patch_size), decoded (decode.slab > 0: in slabs), clamped to [-1, 1] and scored (SSIM
// and PSNR, validation.data_range), with the codebook's perplexity over their latents' codes and
// the number of codes they use, and PNG panels INPUT / RECON / |RECON-INPUT|.
//
// Output folder (output.dir): config.yaml, metrics.jsonl, tensorboard/, images/, checkpoints/
// (train/checkpoint.h, kind "vqae") and vqae.safetensors: the weights in ctsr_vqae's format
// (model/vqae_weights.h, with codebook.N and codebook.z_avg), rewritten at every checkpoint,
// which ctsr_vqae, ctsr_train (data.vqae_weights) and ctsr_infer (--vqae) read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "model/codebook_ema.h"
#include "model/vqae.h"
#include "runtime/communicator.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/run.h"
#include "train/run_support.h"
#include "train/task_options.h"
#include "train/vqae_config.h"
#include <nlohmann/json.hpp>

namespace ctsr::train {

using VqaeTrainerOptions = DataParallelTaskOptions;

struct VqaeLosses {
  double loss = 0;        // l1_weight * l1 + mse_weight * mse + commitment
  double l1 = 0;          // mean |recon - x|
  double mse = 0;         // mean (recon - x)^2, reported whatever its weight
  double commitment = 0;  // commitment * mean((z_e - z_q)^2)
};

struct VqaeFullValidation {
  double ssim = 0, psnr = 0;
  double perplexity = 0;  // of the codes the volumes' latents chose
  int64_t codes_used = 0; // distinct codes among them
  int64_t volumes = 0;
};

using VqaeRunSummary = RunSummary;

// The VQ-AE task of the run loop (train/run.h), which owns the schedule, validation cadence,
// checkpoints, signals, resuming and logs.
class VqaeTrainer : private Task {
 public:
  // Checks everything before any work (the data and every volume's size, the output folder, the
  // checkpoint to resume, the initial weights), naming the key or file at fault.
  VqaeTrainer(const VqaeTrainConfig& config, const VqaeTrainerOptions& options);
  ~VqaeTrainer();
  VqaeTrainer(const VqaeTrainer&) = delete;
  VqaeTrainer& operator=(const VqaeTrainer&) = delete;

  VqaeRunSummary run();

  double step() override;                // one optimiser step; its loss (NaN: skipped)
  VqaeLosses validate_light();
  VqaeFullValidation validate_full();
  std::filesystem::path save_checkpoint_now();  // and OUTPUT/vqae.safetensors
  void export_weights(const std::filesystem::path& path);
  const TrainingState& state() const { return state_; }
  const VqaeLosses& last_losses() const { return last_; }
  Vqae& model() { return *model_; }
  const CodebookEma& codebook() const { return *codebook_; }
  const VqaeTrainConfig& config() const { return config_; }
  std::string data_summary() const;      // what the run reads, and how (in memory or per batch)

 private:
  struct Data;
  // Task (train/run.h).
  TrainingState& training_state() override { return state_; }
  std::vector<std::string> metric_names() const override { return {"loss", "l1", "mse", "commitment", "perplexity"}; }
  std::vector<double> metric_values() const override {
    return {last_.loss, last_.l1, last_.mse, last_.commitment, last_perplexity_};
  }
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

  void log_line(const std::string& text) { run_->log(text); }
  void sync_codebook();  // the model's codebook and EMA buffers from codebook_
  double skip_step(double loss, double grad_norm);  // a non-finite step (counted already): logs; NaN
  bool is_root() const { return comm_->rank() == 0; }
  double total_loss(const VqaeLosses& l) const {  // the weighted sum the optimiser descends
    return config_.training.l1_weight * l.l1 + config_.training.mse_weight * l.mse + l.commitment;
  }

  VqaeTrainConfig config_;
  VqaeTrainerOptions options_;
  std::filesystem::path out_dir_;
  std::unique_ptr<Vqae> model_;
  std::unique_ptr<CodebookEma> codebook_;
  std::unique_ptr<AdamMoments> adam_;  // one process
  std::unique_ptr<DataParallel> dp_;   // several ranks: the reduced gradients and Adam
  TrainingState state_;
  VqaeLosses last_;
  double last_grad_norm_ = 0, last_perplexity_ = 0;
  std::unique_ptr<Run> run_;
  Communicator* comm_ = nullptr;  // the run's
  int64_t per_rank_ = 0;          // patches per step on this rank
  std::unique_ptr<Data> data_;
};

// Writes the weights of a ctsr_train_vqae checkpoint (e.g. the best one) to `out`, in the format
// of OUTPUT/vqae.safetensors. Needs neither the data nor the run's folder.
void export_vqae_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& out);

}  // namespace ctsr::train
