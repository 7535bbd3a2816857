// Stage-1 training of the VQ-AE (train/vqae_trainer.h) on synthetic volumes: the loss falls, a
// resumed run equals the uninterrupted one bit for bit (losses, weights, Adam's state through
// them, the codebook's three buffers), the outputs (checkpoints and their retention, metrics.jsonl,
// TensorBoard, panels) and the exported weights (Vqae::load reads them back as the trained model),
// the patch draws and the data listing, volumes kept in memory or read per batch alike, the
// configuration file (shared with ctsr_vqae), checkpoint kinds, every error before work, and
// training steps on the CUDA paths against the reference.
#include <csignal>
#include <fstream>
#include <set>
#include <sstream>

#include "model/vqae.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/data/latent_cache.h"
#include "model/vqae_codec_config.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/tensorboard.h"
#include "train/data/volume_patches.h"
#include "train/vqae_trainer.h"

namespace ctsr::train {
namespace {

using test::expect_error_mentions;
using test::TempDir;

const std::string kRepo = std::string(CTSR_TEST_DATA_DIR) + "/../../";

VqaeTrainerOptions quiet(Device device = Device::cpu()) {
  VqaeTrainerOptions o;
  o.device = device;
  o.progress = false;
  static std::ostringstream sink;
  o.log = &sink;
  return o;
}

std::vector<Tensor> weights(Vqae& model) {
  std::vector<Tensor> out;
  for (Parameter* p : model.parameters()) out.push_back(p->value.to(Device::cpu()));
  return out;
}

TEST(VqaeTrainer, ResumedRunEqualsTheUninterruptedOne) {
  TempDir dir("vqae-trainer-resume");
  write_synthetic_pairs(dir / "data", 4);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.checkpoint_every = 2;

  c.output_dir = (dir / "straight").string();
  VqaeTrainer straight(c, quiet());
  const VqaeRunSummary all = straight.run();
  ASSERT_EQ(all.losses.size(), 6u);

  // The same run stopped by SIGTERM after step 3 (a checkpoint is saved then), then resumed.
  c.output_dir = (dir / "resumed").string();
  VqaeRunSummary first_part;
  {
    VqaeTrainerOptions o = quiet();
    o.after_step = [](int64_t step) {
      if (step == 3) std::raise(SIGTERM);
    };
    VqaeTrainer trainer(c, o);
    first_part = trainer.run();
  }
  EXPECT_TRUE(first_part.interrupted);
  EXPECT_EQ(first_part.last_step, 3);
  VqaeTrainerOptions o = quiet();
  o.resume = "auto";
  VqaeTrainer resumed(c, o);
  EXPECT_EQ(resumed.state().step, 3);
  const VqaeRunSummary rest = resumed.run();
  ASSERT_EQ(rest.losses.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(first_part.losses[k], all.losses[k]) << "step " << k + 1;
    EXPECT_EQ(rest.losses[k], all.losses[3 + k]) << "step " << k + 4;  // exactly, not approximately
  }
  const auto a = weights(straight.model()), b = weights(resumed.model());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::tensors_equal(b[i], a[i])) << "parameter " << i;
  EXPECT_TRUE(test::tensors_equal(resumed.codebook().embeddings(), straight.codebook().embeddings()));
  EXPECT_TRUE(test::tensors_equal(resumed.codebook().ema_counts(), straight.codebook().ema_counts()));
  EXPECT_TRUE(test::tensors_equal(resumed.codebook().ema_sums(), straight.codebook().ema_sums()));
  EXPECT_TRUE(test::tensors_equal(resumed.model().codebook(), straight.model().codebook()));
  EXPECT_EQ(training_lines(dir / "resumed" / "metrics.jsonl"), training_lines(dir / "straight" / "metrics.jsonl"));
  EXPECT_EQ(resumed.state().optimizer_updates, 6);
  EXPECT_EQ(resumed.state().ema_updates, 6);
  // The exported weights of both runs are the same bytes of tensors.
  io::SafetensorsReader wa(dir / "straight" / "vqae.safetensors"), wb(dir / "resumed" / "vqae.safetensors");
  ASSERT_EQ(wa.names(), wb.names());
  for (const auto& name : wa.names()) EXPECT_TRUE(test::tensors_equal(wb.load(name), wa.load(name))) << name;
}

TEST(VqaeTrainer, LossFallsAndTheOutputsAreWritten) {
  TempDir dir("vqae-trainer-learns");
  write_synthetic_pairs(dir / "data", 5, {0, 3});
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.max_steps = 30;
  c.training.checkpoint_every = 10;
  c.training.keep_checkpoints = 1;
  c.training.log_every = 5;
  c.validation.light_every = 10;
  c.validation.full_every = 15;
  VqaeTrainer trainer(c, quiet());
  EXPECT_NE(trainer.data_summary().find("10 volumes (6 train, 4 held out)"), std::string::npos) << trainer.data_summary();
  EXPECT_NE(trainer.data_summary().find("kept in memory"), std::string::npos);
  const VqaeRunSummary s = trainer.run();
  ASSERT_EQ(s.losses.size(), 30u);
  double first = 0, last = 0;
  for (int k = 0; k < 5; ++k) first += s.losses[size_t(k)] / 5, last += s.losses[size_t(25 + k)] / 5;
  std::printf("mean loss of the first 5 steps %.4f, of the last 5 %.4f\n", first, last);
  EXPECT_LT(last, 0.75 * first);

  const std::filesystem::path run = dir / "run";
  // The last checkpoint, and the best by validation SSIM (step 15 or 30).
  const auto kept = list_checkpoints(run / "checkpoints");
  ASSERT_GE(kept.size(), 1u);
  EXPECT_EQ(kept.back().first, 30);
  const CheckpointInfo info = read_checkpoint_info(kept.back().second, kVqaeCheckpoint);
  EXPECT_EQ(info.kind, "vqae");
  EXPECT_EQ(info.state.step, 30);
  EXPECT_EQ(info.extra.at("codebook.initialized"), "true");
  EXPECT_EQ(vqae_train_config_from_yaml(info.config_yaml, "checkpoint").model.n_hiddens, 4);
  EXPECT_TRUE(info.state.best_step == 15 || info.state.best_step == 30) << info.state.best_step;
  EXPECT_EQ(kept.size(), info.state.best_step == 15 ? 2u : 1u);
  EXPECT_EQ(load_vqae_train_config(run / "config.yaml").training.max_steps, 30);

  int train_lines = 0, light = 0, full = 0;
  for (const auto& j : read_metrics(run / "metrics.jsonl")) {
    if (!j.contains("tier")) {
      for (const char* key : {"step", "loss", "l1", "commitment", "perplexity", "lr", "grad_norm", "samples_per_s"})
        EXPECT_TRUE(j.contains(key)) << key;
      ++train_lines;
    } else if (j["tier"] == "light") {
      EXPECT_GT(j["l1"].get<double>(), 0);
      EXPECT_NEAR(j["loss"].get<double>(), 4.0 * j["l1"].get<double>() + j["commitment"].get<double>(), 1e-9);
      ++light;
    } else {
      EXPECT_EQ(j["tier"], "full");
      const double psnr = j["psnr_roundtrip"].get<double>(), ssim = j["ssim_roundtrip"].get<double>();
      EXPECT_TRUE(psnr > 5 && psnr < 60) << psnr;
      EXPECT_TRUE(ssim > -1 && ssim <= 1) << ssim;
      EXPECT_EQ(j["volumes"], 2);
      const int64_t used = j["codes_used"].get<int64_t>();
      EXPECT_TRUE(used >= 1 && used <= 32) << used;
      EXPECT_TRUE(j["perplexity"].get<double>() >= 1 && j["perplexity"].get<double>() <= double(used) + 1e-9);
      ++full;
    }
  }
  EXPECT_EQ(train_lines, 6);
  EXPECT_EQ(light, 3);
  EXPECT_EQ(full, 2);
  std::set<std::string> tags;
  for (const auto& entry : std::filesystem::directory_iterator(run / "tensorboard"))
    for (const auto& event : read_tensorboard_events(entry.path()))
      for (const auto& v : event.values) tags.insert(v.tag);
  for (const char* tag : {"train/loss", "train/l1", "train/commitment", "train/perplexity", "train/lr",
                          "train/grad_norm", "val/light_loss", "val/ssim_roundtrip", "val/psnr_roundtrip", "val/codes_used",
                          "val/case0_hd/slices", "val/case0_hd/orthogonal", "val/case0_hd/mip"})
    EXPECT_EQ(tags.count(tag), 1u) << tag;
  for (const char* kind : {"slices", "orthogonal", "mip"})
    EXPECT_TRUE(std::filesystem::exists(run / "images" / (std::string("step_00000030_case0_hd_") + kind + ".png")));

  // The exported weights: ctsr_vqae's format, the trained model and its codebook state.
  io::SafetensorsReader file(run / "vqae.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "ctsr-vqae/1");
  EXPECT_EQ(file.metadata().at("num_groups"), "2");
  EXPECT_EQ(file.metadata().at("step"), "30");
  auto loaded = Vqae::load((run / "vqae.safetensors").string(), std::nullopt, Device::cpu());
  EXPECT_EQ(loaded->config().n_hiddens, 4);
  EXPECT_EQ(loaded->config().num_groups, 2);
  EXPECT_EQ(loaded->config().n_codes, 32);
  const auto a = weights(trainer.model()), b = weights(*loaded);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::tensors_equal(b[i], a[i])) << "parameter " << i;
  EXPECT_TRUE(test::tensors_equal(loaded->codebook(), trainer.codebook().embeddings()));
  EXPECT_TRUE(test::tensors_equal(loaded->codebook_n(), trainer.codebook().ema_counts()));
  EXPECT_TRUE(test::tensors_equal(loaded->codebook_z_avg(), trainer.codebook().ema_sums()));
  // The same model reconstructs a training patch as the trainer's does.
  const Tensor x = cut_patches(VolumeSet({{"v", dir / "data" / "ld" / "case1.npy", false}}, {}, 16, 1 << 30),
                               {{0, {0, 1, 0}}}, 16);
  EXPECT_TRUE(test::tensors_equal(loaded->decode(loaded->encode(x)), trainer.model().decode(trainer.model().encode(x))));
  // A checkpoint exported afterwards gives the same file contents.
  export_vqae_checkpoint(kept.back().second, dir / "again.safetensors");
  io::SafetensorsReader again(dir / "again.safetensors");
  ASSERT_EQ(again.names(), file.names());
  for (const auto& name : file.names()) EXPECT_TRUE(test::tensors_equal(again.load(name), file.load(name))) << name;
}

// training.mse_weight adds mse_weight * mean (recon - x)^2 to the loss and its gradient: the first
// step (same weights, same patches) reports the L1-only loss plus that term, the mse it reports is
// the same with or without the weight, and the later steps differ because the update did.
TEST(VqaeTrainer, MseWeightAddsTheSquaredErrorToLossAndGradient) {
  TempDir dir("vqae-trainer-mse");
  write_synthetic_pairs(dir / "data", 4);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.max_steps = 3;
  c.training.log_every = 1;
  c.validation.light_every = 3;
  auto run = [&](double mse_weight, const char* name) {
    c.training.mse_weight = mse_weight;
    c.output_dir = (dir / name).string();
    VqaeTrainer trainer(c, quiet());
    const VqaeRunSummary s = trainer.run();
    return std::pair{s, read_metrics(dir / name / "metrics.jsonl")};
  };
  const auto [plain, plain_lines] = run(0.0, "l1");
  const double w = 7.5;
  const auto [mixed, mixed_lines] = run(w, "mixed");
  ASSERT_EQ(plain.losses.size(), 3u);
  ASSERT_EQ(mixed.losses.size(), 3u);
  const nlohmann::json& a = plain_lines.front();
  const nlohmann::json& b = mixed_lines.front();
  ASSERT_EQ(a["step"], 1);
  ASSERT_EQ(b["step"], 1);
  const double mse = a["mse"].get<double>();
  EXPECT_GT(mse, 1e-4);
  EXPECT_EQ(b["mse"].get<double>(), mse);
  EXPECT_EQ(b["l1"].get<double>(), a["l1"].get<double>());
  EXPECT_NEAR(mixed.losses[0], plain.losses[0] + w * mse, 1e-9 * (1 + mixed.losses[0]));
  // A metrics line's loss is its parts, weighted (l1_weight is 4, the default).
  const auto weighted = [&](const nlohmann::json& j) {
    return c.training.l1_weight * j["l1"].get<double>() + w * j["mse"].get<double>() + j["commitment"].get<double>();
  };
  EXPECT_NEAR(b["loss"].get<double>(), weighted(b), 1e-9);
  // Step 2 sees the same patches with other weights: the MSE term reached the gradient.
  EXPECT_NE(mixed_lines[1]["l1"].get<double>(), plain_lines[1]["l1"].get<double>());
  for (const auto& j : mixed_lines) {
    // Braced: EXPECT_NEAR is an if/else of its own (-Wdangling-else).
    if (j.contains("tier") && j["tier"] == "light") {
      EXPECT_NEAR(j["loss"].get<double>(), weighted(j), 1e-9);
    }
  }
}

TEST(VqaeTrainer, LightValidationIsFixedAndTheCodebookStartsFromTheFirstBatch) {
  TempDir dir("vqae-trainer-light");
  write_synthetic_pairs(dir / "data", 3);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  VqaeTrainer trainer(c, quiet());
  EXPECT_FALSE(trainer.codebook().initialized());
  expect_error_mentions([&] { trainer.validate_light(); }, {"first training batch"});
  trainer.step();
  EXPECT_TRUE(trainer.codebook().initialized());
  EXPECT_TRUE(test::tensors_equal(trainer.model().codebook(), trainer.codebook().embeddings()));
  const VqaeLosses a = trainer.validate_light();
  trainer.validate_full();  // in between: validation leaves nothing behind that changes the next
  const VqaeLosses b = trainer.validate_light();
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.l1, b.l1);
  EXPECT_GT(a.l1, 0);
  EXPECT_EQ(a.loss, 4.0 * a.l1 + a.commitment);
}

// model.init_weights: training continues from a weight file (here PyTorch's tiny checkpoint, with
// its codebook and EMA buffers) instead of a random model.
TEST(VqaeTrainer, StartsFromInitialWeights) {
  TempDir dir("vqae-trainer-init");
  write_synthetic_pairs(dir / "data", 3);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.model.n_codes = 64;
  c.model.init_weights = std::string(CTSR_TEST_DATA_DIR) + "/vqae/tiny.ckpt";
  VqaeTrainer trainer(c, quiet());
  auto file = Vqae::load(c.model.init_weights, 2, Device::cpu());
  const auto a = weights(trainer.model()), b = weights(*file);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::tensors_equal(a[i], b[i])) << "parameter " << i;
  ASSERT_TRUE(trainer.codebook().initialized());
  EXPECT_TRUE(test::tensors_equal(trainer.codebook().embeddings(), file->codebook()));
  EXPECT_TRUE(test::tensors_equal(trainer.codebook().ema_counts(), file->codebook_n()));
  EXPECT_TRUE(test::tensors_equal(trainer.codebook().ema_sums(), file->codebook_z_avg()));
  EXPECT_TRUE(std::isfinite(trainer.step()));
  EXPECT_FALSE(test::tensors_equal(weights(trainer.model())[0], b[0]));
}

TEST(VqaeTrainer, NonFiniteStepsAreSkippedAndTooManyAbort) {
  TempDir dir("vqae-trainer-nan");
  write_synthetic_pairs(dir / "data", 4);
  // Values near float's largest (a NaN volume is refused by the reader now): the first
  // convolution overflows, so the loss of a step that draws this volume is not finite.
  auto poison = [&](int64_t i) {
    Tensor huge = Tensor::empty(synthetic_volume(i).shape());
    for (int64_t k = 0; k < huge.numel(); ++k) huge.data<float>()[k] = k % 2 ? 3e38f : -3e38f;
    io::write_npy(dir / "data" / "ld" / ("case" + std::to_string(i) + ".npy"), huge);
  };
  poison(2);  // one of the three training volumes (LD only)
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.data.volumes = "ld";
  c.training.max_steps = 8;
  c.training.max_consecutive_skips = 8;
  c.validation.light_every = 0;
  {
    VqaeTrainer trainer(c, quiet());
    const VqaeRunSummary s = trainer.run();
    int64_t skipped = 0;
    for (double loss : s.losses) skipped += std::isnan(loss) ? 1 : 0;
    EXPECT_EQ(trainer.state().skipped_steps, skipped);
    EXPECT_GT(skipped, 0);
    EXPECT_LT(skipped, 8);
    EXPECT_EQ(trainer.state().optimizer_updates, 8 - skipped);
    EXPECT_EQ(trainer.state().ema_updates, 8 - skipped);
    for (const auto& w : weights(trainer.model()))
      for (float v : w.to_vector<float>()) ASSERT_TRUE(std::isfinite(v));
    for (float v : trainer.codebook().embeddings().to_vector<float>()) ASSERT_TRUE(std::isfinite(v));
    int64_t lines = 0;
    for (const auto& j : read_metrics(dir / "run" / "metrics.jsonl"))
      if (j.contains("skipped")) {
        EXPECT_EQ(j["reason"], "loss");
        ++lines;
      }
    EXPECT_EQ(lines, skipped);
  }
  // Every training volume poisoned: nothing is learnt, the codebook is never made from NaN
  // latents, and the run ends after max_consecutive_skips.
  poison(1);
  poison(3);
  c.output_dir = (dir / "all_nan").string();
  c.training.max_consecutive_skips = 3;
  VqaeTrainer trainer(c, quiet());
  const std::vector<Tensor> before = weights(trainer.model());
  EXPECT_TRUE(std::isnan(trainer.step()));
  EXPECT_FALSE(trainer.codebook().initialized());
  EXPECT_TRUE(std::isnan(trainer.step()));
  expect_error_mentions([&] { trainer.step(); }, {"training aborted at step 3", "3 steps in a row",
                                                  "training.max_consecutive_skips 3"});
  const std::vector<Tensor> after = weights(trainer.model());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(test::tensors_equal(after[i], before[i]));
}

TEST(VqaeTrainer, PatchesArePureFunctionsOfSeedStepAndSample) {
  TempDir dir("vqae-patches");
  write_synthetic_pairs(dir / "data", 3);
  VqaeTrainConfig::Data data;
  data.pairs = (dir / "data" / "pairs.csv").string();
  const VolumeSet kept(list_training_volumes(data), {}, 16, int64_t(1) << 30);
  const VolumeSet streamed(list_training_volumes(data), {}, 16, 0);
  EXPECT_TRUE(kept.in_memory());
  EXPECT_FALSE(streamed.in_memory());
  const std::vector<int64_t> pool = kept.indices(false);
  ASSERT_EQ(pool.size(), 4u);  // case1 and case2, HD and LD
  std::set<int64_t> volumes_seen;
  std::vector<PatchSpec> specs;
  for (uint64_t g = 0; g < 64; ++g) {
    const PatchSpec p = draw_patch(kept, pool, 16, 3, philox::stream_offset(0x5650, 9), g);
    EXPECT_EQ(p, draw_patch(streamed, pool, 16, 3, philox::stream_offset(0x5650, 9), g));
    EXPECT_NE(std::find(pool.begin(), pool.end(), p.volume), pool.end());
    for (size_t a = 0; a < 3; ++a) {
      EXPECT_GE(p.origin[a], 0);
      EXPECT_LE(p.origin[a] + 16, kept.shape(p.volume)[a]);
    }
    volumes_seen.insert(p.volume);
    specs.push_back(p);
  }
  EXPECT_EQ(volumes_seen.size(), pool.size());  // 64 draws reach every volume
  EXPECT_NE(draw_patch(kept, pool, 16, 3, philox::stream_offset(0x5650, 10), 0),
            draw_patch(kept, pool, 16, 3, philox::stream_offset(0x5650, 9), 0));
  // The batch holds each patch's voxels, whether the volumes stay in memory or are read again.
  specs.resize(5);
  const Tensor batch = cut_patches(kept, specs, 16);
  EXPECT_EQ(batch.shape(), (Shape{5, 16, 16, 16, 1}));
  EXPECT_TRUE(test::tensors_equal(cut_patches(streamed, specs, 16), batch));
  for (size_t b = 0; b < specs.size(); ++b) {
    const Tensor v = kept.read(specs[b].volume);
    const auto& o = specs[b].origin;
    for (int64_t i : {0, 7, 15})
      for (int64_t j : {0, 9, 15})
        for (int64_t k : {0, 4, 15})
          EXPECT_EQ(batch.data<float>()[(((int64_t(b) * 16 + i) * 16 + j) * 16 + k)],
                    v.data<float>()[((o[0] + i) * v.dim(1) + o[1] + j) * v.dim(2) + o[2] + k]);
  }
  // HD volumes are NIfTI in HU, read through the window: the same [-1, 1] values they were made from.
  EXPECT_EQ(kept.entry(0).id, "case0_hd");
  const Tensor hd = kept.read(0), expected = synthetic_volume(0);
  for (int64_t k = 0; k < hd.numel(); k += 97) EXPECT_NEAR(hd.data<float>()[k], expected.data<float>()[k], 1e-5);
  for (size_t a = 0; a < 3; ++a) EXPECT_NEAR(kept.spacing(0)[a], (std::array<double, 3>{1.5, 0.9, 0.9})[a], 1e-6);
}

TEST(VqaeTrainer, DataComesFromPairsOrAFolderWithTheCachesSplit) {
  TempDir dir("vqae-data");
  write_synthetic_pairs(dir / "data", 4, {2});
  VqaeTrainConfig::Data data;
  data.pairs = (dir / "data" / "pairs.csv").string();
  auto ids = [](const std::vector<TrainingVolume>& v, bool held_out) {
    std::vector<std::string> out;
    for (const auto& e : v)
      if (e.held_out == held_out) out.push_back(e.id);
    return out;
  };
  auto both = list_training_volumes(data);
  EXPECT_EQ(ids(both, true), (std::vector<std::string>{"case2_hd", "case2_ld"}));
  EXPECT_EQ(ids(both, false).size(), 6u);
  data.volumes = "hd";
  EXPECT_EQ(ids(list_training_volumes(data), false), (std::vector<std::string>{"case0_hd", "case1_hd", "case3_hd"}));
  data.volumes = "ld";
  EXPECT_EQ(ids(list_training_volumes(data), true), (std::vector<std::string>{"case2_ld"}));

  // Without a split column, val_fraction by split_seed, as ctsr_vqae cache assigns it.
  {
    std::ofstream csv(dir / "data" / "nosplit.csv");
    csv << "id,ld,hd\n";
    for (int i = 0; i < 4; ++i) csv << "case" << i << ",ld/case" << i << ".npy,hd/case" << i << ".nii.gz\n";
  }
  data.pairs = (dir / "data" / "nosplit.csv").string();
  data.volumes = "both";
  data.val_fraction = 0.25;
  data.split_seed = 5;
  std::vector<train::PairRow> rows = train::read_pairs_csv(data.pairs);
  train::assign_splits(rows, 0.25, 5);
  const auto listed = list_training_volumes(data);
  for (const auto& row : rows)
    for (const auto& v : listed)
      if (v.id.rfind(row.id + "_", 0) == 0) {
        EXPECT_EQ(v.held_out, row.split == "val") << v.id;
      }
  EXPECT_EQ(ids(listed, true).size(), 2u);

  // A folder: every volume file, ids their stems.
  data.pairs = "";
  data.folder = (dir / "data" / "ld").string();
  data.val_fraction = 0;
  const auto folder = list_training_volumes(data);
  EXPECT_EQ(ids(folder, false), (std::vector<std::string>{"case0", "case1", "case2", "case3"}));
  // A subfolder is a DICOM series, its id its name; hidden folders (and temporaries) are not.
  std::filesystem::create_directories(dir / "data" / "ld" / "series4");
  std::filesystem::create_directories(dir / "data" / "ld" / ".tmp-1-d1-series5");
  EXPECT_EQ(ids(list_training_volumes(data), false),
            (std::vector<std::string>{"case0", "case1", "case2", "case3", "series4"}));
  std::filesystem::remove_all(dir / "data" / "ld" / "series4");
  std::ofstream(dir / "data" / "ld" / "case1.nii") << "";  // a second case1
  expect_error_mentions([&] { list_training_volumes(data); }, {"data.folder", "case1.nii", "case1.npy", "same name"});
  data.folder = (dir / "data" / "none").string();
  expect_error_mentions([&] { list_training_volumes(data); }, {"data.folder", "none", "no such folder"});
  std::filesystem::create_directories(dir / "empty");
  data.folder = (dir / "empty").string();
  expect_error_mentions([&] { list_training_volumes(data); }, {"data.folder", "no .nii, .nii.gz or .npy"});
}

// configs/vqae_8x.yaml lists every key at its default (the released model, the original's stage
// 1), and ctsr_vqae's reader accepts it and every key the trainer has.
TEST(VqaeTrainConfig, TheFileIsTheDefaultsAndCtsrVqaeReadsIt) {
  const std::string path = kRepo + "configs/vqae_8x.yaml";
  const VqaeTrainConfig file = load_vqae_train_config(path);
  EXPECT_EQ(to_yaml(file), to_yaml(VqaeTrainConfig{}));
  EXPECT_EQ(file.model.n_hiddens, 48);
  EXPECT_EQ(file.model.num_groups, 24);
  EXPECT_EQ(file.training.patch_size, 64);
  EXPECT_EQ(file.training.learning_rate, 3e-4);
  EXPECT_EQ(file.optimizer.beta1, 0.5);
  EXPECT_EQ(file.optimizer.beta2, 0.9);
  EXPECT_EQ(file.codebook.ema.decay, 0.99);
  EXPECT_EQ(file.codebook.commitment, 0.25);
  EXPECT_EQ(file.codebook.ema.restart_threshold, 1.0);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string& key : vqae_train_config_keys()) {
    const std::string leaf = key.substr(key.rfind('.') + 1);
    EXPECT_NE(text.find(leaf + ":"), std::string::npos) << key << " is not in configs/vqae_8x.yaml";
    // ctsr_vqae passes over exactly the trainer's own keys.
    const std::string section = key.substr(0, key.find('.'));
    if (section == "model") {
      EXPECT_TRUE(leaf == "num_groups" || kVqaeTrainingModelKeys.count(leaf)) << key;
    } else if (section != "encode" && section != "decode") {
      EXPECT_EQ(kVqaeTrainingSections.count(section), 1u) << key;
    }
  }
  const VqaeCodecConfig settings = read_vqae_codec_config(path);
  EXPECT_EQ(settings.num_groups, 24);
  EXPECT_EQ(settings.patch_size, 64);
  // The resolved dump a run writes (every key) reads back the same, in both programs.
  TempDir dir("vqae-config");
  VqaeTrainConfig c = tiny_vqae_config(dir);
  apply_vqae_override(c, "encode.hu_window=[-150, 250]");
  apply_vqae_override(c, "codebook.restart_dead_codes=false");
  std::ofstream(dir / "resolved.yaml") << to_yaml(c);
  EXPECT_EQ(to_yaml(load_vqae_train_config(dir / "resolved.yaml")), to_yaml(c));
  const VqaeCodecConfig back = read_vqae_codec_config(dir / "resolved.yaml");
  EXPECT_EQ(back.num_groups, 2);
  EXPECT_EQ(back.window.lo, -150.0f);
  EXPECT_EQ(back.window.hi, 250.0f);
}

TEST(VqaeTrainConfig, ErrorsNameTheKey) {
  TempDir dir("vqae-config-errors");
  auto file = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return dir / name;
  };
  expect_error_mentions([&] { load_vqae_train_config(file("a.yaml", "training:\n  patchsize: 32\n")); },
                        {"a.yaml", "unknown key 'training.patchsize'", "did you mean 'training.patch_size'"});
  expect_error_mentions([&] { load_vqae_train_config(file("b.yaml", "training:\n  patch_size: 20\n")); },
                        {"b.yaml", "training.patch_size is 20", "multiple of 8"});
  expect_error_mentions([&] { load_vqae_train_config(file("c.yaml", "model:\n  num_groups: 5\n")); },
                        {"c.yaml", "model.num_groups", "num_groups 5 does not divide the width 48"});
  expect_error_mentions([&] { load_vqae_train_config(file("d.yaml", "data:\n  folder: vols\n")); },
                        {"d.yaml", "data.pairs", "data.folder", "exactly one"});
  expect_error_mentions([&] { load_vqae_train_config(file("e.yaml", "encode:\n  hu_window: 3\n")); },
                        {"e.yaml", "'encode.hu_window' is '3'", "[low, high]"});
  expect_error_mentions([&] { load_vqae_train_config(file("f.yaml", "data:\n  volumes: all\n")); },
                        {"f.yaml", "data.volumes", "'all'", "hd, ld or both"});
  expect_error_mentions([&] { load_vqae_train_config(file("g.yaml", "codebook:\n  decay: 1.5\n")); },
                        {"g.yaml", "codebook.decay is 1.5"});
  expect_error_mentions([&] { load_vqae_train_config(file("h.yaml", "training:\n  mse_weight: -1\n")); },
                        {"h.yaml", "training.mse_weight is -1", "0 (off) or a positive number"});
  VqaeTrainConfig c;
  expect_error_mentions([&] { apply_vqae_override(c, "optimizer.beta=0.5"); },
                        {"--set optimizer.beta=0.5", "did you mean"});
  expect_error_mentions([&] { apply_vqae_override(c, "training.batch_size=two"); },
                        {"'training.batch_size' is 'two'", "an integer"});
  // ctsr_vqae's reader still refuses a key of neither program.
  expect_error_mentions([&] { read_vqae_codec_config(file("h.yaml", "model:\n  widths: 3\n")); },
                        {"h.yaml", "unknown key 'model.widths'"});
  expect_error_mentions([&] { read_vqae_codec_config(file("i.yaml", "schedule: 3\n")); },
                        {"i.yaml", "unknown key 'schedule'"});
}

TEST(VqaeTrainer, ErrorsBeforeAnyWorkNameTheKeyAndWriteNothing) {
  TempDir dir("vqae-trainer-errors");
  write_synthetic_pairs(dir / "data", 3);
  const VqaeTrainConfig base = tiny_vqae_config(dir);
  auto fails = [&](const VqaeTrainConfig& c, const std::vector<std::string>& parts, const VqaeTrainerOptions& o = quiet()) {
    expect_error_mentions([&] { VqaeTrainer trainer(c, o); }, parts);
    EXPECT_FALSE(std::filesystem::exists(c.output_dir)) << parts[0];
  };
  VqaeTrainConfig c = base;
  c.data.pairs = (dir / "missing.csv").string();
  fails(c, {"data.pairs", "missing.csv", "no such file"});
  c = base;
  c.training.patch_size = 20;
  fails(c, {"training.patch_size is 20", "multiple of 8"});
  c = base;
  c.model.num_groups = 3;
  fails(c, {"model.num_groups", "num_groups 3 does not divide the width 4"});
  // A volume smaller than the patch, named with its shape.
  c = base;
  c.training.patch_size = 24;
  c.model.levels = 2;
  c.encode.patch_size = 24;
  fails(c, {"case0.nii.gz", "smaller than training.patch_size 24", "along D"});
  c = base;
  c.data.val_fraction = 0;
  c.data.pairs = (dir / "nosplit.csv").string();
  {
    std::ofstream csv(c.data.pairs);
    csv << "ld,hd\ndata/ld/case1.npy,data/hd/case1.nii.gz\n";
  }
  fails(c, {"validation is on", "holds out no volume", "data.val_fraction"});
  {
    std::ofstream csv(c.data.pairs);
    csv << "ld,hd,split\ndata/ld/case1.npy,data/hd/case1.nii.gz,val\n";
  }
  fails(c, {"every volume is held out"});
  c = base;
  c.model.init_weights = std::string(CTSR_TEST_DATA_DIR) + "/vqae/tiny.ckpt";  // 64 codes, not 32
  fails(c, {"model.init_weights", "tiny.ckpt", "n_codes 64", "n_codes 32"});
  c.model.init_weights = (dir / "none.safetensors").string();
  fails(c, {"model.init_weights", "none.safetensors", "no such file"});
  VqaeTrainerOptions o = quiet();
  o.resume = (dir / "nope.safetensors").string();
  fails(base, {"--resume", "no such checkpoint"}, o);

  // A folder that holds checkpoints is not overwritten; a checkpoint of ctsr_train is refused.
  c = base;
  c.training.max_steps = 1;
  VqaeTrainer(c, quiet()).run();
  expect_error_mentions([&] { VqaeTrainer trainer(c, quiet()); }, {"already holds checkpoints", "--resume auto"});
  const auto vqae_checkpoint = checkpoint_path(dir / "run" / "checkpoints", 1);
  expect_error_mentions([&] { read_checkpoint_info(vqae_checkpoint); },
                        {"ctsr_train_vqae checkpoint", "OUTPUT/vqae.safetensors", "a ctsr_train checkpoint"});
  Parameter p{"w", Tensor::zeros({2}), Tensor()};
  CheckpointInfo diffusion;
  diffusion.config_yaml = "seed: 7\n";
  diffusion.seed = 7;
  save_checkpoint(dir / "diffusion.safetensors", {{&p}, {}, {}, {}}, diffusion);
  o.resume = (dir / "diffusion.safetensors").string();
  expect_error_mentions([&] { VqaeTrainer trainer(c, o); }, {"diffusion.safetensors", "a ctsr_train checkpoint",
                                                             "ctsr_train_vqae checkpoint", "is expected here"});
  // Files written before checkpoints had a kind are ctsr_train's.
  std::map<std::string, std::string> meta = io::SafetensorsReader(dir / "diffusion.safetensors").metadata();
  meta.erase("kind");
  io::write_safetensors(dir / "old.safetensors", {{"model/w", Tensor::zeros({2})}}, meta);
  EXPECT_EQ(read_checkpoint_info(dir / "old.safetensors").kind, "diffusion");
}

class VqaeTrainerParity : public test::CudaPathTest {};

// Two training steps (codebook initialisation, straight-through forward and backward, Adam, the
// EMA codebook with restarts) on the CUDA kernels against the reference: the same losses,
// gradients, weights and codebook buffers, to rounding. The quantisation picks the same codes on
// both paths (a latent within rounding of two codes could differ; these do not).
TEST_P(VqaeTrainerParity, TrainingStepsMatchTheReference) {
  TempDir dir("vqae-trainer-parity");
  write_synthetic_pairs(dir / "data", 3);
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.max_grad_norm = 0.5;  // clipping active
  // Adam's first steps move every element by about lr * sign(gradient), however small the
  // gradient, so an element whose gradient is at rounding level would move a full step either
  // way and hide how closely the paths agree. A large eps makes the update proportional to the
  // gradient there (the Adam kernel itself is checked bit for bit in test_optimizer).
  c.optimizer.eps = 1.0;
  c.training.batch_size = 1;  // the executor runs every CUDA thread as a fiber: keep it small
  c.output_dir = (dir / "cpu").string();
  VqaeTrainer ref(c, quiet());
  c.output_dir = (dir / "dev").string();
  VqaeTrainer dev(c, quiet(device()));
  double worst_grad = 0;
  for (int k = 0; k < 2; ++k) {
    const double loss_ref = ref.step(), loss_dev = dev.step();
    EXPECT_NEAR(loss_dev, loss_ref, 1e-5 * loss_ref) << "step " << k;
    if (k > 0) continue;  // later gradients follow parameters that differ by rounding
    auto pr = ref.model().parameters(), pd = dev.model().parameters();
    for (size_t i = 0; i < pr.size(); ++i) {
      const double e = test::relative_l2(pd[i]->grad, pr[i]->grad);
      EXPECT_LT(e, 1e-4) << "gradient of " << pr[i]->name;
      worst_grad = std::max(worst_grad, e);
    }
  }
  const auto a = weights(ref.model()), b = weights(dev.model());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = test::relative_l2(b[i], a[i]);
    EXPECT_LT(e, 1e-4) << ref.model().parameters()[i]->name;
    worst = std::max(worst, e);
  }
  EXPECT_TRUE(test::tensors_equal(dev.codebook().ema_counts(), ref.codebook().ema_counts()));  // the same codes chosen
  const double codes = test::relative_l2(dev.codebook().embeddings(), ref.codebook().embeddings());
  EXPECT_LT(codes, 1e-5);
  EXPECT_LT(test::relative_l2(dev.codebook().ema_sums(), ref.codebook().ema_sums()), 1e-5);
  std::printf("two VQ-AE training steps on %s: worst relative L2 of gradients %.2e, weights %.2e, codebook %.2e\n",
              device().str().c_str(), worst_grad, worst, codes);
}

CTSR_INSTANTIATE_CUDA_PATHS(VqaeTrainerParity);

}  // namespace
}  // namespace ctsr::train
