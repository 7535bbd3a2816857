// CacheEntryInfo (train/data/cache_entry.h): the typed metadata of a latent cache entry, the
// checkpoint's cache.* record of it, and the codebook-bounds check.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "model/vqae.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/train_fixtures.h"
#include "train/data/cache_entry.h"
#include "train/data/latent_data.h"

namespace ctsr::test {
namespace {

using train::CacheEntryInfo;
using train::TrainedCacheInfo;
using Metadata = std::map<std::string, std::string>;

// Every field set, with values as ctsr_vqae cache writes them.
CacheEntryInfo full_entry() {
  CacheEntryInfo e;
  e.window = {-160.5f, 240.f};
  e.patch_size = 64;
  e.latent_min = double(-0.3721f);
  e.latent_max = double(0.4187f);
  e.weights = "models/vqae.safetensors";
  e.id = "p3";
  e.split = "val";
  e.ld_path = "data/p3_ld.nii.gz";
  e.hd_path = "data/p3_hd.nii.gz";
  e.weights_digest = "0123456789abcdef";
  e.volume_shape = std::array<int64_t, 3>{40, 96, 88};
  e.spacing_xyz = std::array<double, 3>{double(0.7f), 0.8, 2.5};
  e.affine = std::array<double, 16>{-0.7, 0, 0, 12.25, 0, -0.8, 0, 1.0 / 3, 0, 0, 2.5, -100, 0, 0, 0, 1};
  e.normalized = true;
  e.n_codes = 512;
  return e;
}

// What ctsr_vqae cache wrote for such an entry before CacheEntryInfo (the strings must not change).
Metadata written_today() {
  return {{"format", "ctsr-latent-pair/1"},
          {"id", "p3"},
          {"ld_path", "data/p3_ld.nii.gz"},
          {"hd_path", "data/p3_hd.nii.gz"},
          {"volume_shape", "40,96,88"},
          {"spacing_xyz", "0.69999998807907104,0.80000000000000004,2.5"},
          {"affine", "-0.69999999999999996,0,0,12.25,0,-0.80000000000000004,0,0.33333333333333331,0,0,2.5,-100,0,0,0,1"},
          {"normalized", "true"},
          {"latent_min", "-0.37209999561309814"},
          {"latent_max", "0.41870000958442688"},
          {"hu_window", "-160.5,240"},
          {"patch_size", "64"},
          {"weights", "models/vqae.safetensors"},
          {"weights_digest", "0123456789abcdef"},
          {"split", "val"},
          {"n_codes", "512"}};
}

TEST(CacheEntry, RoundTripsEveryFieldWithTheStringsWrittenToday) {
  const CacheEntryInfo e = full_entry();
  const Metadata m = e.to_metadata();
  EXPECT_EQ(m, written_today());
  const CacheEntryInfo back = CacheEntryInfo::from_metadata(m, "val/p3.safetensors");
  EXPECT_EQ(back.window.lo, e.window.lo);
  EXPECT_EQ(back.window.hi, e.window.hi);
  EXPECT_EQ(back.patch_size, e.patch_size);
  EXPECT_EQ(back.latent_min, e.latent_min);
  EXPECT_EQ(back.latent_max, e.latent_max);
  EXPECT_EQ(back.weights, e.weights);
  EXPECT_EQ(back.id, e.id);
  EXPECT_EQ(back.split, e.split);
  EXPECT_EQ(back.ld_path, e.ld_path);
  EXPECT_EQ(back.hd_path, e.hd_path);
  EXPECT_EQ(back.weights_digest, e.weights_digest);
  EXPECT_EQ(back.volume_shape, e.volume_shape);
  EXPECT_EQ(back.spacing_xyz, e.spacing_xyz);
  EXPECT_EQ(back.affine, e.affine);
  EXPECT_EQ(back.normalized, e.normalized);
  EXPECT_EQ(back.n_codes, e.n_codes);
  EXPECT_EQ(back.to_metadata(), m);
}

TEST(CacheEntry, AnOlderEntryWithoutTheOptionalFieldsReads) {
  // An entry of a cache made before n_codes and weights_digest (and the test fixture's minimum).
  Metadata m = written_today();
  m.erase("n_codes");
  m.erase("weights_digest");
  const CacheEntryInfo e = CacheEntryInfo::from_metadata(m, "train/p1.safetensors");
  EXPECT_FALSE(e.n_codes.has_value());
  EXPECT_EQ(e.weights_digest, "");
  EXPECT_EQ(e.patch_size, 64);
  const Metadata minimal = {{"format", "ctsr-latent-pair/1"}, {"hu_window", "-200,200"}, {"patch_size", "0"},
                            {"latent_min", "-1"},             {"latent_max", "1"},         {"weights", "test"}};
  const CacheEntryInfo small = CacheEntryInfo::from_metadata(minimal, "train/p1.safetensors");
  EXPECT_FALSE(small.spacing_xyz || small.affine || small.volume_shape || small.normalized || small.n_codes);
  EXPECT_TRUE(small.ld_path.empty() && small.hd_path.empty() && small.id.empty() && small.split.empty());
  EXPECT_EQ(small.window.lo, -200.f);
}

TEST(CacheEntry, AMalformedOrMissingFieldNamesFileKeyValueAndExpectation) {
  auto refused = [](const std::string& key, const std::optional<std::string>& value,
                    const std::vector<std::string>& parts) {
    Metadata m = written_today();
    if (value) m[key] = *value;
    else m.erase(key);
    std::vector<std::string> all = {"val/p3.safetensors", key};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_error_mentions([&] { CacheEntryInfo::from_metadata(m, "val/p3.safetensors"); }, all);
  };
  refused("hu_window", "-200", {"'-200'", "'lo,hi' numbers"});
  refused("hu_window", "200,-200", {"'200,-200'", "lo < hi"});
  refused("hu_window", "-200,2x", {"'-200,2x'", "'lo,hi' numbers"});
  refused("hu_window", std::nullopt, {"no hu_window", "'lo,hi'"});
  // Found by fuzzing: a finite double beyond float's range read as -inf and did not read back.
  refused("hu_window", "-2001e39,200", {"'-2001e39,200'", "'lo,hi' numbers"});
  refused("patch_size", "sixty", {"'sixty'", "an integer >= 0"});
  refused("patch_size", "-4", {"'-4'", "an integer >= 0"});
  refused("latent_min", "low", {"'low'", "a number"});
  refused("latent_max", "-2", {"'-2'", "above latent_min"});
  refused("weights", std::nullopt, {"no weights"});
  refused("format", "ctsr-latent-pair/2", {"'ctsr-latent-pair/2'", "ctsr-latent-pair/1"});
  refused("spacing_xyz", "1,1", {"'1,1'", "'x,y,z' positive numbers"});
  refused("spacing_xyz", "1,0,1", {"'1,0,1'", "positive"});
  refused("affine", "1,0,0,1", {"'1,0,0,1'", "16 numbers"});
  refused("volume_shape", "40,96", {"'40,96'", "'D,H,W' positive integers"});
  refused("normalized", "yes", {"'yes'", "true or false"});
  refused("n_codes", "0", {"'0'", "a positive integer"});
  refused("split", "test", {"'test'", "train or val"});
}

TEST(CacheEntry, TheDatasetReadsItAndABadEntryIsOneClearError) {
  TempDir dir("cache-entry");
  train::write_cache(dir / "cache", {.train = 2, .val = 1, .hd_volumes = true});
  const train::LatentDataset val(dir / "cache", "val");
  const CacheEntryInfo e = val.info(0);
  EXPECT_EQ(e.id, "val_0");
  EXPECT_EQ(e.spacing_xyz, (std::array<double, 3>{1, 1, 2.5}));
  EXPECT_EQ(e.window.hi, 200.f);
  EXPECT_TRUE(std::filesystem::is_regular_file(e.hd_path));
  // A damaged hu_window: the error names the file, the key and the value.
  io::SafetensorsReader reader(val.path(0));
  Metadata m = reader.metadata();
  m["hu_window"] = "-200";
  io::write_safetensors(val.path(0), {{"ld_latent", reader.load("ld_latent")}, {"hd_latent", reader.load("hd_latent")}},
                        m);
  expect_error_mentions([&] { val.info(0); }, {"val_0.safetensors", "hu_window '-200'", "'lo,hi' numbers"});
}

TEST(CacheEntry, CheckpointExtrasKeepTheirKeysAndStrings) {
  const Metadata extras = TrainedCacheInfo::to_extras(full_entry(), Shape({8, 10, 12, 11}));
  const Metadata expected = {{"cache.latent_shape", "[8, 10, 12, 11]"},
                             {"cache.hu_window", "-160.5,240"},
                             {"cache.patch_size", "64"},
                             {"cache.latent_min", "-0.37209999561309814"},
                             {"cache.latent_max", "0.41870000958442688"},
                             {"cache.weights", "models/vqae.safetensors"}};
  EXPECT_EQ(extras, expected);
  const TrainedCacheInfo t = TrainedCacheInfo::from_extras(extras, "run/checkpoint.safetensors");
  EXPECT_EQ(t.window->lo, -160.5f);
  EXPECT_EQ(t.patch_size, 64);
  EXPECT_EQ(t.latent_shape, (std::array<int64_t, 4>{8, 10, 12, 11}));
  EXPECT_EQ(t.latent_min, double(-0.3721f));
  EXPECT_EQ(t.weights, "models/vqae.safetensors");
  // An older checkpoint: nothing recorded, or empty bounds.
  const TrainedCacheInfo none = TrainedCacheInfo::from_extras({{"cache.latent_min", ""}, {"cache.latent_max", ""}}, "c");
  EXPECT_FALSE(none.window || none.patch_size || none.latent_shape || none.latent_min || none.latent_max);
  Metadata bad = extras;
  bad["cache.latent_shape"] = "[8, 10]";
  expect_error_mentions([&] { TrainedCacheInfo::from_extras(bad, "run/checkpoint.safetensors"); },
                        {"run/checkpoint.safetensors", "cache.latent_shape '[8, 10]'", "[C, d, h, w]"});
}

TEST(CacheEntry, CodebookBoundsAreCheckedInOnePlace) {
  const auto vqae = Vqae::load(train::kVqae, 2, Device::cpu());
  train::check_codebook_bounds(*vqae, vqae->code_min(), vqae->code_max(), "--vqae w", "the cache was normalised with",
                               "advice");
  expect_error_mentions(
      [&] {
        train::check_codebook_bounds(*vqae, -1, 1, "--vqae w.safetensors", "c.safetensors was trained on latents normalised with",
                                     "use the VQ-AE its cache was made with (old.safetensors)");
      },
      {"--vqae w.safetensors has codebook bounds [", "] but c.safetensors was trained on latents normalised with [-1, 1]",
       ": use the VQ-AE its cache was made with (old.safetensors)"});
}

}  // namespace
}  // namespace ctsr::test
