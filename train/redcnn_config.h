// The configuration of ctsr_train_redcnn (the RED-CNN learned baseline, train/redcnn_trainer.h):
// configs/redcnn.yaml.
//
// Every key has a type; an unknown key, a value of the wrong type or an impossible combination (a
// patch smaller than the network's five convolutions take, an even kernel) is an error naming the
// file or flag, the key, the value and what was expected, raised before any work. The defaults are
// the published network and its training (Chen et al. 2017: 96 channels, 5 x 5 kernels, MSE,
// Adam, 55 x 55 patches of slices), with the learning rate's schedule and the patch count per step
// chosen for the phantoms on two CPU cores (configs/redcnn.yaml says what was measured).
// data.hu_window must be the window of the cache the network is scored on (ctsr_evaluate checks).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/redcnn.h"
#include "runtime/formats/volume.h"

namespace ctsr::train {

struct RedCnnTrainConfig {
  // The sections: the file's top-level keys.
  struct Data {
    std::string pairs = "data/pairs.csv";  // ld,hd[,id][,split], as ctsr_phantom writes
    io::HuWindow hu_window;                // volumes are windowed to [-1, 1] by it
    // model.in_channels 2 (the refiner): the folder of every pair's guide volume, <id>.nii.gz (the
    // pair's id in pairs.csv), e.g. ctsr_infer's super-resolved LD of each pair; the guide is the
    // network's second input, cut at the same place as the LD patch.
    std::string guide_dir;
    double val_fraction = 0.2;             // held-out share of the pairs without a split column value
    uint64_t split_seed = 0;               // as ctsr_vqae cache --split-seed: the same pairs are held out
    int64_t memory_limit_mb = 4096;        // volumes kept in memory when they fit, else read per batch
    int64_t prefetch_batches = 2;
  };

  struct Training {
    int64_t patch_size = 55;      // patch x patch crops of axial slices (LD input, HD target)
    int64_t batch_size = 16;      // patches per step
    bool augment = true;          // each patch flipped / transposed in-plane (one of 8, drawn with it)
    // A new run starts from these RED-CNN weights ("": drawn from the seed); one-input weights start
    // a two-input network with the guide's conv1 weights at zero (model/redcnn.h init_redcnn_from).
    std::string init_weights;
    int64_t max_steps = 4000;
    double learning_rate = 1e-4;
    std::string lr_scheduler = "cosine";  // constant | linear | cosine, after the warm-up
    double warmup_ratio = 0.0;
    double max_grad_norm = 0.0;   // 0: no clipping
    int64_t max_consecutive_skips = 5;
    int64_t log_every = 20;
    int64_t checkpoint_every = 500;   // and at the end, and on SIGINT/SIGTERM
    int64_t keep_checkpoints = 3;     // the last K, plus the best by validation SSIM
  };

  struct Optimizer {  // Adam (no weight decay)
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  };

  struct Validation {
    int64_t light_every = 100;    // 0: never
    int64_t light_patches = 32;   // fixed patches of the held-out pairs
    int64_t full_every = 500;     // 0: never
    int64_t num_volumes = 4;      // held-out LD volumes restored whole and scored against their HD
    double data_range = 2.0;
    int64_t panels = 1;           // volumes with picture panels per full evaluation
  };

  uint64_t seed = 2017;
  RedCnnConfig model;
  Data data;
  Training training;
  Optimizer optimizer;
  Validation validation;
  std::string output_dir = "runs/redcnn";
  std::string conv_engine = "custom";  // kernels.conv: custom | cudnn

  int64_t warmup_steps() const;
};

// Reads `path` over the defaults; errors name the path.
RedCnnTrainConfig load_redcnn_train_config(const std::filesystem::path& path);
void apply_redcnn_override(RedCnnTrainConfig& config, const std::string& assignment);
// Checks every value and the combinations; throws naming the key.
void validate(const RedCnnTrainConfig& config);
std::string to_yaml(const RedCnnTrainConfig& config);
RedCnnTrainConfig redcnn_train_config_from_yaml(const std::string& text, const std::string& source);

}  // namespace ctsr::train
