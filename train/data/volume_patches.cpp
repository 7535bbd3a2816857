#include "train/data/volume_patches.h"

#include <cstring>
#include <map>

#include "runtime/error.h"
#include "runtime/philox.h"
#include "train/data/latent_cache.h"

namespace ctsr::train {

namespace {

// The file's name without .nii.gz, .nii or .npy (false when it has none of them); a folder (a
// DICOM series) by its name, hidden and temporary folders aside.
bool volume_stem(const std::filesystem::directory_entry& entry, std::string& stem) {
  const std::string name = entry.path().filename().string();
  if (entry.is_directory()) {
    if (name.empty() || name[0] == '.') return false;
    stem = name;
    return true;
  }
  if (!entry.is_regular_file()) return false;
  for (const char* ext : {".nii.gz", ".nii", ".npy"}) {
    const size_t n = std::strlen(ext);
    if (name.size() > n && name.compare(name.size() - n, n, ext) == 0) {
      stem = name.substr(0, name.size() - n);
      return true;
    }
  }
  return false;
}

// Copies the p^3 box at `origin` of `volume` ([D, H, W]) to `out` (p^3 floats, D-major).
void copy_patch(const Tensor& volume, const std::array<int64_t, 3>& origin, int64_t p, float* out) {
  const int64_t H = volume.dim(1), W = volume.dim(2);
  const float* v = volume.data<float>();
  for (int64_t i = 0; i < p; ++i)
    for (int64_t j = 0; j < p; ++j)
      std::memcpy(out + (i * p + j) * p, v + ((origin[0] + i) * H + origin[1] + j) * W + origin[2],
                  size_t(p) * sizeof(float));
}

}  // namespace

std::vector<TrainingVolume> list_training_volumes(const VqaeTrainConfig::Data& data) {
  std::vector<train::PairRow> rows;
  if (!data.pairs.empty()) {
    CTSR_CHECK(std::filesystem::is_regular_file(data.pairs), "data.pairs: ", data.pairs,
               ": no such file (expected a pairs.csv with columns ld,hd[,id][,split])");
    try {
      rows = train::read_pairs_csv(data.pairs);
    } catch (const Error& e) {
      CTSR_FAIL("data.pairs: ", e.what());
    }
  } else {
    CTSR_CHECK(std::filesystem::is_directory(data.folder), "data.folder: ", data.folder, ": no such folder");
    std::map<std::string, std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(data.folder)) {
      std::string stem;
      if (!volume_stem(entry, stem)) continue;
      auto [at, added] = files.emplace(stem, entry.path());
      CTSR_CHECK(added, "data.folder: ", data.folder, ": ", at->second.filename().string(), " and ",
                 entry.path().filename().string(), " have the same name (one id per volume)");
    }
    CTSR_CHECK(!files.empty(), "data.folder: ", data.folder,
               ": no .nii, .nii.gz or .npy volumes or DICOM series folders in it");
    for (const auto& [stem, path] : files) rows.push_back({stem, path, path, ""});
  }
  train::assign_splits(rows, data.val_fraction, data.split_seed);

  std::vector<TrainingVolume> out;
  for (const train::PairRow& row : rows) {
    const bool held_out = row.split == "val";
    if (!data.folder.empty()) {
      out.push_back({row.id, row.hd, held_out});
      continue;
    }
    if (data.volumes != "ld") out.push_back({row.id + "_hd", row.hd, held_out});
    if (data.volumes != "hd") out.push_back({row.id + "_ld", row.ld, held_out});
  }
  return out;
}

VolumeSet::VolumeSet(std::vector<TrainingVolume> volumes, const io::HuWindow& window, int64_t patch,
                     int64_t memory_limit_bytes)
    : volumes_(std::move(volumes)), window_(window) {
  in_memory_ = true;
  for (const TrainingVolume& v : volumes_) {
    io::Volume volume = io::read_volume_unit(v.path, window_);
    const Tensor& data = volume.data;
    const std::array<int64_t, 3> shape{data.dim(0), data.dim(1), data.dim(2)};
    const char* axes[] = {"D", "H", "W"};
    for (int a = 0; a < 3; ++a)
      CTSR_CHECK(shape[size_t(a)] >= patch, v.path.string(), ": the volume ", data.shape().str(), " is smaller than ",
                 "training.patch_size ", patch, " along ", axes[a], " (volumes are [D, H, W]; choose a smaller patch ",
                 "or leave this volume out)");
    shapes_.push_back(shape);
    const auto& xyz = volume.geometry.spacing_xyz;
    spacings_.push_back({xyz[2], xyz[1], xyz[0]});
    total_bytes_ += int64_t(data.nbytes());
    if (in_memory_ && total_bytes_ <= memory_limit_bytes) {
      kept_.push_back(data);
    } else {
      in_memory_ = false;
      kept_.clear();
    }
  }
}

std::vector<int64_t> VolumeSet::indices(bool held_out) const {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < size(); ++i)
    if (volumes_[size_t(i)].held_out == held_out) out.push_back(i);
  return out;
}

Tensor VolumeSet::read(int64_t i) const {
  CTSR_CHECK(i >= 0 && i < size(), "VolumeSet::read: volume ", i, " of ", size());
  if (in_memory_) return kept_[size_t(i)];
  std::lock_guard<std::mutex> lock(read_mutex_);
  Tensor data = io::read_volume_unit(volumes_[size_t(i)].path, window_).data;
  const auto& expected = shapes_[size_t(i)];
  CTSR_CHECK(data.dim(0) == expected[0] && data.dim(1) == expected[1] && data.dim(2) == expected[2],
             volumes_[size_t(i)].path.string(), ": the volume is now ", data.shape().str(), ", it was [", expected[0],
             ", ", expected[1], ", ", expected[2], "] when training started (was the file replaced?)");
  return data;
}

PatchSpec draw_patch(const VolumeSet& volumes, const std::vector<int64_t>& pool, int64_t patch, uint64_t seed,
                     uint64_t offset, uint64_t sample) {
  CTSR_CHECK(!pool.empty(), "draw_patch: no volumes to draw from");
  const philox::Words w = philox::philox4x32_10(sample, offset, seed);
  auto below = [](uint32_t word, int64_t n) { return int64_t((uint64_t(word) * uint64_t(n)) >> 32); };
  PatchSpec spec;
  spec.volume = pool[size_t(below(w.v[0], int64_t(pool.size())))];
  const auto& shape = volumes.shape(spec.volume);
  for (size_t a = 0; a < 3; ++a) spec.origin[a] = below(w.v[1 + a], shape[a] - patch + 1);
  return spec;
}

Tensor cut_patches(const VolumeSet& volumes, const std::vector<PatchSpec>& patches, int64_t patch) {
  const int64_t count = static_cast<int64_t>(patches.size());
  Tensor batch = Tensor::empty({count, patch, patch, patch, 1}, DType::float32, Device::cpu());
  std::map<int64_t, Tensor> read;  // each volume read once per batch
  for (int64_t b = 0; b < count; ++b) {
    const PatchSpec& spec = patches[size_t(b)];
    auto it = read.find(spec.volume);
    if (it == read.end()) it = read.emplace(spec.volume, volumes.read(spec.volume)).first;
    copy_patch(it->second, spec.origin, patch, batch.data<float>() + b * patch * patch * patch);
  }
  return batch;
}

}  // namespace ctsr::train
