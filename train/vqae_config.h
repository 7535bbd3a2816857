// The configuration of ctsr_train_vqae (stage 1 of the PatchVolume VQ-AE, train/vqae_trainer.h):
// configs/vqae_8x.yaml, the same file ctsr_vqae reads for the settings the weights lack
// (model.num_groups, encode.*, decode.*), with the training sections beside them.
//
// Every key has a type; an unknown key, a value of the wrong type or an impossible combination (a
// patch size that is not a multiple of 2^levels, num_groups not dividing every width, both or
// neither of data.pairs and data.folder) is an error naming the file or flag, the key, the value
// and what was expected, raised before any work. The defaults are the released model's
// architecture and the original's stage-1 training (PatchVolume_8x.yaml: batch 2 of 64^3 patches,
// Adam 3e-4 with betas (0.5, 0.9), L1 weight 4, EMA codebook with decay 0.99 and restarts of codes
// whose count falls below 1, commitment 0.25). The window the volumes are read with is
// encode.hu_window, the one ctsr_vqae encode and cache use, so training and encoding agree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/codebook_ema.h"
#include "model/vqae.h"
#include "runtime/formats/volume.h"
#include "train/data_parallel.h"

namespace ctsr::train {

struct VqaeTrainConfig {
  // The sections: the file's top-level keys.
  struct Model {
    int64_t n_hiddens = 48;       // width of the first level (levels n, 2n, 4n, 4n for 3 levels)
    int64_t levels = 3;           // halvings per axis: the latent is 2^levels smaller
    int64_t embedding_dim = 8;    // latent channels
    int64_t n_codes = 8192;
    int64_t num_groups = 24;      // GroupNorm groups (read by ctsr_vqae too); must divide every width
    std::string init_weights;     // "": a new model; else start from these weights (.ckpt or ours)
  };

  struct Encode {  // ctsr_vqae's keys; the window is also the training volumes'
    int64_t patch_size = 64;
    io::HuWindow hu_window;
  };

  struct Decode {  // ctsr_vqae's key; also how full validation decodes
    int64_t slab = 0;
  };

  struct Data {
    // Exactly one of: a pairs.csv (as ctsr_phantom writes and ctsr_vqae cache reads), or a folder
    // of volumes (.nii, .nii.gz, .npy; every file in it, not its subfolders). The other is ''.
    std::string pairs = "data/pairs.csv";
    std::string folder;
    std::string volumes = "both"; // of each pair: hd, ld or both
    double val_fraction = 0.1;    // held-out share of the pairs (or files) without a split column value
    uint64_t split_seed = 0;      // as ctsr_vqae cache --split-seed: the same pairs are held out
    int64_t memory_limit_mb = 4096;  // volumes are kept in memory when they fit in this, else read per batch
    int64_t prefetch_batches = 2;
  };

  struct Training {
    int64_t patch_size = 64;      // random patch^3 crops; a multiple of 2^levels
    int64_t batch_size = 2;
    int64_t max_steps = 100000;
    double learning_rate = 3e-4;
    std::string lr_scheduler = "constant";  // constant | linear | cosine, after the warm-up
    double warmup_ratio = 0.0;
    double l1_weight = 4.0;       // loss = l1_weight * L1(recon, x) + mse_weight * MSE(recon, x) + commitment
    double mse_weight = 0.0;      // 0: the original's L1 alone
    double max_grad_norm = 0.0;   // 0: no clipping (the original does not clip)
    int64_t max_consecutive_skips = 5;
    int64_t log_every = 10;
    int64_t checkpoint_every = 1000;  // and at the end, and on SIGINT/SIGTERM
    int64_t keep_checkpoints = 3;     // the last K, plus the best by validation SSIM
  };

  struct Optimizer {  // Adam (no weight decay), as the original
    double beta1 = 0.5, beta2 = 0.9, eps = 1e-8;
  };

  struct Codebook {
    CodebookEmaConfig ema;      // decay 0.99, smoothing 1e-7, restart_threshold 1.0, restarts on
    double commitment = 0.25;   // beta of the commitment loss beta * mean((z_e - z_q)^2)
  };

  struct Validation {
    int64_t light_every = 100;    // 0: never
    int64_t light_patches = 8;    // fixed patches of the held-out volumes
    int64_t full_every = 1000;    // 0: never
    int64_t num_volumes = 4;      // held-out volumes encoded whole (patch_encode) and decoded
    double data_range = 2.0;
    int64_t panels = 2;           // volumes with picture panels per full evaluation
  };

  uint64_t seed = 1234;
  Model model;
  Encode encode;
  Decode decode;
  Data data;
  Training training;
  Optimizer optimizer;
  Codebook codebook;
  Validation validation;
  std::string output_dir = "runs/vqae";
  DistributedConfig distributed;       // ctsr_train's keys: under mpirun/srun, data parallel over the ranks
  std::string conv_engine = "custom";  // kernels.conv: custom | cudnn

  VqaeConfig vqae() const;  // the architecture of model.*
  int64_t warmup_steps() const;
};

// Reads `path` over the defaults; errors name the path.
VqaeTrainConfig load_vqae_train_config(const std::filesystem::path& path);
void apply_vqae_override(VqaeTrainConfig& config, const std::string& assignment);
// Checks every value and the combinations; throws naming the key.
void validate(const VqaeTrainConfig& config);
std::string to_yaml(const VqaeTrainConfig& config);
VqaeTrainConfig vqae_train_config_from_yaml(const std::string& text, const std::string& source);
std::vector<std::string> vqae_train_config_keys();

}  // namespace ctsr::train
