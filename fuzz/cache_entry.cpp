// Fuzz harness: a latent cache entry's metadata (train/data/cache_entry.h), which LatentDataset,
// ctsr_evaluate and the cache's rerun check parse from every entry, and the "cache.*" extras a
// diffusion checkpoint records of its cache (TrainedCacheInfo). The input is the metadata map, one
// "key=value" per line (fuzz::metadata_of).
// What parses must format (to_metadata / to_extras) to strings that parse back to the same.
#include <map>
#include <string>

#include "fuzz/fuzz_support.h"
#include "train/data/cache_entry.h"

namespace {

using Metadata = std::map<std::string, std::string>;
const char* const kName = "cache_entry";

void entry_round_trip(const Metadata& metadata) {
  using ctsr::train::CacheEntryInfo;
  const CacheEntryInfo info = CacheEntryInfo::from_metadata(metadata, "entry.safetensors");
  const Metadata written = info.to_metadata();
  auto reparse = [&] { return CacheEntryInfo::from_metadata(written, "written").to_metadata(); };
  const Metadata again =
      ctsr::fuzz::must_succeed(kName, "metadata that parsed is written so that it does not parse", reparse);
  ctsr::fuzz::expect(again == written, kName, "metadata that parsed does not read back to itself");
  // What a diffusion checkpoint records of this entry reads back too.
  const ctsr::Shape latent_shape{8, 16, 16, 16};
  const Metadata extras = ctsr::train::TrainedCacheInfo::to_extras(info, latent_shape);
  const ctsr::train::TrainedCacheInfo trained =
      ctsr::fuzz::must_succeed(kName, "the checkpoint extras of an entry that parsed do not parse",
                               [&] { return ctsr::train::TrainedCacheInfo::from_extras(extras, "checkpoint"); });
  ctsr::fuzz::expect(trained.patch_size == info.patch_size && trained.latent_min == info.latent_min &&
                         trained.latent_max == info.latent_max && trained.weights == info.weights &&
                         trained.window && trained.window->lo == info.window.lo && trained.window->hi == info.window.hi,
                     kName, "the checkpoint extras of an entry read back to other values");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Metadata metadata = ctsr::fuzz::metadata_of(data, size);
  ctsr::fuzz::run(kName, [&] { entry_round_trip(metadata); });
  // The same map as a checkpoint's extras (keys "cache.hu_window", ...), on its own.
  return ctsr::fuzz::run(kName, [&] {
    (void)ctsr::train::TrainedCacheInfo::from_extras(metadata, "checkpoint.safetensors");
  });
}
