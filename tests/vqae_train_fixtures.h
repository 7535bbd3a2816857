// Synthetic CT pairs and a tiny configuration for the tests of ctsr_train_vqae and its trainer:
// volumes of awkward sizes (at least one 16^3 patch along every axis) with smooth ellipsoids on a
// background, so a VQ-AE of width 4 has something to learn in a few steps. HD volumes are NIfTI
// in HU (windowed to [-1, 1] on reading), LD volumes .npy on [-1, 1] (the HD values plus noise).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <optional>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/formats/npy.h"
#include "runtime/formats/volume.h"
#include "runtime/philox.h"
#include "tests/tool_runner.h"
#include "train/vqae_config.h"

namespace ctsr::train {

// [D, H, W] of pair i: 16 to 19 voxels along each axis.
inline std::array<int64_t, 3> synthetic_shape(int64_t i) { return {16 + i % 3, 17 + i % 2, 16 + (i * 5) % 4}; }

// A smooth volume on [-1, 1]: background -0.8, three ellipsoids at seeded places and levels.
inline Tensor synthetic_volume(int64_t i, std::optional<std::array<int64_t, 3>> shape = std::nullopt) {
  const auto [D, H, W] = shape.value_or(synthetic_shape(i));
  Tensor v = Tensor::empty({D, H, W});
  float* p = v.data<float>();
  const uint64_t seed = 500 + uint64_t(i);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        double value = -0.8 + 0.2 * double(h) / double(H);
        for (uint64_t k = 0; k < 3; ++k) {
          const double cd = D * (0.25 + 0.5 * philox::uniform_at(seed, k, 0));
          const double ch = H * (0.25 + 0.5 * philox::uniform_at(seed, k, 1));
          const double cw = W * (0.25 + 0.5 * philox::uniform_at(seed, k, 2));
          const double r = 3.0 + 3.0 * philox::uniform_at(seed, k, 3);
          const double level = -0.5 + 1.4 * philox::uniform_at(seed, k, 4);
          const double q = ((d - cd) * (d - cd) + (h - ch) * (h - ch) + (w - cw) * (w - cw)) / (r * r);
          value += (level + 0.8) * std::exp(-q * q);
        }
        p[(d * H + h) * W + w] = float(std::clamp(value, -1.0, 1.0));
      }
  return v;
}

// `count` pairs in dir: hd/<id>.nii.gz (HU, window -200,200), ld/<id>.npy, pairs.csv with a split
// column that holds out the pairs listed in `val` (the others say train). Every volume has
// `shape` when given (ctsr_vqae cache needs multiples of its patch size).
inline std::filesystem::path write_synthetic_pairs(const std::filesystem::path& dir, int64_t count,
                                                   const std::vector<int64_t>& val = {0},
                                                   std::optional<std::array<int64_t, 3>> shape = std::nullopt) {
  std::filesystem::create_directories(dir / "hd");
  std::filesystem::create_directories(dir / "ld");
  std::ofstream csv(dir / "pairs.csv");
  csv << "id,ld,hd,split\n";
  for (int64_t i = 0; i < count; ++i) {
    const std::string id = "case" + std::to_string(i);
    const Tensor unit = synthetic_volume(i, shape);
    io::Volume hd;
    hd.data = io::unit_to_hu(unit, io::HuWindow{});
    hd.geometry.spacing_xyz = {0.9, 0.9, 1.5};
    io::write_volume(dir / "hd" / (id + ".nii.gz"), hd);
    Tensor ld = Tensor::empty(unit.shape());
    for (int64_t k = 0; k < unit.numel(); ++k)
      ld.data<float>()[k] =
          std::clamp(unit.data<float>()[k] + 0.1f * (philox::uniform_at(900 + uint64_t(i), 0, uint64_t(k)) - 0.5f),
                     -1.0f, 1.0f);
    io::write_npy(dir / "ld" / (id + ".npy"), ld);
    const bool held_out = std::find(val.begin(), val.end(), i) != val.end();
    csv << id << ",ld/" << id << ".npy,hd/" << id << ".nii.gz," << (held_out ? "val" : "train") << "\n";
  }
  return dir / "pairs.csv";
}

// n_hiddens 4 (widths 4, 8, 16, 16), 2 groups, 32 codes, batch 2 of 16^3 patches: seconds per run.
inline VqaeTrainConfig tiny_vqae_config(const std::filesystem::path& dir) {
  VqaeTrainConfig c;
  c.seed = 7;
  c.model.n_hiddens = 4;
  c.model.num_groups = 2;
  c.model.n_codes = 32;
  c.encode.patch_size = 16;
  c.data.pairs = (dir / "data" / "pairs.csv").string();
  c.training.patch_size = 16;
  c.training.batch_size = 2;
  c.training.max_steps = 6;
  c.training.learning_rate = 2e-3;
  c.training.log_every = 1;
  c.training.checkpoint_every = 0;
  c.validation.light_every = 3;
  c.validation.light_patches = 3;
  c.validation.full_every = 0;
  c.validation.num_volumes = 2;
  c.validation.panels = 1;
  c.output_dir = (dir / "run").string();
  return c;
}
inline VqaeTrainConfig tiny_vqae_config(const test::TempDir& dir) { return tiny_vqae_config(dir.path()); }

}  // namespace ctsr::train
