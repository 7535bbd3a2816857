// ctsr_train's configuration (train/config.h): the shipped files, errors that name the key,
// overrides, the resolved dump, and the learning-rate schedule.
#include <cmath>
#include <fstream>

#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "train/config.h"

namespace ctsr::train {
namespace {

using test::expect_error_mentions;
using test::TempDir;

const std::string kRepo = std::string(CTSR_TEST_DATA_DIR) + "/../../";

std::filesystem::path write_file(const TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name) << text;
  return dir / name;
}

// configs/diffusion.yaml lists every key at its production value: it must say exactly what the
// defaults are (the spec's network, the training settings).
TEST(DiffusionTrainConfig, ProductionFileIsTheDefaults) {
  const DiffusionTrainConfig file = load_train_config(kRepo + "configs/diffusion.yaml");
  EXPECT_EQ(to_yaml(file), to_yaml(DiffusionTrainConfig{}));
  EXPECT_EQ(file.model.model_channels, 128);
  EXPECT_EQ(file.model.channel_mult, (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(file.model.attention_levels, (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(file.training.batch_size, 32);
  EXPECT_EQ(file.training.gradient_accumulation_steps, 2);
  EXPECT_EQ(file.training.learning_rate, 2e-4);
  EXPECT_EQ(file.training.warmup_ratio, 0.06);
  EXPECT_EQ(file.optimizer.weight_decay, 0.01);
  EXPECT_EQ(file.ema.decay, 0.9999);
  EXPECT_EQ(file.validation.light_every, 50);
  EXPECT_EQ(file.validation.full_every, 500);
  EXPECT_EQ(file.validation.num_samples, 32);
  EXPECT_EQ(file.validation.data_range, 2.0);
  EXPECT_EQ(file.model.dropout, 0.1);
  // Every key of the schema appears in the file (so the file documents all of them).
  std::ifstream in(kRepo + "configs/diffusion.yaml");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string& key : train_config_keys()) {
    const std::string leaf = key.substr(key.rfind('.') + 1);
    EXPECT_NE(text.find(leaf + ":"), std::string::npos) << key << " is not in configs/diffusion.yaml";
  }
}

TEST(DiffusionTrainConfig, TinyFileLoadsAndIsSmall) {
  const DiffusionTrainConfig tiny = load_train_config(kRepo + "configs/tiny.yaml");
  EXPECT_LT(tiny.model.model_channels, 128);
  EXPECT_EQ(tiny.micro_batch_size() * tiny.training.gradient_accumulation_steps, tiny.training.batch_size);
  EXPECT_EQ(tiny.optimizer.beta2, 0.999);  // unlisted keys keep the production values
}

TEST(DiffusionTrainConfig, ResolvedYamlReadsBackTheSame) {
  DiffusionTrainConfig c;
  apply_override(c, "training.learning_rate=3.3e-5");
  apply_override(c, "diffusion.beta_schedule=cosine");
  apply_override(c, "model.attention_levels=[true, false, false, true]");
  apply_override(c, "seed=77");
  const std::string yaml = to_yaml(c);
  const DiffusionTrainConfig back = train_config_from_yaml(yaml, "test");
  EXPECT_EQ(to_yaml(back), yaml);
  EXPECT_EQ(back.training.learning_rate, 3.3e-5);
  EXPECT_EQ(back.diffusion.beta_schedule, BetaSchedule::cosine);
  EXPECT_EQ(back.model.attention_levels, (std::vector<bool>{true, false, false, true}));
  EXPECT_EQ(back.seed, 77u);
}

TEST(DiffusionTrainConfig, ErrorsNameTheFileTheKeyAndTheValue) {
  TempDir dir("train-config");
  expect_error_mentions([&] { load_train_config(write_file(dir, "a.yaml", "training:\n  batchsize: 8\n")); },
                        {"a.yaml", "unknown key 'training.batchsize'", "did you mean 'training.batch_size'"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "b.yaml", "training:\n  batch_size: eight\n")); },
                        {"b.yaml", "'training.batch_size' is 'eight'", "expected an integer"});
  expect_error_mentions(
      [&] { load_train_config(write_file(dir, "c.yaml", "training:\n  batch_size: 30\n  gradient_accumulation_steps: 4\n")); },
      {"c.yaml", "training.batch_size 30", "not divisible", "training.gradient_accumulation_steps 4"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "d.yaml", "model:\n  channel_mult: 4\n")); },
                        {"d.yaml", "'model.channel_mult' is '4'", "a list of integers"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "e.yaml", "diffusion:\n  sampler: euler\n")); },
                        {"e.yaml", "diffusion.sampler", "euler", "ddim"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "f.yaml", "model:\n  norm_groups: 24\n")); },
                        {"f.yaml", "model.norm_groups 24", "128"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "g.yaml", "zoom: 3\n")); },
                        {"g.yaml", "unknown key 'zoom'"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "h.yaml", "model: [1, 2\n")); },
                        {"h.yaml", "not valid YAML"});
  expect_error_mentions([&] { load_train_config(dir / "missing.yaml"); }, {"missing.yaml", "no such configuration"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "i.yaml", "validation:\n  full_every: 5\ndata:\n  vqae_weights: ''\n")); },
                        {"data.vqae_weights", "validation.full_every is 5"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "j.yaml", "model:\n  in_channels: 12\n")); },
                        {"model.in_channels 12", "model.out_channels 8"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "k.yaml", "kernels:\n  conv: winograd\n")); },
                        {"kernels.conv", "winograd", "custom or cudnn"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "l.yaml", "training:\n  lr_scheduler: step\n")); },
                        {"training.lr_scheduler", "'step'", "linear, cosine or constant"});
  DiffusionTrainConfig c;
  expect_error_mentions([&] { apply_override(c, "training.max_steps"); }, {"--set training.max_steps", "key=value"});
  expect_error_mentions([&] { apply_override(c, "training.max_step=5"); },
                        {"--set training.max_step=5", "did you mean 'training.max_steps'"});
  expect_error_mentions([&] { apply_override(c, "ema.warmup=maybe"); }, {"'ema.warmup' is 'maybe'", "true or false"});
}

// Regressions of issue 22 (on 1867c3e): a key given twice silently took the last value, and a
// file nested too deeply was reported as "bad file".
TEST(DiffusionTrainConfig, RepeatedKeysAndDeepNestingAreRefusedNamingThePlaces) {
  TempDir dir("train-config");
  expect_error_mentions(
      [&] { load_train_config(write_file(dir, "twice.yaml", "training:\n  max_steps: 10\n  batch_size: 2\n  max_steps: 20\n")); },
      {"twice.yaml", "key 'max_steps' appears twice in one mapping", "line 2, column 3", "line 4, column 3"});
  expect_error_mentions(
      [&] { load_train_config(write_file(dir, "sections.yaml", "model:\n  dropout: 0.1\nema:\n  decay: 0.9\nmodel:\n  dropout: 0.2\n")); },
      {"sections.yaml", "key 'model' appears twice", "line 1, column 1", "line 5, column 1"});
  expect_error_mentions(
      [&] { load_train_config(write_file(dir, "dotted.yaml", "training:\n  max_steps: 10\ntraining.max_steps: 20\n")); },
      {"dotted.yaml", "'training.max_steps' is given twice", "line 2, column 3", "line 3, column 1"});
  expect_error_mentions([&] { load_train_config(write_file(dir, "key.yaml", "[a, b]: 1\n")); },
                        {"key.yaml", "a mapping key at line 1, column 1 is a sequence", "expected a name"});
  std::string deep = "model:\n  dropout: ";
  deep += std::string(5000, '[') + std::string(5000, ']') + "\n";
  const std::string message = test::error_message([&] { load_train_config(write_file(dir, "deep.yaml", deep)); });
  test::expect_contains(message, "deep.yaml");
  test::expect_contains(message, "nests deeper than");
  EXPECT_EQ(message.find("bad file"), std::string::npos) << message;
  // Overrides go through the same loader.
  DiffusionTrainConfig c;
  expect_error_mentions([&] { apply_override(c, "model.channel_mult={a: 1, a: 2}"); },
                        {"--set model.channel_mult={a: 1, a: 2}", "key 'a' appears twice"});
}

TEST(DiffusionTrainConfig, OverridesSetValuesOfEveryType) {
  DiffusionTrainConfig c;
  apply_override(c, "training.batch_size=12");
  apply_override(c, "training.max_grad_norm=0.5");
  apply_override(c, "ema.warmup=false");
  apply_override(c, "data.cache_dir=/data/latents");
  apply_override(c, "model.channel_mult=[1, 3]");
  apply_override(c, "model.attention_levels=[false, true]");
  apply_override(c, "diffusion.prediction_type=v");
  EXPECT_EQ(c.training.batch_size, 12);
  EXPECT_EQ(c.training.max_grad_norm, 0.5);
  EXPECT_FALSE(c.ema.warmup);
  EXPECT_EQ(c.data.cache_dir, "/data/latents");
  EXPECT_EQ(c.model.channel_mult, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c.diffusion.prediction_type, PredictionType::v);
  validate(c);
}

TEST(DiffusionTrainConfig, LearningRateWarmsUpThenDecays) {
  DiffusionTrainConfig c;
  c.training.max_steps = 100;
  c.training.warmup_ratio = 0.1;  // 10 warm-up steps
  c.training.learning_rate = 1e-3;
  EXPECT_EQ(c.warmup_steps(), 10);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 4), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 9), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 10), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 55), 0.5e-3);
  EXPECT_NEAR(learning_rate_at(c, 99), 1e-3 / 90, 1e-15);
  c.training.lr_scheduler = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 10), 1e-3);
  EXPECT_NEAR(learning_rate_at(c, 55), 0.5e-3, 1e-15);
  EXPECT_LT(learning_rate_at(c, 99), learning_rate_at(c, 98));
  c.training.lr_scheduler = "constant";
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 99), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 3), 4e-4);
  c.training.warmup_ratio = 0;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 1e-3);
}

}  // namespace
}  // namespace ctsr::train
