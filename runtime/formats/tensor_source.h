// Named tensors in a file, read lazily: the index (names, dtypes, shapes) is read on open, the
// bytes of a tensor only when it is loaded. Implemented by torch.save checkpoints
// (torch_checkpoint.h) and safetensors files (safetensors.h), so weight loaders take either.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace ctsr::io {

struct TensorRecord {
  std::string name;
  DType dtype = DType::float32;
  std::vector<int64_t> shape;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::filesystem::path& path() const = 0;
  // Tensor names in file order.
  virtual const std::vector<std::string>& names() const = 0;
  bool contains(const std::string& name) const;
  // Throws ctsr::Error naming the file and the missing key.
  virtual const TensorRecord& record(const std::string& name) const = 0;
  // A contiguous CPU tensor in the stored dtype; reads only this tensor's bytes.
  virtual Tensor load(const std::string& name) const = 0;
};

// By content, not by name: a zip archive is a torch.save checkpoint, a file that starts with a
// safetensors header is safetensors; anything else is an error naming the file and both formats.
std::unique_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path);

}  // namespace ctsr::io
