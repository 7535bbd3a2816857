// torch.save checkpoints (the zip format of PyTorch >= 1.6) as a TensorSource, read without
// Python or libtorch.
//
// The archive holds "<prefix>/data.pkl", a pickle of the saved object, and one entry
// "<prefix>/data/<key>" per storage. A tensor pickles as torch._utils._rebuild_tensor_v2(storage,
// offset, size, stride, ...) (inside _rebuild_parameter for a Parameter) with the storage as a
// persistent id ('storage', torch.FloatStorage, key, location, numel).
//
// Which tensors: a PyTorch Lightning checkpoint's dict under "state_dict", or a bare state dict (a
// top-level dict whose values are all tensors). Everything else in a Lightning checkpoint
// (optimizer_states, lr_schedulers, callbacks, hyper_parameters, loops, ...) is skipped without
// being interpreted: classes the reader does not know (OmegaConf, numpy, Lightning) are fine.
//
// Lazy: opening reads the central directory and data.pkl; load(name) reads that tensor's storage
// entry (checking its CRC-32). Views are gathered into contiguous tensors: any non-negative
// strides (transposes, expand's 0 strides, offsets into shared storages) whose elements lie within
// the storage. dtypes: float32, float16, bfloat16, float64, int64, int32, uint8.
//
// Legacy (pre-zip) torch files are refused with a message saying how to re-save them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/formats/tensor_source.h"
#include "runtime/formats/zip_archive.h"

namespace ctsr::io {

class TorchCheckpoint : public TensorSource {
 public:
  explicit TorchCheckpoint(std::filesystem::path path);

  const std::filesystem::path& path() const override { return path_; }
  const std::vector<std::string>& names() const override { return names_; }
  const TensorRecord& record(const std::string& name) const override;
  Tensor load(const std::string& name) const override;

  // Top-level keys of the checkpoint that were not used ("optimizer_states", "epoch", ...), in file
  // order, then state-dict entries that are not tensors, as "state_dict/<key>".
  const std::vector<std::string>& skipped_entries() const { return skipped_; }

 private:
  struct Location {
    std::string entry;             // zip entry of the storage
    uint64_t storage_numel = 0;    // elements in the storage
    int64_t offset = 0;            // first element, in elements
    std::vector<int64_t> strides;  // in elements, one per dimension, all >= 0
  };

  std::filesystem::path path_;
  ZipArchive archive_;
  std::vector<std::string> names_;
  std::vector<TensorRecord> records_;
  std::vector<Location> locations_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::string> skipped_;
};

// True when the first bytes are those of a legacy (non-zip) torch.save file: a pickled magic number
// (protocol 2 LONG1 0x1950a86a20f9469cfc6c) or a tar archive (torch < 0.4).
bool is_legacy_torch_file(const void* first_bytes, size_t size);

}  // namespace ctsr::io
