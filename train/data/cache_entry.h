// The metadata of one latent cache entry (DIR/{train,val}/<id>.safetensors, train/data/latent_cache.h),
// typed: the only place its strings are formatted (to_metadata) and parsed (from_metadata). A
// missing or malformed field is one error naming the file, the key, the value and what was
// expected. Also the checkpoint's record of the cache a diffusion run trained on (the "cache.*"
// extras of train/checkpoint.h) and the check that a VQ-AE's codebook bounds are a cache's.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "model/vqae.h"
#include "runtime/formats/volume.h"
#include "runtime/tensor.h"

namespace ctsr::train {

inline constexpr const char* kLatentPairFormat = "ctsr-latent-pair/1";

struct CacheEntryInfo {
  // Required: present in every entry ctsr_vqae cache has written.
  io::HuWindow window;                      // "hu_window" "lo,hi": the volumes were windowed to [-1, 1] by it
  int64_t patch_size = 0;                   // "patch_size": the encoding patch, 0 for whole volumes
  double latent_min = -1, latent_max = 1;   // "latent_min", "latent_max": the codebook's bounds (normalisation)
  std::string weights;                      // "weights": the VQ-AE file the latents were encoded with
  // Optional: absent from older or hand-made entries (empty / nullopt then).
  std::string id;                           // "id"
  std::string split;                        // "split": train | val
  std::string ld_path, hd_path;             // "ld_path", "hd_path": the source volumes
  std::string weights_digest;               // "weights_digest": file_digest of the weights (always written)
  std::optional<std::array<int64_t, 3>> volume_shape;  // "volume_shape" "D,H,W" of the source volumes
  std::optional<std::array<double, 3>> spacing_xyz;   // "spacing_xyz" "x,y,z" in mm
  std::optional<std::array<double, 16>> affine;        // "affine": 4 x 4, row-major
  std::optional<bool> normalized;                      // "normalized" "true" | "false"
  std::optional<int64_t> n_codes;                      // "n_codes": the VQ-AE's codebook size (newer caches)
  // "crc32.<tensor>" (runtime/formats/tensor_checksum.h): the CRC-32 of ld_latent's and hd_latent's
  // bytes, by tensor name; empty in entries written before checksums were recorded.
  std::map<std::string, uint32_t> crc32;

  // The metadata map written to the file ("format" included); absent optional fields are left out.
  std::map<std::string, std::string> to_metadata() const;
  // Parses a file's metadata; `file` names it in the errors.
  static CacheEntryInfo from_metadata(const std::map<std::string, std::string>& metadata, const std::string& file);
  // Reads the metadata of a cache entry file.
  static CacheEntryInfo read(const std::filesystem::path& path);
};

// Writes a cache entry durably (io::AtomicFile): ld_latent and hd_latent ([C, d, h, w] float32)
// and info's metadata, with info.crc32 set to the two tensors' checksums (verified by the readers:
// LatentDataset::load, read_latent, cache_entry_valid).
void write_cache_entry(const std::filesystem::path& path, const Tensor& ld_latent, const Tensor& hd_latent,
                       CacheEntryInfo info);

// What a diffusion checkpoint records of the cache its run trained on: the "cache.*" extras
// (cache.latent_shape, cache.hu_window, cache.patch_size, cache.latent_min, cache.latent_max,
// cache.weights), the strings of the cache's first entry. Every field is optional on reading (an
// older checkpoint, a cache without bounds).
struct TrainedCacheInfo {
  std::optional<io::HuWindow> window;
  std::optional<int64_t> patch_size;
  std::optional<std::array<int64_t, 4>> latent_shape;  // [C, d, h, w]
  std::optional<double> latent_min, latent_max;
  std::string weights;

  static std::map<std::string, std::string> to_extras(const CacheEntryInfo& entry, const Shape& latent_shape);
  static TrainedCacheInfo from_extras(const std::map<std::string, std::string>& extras, const std::string& file);
};

// Throws unless [lo, hi] are `vqae`'s codebook bounds (to a relative 1e-6): "<weights> has codebook
// bounds [a, b] but <latents> [lo, hi]: <advice>". E.g. weights "--vqae w.safetensors", latents
// "the cache was normalised with", advice "the cache was made with other weights (old.safetensors)".
void check_codebook_bounds(const Vqae& vqae, double lo, double hi, const std::string& weights,
                           const std::string& latents, const std::string& advice);

}  // namespace ctsr::train
