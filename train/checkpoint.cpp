#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"

namespace ctsr::train {

namespace {

constexpr const char* kFormat = "ctsr-train-checkpoint/1";

CheckpointWritten& written_hook() {
  static CheckpointWritten hook;
  return hook;
}

std::string number(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  return buffer;
}

int64_t read_int(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
  auto it = meta.find(key);
  CTSR_CHECK(it != meta.end(), file, ": checkpoint metadata has no '", key, "'");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  CTSR_FAIL(file, ": checkpoint metadata '", key, "' is '", it->second, "', expected an integer");
}

// rng.seed: a decimal uint64 (std::stoull alone would take a sign, "-1", and throw its own
// exceptions for a missing or malformed value).
uint64_t read_seed(const std::map<std::string, std::string>& meta, const std::string& file) {
  auto it = meta.find("rng.seed");
  CTSR_CHECK(it != meta.end(), file, ": checkpoint metadata has no 'rng.seed'");
  const std::string& text = it->second;
  bool ok = !text.empty() && text.size() <= 20 && text.find_first_not_of("0123456789") == std::string::npos;
  uint64_t v = 0;
  for (char c : text) ok = ok && !__builtin_mul_overflow(v, uint64_t{10}, &v) && !__builtin_add_overflow(v, uint64_t(c - '0'), &v);
  CTSR_CHECK(ok, file, ": checkpoint metadata 'rng.seed' is '", text, "', expected an integer from 0 to 2^64 - 1");
  return v;
}

double read_double(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
  auto it = meta.find(key);
  CTSR_CHECK(it != meta.end(), file, ": checkpoint metadata has no '", key, "'");
  if (it->second == "-inf") return -std::numeric_limits<double>::infinity();
  try {
    return std::stod(it->second);
  } catch (const std::exception&) {
    CTSR_FAIL(file, ": checkpoint metadata '", key, "' is '", it->second, "', expected a number");
  }
}

// What a checkpoint of each kind is, and what to do with one offered where the other is wanted.
const char* describe_kind(const std::string& kind) {
  if (kind == kDiffusionCheckpoint) return "a ctsr_train checkpoint (the diffusion UNet)";
  if (kind == kVqaeCheckpoint)
    return "a ctsr_train_vqae checkpoint (a VQ-AE; its weights for ctsr_vqae, ctsr_train's data.vqae_weights and "
           "ctsr_infer's --vqae are OUTPUT/vqae.safetensors of that run)";
  if (kind == kRedCnnCheckpoint)
    return "a ctsr_train_redcnn checkpoint (the RED-CNN baseline; its weights for ctsr_evaluate --redcnn are "
           "OUTPUT/redcnn.safetensors of that run)";
  return "a checkpoint of an unknown kind";
}

CheckpointInfo info_from(const std::map<std::string, std::string>& meta, const std::string& file,
                         const std::string& expected_kind) {
  auto format = meta.find("format");
  CTSR_CHECK(format != meta.end() && format->second == kFormat, file, ": not a ctsr_train checkpoint (format '",
             format == meta.end() ? "" : format->second, "', expected '", kFormat, "')");
  CheckpointInfo info;
  auto kind = meta.find("kind");
  info.kind = kind == meta.end() ? kDiffusionCheckpoint : kind->second;
  CTSR_CHECK(info.kind == expected_kind, file, ": this is ", describe_kind(info.kind), " (kind '", info.kind,
             "'), but ", describe_kind(expected_kind), " is expected here");
  TrainingState& s = info.state;
  s.step = read_int(meta, "state.step", file);
  s.optimizer_updates = read_int(meta, "state.optimizer_updates", file);
  s.ema_updates = read_int(meta, "state.ema_updates", file);
  s.skipped_steps = read_int(meta, "state.skipped_steps", file);
  s.consecutive_skips = read_int(meta, "state.consecutive_skips", file);
  s.best_ssim = read_double(meta, "state.best_ssim", file);
  s.best_step = read_int(meta, "state.best_step", file);
  info.seed = read_seed(meta, file);
  auto config = meta.find("config");
  CTSR_CHECK(config != meta.end(), file, ": checkpoint metadata has no 'config'");
  info.config_yaml = config->second;
  for (const auto& [k, v] : meta)
    if (k.rfind("extra.", 0) == 0) info.extra[k.substr(6)] = v;
  info.checksummed = io::has_checksums(meta);
  return info;
}

template <class Each>
void for_each_group(const CheckpointTensors& t, const NamedTensors& extra, Each&& each) {
  for (size_t i = 0; i < t.model.size(); ++i) {
    const std::string& name = t.model[i]->name;
    each("model/" + name, t.model[i]->value);
    if (i < t.ema.size()) each("ema/" + name, t.ema[i]->value);
    if (i < t.adam_m.size()) each("adam_m/" + name, *t.adam_m[i]);
    if (i < t.adam_v.size()) each("adam_v/" + name, *t.adam_v[i]);
  }
  for (const auto& [name, tensor] : extra) each(name, *tensor);
}

void load_into(const io::SafetensorsReader& reader, const std::string& key, Tensor& target) {
  const std::string file = reader.path().string();
  CTSR_CHECK(reader.contains(key), file, ": no tensor '", key,
             "' (a checkpoint of another architecture? compare its configuration with this one)");
  const io::TensorRecord& r = reader.record(key);
  CTSR_CHECK(Shape(r.shape) == target.shape(), file, ": '", key, "' has shape ", Shape(r.shape).str(),
             " but this model's is ", target.shape().str(), " (a checkpoint of another architecture)");
  Tensor host = io::load_verified(reader, key);  // a file without checksums (older) loads unverified
  CTSR_CHECK(host.dtype() == target.dtype(), file, ": '", key, "' is ", dtype_name(host.dtype()), ", expected ",
             dtype_name(target.dtype()));
  target.copy_from(host);
}

}  // namespace

std::filesystem::path checkpoint_path(const std::filesystem::path& dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.safetensors", static_cast<long long>(step));
  return dir / name;
}

std::vector<std::pair<int64_t, std::filesystem::path>> list_checkpoints(const std::filesystem::path& dir) {
  std::vector<std::pair<int64_t, std::filesystem::path>> out;
  if (!std::filesystem::is_directory(dir)) return out;
  static const std::regex pattern("step_([0-9]{1,18})\\.safetensors");  // 18 digits: always an int64
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, m, pattern)) out.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& dir) {
  auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::optional<std::filesystem::path> checkpoint_to_resume(const std::string& resume, const std::filesystem::path& out_dir) {
  const std::filesystem::path dir = out_dir / "checkpoints";
  if (resume == "auto") return latest_checkpoint(dir);
  if (!resume.empty()) {
    CTSR_CHECK(std::filesystem::is_regular_file(resume), "--resume ", resume, ": no such checkpoint");
    return std::filesystem::path(resume);
  }
  if (auto existing = latest_checkpoint(dir))
    CTSR_FAIL("output.dir ", out_dir.string(), " already holds checkpoints (", existing->filename().string(),
              "); pass --resume auto to continue that run, or choose another output.dir");
  return std::nullopt;
}

void save_checkpoint(const std::filesystem::path& path, const CheckpointTensors& tensors, const CheckpointInfo& info,
                     const NamedTensors& extra) {
  // Host copies first: the checksums are of the bytes written.
  std::vector<std::pair<std::string, Tensor>> named;
  for_each_group(tensors, extra, [&](const std::string& key, const Tensor& t) {
    named.emplace_back(key, t.device().is_host_memory() ? t : t.to(Device::cpu()));
  });
  const TrainingState& s = info.state;
  std::map<std::string, std::string> meta{
      {"format", kFormat},
      {"kind", info.kind},
      {"state.step", std::to_string(s.step)},
      {"state.optimizer_updates", std::to_string(s.optimizer_updates)},
      {"state.ema_updates", std::to_string(s.ema_updates)},
      {"state.skipped_steps", std::to_string(s.skipped_steps)},
      {"state.consecutive_skips", std::to_string(s.consecutive_skips)},
      {"state.best_ssim", std::isfinite(s.best_ssim) ? number(s.best_ssim) : "-inf"},
      {"state.best_step", std::to_string(s.best_step)},
      {"rng.scheme", "philox4x32-10 keyed by (seed, purpose, step, sample index); no other state"},
      {"rng.seed", std::to_string(info.seed)},
      {"config", info.config_yaml},
  };
  for (const auto& [k, v] : info.extra) meta["extra." + k] = v;
  io::add_checksums(named, meta);
  const std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  if (std::filesystem::create_directories(dir)) io::sync_directory(dir.parent_path().empty() ? "." : dir.parent_path());
  io::write_safetensors(path, named, meta);  // durable once it returns (io::AtomicFile)
  if (written_hook()) written_hook()(path);
}

CheckpointWritten set_checkpoint_written_hook(CheckpointWritten hook) {
  std::swap(written_hook(), hook);
  return hook;
}

CheckpointInfo read_checkpoint_info(const std::filesystem::path& path, const std::string& kind) {
  CTSR_CHECK(std::filesystem::is_regular_file(path), path.string(), ": no such checkpoint");
  io::SafetensorsReader reader(path);
  return info_from(reader.metadata(), path.string(), kind);
}

CheckpointInfo load_checkpoint(const std::filesystem::path& path, const CheckpointTensors& tensors,
                               const std::string& kind, const NamedTensors& extra) {
  CTSR_CHECK(std::filesystem::is_regular_file(path), path.string(), ": no such checkpoint");
  io::SafetensorsReader reader(path);
  CheckpointInfo info = info_from(reader.metadata(), path.string(), kind);
  for_each_group(tensors, extra, [&](const std::string& key, Tensor& t) { load_into(reader, key, t); });
  return info;
}

void load_weights(const std::filesystem::path& path, const std::string& group, const std::vector<Parameter*>& params,
                  const std::string& kind) {
  CTSR_CHECK(std::filesystem::is_regular_file(path), path.string(), ": no such checkpoint");
  io::SafetensorsReader reader(path);
  info_from(reader.metadata(), path.string(), kind);
  for (Parameter* p : params) load_into(reader, group + "/" + p->name, p->value);
}

void prune_checkpoints(const std::filesystem::path& dir, int64_t keep, int64_t best_step) {
  auto all = list_checkpoints(dir);
  const int64_t n = static_cast<int64_t>(all.size());
  for (int64_t i = 0; i < n - keep; ++i)
    if (all[size_t(i)].first != best_step) std::filesystem::remove(all[size_t(i)].second);
}

}  // namespace ctsr::train
