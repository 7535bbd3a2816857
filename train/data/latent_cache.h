// The latent cache the diffusion stage trains on (../shared/specs/unet3d-diffusion.md, Latent data):
// DIR/train/<id>.safetensors and DIR/val/<id>.safetensors, each holding ld_latent and hd_latent
// ([C, d, h, w] float32, normalised to [-1, 1] by the codebook's extremes) and metadata: the source
// paths, the spacing and affine, the normalisation bounds, the HU window, the patch size, the weights.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "model/vqae.h"
#include "runtime/formats/volume.h"

namespace ctsr::train {

// One line of pairs.csv. Columns (header required, any order): ld, hd; optional id and split
// (train | val). Relative paths are relative to the CSV's directory. A path names a volume file
// or a DICOM series folder (io::read_volume; a folder holding one series); without an id column
// the id is the hd file's name without its extension, or the hd folder's whole name.
struct PairRow {
  std::string id;
  std::filesystem::path ld, hd;
  std::string split;  // empty when the CSV has no split column
};
std::vector<PairRow> read_pairs_csv(const std::filesystem::path& path);

// Rows without a split get one: the val_fraction of them (rounded, at least one when the fraction
// is positive and there are two or more rows) whose FNV-1a hash of (seed, id) is smallest go to
// val. Stable across runs and machines, so a resumed cache keeps its split.
void assign_splits(std::vector<PairRow>& rows, double val_fraction, uint64_t seed);

struct CacheOptions {
  int64_t patch_size = 64;  // 0: encode whole volumes
  io::HuWindow window;
  std::string weights;      // recorded in the metadata; a finished file with other weights is redone
  std::string weights_digest;  // file_digest of the weights, recorded: ctsr_evaluate reuses the latents when it matches
  bool progress = true;     // a line per pair on stderr
};

struct CacheReport {
  int64_t encoded = 0, skipped = 0, train = 0, val = 0;
};

// The FNV-1a (64-bit) digest of a file's bytes, 16 hex digits: tells two weights files apart
// whatever their names (not a defence against a crafted file).
std::string file_digest(const std::filesystem::path& path);

// The completion marker: written (durably) when build_latent_cache has every pair, removed when a
// build starts; {"format": "ctsr-latent-cache-complete/1", "pairs", "train", "val", "weights",
// "weights_digest"}.
inline constexpr const char* kCacheCompleteMarker = "complete.json";
inline constexpr const char* kCacheCompleteFormat = "ctsr-latent-cache-complete/1";
bool cache_is_complete(const std::filesystem::path& dir);
void write_cache_complete_marker(const std::filesystem::path& dir, const CacheReport& report,
                                 const CacheOptions& options);

// Encodes every pair not already in `out_dir`; a file that exists and is a valid cache entry for
// the same sources and weights (and whose latents match their checksums) is skipped, so an
// interrupted run resumes. Holds the folder's lock (io::FolderLock, out_dir/.ctsr.lock) from
// before it touches anything: a second process on the folder is refused. Removes the completion
// marker first, then the temporaries an interrupted run left, and writes the marker at the end.
CacheReport build_latent_cache(Vqae& model, const std::vector<PairRow>& rows, const std::filesystem::path& out_dir,
                               const CacheOptions& options);

// True when `path` is a finished cache entry for `row` made with `weights`, undamaged.
bool cache_entry_valid(const std::filesystem::path& path, const PairRow& row, const std::string& weights,
                       int64_t channels);

}  // namespace ctsr::train
