// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
// ..., "__metadata__": {"key": "value"}}, then the tensors' bytes (offsets relative to 8 + N).
// ctsr's checkpoints and caches use this format.
//
// The reader validates the whole header on open (JSON, dtype strings F32 F64 BF16 F16 I32 I64 U8,
// ranks, offsets within the file, byte sizes equal to numel * dtype size, no overlaps) and reads a
// tensor's bytes only when it is loaded. names() lists tensors in the order of their data in the file.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/formats/random_access_file.h"
#include "runtime/formats/tensor_source.h"

namespace ctsr::io {

class SafetensorsReader : public TensorSource {
 public:
  explicit SafetensorsReader(std::filesystem::path path);

  const std::filesystem::path& path() const override { return file_.path(); }
  const std::vector<std::string>& names() const override { return names_; }
  const TensorRecord& record(const std::string& name) const override;
  Tensor load(const std::string& name) const override;

  // The header's "__metadata__" (empty when there is none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  RandomAccessFile file_;
  std::vector<std::string> names_;
  std::vector<TensorRecord> records_;
  std::vector<uint64_t> data_begin_;  // absolute file offset of each tensor's bytes
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` in the given order (from any device; copied to the host) with `metadata` as
// "__metadata__". The header is padded with spaces to a multiple of 8 bytes so the data is
// 8-byte aligned. Atomic: on any error (duplicate or reserved names, undefined tensors, I/O) no
// file is left behind and an existing file at `path` is untouched.
void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The safetensors dtype string of a DType ("F32", "BF16", ...).
const char* safetensors_dtype_code(DType dtype);

// True when the first bytes (and the file size) look like a safetensors file: a header length
// that fits in the file, followed by '{'.
bool looks_like_safetensors(const void* first_bytes, size_t size, uint64_t file_size);

}  // namespace ctsr::io
