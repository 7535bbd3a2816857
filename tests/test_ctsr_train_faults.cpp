// ctsr_train, ctsr_train_vqae and ctsr_vqae cache under faults (RELIABILITY.md): SIGKILL at
// seeded points of a checkpoint's writing (io::AtomicFile's CTSR_KILL_AT_WRITE hook), SIGTERM,
// a write that fails as on a full disk (CTSR_FAIL_WRITE_AT), a second process on a folder, damaged
// checkpoints and cache entries, and incomplete caches. The tiny configurations of the other tool
// tests: each case takes seconds.
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <random>

#include "runtime/formats/atomic_file.h"
#include "runtime/formats/folder_lock.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/tensor_checksum.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/checkpoint.h"
#include "train/data/latent_cache.h"
#include "train/metrics_log.h"

namespace ctsr::train {
namespace {

using test::run_tool;
using test::TempDir;

// An environment variable for the programs a test starts (they inherit it), restored after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string write_config(const TempDir& dir, const DiffusionTrainConfig& c) {
  std::ofstream(dir / "config.yaml") << to_yaml(c);
  return (dir / "config.yaml").string();
}

// small_config with a checkpoint every step and no validation: most of a run is saving.
DiffusionTrainConfig saving_config(const TempDir& dir, int64_t steps) {
  DiffusionTrainConfig c = small_config(dir);
  c.training.max_steps = steps;
  c.training.checkpoint_every = 1;
  c.training.keep_checkpoints = 2;
  c.validation.light_every = 0;
  return c;
}

// A folder with a latent cache (write_cache) and a saving_config of `steps` steps, and ctsr_train
// run on it as a user would, with one OpenMP thread: the models are tiny, and on a busy machine
// the runs take a half to a quarter of the time (OpenMP threads wait for each other).
class TrainFolder {
 public:
  TrainFolder(const std::string& tag, int64_t steps, const FakeCacheOptions& cache = {},
              const std::function<void(DiffusionTrainConfig&)>& adjust = {})
      : dir_(tag) {
    write_cache(dir_ / "cache", cache);
    DiffusionTrainConfig c = saving_config(dir_, steps);
    if (adjust) adjust(c);
    config_ = write_config(dir_, c);
  }
  std::filesystem::path operator/(const std::string& name) const { return dir_ / name; }
  // ctsr_train --config C --device cpu --quiet ARGS
  std::vector<std::string> command(const std::vector<std::string>& args = {}) const {
    std::vector<std::string> out{"--config", config_, "--device", "cpu", "--quiet"};
    out.insert(out.end(), args.begin(), args.end());
    return out;
  }
  test::ToolResult train(const std::vector<std::string>& args = {}) const { return run_tool("ctsr_train", command(args)); }
  test::Spawned spawn(const std::vector<std::string>& args, const std::string& log) const {
    std::vector<std::string> argv{std::string(CTSR_TOOLS_BIN_DIR) + "/ctsr_train"};
    for (const std::string& a : command(args)) argv.push_back(a);
    return test::spawn_program(argv, dir_ / log);
  }

 private:
  ScopedEnv threads_{"OMP_NUM_THREADS", "1"};
  TempDir dir_;
  std::string config_;
};

std::vector<std::string> temporaries_under(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (io::is_atomic_temp_name(e.path())) out.push_back(e.path().string());
  return out;
}

// Every file (but the lock file, whose PID is the holder's) and the CRC-32 of its bytes, to show
// that a refused process changed nothing.
std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != io::FolderLock::kFileName) {
      const std::string bytes = test::read_text(e.path());
      out[e.path().string()] = io::format_crc32(io::crc32_of(bytes.data(), bytes.size()));
    }
  return out;
}

// Every tensor of a checkpoint read back against its checksum.
void expect_checkpoint_loads(const std::filesystem::path& path) {
  io::SafetensorsReader reader(path);
  ASSERT_TRUE(io::has_checksums(reader.metadata())) << path;
  for (const std::string& name : reader.names()) EXPECT_NO_THROW(io::load_verified(reader, name)) << path << " " << name;
}

// Offset of the first byte of a safetensors file's data section.
uint64_t data_start(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char n[8] = {};
  in.read(reinterpret_cast<char*>(n), 8);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | n[i];
  return 8 + v;
}

// Overwrites `count` floats at `offset` bytes into the data section with NaN, in place.
void overwrite_with_nan(const std::filesystem::path& path, uint64_t offset, int count) {
  const uint64_t at = data_start(path) + offset;
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(at));
  const float nan = std::nanf("");
  for (int i = 0; i < count; ++i) f.write(reinterpret_cast<const char*>(&nan), sizeof nan);
  ASSERT_TRUE(f.good()) << path;
}

// SIGKILL at 20 seeded points of a checkpoint's writing (the first or the second checkpoint, at a
// byte of its header or data, or after its rename): the folder always resumes with --resume auto,
// from the last complete checkpoint, and holds no temporary after that start; the checkpoint the
// resumed run writes loads with its checksums. About 2 s a point in a Release build; the sanitizer
// build, whose programs run several times slower, takes the first 4 points.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kKillPoints = 4;
#else
constexpr int kKillPoints = 20;
#endif
TEST(CtsrTrainFaults, KilledWhileWritingACheckpointResumesTwentyTimes) {
  const TrainFolder dir("faults-kill", 2);
  // A checkpoint's size, from a run without faults.
  auto r = dir.train({"--set", "output.dir=" + (dir / "reference").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto reference = checkpoint_path(dir / "reference" / "checkpoints", 1);
  const uint64_t size = std::filesystem::file_size(reference), header = data_start(reference);
  std::mt19937_64 rng(20261207);
  int killed_mid_file = 0, resumed_from_a_checkpoint = 0;
  for (int i = 0; i < kKillPoints; ++i) {
    const auto out = dir / ("run" + std::to_string(i));
    // Writes of a run: 1 config.yaml, 2 step 1's checkpoint, 3 step 2's.
    const int write = 2 + int(rng() % 2);
    // Every fifth point after the rename, every fifth in the header (length and JSON), the rest anywhere.
    const uint64_t bytes = i % 5 == 3 ? size : rng() % (i % 5 == 1 ? header : size);
    killed_mid_file += bytes < size;
    {
      ScopedEnv kill("CTSR_KILL_AT_WRITE", std::to_string(write) + "," + std::to_string(bytes));
      const test::Spawned p = dir.spawn({"--set", "output.dir=" + out.string()}, "killed.log");
      ASSERT_EQ(test::wait_for(p, 120), 128 + SIGKILL) << "write " << write << " byte " << bytes << ": "
                                                        << test::read_text(dir / "killed.log");
    }
    if (bytes < size) {
      EXPECT_FALSE(temporaries_under(out).empty()) << "the kill at byte " << bytes << " left no temporary";
    }
    const bool had_checkpoint = latest_checkpoint(out / "checkpoints").has_value();
    resumed_from_a_checkpoint += had_checkpoint;
    r = dir.train({"--resume", "auto", "--set", "output.dir=" + out.string(), "--set", "training.max_steps=3"});
    ASSERT_EQ(r.exit_code, 0) << "write " << write << " byte " << bytes << ": " << r.output;
    EXPECT_EQ(r.output.find("resuming from") != std::string::npos, had_checkpoint) << r.output;
    EXPECT_EQ(temporaries_under(out), std::vector<std::string>{}) << "write " << write << " byte " << bytes;
    expect_checkpoint_loads(checkpoint_path(out / "checkpoints", 3));
    std::vector<int64_t> steps;
    for (const auto& j : read_metrics(out / "metrics.jsonl")) steps.push_back(j["step"].get<int64_t>());
    EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3})) << "write " << write << " byte " << bytes;
    std::filesystem::remove_all(out);
  }
  EXPECT_GE(killed_mid_file, kKillPoints / 2);
  EXPECT_GE(resumed_from_a_checkpoint, kKillPoints / 4);  // kills in the second checkpoint resume from the first
}

// SIGTERM from outside (the run loop's own tests raise it inside a process): the step's checkpoint,
// exit status 0, the lock released, and --resume auto continues.
TEST(CtsrTrainFaults, SigtermSavesAndExitsZero) {
  const TrainFolder dir("faults-term", 100000, {}, [](DiffusionTrainConfig& c) { c.training.checkpoint_every = 0; });
  const test::Spawned p = dir.spawn({}, "log");
  const auto metrics = dir / "run" / "metrics.jsonl";
  for (int waited = 0; waited < 600 && (!std::filesystem::exists(metrics) || std::filesystem::file_size(metrics) == 0);
       ++waited)
    ::usleep(100 * 1000);
  ASSERT_TRUE(std::filesystem::exists(metrics)) << test::read_text(dir / "log");
  ::kill(p.pid, SIGTERM);
  ASSERT_EQ(test::wait_for(p, 60), 0) << test::read_text(dir / "log");
  EXPECT_NE(test::read_text(dir / "log").find("stopped by SIGTERM"), std::string::npos) << test::read_text(dir / "log");
  const auto last = latest_checkpoint(dir / "run" / "checkpoints");
  ASSERT_TRUE(last.has_value());
  expect_checkpoint_loads(*last);
  EXPECT_EQ(temporaries_under(dir / "run"), std::vector<std::string>{});
  auto r = dir.train(
      {"--resume", "auto", "--set", "training.max_steps=" + std::to_string(read_checkpoint_info(*last).state.step + 1)});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
}

// The 3rd write (step 2's checkpoint) fails as on a full disk: one clear error naming the file and
// the reason, step 1's checkpoint intact, no temporary left.
TEST(CtsrTrainFaults, AFailedCheckpointWriteKeepsThePreviousOne) {
  const TrainFolder dir("faults-enospc", 3);
  test::ToolResult r;
  {
    ScopedEnv fail("CTSR_FAIL_WRITE_AT", "3");
    r = dir.train();
  }
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const auto checkpoints = dir / "run" / "checkpoints";
  EXPECT_NE(r.output.find("ctsr_train: error: cannot write '" + checkpoint_path(checkpoints, 2).string() + "': " +
                          std::strerror(ENOSPC)),
            std::string::npos)
      << r.output;
  EXPECT_EQ(list_checkpoints(checkpoints).size(), 1u);
  expect_checkpoint_loads(checkpoint_path(checkpoints, 1));
  EXPECT_EQ(temporaries_under(dir / "run"), std::vector<std::string>{});
  r = dir.train({"--resume", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("at step 1"), std::string::npos) << r.output;
}

// A second process on an output folder is refused before it reads or writes anything there: the
// first process here is the test itself, holding the folder's lock, so the case is deterministic.
TEST(CtsrTrainFaults, ASecondProcessOnTheFolderIsRefusedAndChangesNothing) {
  const TrainFolder dir("faults-lock", 2);
  ASSERT_EQ(dir.train().exit_code, 0);
  std::ofstream(dir / "run" / "checkpoints" / ".tmp-1-0-step_00000003.safetensors") << "a killed run's";
  const auto before = snapshot(dir / "run");
  {
    io::FolderLock held(dir / "run", "output.dir");
    const std::string holder = "in use by process " + std::to_string(::getpid());
    const std::string lock = (dir / "run" / ".ctsr.lock").string();
    for (const std::vector<std::string>& extra : {std::vector<std::string>{"--resume", "auto"}, std::vector<std::string>{}}) {
      const test::ToolResult r = dir.train(extra);
      EXPECT_EQ(r.exit_code, 1) << r.output;
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
      for (const std::string& part : {std::string("ctsr_train: error: output.dir ") + (dir / "run").string(), holder, lock})
        EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in: " << r.output;
    }
    EXPECT_EQ(snapshot(dir / "run"), before) << "a refused process changed the folder";
  }
  // Released: the next start cleans up and continues.
  auto r = dir.train({"--resume", "auto", "--set", "training.max_steps=3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("removed 1 unfinished file"), std::string::npos) << r.output;
  EXPECT_EQ(temporaries_under(dir / "run"), std::vector<std::string>{});
}

TEST(CtsrTrainFaults, TrainVqaeRefusesAFolderInUse) {
  TempDir dir("faults-lock-vqae");
  write_synthetic_pairs(dir / "data", 3);
  std::ofstream(dir / "vqae.yaml") << to_yaml(tiny_vqae_config(dir));
  io::FolderLock held(dir / "run", "output.dir");
  const test::ToolResult r =
      run_tool("ctsr_train_vqae", {"--config", (dir / "vqae.yaml").string(), "--device", "cpu", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ctsr_train_vqae: error: output.dir " + (dir / "run").string() + " is in use by process " +
                          std::to_string(::getpid())),
            std::string::npos)
      << r.output;
  EXPECT_EQ(snapshot(dir / "run").size(), 0u) << "only the lock file";
}

// A checkpoint with NaN written over a few of its floats: resuming from it is an error naming the
// file, the tensor and both checksums (it resumed with exit status 0 before checksums).
TEST(CtsrTrainFaults, ADamagedCheckpointIsFoundByItsChecksum) {
  const TrainFolder dir("faults-damaged-ckpt", 2);
  ASSERT_EQ(dir.train().exit_code, 0);
  const auto last = checkpoint_path(dir / "run" / "checkpoints", 2);
  const std::string first_tensor = io::SafetensorsReader(last).names().front();
  overwrite_with_nan(last, 4, 3);
  const test::ToolResult r = dir.train({"--resume", "auto", "--set", "training.max_steps=3"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const std::string& part : {last.string(), "tensor '" + first_tensor + "' is damaged", std::string("CRC-32")})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in: " << r.output;
}

// A cache entry with NaN written over its latent: training stops at it, naming the file.
TEST(CtsrTrainFaults, ADamagedCacheEntryIsFoundByItsChecksum) {
  const TrainFolder dir("faults-damaged-cache", 2);
  const auto entry = dir / "cache" / "train" / "train_3.safetensors";
  overwrite_with_nan(entry, 0, 1);
  const test::ToolResult r = dir.train();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(entry.string() + ": tensor '"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is damaged"), std::string::npos) << r.output;
}

// A cache without its completion marker is refused with one line saying what to do, unless
// --allow-incomplete-cache (then a warning).
TEST(CtsrTrainFaults, AnIncompleteCacheIsRefusedUnlessAllowed) {
  const TrainFolder dir("faults-incomplete", 1, {.complete = false});
  test::ToolResult r = dir.train();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  for (const char* part : {"is incomplete", "complete.json", "ctsr_vqae cache", "--allow-incomplete-cache"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in: " << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "run")) << "a refused start left an output folder";
  r = dir.train({"--allow-incomplete-cache"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: data.cache_dir"), std::string::npos) << r.output;
}

// ctsr_vqae cache: a second process on the cache is refused and changes nothing; a cache whose
// build fails part way (the 2nd entry's write, as on a full disk) has no completion marker, and
// ctsr_train refuses it until the same command finishes it; an entry damaged in place (NaN over
// its latent, same size) is encoded again.
TEST(CtsrVqaeFaults, CacheLockMarkerAndDamagedEntries) {
  const ScopedEnv threads("OMP_NUM_THREADS", "1");
  TempDir dir("faults-cache");
  write_synthetic_pairs(dir / "data", 3, {0}, std::array<int64_t, 3>{16, 16, 16});
  const auto cache = dir / "cache";
  const std::vector<std::string> args = {"cache", "--weights", kVqae, "--num-groups", "2", "--pairs",
                                         (dir / "data" / "pairs.csv").string(), "--out", cache.string(),
                                         "--patch-size", "16"};
  test::ToolResult r;
  {
    ScopedEnv fail("CTSR_FAIL_WRITE_AT", "2");
    r = run_tool("ctsr_vqae", args);
  }
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(std::strerror(ENOSPC)), std::string::npos) << r.output;
  EXPECT_FALSE(cache_is_complete(cache));
  EXPECT_EQ(temporaries_under(cache), std::vector<std::string>{});
  DiffusionTrainConfig c = saving_config(dir, 1);
  c.data.cache_dir = cache.string();
  const std::string config = write_config(dir, c);
  r = run_tool("ctsr_train", {"--config", config, "--device", "cpu", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is incomplete"), std::string::npos) << r.output;

  r = run_tool("ctsr_vqae", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 pairs encoded, 1 already there"), std::string::npos) << r.output;
  EXPECT_TRUE(cache_is_complete(cache));

  {
    io::FolderLock held(cache, "cache folder");
    const auto before = snapshot(cache);
    r = run_tool("ctsr_vqae", args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("ctsr_vqae: error: cache folder " + cache.string() + " is in use by process " +
                            std::to_string(::getpid())),
              std::string::npos)
        << r.output;
    EXPECT_EQ(snapshot(cache), before);
  }

  const auto entry = cache / "train" / "case1.safetensors";
  overwrite_with_nan(entry, 0, 2);
  r = run_tool("ctsr_vqae", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 pairs encoded, 2 already there"), std::string::npos) << r.output;
  io::SafetensorsReader reader(entry);
  EXPECT_NO_THROW(io::load_verified(reader, "ld_latent"));
  EXPECT_NO_THROW(io::load_verified(reader, "hd_latent"));

  // A finished cache extended again loses its marker first: a rebuild that fails at its first
  // write (the marker itself, every entry being there) leaves none.
  {
    ScopedEnv fail("CTSR_FAIL_WRITE_AT", "1");
    r = run_tool("ctsr_vqae", args);
  }
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(cache_is_complete(cache));
}

// A resumed run's metrics.jsonl: cut in place (the same file, so an appender holding it open
// never writes to an unlinked copy) at the first line past the step, and a torn last line dropped.
TEST(MetricsLog, AResumeCutsTheFileInPlace) {
  TempDir dir("metrics-cut");
  const auto path = dir / "metrics.jsonl";
  std::ofstream(path) << "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"tier\":\"light\"}\n{\"step\":3}\n{\"step\":4,\"lo";
  std::ofstream appender(path, std::ios::app);  // another descriptor on the file, as a second writer would hold
  const auto inode = [&] {
    struct stat st {};
    ::stat(path.c_str(), &st);
    return st.st_ino;
  };
  const auto before = inode();
  {
    MetricsLog log(path, 2);
    log.write({{"step", 3}, {"loss", 0.25}});
  }
  EXPECT_EQ(inode(), before);
  EXPECT_EQ(test::read_text(path), "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"tier\":\"light\"}\n{\"loss\":0.25,\"step\":3}\n");
  {
    MetricsLog torn_only(path, 10);  // nothing past step 10: only a torn line would go
  }
  EXPECT_EQ(read_metrics(path).size(), 3u);
}

}  // namespace
}  // namespace ctsr::train
