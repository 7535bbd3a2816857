// RED-CNN's training (train/redcnn_trainer.h) on synthetic pairs: the loss falls and full
// validation beats nothing it should not (the input's own scores are reported beside); a resumed
// run equals the uninterrupted one bit for bit; the patches are the volumes' slices through the
// drawn transform, from training pairs only; the weights file reads back as the trained network
// (model/redcnn.h) and --export writes the same; restore_volume does not depend on its slab; the
// configuration file and every error before work; the program as users run it.
#include <csignal>
#include <fstream>
#include <set>
#include <sstream>

#include "kernels/activation.h"
#include "kernels/metrics.h"
#include "kernels/resample.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/checkpoint.h"
#include "train/redcnn_config.h"
#include "train/redcnn_trainer.h"

namespace ctsr::train {
namespace {

using test::expect_error_mentions;
using test::TempDir;

RedCnnTrainerOptions quiet() {
  RedCnnTrainerOptions o;
  o.progress = false;
  static std::ostringstream sink;
  o.log = &sink;
  return o;
}

// 4 channels, 3 x 3 kernels (slices of at least 11), batch 3 of 11 x 11 patches.
RedCnnTrainConfig tiny_config(const TempDir& dir) {
  RedCnnTrainConfig c;
  c.seed = 5;
  c.model.channels = 4;
  c.model.kernel = 3;
  c.data.pairs = (dir / "data" / "pairs.csv").string();
  c.training.patch_size = 11;
  c.training.batch_size = 3;
  c.training.max_steps = 6;
  c.training.learning_rate = 3e-3;
  c.training.lr_scheduler = "constant";
  c.training.log_every = 1;
  c.training.checkpoint_every = 0;
  c.validation.light_every = 3;
  c.validation.light_patches = 4;
  c.validation.full_every = 0;
  c.validation.num_volumes = 2;
  c.output_dir = (dir / "run").string();
  return c;
}

std::vector<Tensor> weights(RedCnn& model) {
  std::vector<Tensor> out;
  for (Parameter* p : model.parameters()) out.push_back(p->value.clone());
  return out;
}

TEST(RedCnnTrainer, ResumedRunEqualsTheUninterruptedOne) {
  TempDir dir("redcnn-trainer-resume");
  write_synthetic_pairs(dir / "data", 4);
  RedCnnTrainConfig c = tiny_config(dir);
  c.training.checkpoint_every = 2;
  c.output_dir = (dir / "straight").string();
  RedCnnTrainer straight(c, quiet());
  const RunSummary all = straight.run();
  ASSERT_EQ(all.losses.size(), 6u);

  c.output_dir = (dir / "resumed").string();
  RunSummary first_part;
  {
    RedCnnTrainerOptions o = quiet();
    o.after_step = [](int64_t step) {
      if (step == 3) std::raise(SIGTERM);
    };
    RedCnnTrainer trainer(c, o);
    first_part = trainer.run();
  }
  EXPECT_TRUE(first_part.interrupted);
  EXPECT_EQ(first_part.last_step, 3);
  RedCnnTrainerOptions o = quiet();
  o.resume = "auto";
  RedCnnTrainer resumed(c, o);
  EXPECT_EQ(resumed.state().step, 3);
  const RunSummary rest = resumed.run();
  ASSERT_EQ(rest.losses.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(first_part.losses[k], all.losses[k]) << "step " << k + 1;
    EXPECT_EQ(rest.losses[k], all.losses[3 + k]) << "step " << k + 4;
  }
  const auto a = weights(straight.model()), b = weights(resumed.model());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::tensors_equal(b[i], a[i])) << "parameter " << i;
  EXPECT_EQ(training_lines(dir / "resumed" / "metrics.jsonl"), training_lines(dir / "straight" / "metrics.jsonl"));
  EXPECT_EQ(resumed.state().optimizer_updates, 6);
  io::SafetensorsReader wa(dir / "straight" / "redcnn.safetensors"), wb(dir / "resumed" / "redcnn.safetensors");
  ASSERT_EQ(wa.names(), wb.names());
  for (const auto& name : wa.names()) EXPECT_TRUE(test::tensors_equal(wb.load(name), wa.load(name))) << name;
}

TEST(RedCnnTrainer, LossFallsAndTheOutputsAreWritten) {
  TempDir dir("redcnn-trainer-learns");
  write_synthetic_pairs(dir / "data", 5, {0, 3});
  RedCnnTrainConfig c = tiny_config(dir);
  c.training.max_steps = 40;
  c.training.checkpoint_every = 20;
  c.training.keep_checkpoints = 1;
  c.training.log_every = 10;
  c.validation.light_every = 20;
  c.validation.full_every = 40;
  RedCnnTrainer trainer(c, quiet());
  EXPECT_EQ(trainer.train_pairs(), 3);
  EXPECT_EQ(trainer.held_out_pairs(), 2);
  const RunSummary s = trainer.run();
  ASSERT_EQ(s.losses.size(), 40u);
  double first = 0, last = 0;
  for (int k = 0; k < 5; ++k) first += s.losses[size_t(k)] / 5, last += s.losses[size_t(35 + k)] / 5;
  std::printf("mean loss of the first 5 steps %.5f, of the last 5 %.5f\n", first, last);
  EXPECT_LT(last, 0.5 * first);

  // metrics.jsonl: the training lines (loss), the light tier (loss, psnr), the full tier.
  std::ifstream in(dir / "run" / "metrics.jsonl");
  int light = 0, full = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("tier")) continue;
    if (j["tier"] == "light") {
      ++light;
      const double mse = j["loss"].get<double>();
      EXPECT_NEAR(j["psnr_redcnn"].get<double>(), 10 * std::log10(4.0 / mse), 1e-9);
    } else {
      ++full;
      EXPECT_EQ(j["volumes"], 2);
      for (const char* key : {"ssim_redcnn", "psnr_redcnn", "ssim_input", "psnr_input"}) EXPECT_TRUE(j.contains(key)) << key;
      // The full tier recomputed: the held-out pairs restored whole and scored against HD.
      double ssim_sum = 0, psnr_sum = 0;
      for (const char* id : {"case0", "case3"}) {
        const Tensor ld = io::read_npy(dir / "data" / "ld" / (std::string(id) + ".npy"));
        const Tensor hd = io::read_volume_unit(dir / "data" / "hd" / (std::string(id) + ".nii.gz"), io::HuWindow{}).data;
        const Shape batch{1, hd.dim(0), hd.dim(1), hd.dim(2)};
        const Tensor restored = clamp(restore_volume(trainer.model(), ld), -1.0, 1.0).reshape(batch);
        ssim_sum += ssim(restored, hd.reshape(batch)).per_sample.to_vector<float>()[0] / 2;
        psnr_sum += psnr(restored, hd.reshape(batch)).psnr.to_vector<float>()[0] / 2;
      }
      EXPECT_NEAR(j["ssim_redcnn"].get<double>(), ssim_sum, 1e-6);
      EXPECT_NEAR(j["psnr_redcnn"].get<double>(), psnr_sum, 1e-4);
    }
  }
  EXPECT_EQ(light, 2);
  EXPECT_EQ(full, 1);
  EXPECT_TRUE(std::filesystem::exists(dir / "run" / "images" / "step_00000040_case0_slices.png"));
  EXPECT_TRUE(std::filesystem::exists(checkpoint_path(dir / "run" / "checkpoints", 40)));
  EXPECT_FALSE(std::filesystem::exists(checkpoint_path(dir / "run" / "checkpoints", 20)));  // keep 1, best is 40

  // The weights file is the trained network, with its window; --export of the last checkpoint
  // writes the same tensors.
  const LoadedRedCnn loaded = load_redcnn_weights(dir / "run" / "redcnn.safetensors");
  EXPECT_EQ(loaded.net->config().channels, 4);
  EXPECT_EQ(loaded.net->config().kernel, 3);
  EXPECT_EQ(loaded.window.lo, -200.0f);
  EXPECT_EQ(loaded.window.hi, 200.0f);
  EXPECT_EQ(loaded.metadata.at("step"), "40");
  const auto trained = weights(trainer.model()), read = weights(*loaded.net);
  for (size_t i = 0; i < trained.size(); ++i) EXPECT_TRUE(test::tensors_equal(read[i], trained[i])) << i;
  export_redcnn_checkpoint(checkpoint_path(dir / "run" / "checkpoints", 40), dir / "exported.safetensors");
  io::SafetensorsReader x(dir / "exported.safetensors"), y(dir / "run" / "redcnn.safetensors");
  ASSERT_EQ(x.names(), y.names());
  for (const auto& name : x.names()) EXPECT_TRUE(test::tensors_equal(x.load(name), y.load(name))) << name;
  EXPECT_EQ(x.metadata(), y.metadata());
}

TEST(RedCnnTrainer, PatchesAreSlicesOfTrainingPairsThroughTheirTransform) {
  TempDir dir("redcnn-trainer-patches");
  write_synthetic_pairs(dir / "data", 5, {1});
  RedCnnTrainConfig c = tiny_config(dir);
  RedCnnTrainer trainer(c, quiet());
  std::set<int> transforms;
  std::set<int64_t> pairs;
  for (int64_t s = 0; s < 20; ++s)
    for (int64_t g = 0; g < 3; ++g) {
      const SlicePatch p = trainer.training_patch(s, g);
      EXPECT_EQ(p, trainer.training_patch(s, g));  // a pure function of (seed, step, patch)
      EXPECT_NE(p.pair, 1) << "the held-out pair";
      const auto shape = synthetic_shape(p.pair);
      EXPECT_LT(p.slice, shape[0]);
      EXPECT_LE(p.row + 11, shape[1]);
      EXPECT_LE(p.col + 11, shape[2]);
      transforms.insert(p.transform);
      pairs.insert(p.pair);
    }
  EXPECT_EQ(transforms.size(), 8u);
  EXPECT_EQ(pairs.size(), 4u);
  // Worked by hand: transform 5 (transpose, then flip W) maps out[i][j] to patch[j][10 - i].
  SlicePatch p{2, 3, 4, 5, 5};
  const auto [ld, hd] = trainer.cut({p, SlicePatch{2, 3, 4, 5, 0}});
  const Tensor hd_volume = io::read_volume_unit(dir / "data" / "hd" / "case2.nii.gz", io::HuWindow{}).data;
  const Tensor ld_volume = io::read_npy(dir / "data" / "ld" / "case2.npy");
  const int64_t H = hd_volume.dim(1), W = hd_volume.dim(2);
  for (int64_t i = 0; i < 11; ++i)
    for (int64_t j = 0; j < 11; ++j) {
      const int64_t plain = (3 * H + 4 + i) * W + 5 + j, moved = (3 * H + 4 + j) * W + 5 + (10 - i);
      ASSERT_EQ(hd.data<float>()[121 + i * 11 + j], hd_volume.data<float>()[plain]);
      ASSERT_EQ(ld.data<float>()[121 + i * 11 + j], ld_volume.data<float>()[plain]);
      ASSERT_EQ(hd.data<float>()[i * 11 + j], hd_volume.data<float>()[moved]);
      ASSERT_EQ(ld.data<float>()[i * 11 + j], ld_volume.data<float>()[moved]);
    }
  EXPECT_EQ(ld.shape(), Shape({2, 1, 11, 11, 1}));
}

// The refiner (model.in_channels 2): each patch's channel 1 is the pair's guide volume cut where
// its LD is; a run started from one-input weights computes, before its first step, exactly what
// those weights do; it trains, writes a two-input weights file that names where it started, and
// the full tier restores with the guide. Missing or misshapen guides are named before work.
TEST(RedCnnTrainer, RefinerCutsTheGuideBesideTheInputAndStartsFromInitWeights) {
  TempDir dir("redcnn-trainer-refiner");
  write_synthetic_pairs(dir / "data", 4, {1});
  std::filesystem::create_directories(dir / "guide");
  auto guide_of = [](int64_t i) { return synthetic_volume(20 + i, synthetic_shape(i)); };
  for (int64_t i = 0; i < 4; ++i) {
    io::Volume v;
    v.data = io::unit_to_hu(guide_of(i), io::HuWindow{});
    io::write_volume(dir / "guide" / ("case" + std::to_string(i) + ".nii.gz"), v);
  }
  LayerOptions layer;
  layer.seed = 9;
  RedCnn plain({4, 3}, layer);
  write_redcnn_weights(dir / "plain.safetensors", plain, io::HuWindow{});

  RedCnnTrainConfig c = tiny_config(dir);
  c.model.in_channels = 2;
  c.data.guide_dir = (dir / "guide").string();
  c.training.init_weights = (dir / "plain.safetensors").string();
  c.validation.full_every = 6;
  c.validation.panels = 0;
  RedCnnTrainer trainer(c, quiet());
  const SlicePatch p{2, 3, 4, 5, 0};
  const auto [x, hd] = trainer.cut({p});
  ASSERT_EQ(x.shape(), Shape({1, 1, 11, 11, 2}));
  const Tensor ld_volume = io::read_npy(dir / "data" / "ld" / "case2.npy");
  const Tensor guide_volume = io::read_volume_unit(dir / "guide" / "case2.nii.gz", io::HuWindow{}).data;
  const int64_t H = ld_volume.dim(1), W = ld_volume.dim(2);
  for (int64_t i = 0; i < 11; ++i)
    for (int64_t j = 0; j < 11; ++j) {
      const int64_t at = (3 * H + 4 + i) * W + 5 + j;
      ASSERT_EQ(x.data<float>()[(i * 11 + j) * 2], ld_volume.data<float>()[at]);
      ASSERT_EQ(x.data<float>()[(i * 11 + j) * 2 + 1], guide_volume.data<float>()[at]);
    }
  EXPECT_LT(test::relative_l2(guide_volume, guide_of(2)), 1e-4);  // the guide read through the window
  EXPECT_TRUE(test::tensors_equal(trainer.model().forward(x), plain.forward(split_channels(x, 1).first)));

  const RunSummary s = trainer.run();
  ASSERT_EQ(s.losses.size(), 6u);
  for (double loss : s.losses) EXPECT_TRUE(std::isfinite(loss));
  const LoadedRedCnn loaded = load_redcnn_weights(dir / "run" / "redcnn.safetensors");
  EXPECT_EQ(loaded.net->config().in_channels, 2);
  EXPECT_EQ(loaded.metadata.at("init_weights"), c.training.init_weights);
  EXPECT_FALSE(test::tensors_equal(loaded.net->forward(x), plain.forward(split_channels(x, 1).first)));
  std::ifstream in(dir / "run" / "metrics.jsonl");
  int full = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("tier") || j["tier"] != "full") continue;
    ++full;
    const Tensor ld = io::read_npy(dir / "data" / "ld" / "case1.npy");
    const Tensor hd1 = io::read_volume_unit(dir / "data" / "hd" / "case1.nii.gz", io::HuWindow{}).data;
    const Tensor guide = io::read_volume_unit(dir / "guide" / "case1.nii.gz", io::HuWindow{}).data;
    const Shape batch{1, hd1.dim(0), hd1.dim(1), hd1.dim(2)};
    const Tensor restored = clamp(restore_volume(trainer.model(), ld, guide), -1.0, 1.0).reshape(batch);
    EXPECT_NEAR(j["psnr_redcnn"].get<double>(), psnr(restored, hd1.reshape(batch)).psnr.to_vector<float>()[0], 1e-4);
  }
  EXPECT_EQ(full, 1);

  // Before work: a guide folder without two inputs, two inputs without one, a missing guide, a
  // guide of another shape, init weights of another window.
  RedCnnTrainConfig bad = c;
  bad.model.in_channels = 1;
  expect_error_mentions([&] { validate(bad); }, {"model.in_channels is 1", "data.guide_dir"});
  bad = c;
  bad.data.guide_dir = "";
  expect_error_mentions([&] { validate(bad); }, {"model.in_channels is 2", "data.guide_dir"});
  bad = c;
  bad.output_dir = (dir / "other").string();
  io::Volume wrong;
  wrong.data = Tensor::zeros({3, 17, 17});
  io::write_volume(dir / "guide" / "case3.nii.gz", wrong);
  expect_error_mentions([&] { RedCnnTrainer(bad, quiet()); }, {"case3.nii.gz", "[3, 17, 17]", "its pair's shape"});
  std::filesystem::remove(dir / "guide" / "case3.nii.gz");
  expect_error_mentions([&] { RedCnnTrainer(bad, quiet()); }, {"data.guide_dir", "case3.nii.gz", "pair case3"});
  write_redcnn_weights(dir / "plain.safetensors", plain, io::HuWindow{-100, 300});
  bad.data.guide_dir = "";
  bad.model.in_channels = 1;
  expect_error_mentions([&] { RedCnnTrainer(bad, quiet()); }, {"training.init_weights", "-100,300", "data.hu_window"});
}

TEST(RedCnnTrainer, RestoreVolumeDoesNotDependOnTheSlab) {
  RedCnnConfig config;
  config.channels = 5;
  config.kernel = 3;
  LayerOptions layer;
  layer.seed = 3;
  RedCnn net(config, layer);
  const Tensor volume = test::random_tensor({7, 13, 17}, 11, DType::float32, -1, 1);
  const Tensor whole = restore_volume(net, volume, 0);
  EXPECT_EQ(whole.shape(), Shape({7, 13, 17}));
  for (int64_t slab : {1, 3, 7, 50}) EXPECT_TENSORS_CLOSE(restore_volume(net, volume, slab), whole, 1e-6, 1e-6);
  // Each slice restored on its own is that slice of the whole.
  const Tensor one = net.forward(volume.slice(4, 5).reshape({1, 1, 13, 17, 1})).reshape({1, 13, 17});
  EXPECT_TENSORS_CLOSE(one, whole.slice(4, 5), 1e-6, 1e-6);
  expect_error_mentions([&] { restore_volume(net, Tensor::zeros({2, 13})); }, {"restore_volume", "[D, H, W]"});
}

TEST(RedCnnTrainer, ConfigurationAndErrorsBeforeWork) {
  TempDir dir("redcnn-trainer-errors");
  write_synthetic_pairs(dir / "data", 3);
  // The shipped file reads; the resolved YAML reads back to the same values.
  const RedCnnTrainConfig shipped = load_redcnn_train_config(std::string(CTSR_TEST_DATA_DIR) + "/../../configs/redcnn.yaml");
  EXPECT_EQ(shipped.model.channels, 96);
  EXPECT_EQ(shipped.model.kernel, 5);
  EXPECT_EQ(to_yaml(redcnn_train_config_from_yaml(to_yaml(shipped), "x")), to_yaml(shipped));
  // The refiner's file: two inputs, started from the shipped RED-CNN.
  const RedCnnTrainConfig refiner = load_redcnn_train_config(std::string(CTSR_TEST_DATA_DIR) + "/../../configs/refiner.yaml");
  EXPECT_EQ(refiner.model.in_channels, 2);
  EXPECT_FALSE(refiner.data.guide_dir.empty());
  EXPECT_TRUE(std::filesystem::exists(std::string(CTSR_TEST_DATA_DIR) + "/../../" + refiner.training.init_weights));
  RedCnnTrainConfig c = tiny_config(dir);
  expect_error_mentions([&] { apply_redcnn_override(c, "training.patchsize=3"); }, {"training.patchsize"});
  auto refused = [&](const std::string& assignment, const std::vector<std::string>& parts) {
    RedCnnTrainConfig bad = tiny_config(dir);
    apply_redcnn_override(bad, assignment);
    expect_error_mentions([&] { validate(bad); }, parts);
  };
  refused("model.kernel=4", {"model.kernel", "4", "odd"});
  refused("training.patch_size=10", {"training.patch_size", "10", "at least 11"});
  refused("data.hu_window=[200, -200]", {"data.hu_window", "low < high"});
  refused("training.lr_scheduler=step", {"training.lr_scheduler", "step"});

  // Slices smaller than the patch, a pair whose volumes differ in shape, every pair held out: named.
  c.training.patch_size = 19;
  c.model.kernel = 3;
  expect_error_mentions([&] { RedCnnTrainer(c, quiet()); }, {"training.patch_size 19", "case0.nii.gz", "smaller"});
  c = tiny_config(dir);
  io::write_npy(dir / "data" / "ld" / "case1.npy", Tensor::zeros({5, 17, 17}));
  expect_error_mentions([&] { RedCnnTrainer(c, quiet()); }, {"case1.npy", "one shape per pair"});
  c.data.pairs = (write_synthetic_pairs(dir / "all_val", 2, {0, 1})).string();
  expect_error_mentions([&] { RedCnnTrainer(c, quiet()); }, {"every pair is held out"});

  // A weights file of another kind, or without a parameter, is refused by name.
  expect_error_mentions([&] { load_redcnn_weights(dir / "none.safetensors"); }, {"none.safetensors", "no such"});
  io::write_safetensors(dir / "other.safetensors", {{"conv1.weight", Tensor::zeros({2})}}, {{"format", "ctsr-vqae"}});
  expect_error_mentions([&] { load_redcnn_weights(dir / "other.safetensors"); }, {"other.safetensors", "ctsr-vqae", "ctsr-redcnn"});
  io::write_safetensors(dir / "short.safetensors", {{"conv1.weight", Tensor::zeros({2})}},
                        {{"format", "ctsr-redcnn"}, {"channels", "4"}, {"kernel", "3"}, {"hu_window", "-200,200"}});
  expect_error_mentions([&] { load_redcnn_weights(dir / "short.safetensors"); }, {"short.safetensors", "conv1.weight"});
}

// The shipped files (models/README.md): RED-CNN of one input and the refiner of two, both the
// published width in the main job's window, and both still restoring: on eight slices of an
// unseen phantom (seed 4242), RED-CNN's output is at least 5 dB above the low-dose input (it
// scores 7.4 dB above on the main job's generalisation set), and so is the refiner's with
// RED-CNN's output as its guide (a stand-in for the latent path's result). A damaged or swapped
// file fails here rather than in the main job's table.
TEST(RedCnnTrainer, ShippedWeightsLoadAndRestore) {
  const std::string models = std::string(CTSR_TEST_DATA_DIR) + "/../../models/";
  const LoadedRedCnn redcnn = load_redcnn_weights(models + "redcnn_phantom.safetensors");
  const LoadedRedCnn refiner = load_redcnn_weights(models + "refiner_phantom.safetensors");
  for (const LoadedRedCnn* w : {&redcnn, &refiner}) {
    EXPECT_EQ(w->net->config().channels, 96);
    EXPECT_EQ(w->net->config().kernel, 5);
    EXPECT_EQ(w->window.lo, -200.0f);
    EXPECT_EQ(w->window.hi, 200.0f);
  }
  EXPECT_EQ(redcnn.net->config().in_channels, 1);
  EXPECT_EQ(refiner.net->config().in_channels, 2);
  TempDir dir("redcnn-shipped");
  const auto r = test::run_tool("ctsr_phantom", {"--out", (dir / "data").string(), "--count", "1", "--size", "64",
                                                 "--seed", "4242"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::HuWindow window{-200, 200};
  const Tensor ld = io::read_volume_unit(dir / "data" / "ld" / "phantom_0000.nii.gz", window).data.slice(28, 36);
  const Tensor hd = io::read_volume_unit(dir / "data" / "hd" / "phantom_0000.nii.gz", window).data.slice(28, 36);
  auto db = [&](const Tensor& x) {
    const Shape batch{1, 8, 64, 64};
    return double(psnr(x.reshape(batch), hd.reshape(batch)).psnr.to_vector<float>()[0]);
  };
  const Tensor restored = clamp(restore_volume(*redcnn.net, ld), -1.0, 1.0);
  const Tensor refined = clamp(restore_volume(*refiner.net, ld, restored), -1.0, 1.0);
  std::printf("8 slices of seed 4242: input %.2f dB, RED-CNN %.2f, refiner (guide: RED-CNN's output) %.2f\n", db(ld),
              db(restored), db(refined));
  EXPECT_GT(db(restored), db(ld) + 5.0);
  EXPECT_GT(db(refined), db(ld) + 5.0);
}

// ctsr_train_redcnn: a short run, --resume auto, --print-config, --export, a bad key in one line.
TEST(CtsrTrainRedCnn, TrainsResumesExportsAndRefusesBadKeys) {
  TempDir dir("ctsr-train-redcnn");
  write_synthetic_pairs(dir / "data", 3);
  const RedCnnTrainConfig c = tiny_config(dir);
  const std::string config = (dir / "redcnn.yaml").string();
  std::ofstream(config) << to_yaml(c);
  auto r = test::run_tool("ctsr_train_redcnn", {"--config", config, "--device", "cpu", "--set", "training.max_steps=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"RED-CNN: 4 channels, 1 x 3 x 3 kernels", "2 training pairs, 1 held out", "step 2/2",
                           "done at step 2; weights in"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in: " << r.output;
  r = test::run_tool("ctsr_train_redcnn", {"--config", config, "--device", "cpu", "--resume", "auto", "--set",
                                           "training.max_steps=3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 3/3"), std::string::npos) << r.output;
  r = test::run_tool("ctsr_train_redcnn", {"--config", config, "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("channels: 4"), std::string::npos) << r.output;
  const auto exported = dir / "exported.safetensors";
  r = test::run_tool("ctsr_train_redcnn", {"--export", checkpoint_path(dir / "run" / "checkpoints", 3).string(),
                                           exported.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_redcnn_weights(exported).metadata.at("step"), "3");
  r = test::run_tool("ctsr_train_redcnn", {"--config", config, "--set", "training.batchsize=2"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("training.batchsize"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ctsr::train
