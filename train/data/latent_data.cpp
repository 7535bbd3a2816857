#include "train/data/latent_data.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"
#include "runtime/philox.h"
#include "train/data/latent_io.h"

namespace ctsr::train {

namespace {
constexpr uint32_t kShufflePurpose = 0x5348;  // "SH"
}

LatentDataset::LatentDataset(const std::filesystem::path& cache_dir, const std::string& split)
    : folder_(cache_dir / split) {
  namespace fs = std::filesystem;
  CTSR_CHECK(fs::is_directory(cache_dir), cache_dir.string(),
             ": no such latent cache folder (data.cache_dir; make one with ctsr_vqae cache)");
  CTSR_CHECK(fs::is_directory(folder_), folder_.string(), ": the latent cache has no '", split,
             "' folder (ctsr_vqae cache writes train/ and val/)");
  for (const auto& entry : fs::directory_iterator(folder_)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
    if (io::is_atomic_temp_name(entry.path())) continue;  // left by an interrupted cache run
    files_.push_back(entry.path());
  }
  std::sort(files_.begin(), files_.end());
  CTSR_CHECK(!files_.empty(), folder_.string(), ": no .safetensors latent pairs in this folder");
  for (const auto& file : files_) {
    io::SafetensorsReader reader(file);
    for (const char* key : {"ld_latent", "hd_latent"}) {
      CTSR_CHECK(reader.contains(key), file.string(), ": no tensor '", key,
                 "' (not a latent pair written by ctsr_vqae cache)");
      const io::TensorRecord& r = reader.record(key);
      CTSR_CHECK(r.dtype == DType::float32, file.string(), ": '", key, "' is ", dtype_name(r.dtype),
                 ", expected float32");
      const Shape shape(r.shape);
      CTSR_CHECK(shape.ndim() == 4, file.string(), ": '", key, "' has shape ", shape.str(),
                 ", expected [channels, d, h, w]");
      if (shape_.ndim() == 0) shape_ = shape;
      CTSR_CHECK(shape == shape_, file.string(), ": '", key, "' has shape ", shape.str(), " but ",
                 files_.front().filename().string(), " has ", shape_.str(),
                 "; every latent of a split must have one shape (encode the volumes at one size)");
    }
  }
}

std::string LatentDataset::id(int64_t i) const { return path(i).stem().string(); }

CacheEntryInfo LatentDataset::info(int64_t i) const { return CacheEntryInfo::read(path(i)); }

LatentBatch LatentDataset::load(const std::vector<int64_t>& indices) const {
  const int64_t c = shape_[0], d = shape_[1], h = shape_[2], w = shape_[3];
  const int64_t b = static_cast<int64_t>(indices.size());
  LatentBatch batch;
  batch.indices = indices;
  batch.ld = Tensor::empty({b, d, h, w, c});
  batch.hd = Tensor::empty({b, d, h, w, c});
  const size_t bytes = size_t(c * d * h * w) * sizeof(float);
  for (int64_t k = 0; k < b; ++k) {
    CTSR_CHECK(indices[size_t(k)] >= 0 && indices[size_t(k)] < size(), "latent batch: index ", indices[size_t(k)],
               " outside the ", size(), " files of ", folder_.string());
    const std::filesystem::path& file = path(indices[size_t(k)]);
    io::SafetensorsReader reader(file);
    for (auto [key, out] : {std::pair<const char*, Tensor*>{"ld_latent", &batch.ld}, {"hd_latent", &batch.hd}}) {
      // Checked against the entry's checksum (entries of older caches have none).
      Tensor dhwc = train::latent_from_file_layout(io::load_verified(reader, key), file.string());
      std::memcpy(static_cast<char*>(out->raw_data()) + size_t(k) * bytes, dhwc.raw_data(), bytes);
    }
  }
  return batch;
}

// ---- SampleOrder ---------------------------------------------------------------------------------

SampleOrder::SampleOrder(int64_t dataset_size, uint64_t seed) : n_(dataset_size), seed_(seed) {
  CTSR_CHECK(dataset_size > 0, "SampleOrder: the dataset is empty");
}

std::vector<int64_t> SampleOrder::epoch(int64_t e) const {
  std::vector<int64_t> p(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) p[size_t(i)] = i;
  // Fisher-Yates from the top; draw i picks j uniformly in [0, i] from a 64-bit Philox value
  // (two words), whose modulo bias is below 2^-40 for any dataset that fits in memory.
  const uint64_t offset = philox::stream_offset(kShufflePurpose, static_cast<uint64_t>(e));
  for (int64_t i = n_ - 1; i > 0; --i) {
    const philox::Words words = philox::philox4x32_10(static_cast<uint64_t>(i), offset, seed_);
    const uint64_t r = (uint64_t(words.v[0]) << 32) | words.v[1];
    const int64_t j = static_cast<int64_t>(r % static_cast<uint64_t>(i + 1));
    std::swap(p[size_t(i)], p[size_t(j)]);
  }
  return p;
}

int64_t SampleOrder::at(int64_t counter) {
  CTSR_CHECK(counter >= 0, "SampleOrder: negative sample counter ", counter);
  const int64_t e = counter / n_;
  if (e != cached_epoch_) {
    cached_ = epoch(e);
    cached_epoch_ = e;
  }
  return cached_[size_t(counter % n_)];
}

// ---- Prefetcher ----------------------------------------------------------------------------------

Prefetcher::Prefetcher(const LatentDataset& dataset, IndicesOf indices_of, int64_t first, int64_t depth)
    : reader_([&dataset, indices_of = std::move(indices_of)](int64_t m) { return dataset.load(indices_of(m)); }, first,
              depth) {}

}  // namespace ctsr::train
