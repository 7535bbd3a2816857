// ctsr_train as users run it: a short run, --resume auto, --print-config, and configuration
// errors that fail before any work with one line naming the key and no output folder left.
#include <fstream>

#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

namespace ctsr::train {
namespace {

using test::run_tool;
using test::TempDir;

// small_config as a YAML file: the resolved dump is itself a valid configuration.
std::filesystem::path write_config(const TempDir& dir, const DiffusionTrainConfig& c) {
  std::ofstream(dir / "config.yaml") << to_yaml(c);
  return dir / "config.yaml";
}

void expect_one_line_error(const test::ToolResult& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("ctsr_train: error: "), std::string::npos) << r.output;
  for (const auto& p : parts) EXPECT_NE(r.output.find(p), std::string::npos) << "'" << p << "' not in: " << r.output;
}

TEST(CtsrTrain, TrainsResumesAndReports) {
  TempDir dir("ctsr-train");
  write_cache(dir / "cache", {});
  DiffusionTrainConfig c = small_config(dir);
  c.training.max_steps = 4;
  const std::string config = write_config(dir, c).string();
  auto r = run_tool("ctsr_train", {"--config", config, "--device", "cpu", "--set", "training.max_steps=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 2/2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("done at step 2"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(checkpoint_path(dir / "run" / "checkpoints", 2)));
  // A second run into the same folder must say how to continue instead of overwriting.
  expect_one_line_error(run_tool("ctsr_train", {"--config", config, "--device", "cpu"}),
                        {"already holds checkpoints", "--resume auto"});
  r = run_tool("ctsr_train", {"--config", config, "--device", "cpu", "--resume", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 4/4"), std::string::npos) << r.output;
  std::vector<int64_t> steps;
  for (const auto& j : read_metrics(dir / "run" / "metrics.jsonl"))
    if (!j.contains("tier")) steps.push_back(j["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
}

// training.precision=bf16 (mixed precision) from the command line, on the CPU path and on the
// executor (whose convolutions then run on the tensor-core kernels); the run's config.yaml
// records it, and the production default is bf16.
TEST(CtsrTrain, TrainsInBf16OnTheCpuAndTheExecutor) {
#if defined(__SANITIZE_ADDRESS__)
  const std::vector<std::string> devices{"cpu"};  // the executor's steps take a minute under ASan
#else
  const std::vector<std::string> devices{"cpu", "cuda_on_cpu"};
#endif
  for (const std::string& device : devices) {
    TempDir dir("ctsr-train-bf16");
    write_cache(dir / "cache", {});
    DiffusionTrainConfig c = small_config(dir);
    c.training.max_steps = 2;
    const std::string config = write_config(dir, c).string();
    auto r = run_tool("ctsr_train", {"--config", config, "--device", device, "--set", "training.precision=bf16"});
    ASSERT_EQ(r.exit_code, 0) << device << ": " << r.output;
    EXPECT_NE(r.output.find("done at step 2"), std::string::npos) << r.output;
    EXPECT_EQ(load_train_config(dir / "run" / "config.yaml").training.precision, "bf16") << device;
    EXPECT_TRUE(std::filesystem::exists(checkpoint_path(dir / "run" / "checkpoints", 2))) << device;
  }
  EXPECT_EQ(DiffusionTrainConfig{}.training.precision, "bf16");
}

TEST(CtsrTrain, PrintConfigShowsTheResolvedValues) {
  auto r = run_tool("ctsr_train", {"--print-config", "--set", "training.max_steps=7"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("max_steps: 7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model_channels: 128"), std::string::npos) << r.output;
  const DiffusionTrainConfig back = train_config_from_yaml(r.output, "stdout");
  EXPECT_EQ(back.training.max_steps, 7);
}

TEST(CtsrTrain, ConfigurationErrorsFailBeforeAnyWork) {
  TempDir dir("ctsr-train-errors");
  write_cache(dir / "cache", {});
  DiffusionTrainConfig c = small_config(dir);
  const std::string config = write_config(dir, c).string();
  auto train = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"--config", config, "--device", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_tool("ctsr_train", args);
  };
  expect_one_line_error(train({"--set", "training.batch_size=3"}),
                        {"training.batch_size 3", "not divisible", "training.gradient_accumulation_steps 2"});
  expect_one_line_error(train({"--set", "training.batchsize=4"}), {"unknown key 'training.batchsize'"});
  expect_one_line_error(train({"--set", "training.precision=fp16"}), {"training.precision", "'fp16'", "bf16 or fp32"});
  expect_one_line_error(train({"--set", "model.dropout=high"}), {"'model.dropout' is 'high'", "a number"});
  expect_one_line_error(train({"--set", "data.cache_dir=" + (dir / "none").string()}), {"none", "data.cache_dir"});
  expect_one_line_error(train({"--set", "validation.full_every=3", "--set", "data.vqae_weights=" + (dir / "w.ckpt").string()}),
                        {"data.vqae_weights", "w.ckpt", "no such file"});
  expect_one_line_error(train({"--resume", (dir / "nope.safetensors").string()}), {"--resume", "no such checkpoint"});
  expect_one_line_error(run_tool("ctsr_train", {"--config", (dir / "missing.yaml").string()}),
                        {"missing.yaml", "no such configuration file"});
  EXPECT_FALSE(std::filesystem::exists(dir / "run")) << "a failed start left an output folder";
  EXPECT_EQ(run_tool("ctsr_train", {"--no-such-flag"}).exit_code, 2);
}

}  // namespace
}  // namespace ctsr::train
