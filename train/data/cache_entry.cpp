#include "train/data/cache_entry.h"

#include <cmath>
#include <sstream>
#include <vector>

#include "runtime/error.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"

namespace ctsr::train {

namespace {

using Metadata = std::map<std::string, std::string>;

// The numbers of a metadata list: full precision, so a double reads back exactly.
std::string join_numbers(const double* v, size_t n) {
  std::ostringstream s;
  s.precision(17);
  for (size_t i = 0; i < n; ++i) s << (i ? "," : "") << v[i];
  return s.str();
}

std::string join_integers(const int64_t* v, size_t n) {
  std::ostringstream s;
  for (size_t i = 0; i < n; ++i) s << (i ? "," : "") << v[i];
  return s.str();
}

// Reads the fields of one metadata map; every error names the file, the key, the value and what
// was expected.
class Fields {
 public:
  Fields(const Metadata& m, std::string file, std::string prefix = "")
      : m_(m), file_(std::move(file)), prefix_(std::move(prefix)) {}

  const std::string* find(const std::string& key) const {
    auto it = m_.find(prefix_ + key);
    return it == m_.end() ? nullptr : &it->second;
  }
  const std::string& required(const std::string& key, const char* expected) const {
    const std::string* v = find(key);
    CTSR_CHECK(v, file_, ": metadata has no ", prefix_ + key, "; expected ", expected,
               " (not a latent pair written by ctsr_vqae cache?)");
    return *v;
  }
  [[noreturn]] void bad(const std::string& key, const std::string& value, const char* expected) const {
    CTSR_FAIL(file_, ": metadata ", prefix_ + key, " '", value, "' is not ", expected);
  }

  // n comma-separated numbers (finite).
  std::vector<double> numbers(const std::string& key, const std::string& value, size_t n, const char* expected) const {
    std::vector<double> out;
    std::istringstream s(value);
    std::string cell;
    while (std::getline(s, cell, ',')) {
      size_t used = 0;
      double x = 0;
      try {
        x = std::stod(cell, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != cell.size() || !std::isfinite(x)) bad(key, value, expected);
      out.push_back(x);
    }
    if (out.size() != n || (!value.empty() && value.back() == ',')) bad(key, value, expected);
    return out;
  }
  // n comma-separated integers, each at least `least`.
  std::vector<int64_t> integers(const std::string& key, const std::string& value, size_t n, int64_t least,
                                const char* expected) const {
    std::vector<int64_t> out;
    std::istringstream s(value);
    std::string cell;
    while (std::getline(s, cell, ',')) {
      size_t used = 0;
      long long x = 0;
      try {
        x = std::stoll(cell, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != cell.size() || x < least) bad(key, value, expected);
      out.push_back(int64_t(x));
    }
    if (out.size() != n || (!value.empty() && value.back() == ',')) bad(key, value, expected);
    return out;
  }
  io::HuWindow window(const std::string& key, const std::string& value) const {
    const char* expected = "'lo,hi' numbers with lo < hi (the HU window)";
    const auto w = numbers(key, value, 2, expected);
    // Stored as float: a value beyond float's range would not convert (nor read back).
    constexpr double kFloatMax = 3.4028234663852886e38;
    if (std::fabs(w[0]) > kFloatMax || std::fabs(w[1]) > kFloatMax) bad(key, value, expected);
    const io::HuWindow out{float(w[0]), float(w[1])};
    if (!(out.lo < out.hi)) bad(key, value, expected);
    return out;
  }
  int64_t patch(const std::string& key, const std::string& value) const {
    return integers(key, value, 1, 0, "an integer >= 0 (the encoding patch size, 0 for whole volumes)")[0];
  }
  double number(const std::string& key, const std::string& value, const char* expected) const {
    return numbers(key, value, 1, expected)[0];
  }

 private:
  const Metadata& m_;
  std::string file_, prefix_;
};

const char* const kBoundExpected = "a number (the codebook's bound)";

}  // namespace

std::map<std::string, std::string> CacheEntryInfo::to_metadata() const {
  Metadata m;
  m["format"] = kLatentPairFormat;
  const double window_numbers[2] = {window.lo, window.hi};
  m["hu_window"] = join_numbers(window_numbers, 2);
  m["patch_size"] = std::to_string(patch_size);
  m["latent_min"] = join_numbers(&latent_min, 1);
  m["latent_max"] = join_numbers(&latent_max, 1);
  m["weights"] = weights;
  if (!id.empty()) m["id"] = id;
  if (!split.empty()) m["split"] = split;
  if (!ld_path.empty()) m["ld_path"] = ld_path;
  if (!hd_path.empty()) m["hd_path"] = hd_path;
  m["weights_digest"] = weights_digest;  // written even when empty, as ctsr_vqae cache always did
  if (volume_shape) m["volume_shape"] = join_integers(volume_shape->data(), 3);
  if (spacing_xyz) m["spacing_xyz"] = join_numbers(spacing_xyz->data(), 3);
  if (affine) m["affine"] = join_numbers(affine->data(), 16);
  if (normalized) m["normalized"] = *normalized ? "true" : "false";
  if (n_codes) m["n_codes"] = std::to_string(*n_codes);
  for (const auto& [tensor, crc] : crc32) m[io::kChecksumPrefix + tensor] = io::format_crc32(crc);
  return m;
}

CacheEntryInfo CacheEntryInfo::from_metadata(const std::map<std::string, std::string>& metadata,
                                             const std::string& file) {
  const Fields f(metadata, file);
  CacheEntryInfo e;
  const std::string& format = f.required("format", kLatentPairFormat);
  if (format != kLatentPairFormat) f.bad("format", format, kLatentPairFormat);
  e.window = f.window("hu_window", f.required("hu_window", "'lo,hi' (the HU window)"));
  e.patch_size = f.patch("patch_size", f.required("patch_size", "the encoding patch size"));
  e.latent_min = f.number("latent_min", f.required("latent_min", kBoundExpected), kBoundExpected);
  e.latent_max = f.number("latent_max", f.required("latent_max", kBoundExpected), kBoundExpected);
  if (!(e.latent_min < e.latent_max))
    f.bad("latent_max", metadata.at("latent_max"), "a number above latent_min (the codebook's bounds)");
  e.weights = f.required("weights", "the VQ-AE weights the latents were encoded with");
  auto text = [&](const char* key) {
    const std::string* v = f.find(key);
    return v ? *v : std::string();
  };
  e.id = text("id");
  e.split = text("split");
  if (!e.split.empty() && e.split != "train" && e.split != "val") f.bad("split", e.split, "train or val");
  e.ld_path = text("ld_path");
  e.hd_path = text("hd_path");
  e.weights_digest = text("weights_digest");
  if (const std::string* v = f.find("volume_shape")) {
    const auto s = f.integers("volume_shape", *v, 3, 1, "'D,H,W' positive integers (the volumes' shape)");
    e.volume_shape = std::array<int64_t, 3>{s[0], s[1], s[2]};
  }
  if (const std::string* v = f.find("spacing_xyz")) {
    const char* expected = "'x,y,z' positive numbers (the voxel size in mm)";
    const auto s = f.numbers("spacing_xyz", *v, 3, expected);
    for (double x : s)
      if (!(x > 0)) f.bad("spacing_xyz", *v, expected);
    e.spacing_xyz = std::array<double, 3>{s[0], s[1], s[2]};
  }
  if (const std::string* v = f.find("affine")) {
    const auto a = f.numbers("affine", *v, 16, "16 numbers (the 4 x 4 affine, row-major)");
    std::array<double, 16> out{};
    for (size_t i = 0; i < 16; ++i) out[i] = a[i];
    e.affine = out;
  }
  if (const std::string* v = f.find("normalized")) {
    if (*v != "true" && *v != "false") f.bad("normalized", *v, "true or false");
    e.normalized = *v == "true";
  }
  if (const std::string* v = f.find("n_codes"))
    e.n_codes = f.integers("n_codes", *v, 1, 1, "a positive integer (the codebook size)")[0];
  const std::string prefix = io::kChecksumPrefix;
  for (auto it = metadata.lower_bound(prefix); it != metadata.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    const std::optional<uint32_t> crc = io::parse_crc32(it->second);
    if (!crc) f.bad(it->first, it->second, "8 lowercase hex digits (a CRC-32)");
    e.crc32[it->first.substr(prefix.size())] = *crc;
  }
  return e;
}

CacheEntryInfo CacheEntryInfo::read(const std::filesystem::path& path) {
  return from_metadata(io::SafetensorsReader(path).metadata(), path.string());
}

void write_cache_entry(const std::filesystem::path& path, const Tensor& ld_latent, const Tensor& hd_latent,
                       CacheEntryInfo info) {
  const Tensor ld = ld_latent.device().is_host_memory() ? ld_latent : ld_latent.to(Device::cpu());
  const Tensor hd = hd_latent.device().is_host_memory() ? hd_latent : hd_latent.to(Device::cpu());
  info.crc32 = {{"ld_latent", io::tensor_crc32(ld)}, {"hd_latent", io::tensor_crc32(hd)}};
  io::write_safetensors(path, {{"ld_latent", ld}, {"hd_latent", hd}}, info.to_metadata());
}

std::map<std::string, std::string> TrainedCacheInfo::to_extras(const CacheEntryInfo& entry, const Shape& latent_shape) {
  const Metadata m = entry.to_metadata();
  return {{"cache.latent_shape", latent_shape.str()},  {"cache.hu_window", m.at("hu_window")},
          {"cache.patch_size", m.at("patch_size")},     {"cache.latent_min", m.at("latent_min")},
          {"cache.latent_max", m.at("latent_max")},     {"cache.weights", m.at("weights")}};
}

TrainedCacheInfo TrainedCacheInfo::from_extras(const std::map<std::string, std::string>& extras,
                                               const std::string& file) {
  const Fields f(extras, file, "cache.");
  TrainedCacheInfo t;
  // An empty value is an absent one (a run on a cache without the field recorded "").
  auto given = [&](const char* key) {
    const std::string* v = f.find(key);
    return v && !v->empty() ? v : nullptr;
  };
  if (const std::string* v = given("hu_window")) t.window = f.window("hu_window", *v);
  if (const std::string* v = given("patch_size")) t.patch_size = f.patch("patch_size", *v);
  if (const std::string* v = given("latent_shape")) {
    const char* expected = "'[C, d, h, w]' positive integers (the latents' shape)";
    if (v->size() < 2 || v->front() != '[' || v->back() != ']') f.bad("latent_shape", *v, expected);
    std::string inner = v->substr(1, v->size() - 2);
    std::erase(inner, ' ');
    std::vector<int64_t> s;
    try {
      s = f.integers("latent_shape", inner, 4, 1, expected);
    } catch (const Error&) {
      f.bad("latent_shape", *v, expected);  // name the value as written
    }
    t.latent_shape = std::array<int64_t, 4>{s[0], s[1], s[2], s[3]};
  }
  if (const std::string* v = given("latent_min")) t.latent_min = f.number("latent_min", *v, kBoundExpected);
  if (const std::string* v = given("latent_max")) t.latent_max = f.number("latent_max", *v, kBoundExpected);
  if (t.latent_min.has_value() != t.latent_max.has_value())
    CTSR_FAIL(file, ": metadata has cache.latent_", t.latent_min ? "min" : "max", " but no cache.latent_",
              t.latent_min ? "max" : "min", "; expected both codebook bounds or neither");
  if (const std::string* v = f.find("weights")) t.weights = *v;
  return t;
}

void check_codebook_bounds(const Vqae& vqae, double lo, double hi, const std::string& weights,
                           const std::string& latents, const std::string& advice) {
  CTSR_CHECK(std::abs(lo - vqae.code_min()) <= 1e-6 * (1 + std::abs(lo)) &&
                 std::abs(hi - vqae.code_max()) <= 1e-6 * (1 + std::abs(hi)),
             weights, " has codebook bounds [", vqae.code_min(), ", ", vqae.code_max(), "] but ", latents, " [", lo,
             ", ", hi, "]: ", advice);
}

}  // namespace ctsr::train
