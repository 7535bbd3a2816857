// ctsr_train_vqae as users run it: a short run, --resume auto, --print-config, --export, the
// exported weights read by the programs of the pipeline (ctsr_vqae encode, decode and cache,
// ctsr_train's data.vqae_weights, ctsr_infer's --vqae), ctsr_infer refusing the VQ-AE's
// checkpoint, and configuration errors that fail with one line naming the key and leave nothing.
#include <fstream>

#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

namespace ctsr::train {
namespace {

using test::run_tool;
using test::TempDir;

std::string write_config(const TempDir& dir, const VqaeTrainConfig& c) {
  std::ofstream(dir / "vqae.yaml") << to_yaml(c);
  return (dir / "vqae.yaml").string();
}

void expect_one_line_error(const test::ToolResult& r, const std::string& program, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(program + ": error: "), std::string::npos) << r.output;
  for (const auto& p : parts) EXPECT_NE(r.output.find(p), std::string::npos) << "'" << p << "' not in: " << r.output;
}

TEST(CtsrTrainVqae, TrainsResumesAndReports) {
  TempDir dir("ctsr-train-vqae");
  write_synthetic_pairs(dir / "data", 3);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.max_steps = 4;
  const std::string config = write_config(dir, c);
  auto r = run_tool("ctsr_train_vqae", {"--config", config, "--device", "cpu", "--set", "training.max_steps=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"n_hiddens 4", "6 volumes (4 train, 2 held out)", "kept in memory", "step 2/2",
                           "done at step 2"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in: " << r.output;
  EXPECT_TRUE(std::filesystem::exists(checkpoint_path(dir / "run" / "checkpoints", 2)));
  EXPECT_TRUE(std::filesystem::exists(dir / "run" / "vqae.safetensors"));
  expect_one_line_error(run_tool("ctsr_train_vqae", {"--config", config, "--device", "cpu"}), "ctsr_train_vqae",
                        {"already holds checkpoints", "--resume auto"});
  r = run_tool("ctsr_train_vqae", {"--config", config, "--device", "cpu", "--resume", "auto", "--set",
                                   "data.memory_limit_mb=0"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("read again for every batch"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 4/4"), std::string::npos) << r.output;
  std::vector<int64_t> steps;
  for (const auto& j : read_metrics(dir / "run" / "metrics.jsonl"))
    if (!j.contains("tier")) steps.push_back(j["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));

  // --export writes a checkpoint's weights: here the last one, which is what vqae.safetensors holds.
  r = run_tool("ctsr_train_vqae",
               {"--export", checkpoint_path(dir / "run" / "checkpoints", 4).string(), (dir / "w4.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  io::SafetensorsReader a(dir / "w4.safetensors"), b(dir / "run" / "vqae.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const auto& name : a.names()) EXPECT_TRUE(test::tensors_equal(a.load(name), b.load(name))) << name;
}

TEST(CtsrTrainVqae, PrintConfigShowsTheResolvedValues) {
  auto r = run_tool("ctsr_train_vqae", {"--print-config", "--set", "training.max_steps=7"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("max_steps: 7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("n_hiddens: 48"), std::string::npos) << r.output;
  EXPECT_EQ(vqae_train_config_from_yaml(r.output, "stdout").training.max_steps, 7);
}

// The weights a run exports work everywhere the pipeline takes a VQ-AE.
TEST(CtsrTrainVqae, ExportedWeightsServeThePipeline) {
  TempDir dir("ctsr-train-vqae-pipeline");
  // 32 x 16 x 16 voxels: multiples of the 16^3 patches that ctsr_vqae encodes with.
  write_synthetic_pairs(dir / "data", 4, {3}, std::array<int64_t, 3>{32, 16, 16});
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.max_steps = 3;
  c.validation.full_every = 3;
  auto r = run_tool("ctsr_train_vqae", {"--config", write_config(dir, c), "--device", "cpu", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("validation at step 3: ssim"), std::string::npos) << r.output;
  const std::string weights = (dir / "run" / "vqae.safetensors").string();
  const std::string hd = (dir / "data" / "hd" / "case0.nii.gz").string();

  // ctsr_vqae: encode (the file records num_groups 2; the settings file found by default says 24
  // and only serves files without a record), decode.
  r = run_tool("ctsr_vqae", {"encode", "--weights", weights, "--input", hd, "--output", (dir / "z.npy").string(),
                             "--patch-size", "16", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(io::read_npy(dir / "z.npy").shape(), (Shape{8, 4, 2, 2}));
  r = run_tool("ctsr_vqae", {"decode", "--weights", weights, "--input", (dir / "z.npy").string(), "--output",
                             (dir / "rec.nii.gz").string(), "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(io::read_volume(dir / "rec.nii.gz").data.shape(), (Shape{32, 16, 16}));

  // ctsr_vqae cache, then ctsr_train on that cache with these weights for its full validation.
  r = run_tool("ctsr_vqae", {"cache", "--weights", weights, "--pairs", (dir / "data" / "pairs.csv").string(), "--out",
                             (dir / "cache").string(), "--patch-size", "16", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 train, 1 val"), std::string::npos) << r.output;
  DiffusionTrainConfig t = small_config(dir);
  t.data.vqae_weights = weights;
  t.training.max_steps = 1;
  t.training.batch_size = 2;
  t.training.gradient_accumulation_steps = 1;
  t.validation.light_every = 0;
  t.validation.full_every = 1;
  t.validation.num_samples = 1;
  t.validation.panels = 0;
  t.diffusion.sampling_steps = 2;
  t.output.dir = (dir / "diffusion").string();
  std::ofstream(dir / "diffusion.yaml") << to_yaml(t);
  r = run_tool("ctsr_train", {"--config", (dir / "diffusion.yaml").string(), "--device", "cpu", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("validation at step 1: ssim"), std::string::npos) << r.output;

  // ctsr_infer: the diffusion checkpoint with these weights as --vqae; the VQ-AE's own checkpoint
  // offered as --model is refused, saying what it is.
  const std::string diffusion = checkpoint_path(dir / "diffusion" / "checkpoints", 1).string();
  r = run_tool("ctsr_infer", {"--model", diffusion, "--vqae", weights, "--input", hd, "--output",
                              (dir / "sr.nii.gz").string(), "--device", "cpu", "--steps", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(io::read_volume(dir / "sr.nii.gz").data.shape(), (Shape{32, 16, 16}));
  const std::string vqae_checkpoint = checkpoint_path(dir / "run" / "checkpoints", 3).string();
  expect_one_line_error(run_tool("ctsr_infer", {"--model", vqae_checkpoint, "--vqae", weights, "--input", hd,
                                                "--output", (dir / "bad.nii.gz").string(), "--device", "cpu"}),
                        "ctsr_infer", {"ctsr_train_vqae checkpoint", "vqae.safetensors", "--vqae"});
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.nii.gz"));
}

TEST(CtsrTrainVqae, ConfigurationErrorsFailBeforeAnyWork) {
  TempDir dir("ctsr-train-vqae-errors");
  write_synthetic_pairs(dir / "data", 3);
  const std::string config = write_config(dir, tiny_vqae_config(dir));
  auto train = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"--config", config, "--device", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_tool("ctsr_train_vqae", args);
  };
  const std::string p = "ctsr_train_vqae";
  expect_one_line_error(train({"--set", "training.batchsize=4"}), p, {"unknown key 'training.batchsize'"});
  expect_one_line_error(train({"--set", "training.patch_size=12"}), p, {"training.patch_size is 12", "multiple of 8"});
  expect_one_line_error(train({"--set", "model.num_groups=3"}), p, {"model.num_groups", "does not divide"});
  expect_one_line_error(train({"--set", "data.pairs=" + (dir / "none.csv").string()}), p,
                        {"data.pairs", "none.csv", "no such file"});
  expect_one_line_error(train({"--set", "model.levels=2", "--set", "training.patch_size=20"}), p,
                        {"case0.nii.gz", "smaller than training.patch_size 20"});
  expect_one_line_error(train({"--set", "data.folder=" + (dir / "data" / "hd").string()}), p,
                        {"data.pairs", "data.folder", "exactly one"});
  expect_one_line_error(run_tool(p, {"--config", (dir / "missing.yaml").string()}), p,
                        {"missing.yaml", "no such configuration file"});
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
  // A folder of volumes instead of the CSV trains (every file of it; none held out here).
  auto r = train({"--set", "data.pairs=''", "--set", "data.folder=" + (dir / "data" / "ld").string(), "--set",
                  "data.val_fraction=0", "--set", "validation.light_every=0", "--set", "training.max_steps=1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 volumes (3 train, 0 held out)"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ctsr::train
