// ctsr_infer as users run it: a NIfTI volume in, a NIfTI volume out with the input's geometry,
// reproducible per seed, the sliding decode beyond the training depth, and bad inputs that fail
// with one line naming the file and leave no output.
#include <fstream>

#include "kernels/activation.h"
#include "kernels/metrics.h"
#include "runtime/formats/npy.h"
#include "train/latent_data.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "train/checkpoint.h"
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
    auto vqae = Vqae::load(kVqae, 2, Device::cpu());
    write_cache(dir / "cache", {.train = 3, .val = 2, .hd_volumes = true, .latent_min = vqae->code_min(),
                                .latent_max = vqae->code_max()});
    TrainConfig c = small_config(dir);
    c.training.max_steps = 2;
    c.validation.light_every = 0;
    c.diffusion.sampling_steps = 3;
    TrainerOptions o;
    o.progress = false;
    std::ostringstream sink;
    o.log = &sink;
    Trainer(c, o).run();
    checkpoint = checkpoint_path(dir / "run" / "checkpoints", 2);
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

TEST(CtsrInfer, DeeperVolumesGoThroughTheSlidingDecode) {
  Fixture f;
  io::Volume deep;
  deep.data = test::random_tensor({48, 40, 32}, 6, DType::float32, -300, 300);  // latent depth 6 > 3
  io::write_volume(f.dir / "deep.nii.gz", deep);
  f.input = f.dir / "deep.nii.gz";
  auto r = f.infer(f.dir / "deep_sr.nii.gz");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("sliding decode in slabs of 3"), std::string::npos) << r.output;
  EXPECT_EQ(io::read_volume(f.dir / "deep_sr.nii.gz").data.shape(), (Shape{48, 40, 32}));
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
  io::Volume odd;
  odd.data = test::random_tensor({20, 40, 32}, 7, DType::float32, -300, 300);
  io::write_volume(f.dir / "odd.nii.gz", odd);
  const auto input = f.input;
  f.input = f.dir / "odd.nii.gz";
  fails(f.infer(f.dir / "out.nii.gz"), {"odd.nii.gz", "20"});
  f.input = input;
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

// ctsr_evaluate on the held-out pairs: the input, the VQ-AE round trip and the result, each
// scored against HD; the input's and the round trip's scores recomputed here independently.
TEST(CtsrEvaluate, ScoresInputRoundTripAndResultAgainstHd) {
  Fixture f;
  auto r = run_tool("ctsr_evaluate", {"--model", f.checkpoint.string(), "--vqae", kVqae, "--cache", (f.dir / "cache").string(),
                                      "--num-groups", "2", "--device", "cpu", "--json", (f.dir / "scores.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::vector<std::string> all;
  for (std::string line; std::getline(lines, line);) all.push_back(line);
  ASSERT_GE(all.size(), 6u);
  const std::vector<std::string> last(all.end() - 6, all.end());
  const char* keys[] = {"ssim_ld", "ssim_rt", "ssim_sr", "psnr_ld", "psnr_rt", "psnr_sr"};
  for (int k = 0; k < 6; ++k) EXPECT_EQ(last[size_t(k)].rfind(std::string(keys[k]) + " ", 0), 0u) << last[size_t(k)];
  std::ifstream in(f.dir / "scores.json");
  const nlohmann::json scores = nlohmann::json::parse(in);
  EXPECT_EQ(scores["mean"]["pairs"], 2);
  auto vqae = Vqae::load(kVqae, 2, Device::cpu());
  double ssim_ld = 0, psnr_rt = 0;
  LatentDataset val(f.dir / "cache", "val");
  for (int64_t i = 0; i < 2; ++i) {
    const Shape batch{1, 8 * kD, 8 * kH, 8 * kW};
    const Tensor ld = io::read_npy(val.metadata(i).at("ld_path")).reshape(batch);
    const Tensor hd = io::read_npy(val.metadata(i).at("hd_path")).reshape(batch);
    NoGradGuard no_grad;
    Tensor rt = clamp(vqae->decode(vqae->encode(ld.reshape({1, 8 * kD, 8 * kH, 8 * kW, 1}))), -1.0, 1.0);
    ssim_ld += ssim(ld, hd).per_sample.to_vector<float>()[0] / 2;
    psnr_rt += psnr(rt.reshape(batch), hd).psnr.to_vector<float>()[0] / 2;
  }
  EXPECT_NEAR(scores["mean"]["ssim_ld"].get<double>(), ssim_ld, 1e-6);
  EXPECT_NEAR(scores["mean"]["psnr_rt"].get<double>(), psnr_rt, 1e-4);
  EXPECT_TRUE(std::isfinite(scores["mean"]["psnr_sr"].get<double>()));
}

}  // namespace
}  // namespace ctsr::train
