// ctsr_vqae as users run it: info, convert, encode, decode and cache on the golden tiny model
// (tests/data/vqae/), and every bad input the issue lists: a one-line error naming the file and
// the expectation, exit status 1, and no output file left behind. init: a seeded random model in
// convert's format that every command reads, the same bytes per seed, its bad arguments; and the
// num_groups our files record, which an explicit choice overrides with a warning.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>

#include "model/pytorch_import.h"
#include "model/vqae.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "train/data/cache_entry.h"

namespace ctsr::test {
namespace {

const std::string kDir = std::string(CTSR_TEST_DATA_DIR) + "/vqae/";
const std::string kCkpt = kDir + "tiny.ckpt";

ToolResult vqae(std::vector<std::string> args) {
  args.insert(args.end(), {"--num-groups", "2"});
  return run_tool("ctsr_vqae", args);
}

void expect_failure(const ToolResult& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << "one line expected: " << r.output;
  EXPECT_NE(r.output.find("ctsr_vqae: error: "), std::string::npos) << r.output;
  for (const auto& p : parts) EXPECT_NE(r.output.find(p), std::string::npos) << "'" << p << "' not in: " << r.output;
}

TEST(CtsrVqae, InfoNamesTheArchitectureAndWhatIsIgnored) {
  ToolResult r = vqae({"info", kCkpt});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"n_hiddens 4", "levels 3 (8x)", "widths [4, 8, 16, 16]", "n_codes 64", "num_groups 2",
                           "parameters: 265061", "volume_discriminator.0.*", "perceptual_loss.perceptual_model.*",
                           "codebook.N", "codebook.z_avg", "optimizer_states", "hyper_parameters"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " not in:\n" << r.output;
}

TEST(CtsrVqae, ConvertedWeightsGiveTheSameModel) {
  TempDir dir("vqae-convert");
  ToolResult r = vqae({"convert", kCkpt, (dir / "w.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  io::SafetensorsReader converted(dir / "w.safetensors");
  EXPECT_EQ(converted.metadata().at("format"), "ctsr-vqae/1");
  EXPECT_EQ(converted.metadata().at("num_groups"), "2");
  EXPECT_FALSE(converted.contains("volume_discriminator.0.weight"));
  auto a = Vqae::load(kCkpt, 2, Device::cpu());
  auto b = Vqae::load((dir / "w.safetensors").string(), std::nullopt, Device::cpu());  // the recorded 2
  EXPECT_EQ(b->config().num_groups, 2);
  Tensor x = random_tensor({1, 16, 16, 24, 1}, 3);
  EXPECT_TRUE(tensors_equal(b->encode(x), a->encode(x)));
  Tensor z = random_tensor({1, 2, 3, 2, 8}, 4);
  EXPECT_TRUE(tensors_equal(b->decode(z), a->decode(z)));
}

TEST(CtsrVqae, EncodeAndDecodeFilesMatchPyTorch) {
  TempDir dir("vqae-files");
  ToolResult e = vqae({"encode", "--weights", kCkpt, "--input", kDir + "input.npy", "--output",
                       (dir / "z.npy").string(), "--patch-size", "16", "--device", "cpu"});
  ASSERT_EQ(e.exit_code, 0) << e.output;
  Tensor z = io::read_npy(dir / "z.npy");
  EXPECT_EQ(z.shape(), (Shape{8, 4, 2, 6}));
  EXPECT_LT(relative_l2(z, io::read_npy(kDir + "patch16.npy")), 1e-4);
  ToolResult d = vqae({"decode", "--weights", kCkpt, "--input", kDir + "encode.npy", "--output",
                       (dir / "y.npy").string()});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_LT(relative_l2(io::read_npy(dir / "y.npy"), io::read_npy(kDir + "decode.npy")), 1e-4);
  // Normalised round trip through a safetensors latent.
  ASSERT_EQ(vqae({"encode", "--weights", kCkpt, "--input", kDir + "input.npy", "--output",
                  (dir / "zn.safetensors").string(), "--patch-size", "0", "--normalize"}).exit_code, 0);
  io::SafetensorsReader zn(dir / "zn.safetensors");
  EXPECT_EQ(zn.metadata().at("normalized"), "true");
  ASSERT_EQ(vqae({"decode", "--weights", kCkpt, "--input", (dir / "zn.safetensors").string(), "--denormalize",
                  "--output", (dir / "yn.npy").string()}).exit_code, 0);
  EXPECT_LT(relative_l2(io::read_npy(dir / "yn.npy"), io::read_npy(kDir + "decode.npy")), 1e-4);
}

TEST(CtsrVqae, NiftiGeometryTravelsThroughTheLatent) {
  TempDir dir("vqae-nifti");
  io::Volume v;
  std::vector<float> hu(16 * 16 * 24);
  for (size_t i = 0; i < hu.size(); ++i) hu[i] = float(int(i * 37 % 400) - 200);
  v.data = Tensor::from_vector<float>(hu, {16, 16, 24});
  v.geometry.spacing_xyz = {0.7, 0.8, 2.5};
  v.geometry.affine = {{{0.7, 0, 0, -10}, {0, 0.8, 0, 5}, {0, 0, 2.5, 30}, {0, 0, 0, 1}}};
  io::write_volume(dir / "ct.nii.gz", v);
  ASSERT_EQ(vqae({"encode", "--weights", kCkpt, "--input", (dir / "ct.nii.gz").string(), "--output",
                  (dir / "z.safetensors").string(), "--patch-size", "8"}).exit_code, 0);
  ToolResult d = vqae({"decode", "--weights", kCkpt, "--input", (dir / "z.safetensors").string(), "--output",
                       (dir / "back.nii.gz").string()});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  io::Volume back = io::read_volume(dir / "back.nii.gz");
  EXPECT_EQ(back.data.shape(), (Shape{16, 16, 24}));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(back.geometry.spacing_xyz[size_t(i)], v.geometry.spacing_xyz[size_t(i)], 1e-5);
  EXPECT_NEAR(back.geometry.affine[2][3], 30.0, 1e-5);
}

TEST(CtsrVqae, BadInputsFailWithOneLineAndLeaveNoOutput) {
  TempDir dir("vqae-bad");
  const std::string out = (dir / "out.npy").string();
  // A volume not divisible by 8.
  io::write_npy(dir / "odd.npy", random_tensor({20, 16, 16}, 1));
  expect_failure(vqae({"encode", "--weights", kCkpt, "--input", (dir / "odd.npy").string(), "--output", out,
                       "--patch-size", "0"}),
                 {"odd.npy", "D = 20", "multiple of 8"});
  // ... or by the patch size.
  io::write_npy(dir / "unpatched.npy", random_tensor({16, 16, 24}, 1));
  expect_failure(vqae({"encode", "--weights", kCkpt, "--input", (dir / "unpatched.npy").string(), "--output", out,
                       "--patch-size", "16"}),
                 {"unpatched.npy", "W = 24", "multiple of 16"});
  // A latent with the wrong channel count.
  io::write_npy(dir / "seven.npy", random_tensor({7, 2, 2, 2}, 2));
  expect_failure(vqae({"decode", "--weights", kCkpt, "--input", (dir / "seven.npy").string(), "--output", out}),
                 {"seven.npy", "latent has 7 channels", "expects 8"});
  // A truncated checkpoint.
  {
    std::ifstream in(kCkpt, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream cut(dir / "cut.ckpt", std::ios::binary);
    cut.write(bytes.data(), std::streamsize(bytes.size() / 2));
  }
  expect_failure(vqae({"encode", "--weights", (dir / "cut.ckpt").string(), "--input", kDir + "input.npy", "--output", out}),
                 {"cut.ckpt"});
  // A checkpoint with missing keys (a state dict of something else).
  io::write_safetensors(dir / "other.safetensors", {{"encoder.conv_first.weight", random_tensor({4, 1, 3, 3, 3}, 1)}});
  expect_failure(vqae({"decode", "--weights", (dir / "other.safetensors").string(), "--input", kDir + "encode.npy",
                       "--output", out}),
                 {"other.safetensors", "encoder.conv_blocks.0.down.weight"});
  // A 4-D NIfTI.
  expect_failure(vqae({"encode", "--weights", kCkpt, "--input",
                       std::string(CTSR_TEST_DATA_DIR) + "/volumes/float32_4d.nii", "--output", out}),
                 {"float32_4d.nii", "3-D"});
  EXPECT_EQ(dir.entries().size(), 5u) << "an output or temporary file was left behind";
  EXPECT_FALSE(std::filesystem::exists(out));
}

// pairs.csv -> cache; a second run skips what is done; a damaged entry is redone.
TEST(CtsrVqae, CacheIsResumable) {
  TempDir dir("vqae-cache");
  std::ofstream csv(dir / "pairs.csv");
  csv << "id,ld,hd\n";
  for (int i = 0; i < 3; ++i) {
    const std::string id = "case" + std::to_string(i);
    io::Volume ld, hd;
    hd.data = random_tensor({16, 16, 16}, 10 + i, DType::float32, -1000, 400);
    ld.data = random_tensor({16, 16, 16}, 20 + i, DType::float32, -1000, 400);
    std::filesystem::create_directories(dir / "vol");
    io::write_volume(dir / ("vol/" + id + "_ld.nii.gz"), ld);
    io::write_volume(dir / ("vol/" + id + "_hd.nii.gz"), hd);
    csv << id << ",vol/" << id << "_ld.nii.gz,vol/" << id << "_hd.nii.gz\n";
  }
  csv.close();
  const std::vector<std::string> args = {"cache", "--weights", kCkpt, "--pairs", (dir / "pairs.csv").string(), "--out",
                                         (dir / "cache").string(), "--patch-size", "16", "--val-fraction", "0.34"};
  ToolResult first = vqae(args);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("3 pairs encoded, 0 already there; 2 train, 1 val"), std::string::npos) << first.output;
  std::vector<std::filesystem::path> files;
  for (const char* split : {"train", "val"})
    for (const auto& e : std::filesystem::directory_iterator(dir / "cache" / split)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 3u);
  io::SafetensorsReader entry(files[0]);
  EXPECT_EQ(entry.record("ld_latent").shape, (std::vector<int64_t>{8, 2, 2, 2}));
  EXPECT_EQ(entry.record("hd_latent").shape, (std::vector<int64_t>{8, 2, 2, 2}));
  for (const char* key : {"ld_path", "hd_path", "spacing_xyz", "latent_min", "latent_max", "hu_window"})
    EXPECT_TRUE(entry.metadata().count(key)) << key;
  // CacheEntryInfo reads what the cache wrote and writes the same strings back.
  const train::CacheEntryInfo info = train::CacheEntryInfo::from_metadata(entry.metadata(), files[0].string());
  EXPECT_EQ(info.to_metadata(), entry.metadata());
  EXPECT_EQ(info.patch_size, 16);
  EXPECT_EQ(info.n_codes, Vqae::load(kCkpt, 2, Device::cpu())->config().n_codes);
  for (float v : entry.load("hd_latent").to_vector<float>()) {
    EXPECT_GE(v, -1.5f);  // normalised by the codebook's extremes: near [-1, 1]
    EXPECT_LE(v, 1.5f);
  }
  ToolResult second = vqae(args);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("0 pairs encoded, 3 already there"), std::string::npos) << second.output;
  std::filesystem::resize_file(files[1], 100);  // a damaged entry
  ToolResult third = vqae(args);
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_NE(third.output.find("1 pairs encoded, 2 already there"), std::string::npos) << third.output;
}

// The README's path for users without data: ctsr_phantom, then ctsr_vqae cache on its pairs.csv.
TEST(CtsrVqae, CacheFromSyntheticPhantoms) {
  TempDir dir("vqae-phantom");
  ToolResult phantom = run_tool("ctsr_phantom", {"--out", (dir / "data").string(), "--count", "3", "--size", "32",
                                                 "--seed", "4"});
  ASSERT_EQ(phantom.exit_code, 0) << phantom.output;
  ToolResult cache = vqae({"cache", "--weights", kCkpt, "--pairs", (dir / "data/pairs.csv").string(), "--out",
                           (dir / "cache").string(), "--patch-size", "16", "--val-fraction", "0.34"});
  ASSERT_EQ(cache.exit_code, 0) << cache.output;
  EXPECT_NE(cache.output.find("3 pairs encoded, 0 already there; 2 train, 1 val"), std::string::npos) << cache.output;
  int files = 0;
  for (const char* split : {"train", "val"})
    for (const auto& e : std::filesystem::directory_iterator(dir / "cache" / split)) {
      io::SafetensorsReader entry(e.path());
      EXPECT_EQ(entry.record("hd_latent").shape, (std::vector<int64_t>{8, 4, 4, 4})) << e.path();
      // LD and HD phantoms differ (noise), so their latents do.
      EXPECT_FALSE(tensors_equal(entry.load("ld_latent"), entry.load("hd_latent"))) << e.path();
      EXPECT_EQ(entry.metadata().at("split"), split);
      ++files;
    }
  EXPECT_EQ(files, 3);
}

// DICOM: encode a series (--series-uid picks one of a folder holding two), decode to a series
// folder with the latent's geometry; the cache from pairs of series folders (ctsr_phantom
// --format dicom) holds the folders as its sources.
TEST(CtsrVqae, DicomSeriesEncodeDecodeAndCache) {
  TempDir dir("vqae-dicom");
  // Two series of 16^3 in one folder (files of each written on their own, then put together).
  io::Volume v;
  v.geometry.spacing_xyz = {0.7, 0.8, 2.5};
  v.geometry.affine = {{{0.7, 0, 0, -10}, {0, 0.8, 0, 5}, {0, 0, 2.5, 30}, {0, 0, 0, 1}}};
  std::vector<std::string> uids;
  std::filesystem::create_directories(dir / "both");
  for (int s = 0; s < 2; ++s) {
    const std::filesystem::path one = dir / ("series" + std::to_string(s));
    v.data = random_tensor({16, 16, 16}, uint64_t(10 + s), DType::float32, -300, 300);
    io::write_volume(one, v);
    uids.push_back(io::read_volume(one).geometry.dicom->series_uid);
    for (const auto& f : std::filesystem::directory_iterator(one))
      std::filesystem::copy_file(f.path(), dir / "both" / (std::to_string(s) + "_" + f.path().filename().string()));
  }
  const std::string both = (dir / "both").string();
  expect_failure(vqae({"encode", "--weights", kCkpt, "--input", both, "--output", (dir / "z.safetensors").string(),
                       "--patch-size", "0"}),
                 {"both", "--series-uid"});
  EXPECT_FALSE(std::filesystem::exists(dir / "z.safetensors"));
  for (int s = 0; s < 2; ++s) {
    const std::string z = (dir / ("z" + std::to_string(s) + ".npy")).string();
    ToolResult e = vqae({"encode", "--weights", kCkpt, "--input", both, "--output", z, "--patch-size", "0",
                         "--series-uid", uids[size_t(s)]});
    ASSERT_EQ(e.exit_code, 0) << e.output;
    // The same latent as encoding that series' own folder.
    const std::string alone = (dir / ("alone" + std::to_string(s) + ".npy")).string();
    ASSERT_EQ(vqae({"encode", "--weights", kCkpt, "--input", (dir / ("series" + std::to_string(s))).string(),
                    "--output", alone, "--patch-size", "0"}).exit_code, 0);
    EXPECT_TRUE(tensors_equal(io::read_npy(z), io::read_npy(alone))) << s;
  }
  EXPECT_FALSE(tensors_equal(io::read_npy(dir / "z0.npy"), io::read_npy(dir / "z1.npy")));
  ASSERT_EQ(vqae({"encode", "--weights", kCkpt, "--input", both, "--output", (dir / "z.safetensors").string(),
                  "--patch-size", "0", "--series-uid", uids[1]}).exit_code, 0);
  ToolResult d = vqae({"decode", "--weights", kCkpt, "--input", (dir / "z.safetensors").string(), "--output",
                       (dir / "back/").string()});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const io::Volume back = io::read_volume(dir / "back");
  EXPECT_EQ(back.data.shape(), (Shape{16, 16, 16}));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(back.geometry.affine[size_t(i)][size_t(j)], v.geometry.affine[size_t(i)][size_t(j)], 1e-5);
  // An existing folder of other files is not a result to replace: refused before decoding.
  std::filesystem::create_directories(dir / "notes");
  std::ofstream(dir / "notes" / "a.txt") << "x\n";
  expect_failure(vqae({"decode", "--weights", kCkpt, "--input", (dir / "z.safetensors").string(), "--output",
                       (dir / "notes").string()}),
                 {"--output", "a.txt, which is not a DICOM file"});

  ToolResult phantom = run_tool("ctsr_phantom", {"--out", (dir / "data").string(), "--count", "2", "--size", "16",
                                                 "--seed", "4", "--format", "dicom"});
  ASSERT_EQ(phantom.exit_code, 0) << phantom.output;
  ToolResult cache = vqae({"cache", "--weights", kCkpt, "--pairs", (dir / "data/pairs.csv").string(), "--out",
                           (dir / "cache").string(), "--patch-size", "16", "--val-fraction", "0.5"});
  ASSERT_EQ(cache.exit_code, 0) << cache.output;
  EXPECT_NE(cache.output.find("2 pairs encoded, 0 already there; 1 train, 1 val"), std::string::npos) << cache.output;
  for (const char* split : {"train", "val"})
    for (const auto& entry : std::filesystem::directory_iterator(dir / "cache" / split)) {
      const std::string id = entry.path().stem().string();
      io::SafetensorsReader reader(entry.path());
      EXPECT_EQ(reader.record("hd_latent").shape, (std::vector<int64_t>{8, 2, 2, 2})) << id;
      EXPECT_EQ(reader.metadata().at("hd_path"), (dir / "data" / "hd" / (id + "/")).string());
    }
  // Run again: every entry is already there (the folders are the same sources).
  cache = vqae({"cache", "--weights", kCkpt, "--pairs", (dir / "data/pairs.csv").string(), "--out",
                (dir / "cache").string(), "--patch-size", "16", "--val-fraction", "0.5"});
  ASSERT_EQ(cache.exit_code, 0) << cache.output;
  EXPECT_NE(cache.output.find("0 pairs encoded, 2 already there"), std::string::npos) << cache.output;
}

}  // namespace
}  // namespace ctsr::test

namespace ctsr::test {
namespace {

ToolResult init(const std::filesystem::path& out, std::vector<std::string> more) {
  std::vector<std::string> args = {"init", "--out", out.string()};
  args.insert(args.end(), more.begin(), more.end());
  return run_tool("ctsr_vqae", args);
}

std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The tiny golden model's architecture (n_hiddens 4, 64 codes) made by init has exactly the
// tensors convert writes for the golden checkpoint: names in order, dtypes and PyTorch shapes,
// and the same metadata entries.
TEST(CtsrVqaeInit, WritesConvertsFormat) {
  TempDir dir("vqae-init-format");
  ASSERT_EQ(vqae({"convert", kCkpt, (dir / "converted.safetensors").string()}).exit_code, 0);
  ToolResult r = init(dir / "init.safetensors", {"--seed", "5", "--n-hiddens", "4", "--num-groups", "2", "--n-codes", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  io::SafetensorsReader converted(dir / "converted.safetensors"), made(dir / "init.safetensors");
  ASSERT_EQ(made.names(), converted.names());
  for (const std::string& name : converted.names()) {
    EXPECT_EQ(made.record(name).shape, converted.record(name).shape) << name;
    EXPECT_EQ(made.record(name).dtype, converted.record(name).dtype) << name;
  }
  for (const auto& [key, value] : converted.metadata()) EXPECT_TRUE(made.metadata().count(key)) << key;
  EXPECT_EQ(made.metadata().at("num_groups"), "2");
  EXPECT_EQ(made.metadata().at("architecture"), converted.metadata().at("architecture"));
  EXPECT_EQ(made.metadata().at("seed"), "5");
}

// Defaults (n_hiddens 8, 4 groups, 512 codes): info, encode and decode read the file with its
// recorded num_groups (the settings' 24 would not divide 8), and the tool's latent is the model's.
TEST(CtsrVqaeInit, InfoEncodeDecodeRoundTrip) {
  TempDir dir("vqae-init-use");
  const std::string weights = (dir / "w.safetensors").string();
  ToolResult r = init(weights, {"--seed", "11"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ToolResult info = run_tool("ctsr_vqae", {"info", weights});
  ASSERT_EQ(info.exit_code, 0) << info.output;
  for (const char* part : {"n_hiddens 8", "levels 3 (8x)", "widths [8, 16, 32, 32]", "image_channels 1",
                           "embedding_dim 8", "n_codes 512", "num_groups 4", "attention 4 x 32", "ignored:    0 tensors"})
    EXPECT_NE(info.output.find(part), std::string::npos) << part << " not in:\n" << info.output;
  EXPECT_EQ(info.output.find("warning"), std::string::npos) << info.output;

  Tensor volume = random_tensor({16, 16, 24}, 21);
  io::write_npy(dir / "x.npy", volume);
  ToolResult e = run_tool("ctsr_vqae", {"encode", "--weights", weights, "--input", (dir / "x.npy").string(), "--output",
                                        (dir / "z.npy").string(), "--patch-size", "0", "--device", "cpu"});
  ASSERT_EQ(e.exit_code, 0) << e.output;
  Tensor z = io::read_npy(dir / "z.npy");
  EXPECT_EQ(z.shape(), (Shape{8, 2, 2, 3}));
  auto model = Vqae::load(weights, std::nullopt, Device::cpu());
  EXPECT_EQ(model->config().num_groups, 4);
  Tensor expected = model->encode(volume.reshape({1, 16, 16, 24, 1}));  // [1, 2, 2, 3, 8]
  EXPECT_TRUE(tensors_equal(z, move_last_axis_to(expected.reshape({2, 2, 3, 8}), 0)));
  ToolResult d = run_tool("ctsr_vqae", {"decode", "--weights", weights, "--input", (dir / "z.npy").string(),
                                        "--output", (dir / "y.npy").string(), "--device", "cpu"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  Tensor y = io::read_npy(dir / "y.npy");
  EXPECT_EQ(y.shape(), (Shape{16, 16, 24}));
  double sum_sq = 0;
  for (float v : y.to_vector<float>()) {
    ASSERT_TRUE(std::isfinite(v));
    sum_sq += double(v) * v;
  }
  EXPECT_GT(sum_sq, 0.0);  // a random decoder gives a non-trivial volume
}

// PyTorch's default init in the file: conv weights within +-1/sqrt(fan_in) and filling it,
// GroupNorm 1 and 0, and a codebook whose 4096 elements look like N(0, 1).
TEST(CtsrVqaeInit, ParametersHaveTheDefaultInitialisation) {
  TempDir dir("vqae-init-values");
  ASSERT_EQ(init(dir / "w.safetensors", {"--seed", "3"}).exit_code, 0);
  io::SafetensorsReader file(dir / "w.safetensors");
  auto check_uniform = [&](const std::string& key, double fan_in) {
    const std::vector<float> w = file.load(key).to_vector<float>();
    const double bound = 1.0 / std::sqrt(fan_in);
    float largest = 0;
    for (float v : w) largest = std::max(largest, std::fabs(v));
    EXPECT_LE(largest, bound) << key;
    EXPECT_GT(largest, 0.9 * bound) << key;
  };
  check_uniform("encoder.conv_first.weight", 1 * 27);
  check_uniform("encoder.conv_blocks.1.res1.conv1.weight", 8 * 27);
  check_uniform("decoder.conv_blocks.0.up.conv_trans.weight", 32 * 64);  // fan_in of a ConvTranspose: out * k^3
  check_uniform("encoder.mid_block.attn.to_qkv.weight", 32);
  for (float v : file.load("encoder.conv_blocks.0.res1.norm1.weight").to_vector<float>()) EXPECT_EQ(v, 1.0f);
  for (float v : file.load("encoder.conv_blocks.0.res1.norm1.bias").to_vector<float>()) EXPECT_EQ(v, 0.0f);
  const std::vector<float> codes = file.load("codebook.embeddings").to_vector<float>();
  ASSERT_EQ(codes.size(), 512u * 8u);
  double mean = 0, sq = 0;
  for (float v : codes) mean += v, sq += double(v) * v;
  mean /= double(codes.size());
  const double std_dev = std::sqrt(sq / double(codes.size()) - mean * mean);
  // Standard errors: 1/64 for the mean, about 1/90 for the standard deviation; 5 of them allowed.
  EXPECT_NEAR(mean, 0.0, 5.0 / 64);
  EXPECT_NEAR(std_dev, 1.0, 5.0 / 90);
  // Layers sharing a shape draw from different streams.
  EXPECT_FALSE(tensors_equal(file.load("encoder.conv_blocks.0.res1.conv1.weight"),
                             file.load("encoder.conv_blocks.0.res2.conv1.weight")));
}

TEST(CtsrVqaeInit, SameSeedSameBytesOtherSeedDiffers) {
  TempDir dir("vqae-init-seed");
  ASSERT_EQ(init(dir / "a.safetensors", {"--seed", "7"}).exit_code, 0);
  ASSERT_EQ(init(dir / "b.safetensors", {"--seed", "7"}).exit_code, 0);
  ASSERT_EQ(init(dir / "c.safetensors", {"--seed", "8"}).exit_code, 0);
  const std::string a = file_bytes(dir / "a.safetensors");
  EXPECT_GT(a.size(), 1000u);
  EXPECT_EQ(a, file_bytes(dir / "b.safetensors"));
  EXPECT_NE(a, file_bytes(dir / "c.safetensors"));
  io::SafetensorsReader ra(dir / "a.safetensors"), rc(dir / "c.safetensors");
  for (const char* key : {"codebook.embeddings", "encoder.conv_first.weight", "decoder.final_block.2.bias"})
    EXPECT_FALSE(tensors_equal(ra.load(key), rc.load(key))) << key;
}

TEST(CtsrVqaeInit, BadArgumentsFailAndLeaveNothing) {
  TempDir dir("vqae-init-bad");
  const auto out = dir / "w.safetensors";
  auto expect_init_failure = [&](const ToolResult& r, const std::vector<std::string>& parts) {
    expect_failure(r, parts);
    EXPECT_FALSE(std::filesystem::exists(out));
  };
  expect_init_failure(init(out, {"--seed", "1", "--num-groups", "3"}),
                      {"num_groups 3 does not divide the width 8", "widths [8, 16, 32, 32]", "--num-groups"});
  expect_init_failure(init(out, {"--seed", "1", "--n-hiddens", "6", "--num-groups", "4"}),
                      {"num_groups 4 does not divide the width 6"});
  expect_init_failure(init(out, {"--seed", "1", "--n-hiddens", "0"}), {"--n-hiddens is 0", "positive"});
  expect_init_failure(init(out, {"--seed", "1", "--n-hiddens", "-8"}), {"--n-hiddens is -8"});
  expect_init_failure(init(out, {"--seed", "1", "--n-codes", "0"}), {"--n-codes is 0"});
  expect_init_failure(init(out, {"--seed", "1", "--num-groups", "0"}), {"--num-groups is 0"});
  EXPECT_NE(init(out, {}).exit_code, 0);  // --seed is required
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_TRUE(dir.entries().empty());
  // Unwritable places: under a regular file, in a missing directory, over a directory.
  { std::ofstream(dir / "file.txt") << "x"; }
  expect_failure(init(dir / "file.txt" / "w.safetensors", {"--seed", "1"}), {"w.safetensors"});
  expect_failure(init(dir / "missing" / "w.safetensors", {"--seed", "1"}), {"w.safetensors"});
  std::filesystem::create_directories(dir / "adir");
  expect_failure(init(dir / "adir", {"--seed", "1"}), {"adir"});
  EXPECT_TRUE(std::filesystem::is_directory(dir / "adir"));
  EXPECT_TRUE(std::filesystem::is_empty(dir / "adir"));
  std::vector<std::string> left = dir.entries();
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"adir", "file.txt"})) << "a temporary was left behind";
}

TEST(CtsrVqaeInit, ReplacesAnExistingFileAtomically) {
  TempDir dir("vqae-init-replace");
  const auto out = dir / "w.safetensors";
  { std::ofstream(out) << "an older file"; }
  // A failing init leaves it as it was...
  expect_failure(init(out, {"--seed", "1", "--num-groups", "3"}), {"num_groups 3"});
  EXPECT_EQ(file_bytes(out), "an older file");
  // ...a successful one replaces it with a complete file, and no temporary remains.
  ToolResult r = init(out, {"--seed", "1", "--n-hiddens", "4", "--num-groups", "2", "--n-codes", "16"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Vqae::load(out.string(), std::nullopt, Device::cpu())->config().n_codes, 16);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"w.safetensors"}));
}

// An explicit --num-groups or --config value that differs from the file's record wins, with a
// one-line warning; the same value, or a settings file without model.num_groups, says nothing.
TEST(CtsrVqaeInit, ExplicitNumGroupsOverridesTheRecordWithAWarning) {
  TempDir dir("vqae-groups");
  const std::string weights = (dir / "w.safetensors").string();
  ASSERT_EQ(init(weights, {"--seed", "2", "--n-hiddens", "4", "--num-groups", "2", "--n-codes", "32"}).exit_code, 0);
  io::write_npy(dir / "x.npy", random_tensor({8, 8, 16}, 5));
  auto encode = [&](const std::string& name, std::vector<std::string> more) {
    std::vector<std::string> args = {"encode", "--weights", weights, "--input", (dir / "x.npy").string(), "--output",
                                     (dir / name).string(), "--patch-size", "0"};
    args.insert(args.end(), more.begin(), more.end());
    return run_tool("ctsr_vqae", args);
  };
  const std::string note = "ctsr_vqae: warning: w.safetensors records num_groups 2; using the requested ";
  ToolResult recorded = encode("recorded.npy", {});
  ASSERT_EQ(recorded.exit_code, 0) << recorded.output;
  EXPECT_EQ(recorded.output.find("warning"), std::string::npos) << recorded.output;
  ToolResult same = encode("same.npy", {"--num-groups", "2"});
  ASSERT_EQ(same.exit_code, 0) << same.output;
  EXPECT_EQ(same.output.find("warning"), std::string::npos) << same.output;
  ToolResult flag = encode("flag.npy", {"--num-groups", "4"});
  ASSERT_EQ(flag.exit_code, 0) << flag.output;
  EXPECT_NE(flag.output.find(note + "4\n"), std::string::npos) << flag.output;
  { std::ofstream(dir / "one.yaml") << "model:\n  num_groups: 1\n"; }
  { std::ofstream(dir / "none.yaml") << "encode:\n  patch_size: 0\n"; }
  ToolResult config = encode("config.npy", {"--config", (dir / "one.yaml").string()});
  ASSERT_EQ(config.exit_code, 0) << config.output;
  EXPECT_NE(config.output.find(note + "1\n"), std::string::npos) << config.output;
  ToolResult no_key = encode("no_key.npy", {"--config", (dir / "none.yaml").string()});
  ASSERT_EQ(no_key.exit_code, 0) << no_key.output;
  EXPECT_EQ(no_key.output.find("warning"), std::string::npos) << no_key.output;
  // The override really changes the model: GroupNorm over 4 groups of 1 channel, not 2 of 2.
  const Tensor z = io::read_npy(dir / "recorded.npy");
  EXPECT_TRUE(tensors_equal(io::read_npy(dir / "same.npy"), z));
  EXPECT_TRUE(tensors_equal(io::read_npy(dir / "no_key.npy"), z));
  EXPECT_FALSE(tensors_equal(io::read_npy(dir / "flag.npy"), z));
  EXPECT_FALSE(tensors_equal(io::read_npy(dir / "config.npy"), z));
  // An explicit value that does not fit the file's widths is still an error.
  expect_failure(encode("bad.npy", {"--num-groups", "3"}), {"w.safetensors", "num_groups 3 does not divide"});
}

TEST(CtsrVqaeInit, ABadRecordedNumGroupsIsAnError) {
  TempDir dir("vqae-groups-bad");
  ASSERT_EQ(init(dir / "w.safetensors", {"--seed", "2", "--n-hiddens", "4", "--num-groups", "2", "--n-codes", "32"}).exit_code, 0);
  io::SafetensorsReader good(dir / "w.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : good.names()) tensors.emplace_back(name, good.load(name));
  for (const char* bad : {"two", "0", "-2", "2x"}) {
    std::map<std::string, std::string> metadata = good.metadata();
    metadata["num_groups"] = bad;
    io::write_safetensors(dir / "bad.safetensors", tensors, metadata);
    expect_error_mentions([&] { Vqae::load((dir / "bad.safetensors").string(), std::nullopt, Device::cpu()); },
                          {"bad.safetensors", "metadata 'num_groups' is '" + std::string(bad) + "'", "positive integer"});
  }
}

}  // namespace
}  // namespace ctsr::test
