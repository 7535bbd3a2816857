// The run loop (train/run.h) with both of its tasks, diffusion (train/trainer.h) and the VQ-AE
// (train/vqae_trainer.h), on schedules that meet: full validation every 2 steps and checkpoints
// every 4 (as full_every 500 and checkpoint_every 1000 in configs/diffusion.yaml), so a new best at
// a cadence step or at the last step must be written once, not twice; and a run stopped by SIGTERM
// and resumed must leave the same checkpoints and metrics as a straight one.
#include <csignal>
#include <fstream>
#include <map>
#include <sstream>

#include "model/vqae.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/trainer.h"
#include "train/vqae_trainer.h"

namespace ctsr::train {
namespace {

using test::TempDir;

template <class Options>
Options quiet() {
  Options o;
  o.progress = false;
  static std::ostringstream sink;
  o.log = &sink;
  return o;
}

// Six steps; full validation at 2, 4 and 6, checkpoints at 4, light validation at 3.
template <class Config>
void meeting_schedule(Config& c) {
  c.training.max_steps = 6;
  c.training.checkpoint_every = 4;
  c.training.keep_checkpoints = 10;
  c.validation.light_every = 3;
  c.validation.full_every = 2;
  c.validation.panels = 1;
}

// A cache with HD volumes and the tiny VQ-AE's latent bounds, so the full tier runs.
DiffusionTrainConfig diffusion_config(const std::filesystem::path& dir) {
  auto vqae = Vqae::load(kVqae, 2, Device::cpu());
  write_cache(dir / "cache", {.train = 5, .val = 2, .hd_volumes = true, .latent_min = vqae->code_min(),
                              .latent_max = vqae->code_max()});
  DiffusionTrainConfig c = small_config(dir);
  c.data.vqae_weights = kVqae;
  c.data.vqae_num_groups = 2;
  c.validation.num_samples = 2;
  c.validation.light_samples = 2;
  meeting_schedule(c);
  return c;
}

VqaeTrainConfig vqae_config(const std::filesystem::path& dir) {
  write_synthetic_pairs(dir / "data", 4);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.validation.num_volumes = 1;
  meeting_schedule(c);
  return c;
}

void set_output(DiffusionTrainConfig& c, const std::filesystem::path& out) { c.output.dir = out.string(); }
void set_output(VqaeTrainConfig& c, const std::filesystem::path& out) { c.output_dir = out.string(); }

// A run straight to max_steps; with stop_at > 0, one stopped by SIGTERM after that step and then
// resumed (--resume auto) to the end.
template <class Trainer, class Options, class Config>
void train(Config c, const std::filesystem::path& out, int64_t stop_at = 0) {
  set_output(c, out);
  if (stop_at > 0) {
    Options o = quiet<Options>();
    o.after_step = [stop_at](int64_t step) {
      if (step == stop_at) std::raise(SIGTERM);
    };
    Trainer first(c, o);
    const auto part = first.run();
    ASSERT_TRUE(part.interrupted);
    ASSERT_EQ(part.last_step, stop_at);
  }
  Options o = quiet<Options>();
  if (stop_at > 0) o.resume = "auto";
  Trainer trainer(c, o);
  trainer.run();
}

// metrics.jsonl without its timings.
std::vector<nlohmann::json> result_lines(const std::filesystem::path& metrics) {
  std::vector<nlohmann::json> lines = read_metrics(metrics);
  for (auto& j : lines) j.erase("samples_per_s");
  return lines;
}

void expect_same_tensors(const std::filesystem::path& a, const std::filesystem::path& b) {
  io::SafetensorsReader ra(a), rb(b);
  ASSERT_EQ(ra.names(), rb.names()) << a << " and " << b;
  for (const auto& name : ra.names()) EXPECT_TRUE(test::tensors_equal(rb.load(name), ra.load(name))) << b << ": " << name;
}

// Every checkpoint both runs wrote holds the same tensors bit for bit (and the last step's is in
// both); metrics.jsonl is the same but for timings; so are the exported weights when there are.
void expect_same_run(const std::filesystem::path& straight, const std::filesystem::path& resumed, int64_t last_step,
                     const std::string& kind) {
  ASSERT_TRUE(std::filesystem::exists(checkpoint_path(straight / "checkpoints", last_step)));
  ASSERT_TRUE(std::filesystem::exists(checkpoint_path(resumed / "checkpoints", last_step)));
  int compared = 0;
  for (const auto& [step, path] : list_checkpoints(straight / "checkpoints")) {
    const auto other = checkpoint_path(resumed / "checkpoints", step);
    if (!std::filesystem::exists(other)) continue;
    expect_same_tensors(path, other);
    EXPECT_EQ(read_checkpoint_info(other, kind).state.best_step, read_checkpoint_info(path, kind).state.best_step);
    ++compared;
  }
  EXPECT_GE(compared, 2);
  EXPECT_EQ(result_lines(resumed / "metrics.jsonl"), result_lines(straight / "metrics.jsonl"));
  if (std::filesystem::exists(straight / "vqae.safetensors"))
    expect_same_tensors(straight / "vqae.safetensors", resumed / "vqae.safetensors");
}

// DIR/straight, and DIR/resumed: stopped by SIGTERM after step 3 and resumed.
template <class Trainer, class Options, class Config>
void train_straight_and_resumed(const Config& c, const std::filesystem::path& dir) {
  train<Trainer, Options>(c, dir / "straight");
  train<Trainer, Options>(c, dir / "resumed", 3);
}

template <class Trainer, class Options, class Config>
void expect_resumed_run_equals_straight_one(const Config& c, const std::filesystem::path& dir, const std::string& kind) {
  train_straight_and_resumed<Trainer, Options>(c, dir);
  expect_same_run(dir / "straight", dir / "resumed", c.training.max_steps, kind);
}

TEST(RunLoop, DiffusionStoppedAndResumedEqualsTheStraightRun) {
  TempDir dir("run-diffusion-resume");
  expect_resumed_run_equals_straight_one<Trainer, TrainerOptions>(diffusion_config(dir.path()), dir.path(),
                                                                  kDiffusionCheckpoint);
}

TEST(RunLoop, VqaeStoppedAndResumedEqualsTheStraightRun) {
  TempDir dir("run-vqae-resume");
  expect_resumed_run_equals_straight_one<VqaeTrainer, VqaeTrainerOptions>(vqae_config(dir.path()), dir.path(),
                                                                          kVqaeCheckpoint);
}

// How often each checkpoint file is written while alive.
class CheckpointWrites {
 public:
  CheckpointWrites() : previous_(set_checkpoint_written_hook([this](const auto& path) { ++count_[path.filename()]; })) {}
  ~CheckpointWrites() { set_checkpoint_written_hook(previous_); }
  const std::map<std::filesystem::path, int>& count() const { return count_; }

 private:
  std::map<std::filesystem::path, int> count_;
  CheckpointWritten previous_;
};

// Each step's checkpoint is written once when a new best of the full tier (the first full
// validation always is one) falls on a cadence step, on the last step, or on a step stopped by
// SIGTERM; the files are those of the cadence, the best and the end.
template <class Trainer, class Options, class Config>
void expect_one_write_per_checkpoint(Config c, const std::filesystem::path& dir) {
  struct Case {
    int64_t max_steps, full_every, checkpoint_every, stop_at;
    std::vector<int64_t> saved;
  };
  const Case cases[] = {
      {6, 4, 4, 0, {4, 6}},     // the best at a cadence step
      {3, 3, 4, 0, {3}},        // the best at the last step
      {6, 4, 4, 4, {4}},        // ... and SIGTERM at it
  };
  int k = 0;
  for (const Case& x : cases) {
    c.training.max_steps = x.max_steps;
    c.validation.full_every = x.full_every;
    c.training.checkpoint_every = x.checkpoint_every;
    c.validation.light_every = 0;
    set_output(c, dir / ("run" + std::to_string(k++)));
    CheckpointWrites writes;
    Options o = quiet<Options>();
    o.after_step = [&](int64_t step) {
      if (step == x.stop_at) std::raise(SIGTERM);
    };
    Trainer trainer(c, o);
    trainer.run();
    std::map<std::filesystem::path, int> expected;
    for (int64_t step : x.saved) expected[checkpoint_path("", step).filename()] = 1;
    EXPECT_EQ(writes.count(), expected) << "max_steps " << x.max_steps << ", full_every " << x.full_every
                                        << ", checkpoint_every " << x.checkpoint_every << ", stop at " << x.stop_at;
  }
}

TEST(RunLoop, DiffusionWritesEachCheckpointOnce) {
  TempDir dir("run-diffusion-writes");
  expect_one_write_per_checkpoint<Trainer, TrainerOptions>(diffusion_config(dir.path()), dir.path());
}

TEST(RunLoop, VqaeWritesEachCheckpointOnce) {
  TempDir dir("run-vqae-writes");
  expect_one_write_per_checkpoint<VqaeTrainer, VqaeTrainerOptions>(vqae_config(dir.path()), dir.path());
}

// Not a check: with CTSR_RUN_RECORD_DIR set, leaves both tasks' straight and stopped-and-resumed
// runs there (fixed paths, so the checkpoints' bytes can be compared between builds), with each
// task's configuration as YAML for its program.
TEST(RunLoop, RecordsRunsForComparisonBetweenBuilds) {
  const char* record = std::getenv("CTSR_RUN_RECORD_DIR");
  if (!record) GTEST_SKIP() << "CTSR_RUN_RECORD_DIR is not set";
  const std::filesystem::path base(record);
  std::filesystem::remove_all(base);
  auto program_config = [](auto c, const std::filesystem::path& dir) {
    set_output(c, dir / "program");
    std::ofstream(dir / "config.yaml") << to_yaml(c);
  };
  DiffusionTrainConfig diffusion = diffusion_config(base / "diffusion");
  train_straight_and_resumed<Trainer, TrainerOptions>(diffusion, base / "diffusion");
  program_config(diffusion, base / "diffusion");
  VqaeTrainConfig vqae = vqae_config(base / "vqae");
  train_straight_and_resumed<VqaeTrainer, VqaeTrainerOptions>(vqae, base / "vqae");
  program_config(vqae, base / "vqae");
}

}  // namespace
}  // namespace ctsr::train
