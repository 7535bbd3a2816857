// The configuration of ctsr_train: YAML (configs/diffusion.yaml, configs/tiny.yaml), validated on
// load, with command-line overrides (--set training.max_steps=200).
//
// Every key has a type; an unknown key, a value of the wrong type or an impossible combination
// (batch not divisible by the accumulation steps, a norm group count that does not divide a
// width) is an error that names the file or flag, the key, the value and what was expected,
// raised before any work starts. The resolved configuration (every key, defaults included) is
// written beside the run and into every checkpoint, so a run can be reproduced from its output.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/diffusion.h"
#include "model/unet.h"
#include "train/data_parallel.h"

namespace ctsr::train {

struct DiffusionTrainConfig {
  // The sections: the file's top-level keys.
  struct Data {
    std::string cache_dir = "cache";         // the latent cache (ctsr_vqae cache): train/ and val/
    std::string vqae_weights = "vqae.safetensors";  // the VQ-AE, for the full validation tier (decoding)
    int64_t vqae_num_groups = 0;             // 0: what the weights file records (else 24)
    int64_t prefetch_batches = 2;            // micro-batches read ahead on a background thread
  };

  struct Training {
    int64_t batch_size = 32;                 // samples per optimiser step (all micro-batches)
    int64_t gradient_accumulation_steps = 2; // micro-batches per optimiser step
    int64_t max_steps = 100000;
    double learning_rate = 2e-4;
    std::string lr_scheduler = "linear";     // linear | cosine | constant (each after the warm-up)
    double warmup_ratio = 0.06;              // warm-up steps = ceil(warmup_ratio * max_steps)
    double max_grad_norm = 1.0;              // 0: no clipping
    int64_t max_consecutive_skips = 5;       // NaN/Inf steps in a row before the run aborts
    int64_t log_every = 10;                  // metrics.jsonl / TensorBoard training lines
    int64_t checkpoint_every = 1000;         // and one at the end, and on SIGINT/SIGTERM
    int64_t keep_checkpoints = 3;            // the last K, plus the best by validation SSIM
    // Train on random crop^3 windows of the latents (the same window of LD and HD; 0: whole
    // latents). The UNet is convolutional, so it samples whole latents after training on crops; on
    // two CPU cores this is what makes 4x latents (16^3 for 64^3 volumes) trainable in minutes.
    int64_t latent_crop = 0;
    // Operands of the convolutions and linear layers: bf16 (mixed precision: tensor cores with
    // float32 accumulation; weights, gradients, AdamW and checkpoints stay float32) or fp32 (the
    // reference). bf16 pays on a GPU; on a CPU the bf16 path only adds conversions.
    std::string precision = "bf16";
  };

  struct Optimizer {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  };

  struct Ema {
    double decay = 0.9999;
    // Early steps use min(decay, (1 + n) / (10 + n)) after n updates, so the average does not
    // stay at the initial weights for the first ~1/(1 - decay) steps.
    bool warmup = true;
  };

  struct Validation {
    int64_t light_every = 50;                // 0: never
    int64_t light_samples = 8;               // fixed validation subset of the light tier
    int64_t full_every = 500;                // 0: never
    int64_t num_samples = 32;                // validation pairs sampled and scored by the full tier
    int64_t batch_size = 8;                  // samples per sampling batch
    double data_range = 2.0;                 // SSIM/PSNR on the [-1, 1] scale
    int64_t panels = 2;                      // samples with picture panels per full evaluation
    bool use_ema = true;                     // validate the EMA weights (else the raw weights)
  };

  struct Output {
    std::string dir = "runs/diffusion";
  };

  struct Kernels {
    std::string conv = "custom";             // custom | cudnn
  };

  uint64_t seed = 1234;
  UNetConfig model;
  DiffusionConfig diffusion;
  Data data;
  Training training;
  Optimizer optimizer;
  Ema ema;
  Validation validation;
  Output output;
  DistributedConfig distributed;
  Kernels kernels;

  int64_t micro_batch_size() const { return training.batch_size / training.gradient_accumulation_steps; }
  int64_t warmup_steps() const;
};

// Reads `path` over the defaults (the production configuration). `source` in errors is the path.
DiffusionTrainConfig load_train_config(const std::filesystem::path& path);
// Applies "dotted.key=value" (value in YAML: 8, 2e-4, true, [1, 2], linear); errors name the flag.
void apply_override(DiffusionTrainConfig& config, const std::string& assignment);
// Checks every value and the combinations; throws naming the key. Called by load and by
// ctsr_train after the overrides.
void validate(const DiffusionTrainConfig& config);
// Every key with its value, as YAML (the resolved configuration).
std::string to_yaml(const DiffusionTrainConfig& config);
// The same text read back (checkpoints); `source` names where it came from in errors.
DiffusionTrainConfig train_config_from_yaml(const std::string& text, const std::string& source);
// The dotted names of every key, in file order (documentation and tests).
std::vector<std::string> train_config_keys();

// Learning rate at optimiser step `step` (0-based): linear warm-up from 0 over warmup_steps, then
// the scheduler's decay to 0 at max_steps (constant: stays at learning_rate).
double learning_rate_at(const DiffusionTrainConfig& config, int64_t step);
// The same rule for any run: linear | cosine | constant after `warmup` steps, over `total` steps.
double scheduled_learning_rate(double lr, const std::string& scheduler, int64_t warmup, int64_t total, int64_t step);

}  // namespace ctsr::train
