#include "train/data/latent_cache.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/folder_lock.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"
#include "train/run_support.h"
#include "train/data/cache_entry.h"
#include "train/data/latent_io.h"

namespace ctsr::train {

namespace {
std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream s(line);
  while (std::getline(s, cell, ',')) {
    // Trim spaces and a Windows line end.
    const auto b = cell.find_first_not_of(" \t\r"), e = cell.find_last_not_of(" \t\r");
    cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
  }
  if (!line.empty() && line.back() == ',') cells.push_back("");
  return cells;
}

// The id a path gives: a volume file's name without .nii.gz, .nii, .npy (or any other extension);
// a DICOM series folder's whole name ("hd/case.1/" and "hd/case.1" give case.1 when it is a folder).
std::string stem_of(const std::filesystem::path& p) {
  const bool trailing_separator = p.filename().empty() && p.has_parent_path();
  const std::filesystem::path named = trailing_separator ? p.parent_path() : p;
  std::string name = named.filename().string();
  std::error_code ec;
  if (trailing_separator || std::filesystem::is_directory(named, ec)) return name;
  for (const char* ext : {".nii.gz", ".nii", ".npy"})
    if (name.size() > std::strlen(ext) && name.compare(name.size() - std::strlen(ext), std::string::npos, ext) == 0)
      return name.substr(0, name.size() - std::strlen(ext));
  return named.stem().string();
}

constexpr uint64_t kFnvOffset = 1469598103934665603ull;

// FNV-1a (64-bit) of n bytes, continuing from h.
uint64_t fnv1a(uint64_t h, const char* bytes, size_t n) {
  for (size_t k = 0; k < n; ++k) h = (h ^ static_cast<unsigned char>(bytes[k])) * 1099511628211ull;
  return h;
}

uint64_t fnv1a(uint64_t seed, const std::string& text) { return fnv1a(kFnvOffset ^ seed, text.data(), text.size()); }
}  // namespace

std::string file_digest(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  CTSR_CHECK(in.good(), path.string(), ": cannot open the file to take its digest");
  uint64_t h = kFnvOffset;
  std::vector<char> block(1 << 16);
  while (in) {
    in.read(block.data(), std::streamsize(block.size()));
    h = fnv1a(h, block.data(), size_t(in.gcount()));
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

std::vector<PairRow> read_pairs_csv(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path);
  CTSR_CHECK(in.good(), file, ": cannot open the pairs CSV");
  std::string line;
  CTSR_CHECK(static_cast<bool>(std::getline(in, line)), file, ": empty; expected a header line with columns ld,hd");
  const std::vector<std::string> header = split_csv_line(line);
  std::map<std::string, size_t> column;
  for (size_t i = 0; i < header.size(); ++i) {
    auto [it, fresh] = column.emplace(header[i], i);
    CTSR_CHECK(fresh, file, ": the header '", line, "' names column '", header[i], "' twice (columns ", it->second + 1,
               " and ", i + 1, ")");
  }
  for (const char* required : {"ld", "hd"})
    CTSR_CHECK(column.count(required), file, ": the header '", line, "' has no column '", required,
               "' (expected ld,hd and optionally id,split)");
  const std::filesystem::path base = path.parent_path();
  std::vector<PairRow> rows;
  std::set<std::string> ids;
  for (int64_t number = 2; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::vector<std::string> cells = split_csv_line(line);
    CTSR_CHECK(cells.size() == header.size(), file, ": line ", number, " has ", cells.size(), " fields, the header ",
               header.size());
    PairRow row;
    auto cell = [&](const char* name) { return column.count(name) ? cells[column[name]] : std::string(); };
    row.ld = cell("ld");
    row.hd = cell("hd");
    CTSR_CHECK(!row.ld.empty() && !row.hd.empty(), file, ": line ", number, " has an empty ld or hd path");
    if (row.ld.is_relative()) row.ld = base / row.ld;
    if (row.hd.is_relative()) row.hd = base / row.hd;
    row.id = cell("id").empty() ? stem_of(row.hd) : cell("id");
    row.split = cell("split");
    CTSR_CHECK(row.split.empty() || row.split == "train" || row.split == "val", file, ": line ", number, " has split '",
               row.split, "', expected train or val");
    CTSR_CHECK(!row.id.empty(), file, ": line ", number, " has no id and its hd path '", cell("hd"),
               "' names no file to take one from; add an id column");
    CTSR_CHECK(row.id.find('\0') == std::string::npos, file, ": line ", number,
               " has an id with a NUL byte, which cannot name a file");
    CTSR_CHECK(row.id.find('/') == std::string::npos && row.id != "." && row.id != "..", file, ": line ", number,
               " has id '", row.id, "', which cannot name a file");
    CTSR_CHECK(ids.insert(row.id).second, file, ": line ", number, " repeats the id '", row.id, "'");
    rows.push_back(row);
  }
  CTSR_CHECK(!rows.empty(), file, ": no pairs after the header");
  return rows;
}

void assign_splits(std::vector<PairRow>& rows, double val_fraction, uint64_t seed) {
  CTSR_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "--val-fraction ", val_fraction, ": expected a value in [0, 1)");
  std::vector<size_t> open;
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].split.empty()) open.push_back(i);
  if (open.empty()) return;
  int64_t n_val = std::llround(val_fraction * double(open.size()));
  if (val_fraction > 0.0 && open.size() >= 2) n_val = std::max<int64_t>(n_val, 1);
  n_val = std::min<int64_t>(n_val, int64_t(open.size()) - 1);
  std::sort(open.begin(), open.end(), [&](size_t a, size_t b) {
    const uint64_t ha = fnv1a(seed, rows[a].id), hb = fnv1a(seed, rows[b].id);
    return ha != hb ? ha < hb : rows[a].id < rows[b].id;
  });
  for (size_t k = 0; k < open.size(); ++k) rows[open[k]].split = int64_t(k) < n_val ? "val" : "train";
}

bool cache_entry_valid(const std::filesystem::path& path, const PairRow& row, const std::string& weights,
                       int64_t channels) {
  if (!std::filesystem::exists(path)) return false;
  try {
    io::SafetensorsReader reader(path);
    if (!reader.contains("ld_latent") || !reader.contains("hd_latent")) return false;
    const auto& ld = reader.record("ld_latent");
    const auto& hd = reader.record("hd_latent");
    if (ld.shape != hd.shape || ld.shape.size() != 4 || ld.shape[0] != channels) return false;
    const CacheEntryInfo info = CacheEntryInfo::from_metadata(reader.metadata(), path.string());
    if (info.ld_path != row.ld.string() || info.hd_path != row.hd.string() || info.weights != weights) return false;
    // Damaged bytes (a checksum that does not match) are encoded again; an entry written before
    // checksums were recorded is taken as it is.
    for (const char* key : {"ld_latent", "hd_latent"}) io::load_verified(reader, key);
    return true;
  } catch (const std::exception&) {
    return false;  // unreadable: encode it again
  }
}

bool cache_is_complete(const std::filesystem::path& dir) {
  return std::filesystem::is_regular_file(dir / kCacheCompleteMarker);
}

void write_cache_complete_marker(const std::filesystem::path& dir, const CacheReport& report,
                                 const CacheOptions& options) {
  const nlohmann::json marker{{"format", kCacheCompleteFormat},
                              {"pairs", report.train + report.val},
                              {"train", report.train},
                              {"val", report.val},
                              {"weights", options.weights},
                              {"weights_digest", options.weights_digest}};
  io::write_file_atomically(dir / kCacheCompleteMarker, [&](std::ostream& o) { o << marker.dump(2) << "\n"; });
}

CacheReport build_latent_cache(Vqae& model, const std::vector<PairRow>& rows, const std::filesystem::path& out_dir,
                               const CacheOptions& options) {
  // One process per cache, before anything in it is touched.
  const io::FolderLock lock(out_dir, "cache folder");
  // From here until every pair is done the cache is incomplete: training refuses it.
  if (std::filesystem::exists(out_dir / kCacheCompleteMarker)) {
    std::filesystem::remove(out_dir / kCacheCompleteMarker);
    io::sync_directory(out_dir);
  }
  io::remove_atomic_temporaries(out_dir);
  for (const char* split : {"train", "val"}) {
    std::filesystem::create_directories(out_dir / split);
    io::remove_atomic_temporaries(out_dir / split);  // left by an interrupted run
  }
  CacheReport report;
  const int64_t channels = model.config().embedding_dim;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < rows.size(); ++i) {
    const PairRow& row = rows[i];
    CTSR_CHECK(row.split == "train" || row.split == "val", "pair '", row.id, "' has no split");
    (row.split == "val" ? report.val : report.train)++;
    const std::filesystem::path target = out_dir / row.split / (row.id + ".safetensors");
    if (cache_entry_valid(target, row, options.weights, channels)) {
      ++report.skipped;
      if (options.progress) std::cerr << "[" << i + 1 << "/" << rows.size() << "] " << row.split << "/" << row.id
                                      << ": already cached" << std::endl;
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    io::Volume ld = io::read_volume_unit(row.ld, options.window);
    io::Volume hd = io::read_volume_unit(row.hd, options.window);
    CTSR_CHECK(ld.data.shape() == hd.data.shape(), "pair '", row.id, "': ", row.ld.string(), " is ",
               ld.data.shape().str(), " but ", row.hd.string(), " is ", hd.data.shape().str());
    auto encode = [&](const io::Volume& v, const std::filesystem::path& file) {
      const Tensor x = v.data.reshape({1, v.data.dim(0), v.data.dim(1), v.data.dim(2), 1});
      try {
        const Tensor z = options.patch_size > 0 ? model.patch_encode(x, options.patch_size) : model.encode(x);
        return latent_to_file_layout(model.normalize_latent(z));
      } catch (const Error& e) {
        CTSR_FAIL(file.string(), ": ", e.what());
      }
    };
    const Tensor ld_latent = encode(ld, row.ld), hd_latent = encode(hd, row.hd);
    const auto& g = hd.geometry;
    CacheEntryInfo info;
    info.id = row.id;
    info.ld_path = row.ld.string();
    info.hd_path = row.hd.string();
    info.volume_shape = std::array<int64_t, 3>{hd.data.dim(0), hd.data.dim(1), hd.data.dim(2)};
    info.spacing_xyz = g.spacing_xyz;
    std::array<double, 16> affine{};
    for (size_t k = 0; k < 16; ++k) affine[k] = g.affine[k / 4][k % 4];
    info.affine = affine;
    info.normalized = true;
    info.latent_min = model.code_min();
    info.latent_max = model.code_max();
    info.n_codes = model.config().n_codes;
    info.window = options.window;
    info.patch_size = options.patch_size;
    info.weights = options.weights;
    info.weights_digest = options.weights_digest;
    info.split = row.split;
    write_cache_entry(target, ld_latent, hd_latent, info);  // with the latents' checksums
    ++report.encoded;
    if (options.progress) {
      const auto now = std::chrono::steady_clock::now();
      const double pair_s = std::chrono::duration<double>(now - t0).count();
      const double per = std::chrono::duration<double>(now - start).count() / double(report.encoded);
      const double eta = per * double(rows.size() - i - 1);
      std::cerr << "[" << i + 1 << "/" << rows.size() << "] " << row.split << "/" << row.id << ": encoded in "
                << format_seconds(pair_s) << ", about " << format_seconds(eta) << " left" << std::endl;
    }
  }
  write_cache_complete_marker(out_dir, report, options);
  return report;
}

}  // namespace ctsr::train
