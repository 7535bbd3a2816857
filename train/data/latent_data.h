// Latent data for training (../shared/specs/unet3d-diffusion.md, "Latent data"): the cache that
// `ctsr_vqae cache` writes, DIR/train/*.safetensors and DIR/val/*.safetensors, each holding
// ld_latent and hd_latent [C, d, h, w] float32 (normalised to [-1, 1]) and metadata.
//
//   LatentDataset   one split: lists its files (sorted by name), checks every header once at
//                   start (both tensors present, one shape for the whole split, float32), and
//                   reads batches as [B, d, h, w, C] host tensors (our channels-last layout).
//   SampleOrder     the training order: sample counter k -> dataset index. Epoch e = k / n is a
//                   Fisher-Yates shuffle drawn from Philox(seed, e), so the order is a pure
//                   function of (seed, k): a resumed run reads exactly what an uninterrupted one
//                   would have, and a batch may straddle two epochs.
//   Prefetcher      reads micro-batches in order on a background thread, a few ahead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"
#include "train/data/cache_entry.h"
#include "train/data/prefetch.h"

namespace ctsr::train {

struct LatentBatch {
  Tensor ld, hd;                 // [B, d, h, w, C] float32, cpu
  std::vector<int64_t> indices;  // dataset indices, in batch order
};

class LatentDataset {
 public:
  // Throws naming the folder when the split has no files, and naming the file when a header is
  // unreadable, a tensor is missing, or a shape differs from the split's first file.
  LatentDataset(const std::filesystem::path& cache_dir, const std::string& split);
  int64_t size() const { return static_cast<int64_t>(files_.size()); }
  const std::filesystem::path& folder() const { return folder_; }
  // [C, d, h, w] of every latent in the split (the file layout).
  const Shape& latent_shape() const { return shape_; }
  int64_t channels() const { return shape_[0]; }
  const std::filesystem::path& path(int64_t i) const { return files_.at(size_t(i)); }
  std::string id(int64_t i) const;                             // the file's stem
  // The file's metadata (read again); an error naming the file, the key and the value when malformed.
  CacheEntryInfo info(int64_t i) const;
  LatentBatch load(const std::vector<int64_t>& indices) const;

 private:
  std::filesystem::path folder_;
  std::vector<std::filesystem::path> files_;
  Shape shape_;
};

class SampleOrder {
 public:
  SampleOrder(int64_t dataset_size, uint64_t seed);
  int64_t at(int64_t counter);  // dataset index of the counter-th sample drawn
  // The permutation of epoch e (for tests).
  std::vector<int64_t> epoch(int64_t e) const;

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_;
};

// Produces micro-batch m = first, first + 1, ... in order: indices_of(m) lists its dataset
// indices. Up to `depth` batches are read ahead. An exception on the reader thread is rethrown
// by next().
class Prefetcher {
 public:
  using IndicesOf = std::function<std::vector<int64_t>(int64_t micro_batch)>;
  Prefetcher(const LatentDataset& dataset, IndicesOf indices_of, int64_t first, int64_t depth);
  LatentBatch next() { return reader_.next(); }

 private:
  OrderedPrefetcher<LatentBatch> reader_;
};

}  // namespace ctsr::train
