// ctsr_infer as users run it: a NIfTI volume in, a NIfTI volume out with the input's geometry (a
// DICOM series in, a series folder out with its patient and study), reproducible per seed, tiles
// beyond the training latent and any shape cropped back, and bad inputs that fail with one line
// naming the file and leave no output.
#include <cmath>
#include <fstream>

#include "kernels/activation.h"
#include "kernels/metrics.h"
#include "model/redcnn.h"
#include "runtime/formats/npy.h"
#include "train/data/latent_data.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "train/baselines.h"
#include "train/checkpoint.h"
#include "train/png.h"
#include "train/trainer.h"

namespace ctsr::train {
namespace {

using test::run_tool;
using test::TempDir;

struct Fixture {
  TempDir dir{"ctsr-infer"};
  std::filesystem::path checkpoint, input;
  io::VolumeGeometry geometry;
  Fixture() {
    checkpoint = train_small_checkpoint(dir.path(), 2);
    // An LD volume in HU with an oblique geometry; 24 x 40 x 32 voxels (a latent of 3 x 5 x 4).
    io::Volume v;
    v.data = test::random_tensor({24, 40, 32}, 5, DType::float32, -300, 300);
    geometry.spacing_xyz = {0.8, 0.7, 2.5};
    geometry.affine = {{{0.8, 0, 0, -10}, {0, 0.7, 0, 20}, {0, 0, 2.5, 5}, {0, 0, 0, 1}}};
    v.geometry = geometry;
    input = dir / "ld.nii.gz";
    io::write_volume(input, v);
  }
  test::ToolResult infer(const std::filesystem::path& output, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--model", checkpoint.string(), "--vqae", kVqae, "--num-groups", "2",
                                  "--input", input.string(), "--output", output.string(), "--device", "cpu",
                                  "--patch-size", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_tool("ctsr_infer", args);
  }
};

TEST(CtsrInfer, WritesTheResultWithTheInputsGeometry) {
  Fixture f;
  auto r = f.infer(f.dir / "sr.nii.gz");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 ddim steps"), std::string::npos) << r.output;  // the checkpoint's sampler
  const io::Volume sr = io::read_volume(f.dir / "sr.nii.gz");
  EXPECT_EQ(sr.data.shape(), (Shape{24, 40, 32}));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(sr.geometry.spacing_xyz[size_t(i)], f.geometry.spacing_xyz[size_t(i)], 1e-5);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(sr.geometry.affine[size_t(i)][size_t(j)], f.geometry.affine[size_t(i)][size_t(j)], 1e-4);
  // HU inside the training window (the decoded volume is clipped to [-1, 1] before the inverse).
  for (float v : sr.data.to_vector<float>()) {
    ASSERT_GE(v, -200.0f - 1e-3f);
    ASSERT_LE(v, 200.0f + 1e-3f);
  }
  // The same seed gives the same volume; ddpm with another seed another one.
  ASSERT_EQ(f.infer(f.dir / "again.nii.gz").exit_code, 0);
  EXPECT_TRUE(test::tensors_equal(io::read_volume(f.dir / "again.nii.gz").data, sr.data));
  r = f.infer(f.dir / "ddpm.nii.gz", {"--sampler", "ddpm", "--steps", "4", "--seed", "9"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 ddpm steps"), std::string::npos) << r.output;
  EXPECT_FALSE(test::tensors_equal(io::read_volume(f.dir / "ddpm.nii.gz").data, sr.data));
  // .npy keeps the [-1, 1] scale.
  ASSERT_EQ(f.infer(f.dir / "sr.npy").exit_code, 0);
  const io::Volume unit = io::read_volume(f.dir / "sr.npy");
  EXPECT_LT(test::relative_l2(io::unit_to_hu(unit.data, io::HuWindow{}), sr.data), 1e-5);
}

TEST(CtsrInfer, LargerAndOddVolumesRunInTilesAndAreCroppedBack) {
  Fixture f;
  io::Volume deep;
  // Latent 6 x 5 x 4 > the training latent 3 x 5 x 4: two tiles along D for sampling and decode.
  deep.data = test::random_tensor({48, 40, 32}, 6, DType::float32, -300, 300);
  io::write_volume(f.dir / "deep.nii.gz", deep);
  f.input = f.dir / "deep.nii.gz";
  auto r = f.infer(f.dir / "deep_sr.nii.gz");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("sample: 3 x 1 x 1 = 3 tiles of 3 x 5 x 4, overlap 1 x 1 x 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("decode: 3 x 1 x 1 = 3 tiles of 3 x 5 x 4, overlap 1 x 1 x 1"), std::string::npos) << r.output;
  EXPECT_EQ(io::read_volume(f.dir / "deep_sr.nii.gz").data.shape(), (Shape{48, 40, 32}));
  // With a budget: the plan says what it measured and chose; the same result (batches of tiles
  // are independent samples, and the tiles are the same).
  r = f.infer(f.dir / "budget_sr.nii.gz", {"--max-memory", "0.05", "--max-batch", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("of the budget 51.20 MiB"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 per batch"), std::string::npos) << r.output;
  EXPECT_LT(test::relative_l2(io::read_volume(f.dir / "budget_sr.nii.gz").data,
                              io::read_volume(f.dir / "deep_sr.nii.gz").data), 1e-5);
  // Sides that are not multiples of the compression: reflected, run, cropped; the geometry kept.
  io::Volume odd;
  odd.data = test::random_tensor({20, 37, 29}, 7, DType::float32, -300, 300);
  odd.geometry = f.geometry;
  io::write_volume(f.dir / "odd.nii.gz", odd);
  f.input = f.dir / "odd.nii.gz";
  r = f.infer(f.dir / "odd_sr.nii.gz", {"--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("sample:"), std::string::npos) << r.output;  // --quiet: no plan
  EXPECT_NE(r.output.find("anisotropic voxels of 0.8 x 0.7 x 2.5 mm"), std::string::npos) << r.output;
  const io::Volume sr = io::read_volume(f.dir / "odd_sr.nii.gz");
  EXPECT_EQ(sr.data.shape(), (Shape{20, 37, 29}));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(sr.geometry.affine[size_t(i)][size_t(j)], f.geometry.affine[size_t(i)][size_t(j)], 1e-4);
}

// The value of a copied DICOM attribute (group << 16 | element), or "" when there is none.
std::string copied_value(const io::VolumeGeometry& g, uint32_t tag) {
  if (!g.dicom) return "";
  for (const auto& a : g.dicom->copied)
    if (a.tag == tag) return a.bytes;
  return "";
}

// A DICOM series in, a series folder out: the input's shape, spacing and affine, its patient and
// study copied, a new series. A folder holding two series needs --series-uid.
TEST(CtsrInfer, DicomSeriesInSeriesFolderOut) {
  Fixture f;
  const std::filesystem::path dicom = std::filesystem::path(CTSR_TEST_DATA_DIR) / "dicom";
  f.input = dicom / "oblique";  // 7 x 11 x 13, rotated 30 degrees in plane
  const io::Volume in = io::read_volume(f.input);
  ASSERT_TRUE(in.geometry.dicom);
  auto r = f.infer(f.dir / "sr", {"--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(std::filesystem::is_directory(f.dir / "sr"));
  const io::Volume sr = io::read_volume(f.dir / "sr");
  EXPECT_EQ(sr.data.shape(), (Shape{7, 11, 13}));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(sr.geometry.spacing_xyz[size_t(i)], in.geometry.spacing_xyz[size_t(i)], 1e-5);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      EXPECT_NEAR(sr.geometry.affine[size_t(i)][size_t(j)], in.geometry.affine[size_t(i)][size_t(j)], 1e-5) << i << j;
  ASSERT_TRUE(sr.geometry.dicom);
  const uint32_t patient_id = 0x00100020, study_uid = 0x0020000D;
  EXPECT_NE(copied_value(in.geometry, patient_id), "");
  EXPECT_EQ(copied_value(sr.geometry, patient_id), copied_value(in.geometry, patient_id));
  EXPECT_NE(copied_value(in.geometry, study_uid), "");
  EXPECT_EQ(copied_value(sr.geometry, study_uid), copied_value(in.geometry, study_uid));
  EXPECT_NE(sr.geometry.dicom->series_uid, in.geometry.dicom->series_uid);
  for (float v : sr.data.to_vector<float>()) {  // HU in the window, whole numbers (int16)
    ASSERT_GE(v, -200.5f);
    ASSERT_LE(v, 200.5f);
    ASSERT_EQ(v, std::round(v));
  }
  // Run again into the same folder: the previous result is replaced.
  ASSERT_EQ(f.infer(f.dir / "sr", {"--quiet"}).exit_code, 0);
  EXPECT_NE(io::read_volume(f.dir / "sr").geometry.dicom->series_uid, sr.geometry.dicom->series_uid);

  // Two series in one folder: --series-uid picks one (4 slices from z = 36.75); without it the
  // error says to use it, and nothing is written.
  f.input = dicom / "two_series";
  r = f.infer(f.dir / "none", {"--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("--series-uid"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(f.dir / "none"));
  r = f.infer(f.dir / "second/", {"--quiet", "--series-uid", "1.2.826.0.1.3680043.10.1011.3.7.2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::Volume second = io::read_volume(f.dir / "second");
  EXPECT_EQ(second.data.shape(), (Shape{4, 11, 13}));
  EXPECT_NEAR(second.geometry.affine[2][3], 36.75, 1e-5);
  EXPECT_EQ(copied_value(second.geometry, patient_id), copied_value(in.geometry, patient_id));
  // An output folder that holds anything but DICOM files is refused before any work.
  std::filesystem::create_directories(f.dir / "mixed");
  std::ofstream(f.dir / "mixed" / "notes.txt") << "keep me\n";
  r = f.infer(f.dir / "mixed", {"--quiet", "--series-uid", "1.2.826.0.1.3680043.10.1011.3.7.2"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("notes.txt, which is not a DICOM file"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(f.dir / "mixed" / "notes.txt"));
}

TEST(CtsrInfer, BadInputsFailWithOneLineAndLeaveNothing) {
  Fixture f;
  auto fails = [&](const test::ToolResult& r, const std::vector<std::string>& parts) {
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    for (const auto& p : parts) EXPECT_NE(r.output.find(p), std::string::npos) << "'" << p << "' not in: " << r.output;
    EXPECT_FALSE(std::filesystem::exists(f.dir / "out.nii.gz"));
  };
  fails(f.infer(f.dir / "out.mha"), {"out.mha"});
  fails(f.infer(f.dir / "out.nii.gz", {"--tile", "0"}), {"--tile 0", "positive"});
  fails(f.infer(f.dir / "out.nii.gz", {"--decode-overlap", "-1"}), {"--decode-overlap -1", "0 or more"});
  fails(f.infer(f.dir / "out.nii.gz", {"--max-memory", "-2"}), {"--max-memory -2", "positive"});
  // A budget that cannot hold one tile: refused before any of the volume's work.
  fails(f.infer(f.dir / "out.nii.gz", {"--max-memory", "0.0001"}), {"--max-memory", "too small for one", "tile"});
  fails(f.infer(f.dir / "out.nii.gz", {"--weights", "best"}), {"--weights best", "ema or model"});
  auto r = run_tool("ctsr_infer", {"--model", (f.dir / "cache" / "train" / "train_0.safetensors").string(), "--vqae",
                                   kVqae, "--input", f.input.string(), "--output", (f.dir / "out.nii.gz").string()});
  fails(r, {"train_0.safetensors", "not a ctsr_train checkpoint"});
  // A VQ-AE other than the one the cache was made with.
  ASSERT_EQ(run_tool("ctsr_vqae", {"init", "--out", (f.dir / "other.safetensors").string(), "--seed", "3", "--n-hiddens",
                                   "4", "--num-groups", "2"})
                .exit_code,
            0);
  r = run_tool("ctsr_infer", {"--model", f.checkpoint.string(), "--vqae", (f.dir / "other.safetensors").string(),
                              "--input", f.input.string(), "--output", (f.dir / "out.nii.gz").string()});
  fails(r, {"other.safetensors", "codebook bounds", "the VQ-AE its cache was made with"});
}

// ctsr_evaluate on the held-out pairs: every row of specs/evaluation.md scored against HD; the
// baselines' parameters those chosen on the train split's first --select-limit pairs; the input's,
// a baseline's and both round trips' scores recomputed here independently; the best baseline and
// SR's wins restated from the per-pair scores; the closing table; the panel of the first pair.
TEST(CtsrEvaluate, ScoresEveryRowAgainstHdWithBaselinesChosenOnTrainingPairs) {
  Fixture f;
  const auto panels = f.dir / "panels";
  auto r = run_tool("ctsr_evaluate", {"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache", (f.dir / "cache").string(),
                                      "--num-groups", "2", "--device", "cpu", "--json", (f.dir / "scores.json").string(),
                                      "--select-limit", "2", "--panels", panels.string(), "--panels-limit", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(f.dir / "scores.json");
  const nlohmann::json scores = nlohmann::json::parse(in);
  const std::vector<std::string> rows{"input", "gaussian", "tv", "median", "roundtrip", "input_roundtrip", "sr"};
  EXPECT_EQ(scores["rows"].get<std::vector<std::string>>(), rows);
  EXPECT_EQ(scores["count"], 2);
  ASSERT_EQ(scores["pairs"].size(), 2u);

  // The parameters: the library's choice on the first two training pairs.
  LatentDataset train(f.dir / "cache", "train"), val(f.dir / "cache", "val");
  const auto read = [](const LatentDataset& split, int64_t i) {
    return VolumePair{io::read_npy(split.info(i).ld_path), io::read_npy(split.info(i).hd_path)};
  };
  const BaselineParameters chosen = select_baseline_parameters(2, [&](int64_t i) { return read(train, i); });
  const auto& b = scores["baselines"];
  EXPECT_EQ(b["chosen_on"], (f.dir / "cache" / "train").string());
  EXPECT_EQ(b["chosen_on_pairs"], 2);
  EXPECT_EQ(b["gaussian_sigma"].get<double>(), chosen.sigma.chosen);
  EXPECT_EQ(b["tv_weight"].get<double>(), chosen.tv_weight.chosen);
  EXPECT_EQ(b["sigma_mean_psnr"].get<std::vector<double>>(), chosen.sigma.mean_psnr);

  // Rows recomputed: the input, the Gaussian with the chosen sigma, the median, and the round
  // trips of HD (roundtrip) and of LD (input_roundtrip).
  auto vqae = Vqae::load(kVqae, 2, Device::cpu());
  const Shape batch{1, 8 * kD, 8 * kH, 8 * kW};
  const auto round_trip = [&](const Tensor& x) {
    NoGradGuard no_grad;
    return clamp(vqae->decode(vqae->encode(x.reshape({1, 8 * kD, 8 * kH, 8 * kW, 1}))), -1.0, 1.0).reshape(batch);
  };
  std::map<std::string, double> ssim_mean, psnr_mean;
  for (int64_t i = 0; i < 2; ++i) {
    const VolumePair p = read(val, i);
    const Tensor hd = p.target.reshape(batch);
    const auto& line = scores["pairs"][size_t(i)];
    EXPECT_EQ(line["id"], val.id(i));
    const std::map<std::string, Tensor> recomputed{{"input", p.input.reshape(batch)},
                                                   {"gaussian", gaussian_filter(p.input, chosen.sigma.chosen).reshape(batch)},
                                                   {"median", median_filter3(p.input).reshape(batch)},
                                                   {"roundtrip", round_trip(p.target)},
                                                   {"input_roundtrip", round_trip(p.input)}};
    for (const auto& [row, volume] : recomputed) {
      EXPECT_NEAR(line[row]["ssim"].get<double>(), ssim(volume, hd).per_sample.to_vector<float>()[0], 1e-6) << row;
      EXPECT_NEAR(line[row]["psnr"].get<double>(), psnr(volume, hd).psnr.to_vector<float>()[0], 1e-4) << row;
    }
    for (const auto& row : rows) {
      ssim_mean[row] += line[row]["ssim"].get<double>() / 2;
      psnr_mean[row] += line[row]["psnr"].get<double>() / 2;
    }
  }
  // The round trip of full dose is not the round trip of the input.
  EXPECT_NE(scores["pairs"][0]["roundtrip"]["psnr"], scores["pairs"][0]["input_roundtrip"]["psnr"]);
  for (const auto& row : rows) {
    EXPECT_NEAR(scores["mean"][row]["ssim"].get<double>(), ssim_mean[row], 1e-9) << row;
    EXPECT_NEAR(scores["mean"][row]["psnr"].get<double>(), psnr_mean[row], 1e-9) << row;
  }
  // The best baseline per metric, and SR's wins against the best-PSNR one.
  std::map<std::string, std::string> best;
  for (const char* metric : {"ssim", "psnr"}) {
    auto& means = *metric == 's' ? ssim_mean : psnr_mean;
    std::string top = "gaussian";
    for (const char* row : {"tv", "median"})
      if (means[row] > means[top]) top = row;
    best[metric] = top;
    EXPECT_EQ(scores["best_baseline"][metric], top) << metric;
  }
  int64_t wins = 0;
  for (const auto& line : scores["pairs"]) wins += line["sr"]["psnr"].get<double>() > line[best["psnr"]]["psnr"].get<double>();
  EXPECT_EQ(scores["sr_wins"]["against"], best["psnr"]);
  EXPECT_EQ(scores["sr_wins"]["pairs"], wins);
  EXPECT_EQ(scores["sr_wins"]["of"], 2);
  EXPECT_DOUBLE_EQ(scores["sr_wins"]["fraction"].get<double>(), double(wins) / 2);

  // The console ends with the table (the best baseline marked) and the wins line.
  std::istringstream lines(r.output);
  std::vector<std::string> all;
  for (std::string line; std::getline(lines, line);) all.push_back(line);
  ASSERT_GE(all.size(), 9u);
  const std::vector<std::string> tail(all.end() - 9, all.end());
  EXPECT_EQ(tail[0].rfind("row ", 0), 0u) << tail[0];
  for (size_t k = 0; k < rows.size(); ++k) {
    const std::string& line = tail[k + 1];
    std::istringstream words(line);
    std::string name;
    double s = 0, p = 0;
    words >> name >> s >> p;
    EXPECT_EQ(name, rows[k]) << line;
    EXPECT_NEAR(s, ssim_mean[rows[k]], 5e-5) << line;
    EXPECT_NEAR(p, psnr_mean[rows[k]], 5e-3) << line;
    EXPECT_EQ(line.find("best baseline") != std::string::npos, rows[k] == best["ssim"] || rows[k] == best["psnr"]) << line;
  }
  EXPECT_EQ(tail[8], "sr beats the best baseline (" + best["psnr"] + ") on " + std::to_string(wins) + " of 2 pairs (PSNR)");
  EXPECT_NE(r.output.find("chosen by mean PSNR on 2 pairs of " + (f.dir / "cache" / "train").string()), std::string::npos)
      << r.output;

  // The panel of the first pair only: eight columns as wide as the widest title ("|<BEST>-HD|" or
  // "ROUNDTRIP", 106) at scale 2, four axial slices of 40 x 32 voxels (tiles 80 x 64), a caption.
  EXPECT_FALSE(std::filesystem::exists(panels / (val.id(1) + ".png")));
  const RgbImage panel = read_png(panels / (val.id(0) + ".png"));
  const int64_t column = std::max<int64_t>(106, (6 * int64_t(best["psnr"].size() + 5) - 1) * 2);
  EXPECT_EQ(panel.width, 4 + 46 + 4 + 8 * column + 7 * 4 + 4 + 8 + 4 + 46 + 4);  // labels "Z 14", ticks "0.25"
  EXPECT_EQ(panel.height, 4 + 14 + 4 + 14 + 4 + (4 * 80 + 3 * 4) + 4);
}

// --redcnn adds the learned baseline's row: the network (a small seeded one here) applied to each
// held-out input, clamped, scored like every row; SR's gap to it and wins over it in the JSON and
// on the console; weights trained in another window than the cache's are refused by name.
TEST(CtsrEvaluate, RedCnnRowIsTheNetworkOnTheInput) {
  Fixture f;
  RedCnnConfig config;
  config.channels = 4;
  config.kernel = 3;
  LayerOptions layer;
  layer.seed = 77;
  RedCnn net(config, layer);
  const auto weights = f.dir / "redcnn.safetensors";
  write_redcnn_weights(weights, net, io::HuWindow{-200, 200});
  const std::vector<std::string> base{"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache",
                                      (f.dir / "cache").string(), "--num-groups", "2", "--device", "cpu",
                                      "--select-limit", "1"};
  std::vector<std::string> args = base;
  for (const std::string& a : {std::string("--redcnn"), weights.string(), std::string("--json"), (f.dir / "s.json").string()})
    args.push_back(a);
  auto r = run_tool("ctsr_evaluate", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(f.dir / "s.json");
  const nlohmann::json scores = nlohmann::json::parse(in);
  const std::vector<std::string> rows{"input", "gaussian", "tv", "median", "redcnn", "roundtrip", "input_roundtrip", "sr"};
  EXPECT_EQ(scores["rows"].get<std::vector<std::string>>(), rows);
  LatentDataset val(f.dir / "cache", "val");
  const Shape batch{1, 8 * kD, 8 * kH, 8 * kW};
  double gap_psnr = 0, gap_ssim = 0;
  int64_t wins = 0;
  for (int64_t i = 0; i < 2; ++i) {
    const Tensor ld = io::read_npy(val.info(i).ld_path);
    const Tensor hd = io::read_npy(val.info(i).hd_path).reshape(batch);
    const Tensor restored = clamp(restore_volume(net, ld), -1.0, 1.0).reshape(batch);
    const auto& line = scores["pairs"][size_t(i)];
    const double s = ssim(restored, hd).per_sample.to_vector<float>()[0];
    const double p = psnr(restored, hd).psnr.to_vector<float>()[0];
    EXPECT_NEAR(line["redcnn"]["ssim"].get<double>(), s, 1e-6);
    EXPECT_NEAR(line["redcnn"]["psnr"].get<double>(), p, 1e-4);
    EXPECT_NE(line["redcnn"]["psnr"], line["input"]["psnr"]);  // the network changed the input
    gap_psnr += (line["sr"]["psnr"].get<double>() - p) / 2;
    gap_ssim += (line["sr"]["ssim"].get<double>() - s) / 2;
    wins += line["sr"]["psnr"].get<double>() > line["redcnn"]["psnr"].get<double>();
  }
  EXPECT_EQ(scores["redcnn"]["weights"], weights.string());
  EXPECT_NEAR(scores["redcnn"]["sr_minus_redcnn"]["psnr"].get<double>(), gap_psnr, 1e-4);
  EXPECT_NEAR(scores["redcnn"]["sr_minus_redcnn"]["ssim"].get<double>(), gap_ssim, 1e-6);
  EXPECT_EQ(scores["redcnn"]["sr_wins"]["pairs"], wins);
  EXPECT_EQ(scores["redcnn"]["sr_wins"]["of"], 2);
  EXPECT_NE(r.output.find("sr above it on " + std::to_string(wins) + " of 2 pairs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\nredcnn "), std::string::npos) << r.output;  // its line in the table

  // Another window than the cache's: one line naming both.
  write_redcnn_weights(weights, net, io::HuWindow{-1000, 1000});
  args = base;
  args.push_back("--redcnn");
  args.push_back(weights.string());
  r = run_tool("ctsr_evaluate", args);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("trained in the HU window -1000,1000"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is in -200,200"), std::string::npos) << r.output;
}

// --select-cache: the baselines' parameters come from another cache's train split (the training
// cache, when --cache holds phantoms of a seed never trained on).
TEST(CtsrEvaluate, SelectCacheChoosesTheBaselinesElsewhere) {
  Fixture f;
  std::filesystem::copy(f.dir / "cache", f.dir / "other", std::filesystem::copy_options::recursive);
  auto r = run_tool("ctsr_evaluate", {"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache",
                                      (f.dir / "cache").string(), "--select-cache", (f.dir / "other").string(),
                                      "--num-groups", "2", "--device", "cpu", "--select-limit", "1", "--json",
                                      (f.dir / "s.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(f.dir / "s.json");
  const nlohmann::json scores = nlohmann::json::parse(in);
  EXPECT_EQ(scores["baselines"]["chosen_on"], (f.dir / "other" / "train").string());
  EXPECT_EQ(scores["split"], (f.dir / "cache" / "val").string());
}

// A cache made by ctsr_vqae cache with the same VQ-AE file and patch size: the VQ-AE rows and SR
// start from its latents instead of encoding again, and score what encoding again scores (the
// round trips to float rounding of the normalisation, SR exactly: the sampler sees the same LD
// latent); --reencode encodes again.
TEST(CtsrEvaluate, CachedLatentsStandForEncodingAgain) {
  Fixture f;
  LatentDataset val(f.dir / "cache", "val");
  {
    std::ofstream csv(f.dir / "pairs.csv");
    csv << "id,ld,hd,split\n";
    for (int64_t i = 0; i < val.size(); ++i)
      csv << val.id(i) << "," << val.info(i).ld_path << "," << val.info(i).hd_path << ",val\n";
  }
  auto r = run_tool("ctsr_vqae", {"cache", "--weights", kVqae, "--num-groups", "2", "--pairs", (f.dir / "pairs.csv").string(),
                                  "--out", (f.dir / "made").string(), "--patch-size", "0", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto evaluate = [&](const std::string& json, std::vector<std::string> extra, const std::string& cache = "made") {
    std::vector<std::string> args{"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache", (f.dir / cache).string(),
                                  "--select-cache", (f.dir / "cache").string(), "--num-groups", "2", "--device", "cpu",
                                  "--select-limit", "1", "--json", (f.dir / json).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto result = run_tool("ctsr_evaluate", args);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    std::ifstream in(f.dir / json);
    return nlohmann::json::parse(in);
  };
  const nlohmann::json cached = evaluate("cached.json", {}), again = evaluate("again.json", {"--reencode"});
  EXPECT_EQ(cached["latents_from_cache"], 2);
  EXPECT_EQ(again["latents_from_cache"], 0);
  for (size_t i = 0; i < 2; ++i) {
    const auto &a = cached["pairs"][i], &b = again["pairs"][i];
    for (const char* row : {"roundtrip", "input_roundtrip", "sr"}) {
      EXPECT_NEAR(a[row]["psnr"].get<double>(), b[row]["psnr"].get<double>(), 1e-3) << row;
      EXPECT_NEAR(a[row]["ssim"].get<double>(), b[row]["ssim"].get<double>(), 1e-5) << row;
    }
    EXPECT_EQ(a["sr"], b["sr"]);
  }
  // The fixture's own cache records no digest: encoded again.
  EXPECT_EQ(evaluate("fixture.json", {}, "cache")["latents_from_cache"], 0);
}

// --refiner: sr is the refiner on (input, the latent path's result), sr_latent the latent path
// alone (what sr is without --refiner). A refiner started from a RED-CNN with its guide weights at
// zero is that RED-CNN exactly, whatever the guide; with guide weights it is not. ctsr_infer
// --refiner writes the same refined volume. A one-input network is refused as a refiner and a
// refiner as --redcnn.
TEST(CtsrEvaluate, RefinerRowIsTheGuidedNetworkOnTheInputAndTheLatentPath) {
  Fixture f;
  LayerOptions layer;
  layer.seed = 77;
  RedCnn plain({4, 3}, layer);
  RedCnnConfig guided_config{4, 3};
  guided_config.in_channels = 2;
  RedCnn guided(guided_config, layer);
  init_redcnn_from(guided, plain, "plain");
  const auto plain_file = f.dir / "plain.safetensors", refiner_file = f.dir / "refiner.safetensors";
  write_redcnn_weights(plain_file, plain, io::HuWindow{-200, 200});
  write_redcnn_weights(refiner_file, guided, io::HuWindow{-200, 200});
  auto evaluate = [&](const std::string& json, std::vector<std::string> extra) {
    std::vector<std::string> args{"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache", (f.dir / "cache").string(),
                                  "--num-groups", "2", "--device", "cpu", "--select-limit", "1", "--json",
                                  (f.dir / json).string(), "--redcnn", plain_file.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_tool("ctsr_evaluate", args);
  };
  auto read = [&](const std::string& json) {
    std::ifstream in(f.dir / json);
    return nlohmann::json::parse(in);
  };
  ASSERT_EQ(evaluate("plain.json", {}).exit_code, 0);
  auto r = evaluate("zero.json", {"--refiner", refiner_file.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json without = read("plain.json"), zero = read("zero.json");
  const std::vector<std::string> rows{"input",     "gaussian",        "tv",        "median", "redcnn",
                                      "roundtrip", "input_roundtrip", "sr_latent", "sr"};
  EXPECT_EQ(zero["rows"].get<std::vector<std::string>>(), rows);
  EXPECT_EQ(zero["refiner"], refiner_file.string());
  EXPECT_NE(r.output.find("\nsr_latent "), std::string::npos) << r.output;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(zero["pairs"][i]["sr_latent"], without["pairs"][i]["sr"]);
    EXPECT_EQ(zero["pairs"][i]["sr"], zero["pairs"][i]["redcnn"]);
  }
  // Guide weights drawn at random: the refined result moves away from RED-CNN's.
  Parameter* conv1 = guided.parameters()[0];
  ASSERT_EQ(conv1->name, "conv1.weight");
  conv1->value.copy_from(test::random_tensor(conv1->value.shape(), 12, DType::float32, -0.3, 0.3));
  write_redcnn_weights(refiner_file, guided, io::HuWindow{-200, 200});
  ASSERT_EQ(evaluate("guided.json", {"--refiner", refiner_file.string()}).exit_code, 0);
  const nlohmann::json used = read("guided.json");
  EXPECT_NE(used["pairs"][0]["sr"], used["pairs"][0]["redcnn"]);
  EXPECT_EQ(used["pairs"][0]["sr_latent"], without["pairs"][0]["sr"]);

  // ctsr_infer --refiner: the refined volume is the network on (input, the unrefined result).
  ASSERT_EQ(f.infer(f.dir / "latent.npy").exit_code, 0);
  r = f.infer(f.dir / "refined.npy", {"--refiner", refiner_file.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("refined"), std::string::npos) << r.output;
  const Tensor input = io::read_volume_unit(f.input, io::HuWindow{-200, 200}).data;
  const Tensor latent_path = io::read_npy(f.dir / "latent.npy");
  const Tensor expected = clamp(restore_volume(guided, input, latent_path), -1.0, 1.0);
  EXPECT_TENSORS_CLOSE(io::read_npy(f.dir / "refined.npy"), expected, 1e-5, 1e-5);

  // The wrong kind of network in either place: one line each.
  r = evaluate("bad.json", {"--refiner", plain_file.string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("takes the low-dose volume alone"), std::string::npos) << r.output;
  r = run_tool("ctsr_evaluate", {"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache", (f.dir / "cache").string(),
                                 "--num-groups", "2", "--device", "cpu", "--redcnn", refiner_file.string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("is a refiner"), std::string::npos) << r.output;
}

TEST(CtsrEvaluate, BadFlagsFailWithOneLine) {
  Fixture f;
  for (const auto& [flag, value, expected] : {std::tuple{"--select-limit", "0", "expected at least one pair"},
                                              std::tuple{"--panels-limit", "-1", "expected 0 or more pairs"},
                                              std::tuple{"--split", "test", "expected train or val"}}) {
    auto r = run_tool("ctsr_evaluate", {"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache",
                                        (f.dir / "cache").string(), "--num-groups", "2", "--device", "cpu", flag, value});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(r.output.find(std::string(flag) + " " + value), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace ctsr::train
