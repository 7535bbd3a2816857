// Volumes for training the VQ-AE (train/vqae_trainer.h): the list of files from a pairs.csv or a
// folder with their train / held-out split, the volumes read once (kept in memory when they fit),
// and random patches cut from them.
//
//   list_training_volumes  data.pairs: every pair's HD and/or LD file (data.volumes), ids
//                          "<pair id>_hd" / "<pair id>_ld"; the split is the pair's, as ctsr_vqae
//                          cache assigns it (the CSV's split column, else data.val_fraction of the
//                          pairs by data.split_seed: train/data/latent_cache.h assign_splits), so the
//                          held-out volumes are the cache's val pairs. data.folder: every .nii,
//                          .nii.gz and .npy file in it (sorted by name), ids their stems, split the
//                          same way.
//   VolumeSet              reads every volume once at start (windowed to [-1, 1] by the HU window;
//                          .npy taken as already on that scale), checking that it opens and is at
//                          least one patch along every axis; keeps them all in memory when their
//                          total fits the limit, else reads a volume again each time it is used.
//   draw_patch             patch g of a step: the volume (uniform over a pool of indices) and the
//                          origin (uniform over the positions where the patch fits) from the four
//                          words of Philox4x32-10(counter g, offset, seed): words 0, 1, 2, 3 for the
//                          volume, D, H, W, each mapped to [0, n) by (word * n) >> 32. A pure
//                          function of (seed, offset, g): a resumed run draws the same patches.
//   cut_patches            the patches as one host batch [B, p, p, p, 1] float32.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/formats/volume.h"
#include "runtime/tensor.h"
#include "train/vqae_config.h"

namespace ctsr::train {

struct TrainingVolume {
  std::string id;
  std::filesystem::path path;
  bool held_out = false;  // in the validation split
};

// Errors name data.pairs or data.folder and the file (a missing CSV, an empty folder, two files
// with one stem).
std::vector<TrainingVolume> list_training_volumes(const VqaeTrainConfig::Data& data);

class VolumeSet {
 public:
  // Reads every volume; an unreadable file or one smaller than `patch` along an axis is an error
  // naming the file, its shape and training.patch_size. memory_limit_bytes 0: never keep.
  VolumeSet(std::vector<TrainingVolume> volumes, const io::HuWindow& window, int64_t patch, int64_t memory_limit_bytes);
  int64_t size() const { return static_cast<int64_t>(volumes_.size()); }
  const TrainingVolume& entry(int64_t i) const { return volumes_.at(size_t(i)); }
  const std::array<int64_t, 3>& shape(int64_t i) const { return shapes_.at(size_t(i)); }  // D, H, W
  const std::array<double, 3>& spacing(int64_t i) const { return spacings_.at(size_t(i)); }  // mm, along D, H, W
  bool in_memory() const { return in_memory_; }
  int64_t total_bytes() const { return total_bytes_; }  // float32 bytes of every volume
  // The indices of the training (held_out false) or held-out volumes, ascending.
  std::vector<int64_t> indices(bool held_out) const;
  // Volume i, [D, H, W] float32 cpu on [-1, 1] (safe to call from several threads).
  Tensor read(int64_t i) const;

 private:
  std::vector<TrainingVolume> volumes_;
  io::HuWindow window_;
  std::vector<std::array<int64_t, 3>> shapes_;
  std::vector<std::array<double, 3>> spacings_;
  std::vector<Tensor> kept_;  // every volume when in_memory_
  bool in_memory_ = false;
  int64_t total_bytes_ = 0;
  mutable std::mutex read_mutex_;  // one file read at a time (the volume readers' libraries)
};

struct PatchSpec {
  int64_t volume = 0;                 // index into the VolumeSet
  std::array<int64_t, 3> origin{};    // first voxel along D, H, W
  bool operator==(const PatchSpec&) const = default;
};

PatchSpec draw_patch(const VolumeSet& volumes, const std::vector<int64_t>& pool, int64_t patch, uint64_t seed,
                     uint64_t offset, uint64_t sample);
Tensor cut_patches(const VolumeSet& volumes, const std::vector<PatchSpec>& patches, int64_t patch);

}  // namespace ctsr::train
