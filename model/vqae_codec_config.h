// Settings of the VQ-AE programs: configs/vqae_8x.yaml, validated (an unknown key or a value of the
// wrong type is an error naming the file and the key), then command-line flags on top.
//
// The same file also configures the VQ-AE's training (ctsr_train_vqae, train/vqae_config.h, which
// validates every key of it): the sections and model keys listed below are that program's, and
// the VQ-AE programs pass over them.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "runtime/formats/volume.h"

namespace ctsr {

struct VqaeCodecConfig {
  int64_t num_groups = 24;
  bool num_groups_set = false;  // the settings file gave model.num_groups (not just the default)
  int64_t patch_size = 64;
  io::HuWindow window;
  int64_t decode_slab = 0;
};

// Top-level keys of the training program, and its keys under model: (besides num_groups).
inline const std::set<std::string> kVqaeTrainingSections{"seed",     "data",     "training", "optimizer",
                                                         "codebook", "validation", "output", "kernels",
                                                         "distributed"};
inline const std::set<std::string> kVqaeTrainingModelKeys{"n_hiddens", "levels", "embedding_dim", "n_codes",
                                                          "init_weights"};

// Reads `path` over the defaults above.
VqaeCodecConfig read_vqae_codec_config(const std::filesystem::path& path);

// The settings file a program uses when --config is not given: configs/vqae_8x.yaml under the
// working directory when it exists (the repository root), else none (the defaults above, which
// are that file's values).
std::filesystem::path default_vqae_codec_config_path();

}  // namespace ctsr
