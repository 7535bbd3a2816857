#include "runtime/formats/tensor_source.h"

#include <algorithm>
#include <string>

#include "runtime/error.h"
#include "runtime/formats/random_access_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/torch_checkpoint.h"
#include "runtime/formats/zip_archive.h"

namespace ctsr::io {

bool TensorSource::contains(const std::string& name) const {
  const std::vector<std::string>& all = names();
  return std::find(all.begin(), all.end(), name) != all.end();
}

std::unique_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path) {
  uint8_t head[512] = {};
  uint64_t size = 0, n = 0;
  {
    RandomAccessFile file(path);
    size = file.size();
    n = std::min<uint64_t>(size, sizeof head);
    file.read(0, head, n, "file header");
  }
  CTSR_CHECK(size > 0, path.string(), ": is empty, expected a torch.save checkpoint or a safetensors file");
  if (ZipArchive::has_zip_signature(head, n) || is_legacy_torch_file(head, n))
    return std::make_unique<TorchCheckpoint>(path);  // the legacy format is refused there, with advice
  if (looks_like_safetensors(head, n, size)) return std::make_unique<SafetensorsReader>(path);
  std::string start;
  static const char* digits = "0123456789abcdef";
  for (uint64_t i = 0; i < std::min<uint64_t>(n, 8); ++i)
    start += std::string(i ? " " : "") + digits[head[i] >> 4] + digits[head[i] & 15];
  CTSR_FAIL(path.string(), ": neither a torch.save checkpoint (a zip archive, starting with 'PK') nor a safetensors ",
            "file (an 8-byte header length, then '{'): it starts with bytes ", start);
}

}  // namespace ctsr::io
