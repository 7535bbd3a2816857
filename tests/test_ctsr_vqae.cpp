// ctsr_vqae as users run it: info, convert, encode, decode and cache on the golden tiny model
// (tests/data/vqae/), and every bad input the issue lists: a one-line error naming the file and
// the expectation, exit status 1, and no output file left behind.
#include <fstream>

#include "model/pytorch_import.h"
#include "model/vqae.h"
#include "runtime/formats/npy.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

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
  EXPECT_FALSE(converted.contains("volume_discriminator.0.weight"));
  auto a = Vqae::load(kCkpt, 2, Device::cpu());
  auto b = Vqae::load((dir / "w.safetensors").string(), 2, Device::cpu());
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

}  // namespace
}  // namespace ctsr::test
