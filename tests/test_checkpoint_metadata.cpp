// A training checkpoint's metadata (train/checkpoint.h) read from a hand-made file: every field
// that is missing or malformed is one ctsr error naming the file, the key and the value. The
// fuzzing harness checkpoint_info found rng.seed read with std::stoull, whose own exceptions
// ("map::at", "stoull") reached the programs' users instead (issue 22).
#include <map>

#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "train/checkpoint.h"

namespace ctsr::test {
namespace {

std::map<std::string, std::string> valid_metadata() {
  return {{"format", "ctsr-train-checkpoint/1"}, {"kind", "diffusion"}, {"state.step", "7"},
          {"state.optimizer_updates", "7"},      {"state.ema_updates", "7"},  {"state.skipped_steps", "0"},
          {"state.consecutive_skips", "0"},      {"state.best_ssim", "-inf"}, {"state.best_step", "-1"},
          {"rng.seed", "18446744073709551615"},  {"config", "seed: 1\n"}};
}

TEST(CheckpointMetadata, EveryBadSeedIsOneErrorNamingFileKeyAndValue) {
  TempDir dir("ckpt-meta");
  const auto path = dir / "step_00000007.safetensors";
  io::write_safetensors(path, {}, valid_metadata());
  const train::CheckpointInfo info = train::read_checkpoint_info(path);
  EXPECT_EQ(info.seed, UINT64_MAX);
  EXPECT_EQ(info.state.step, 7);
  for (const std::string seed : {"", "abc", "-1", "+1", "18446744073709551616", "99999999999999999999", "1e3", " 1"}) {
    SCOPED_TRACE(seed);
    auto meta = valid_metadata();
    meta["rng.seed"] = seed;
    io::write_safetensors(path, {}, meta);
    expect_error_mentions([&] { train::read_checkpoint_info(path); },
                          {"step_00000007.safetensors", "'rng.seed' is '" + seed + "'", "expected an integer"});
  }
  auto meta = valid_metadata();
  meta.erase("rng.seed");
  io::write_safetensors(path, {}, meta);
  expect_error_mentions([&] { train::read_checkpoint_info(path); }, {"step_00000007.safetensors", "no 'rng.seed'"});
}

TEST(CheckpointMetadata, AStepNumberTooLongForInt64IsNotACheckpointName) {
  TempDir dir("ckpt-meta");
  io::write_safetensors(dir / "step_00000007.safetensors", {}, valid_metadata());
  io::write_safetensors(dir / "step_99999999999999999999999.safetensors", {}, valid_metadata());
  const auto listed = train::list_checkpoints(dir.path());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].first, 7);
}

}  // namespace
}  // namespace ctsr::test
