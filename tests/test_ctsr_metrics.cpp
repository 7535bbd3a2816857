// ctsr_metrics end to end, run as a user runs it: its one JSON object equals what the SSIM and
// PSNR kernels (kernels/metrics.h, checked against scikit-image in test_metrics.cpp) give for
// the same volumes, for .npy inputs on [-1, 1] and NIfTI inputs in HU (windowed, so 500 HU and
// 300 HU are both 1), DICOM series likewise (chosen by --series-uid); every bad invocation fails with exit status 1 and one line naming the
// file or flag and what was expected.
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/metrics.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

// A target and a noisy copy of it: [D, H, W] = [4, 16, 13] (H, W >= 11 for SSIM's window).
struct Pair {
  Tensor target, pred;
};

Pair noisy_pair(double lo, double hi, double noise, uint64_t seed) {
  Pair p;
  p.target = random_tensor({4, 16, 13}, seed, DType::float32, lo, hi);
  p.pred = p.target.clone();
  if (noise == 0) return p;
  const Tensor n = random_tensor({4, 16, 13}, seed + 1, DType::float32, -noise, noise);
  for (int64_t i = 0; i < p.target.numel(); ++i)
    p.pred.data<float>()[i] = std::clamp(p.target.data<float>()[i] + n.data<float>()[i], float(lo), float(hi));
  return p;
}

void write(const std::filesystem::path& path, const Tensor& data) {
  io::Volume v;
  v.data = data;
  v.geometry.spacing_xyz = {0.8, 0.8, 2.0};
  v.geometry.affine = {{{0.8, 0, 0, -10}, {0, 0.8, 0, 20}, {0, 0, 2.0, -30}, {0, 0, 0, 1}}};
  io::write_volume(path, v);
}

nlohmann::json run_metrics(const std::vector<std::string>& args) {
  const ToolResult r = run_tool("ctsr_metrics", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Exactly one JSON object and nothing else on the terminal.
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  return nlohmann::json::parse(r.output);
}

// The JSON must hold what the kernels give for [1, D, H, W] on the [-1, 1] scale, exactly: the
// program reads back the same float32 values and runs the same path.
void expect_matches_kernels(const nlohmann::json& out, const Tensor& pred_unit, const Tensor& target_unit,
                            Device device, double data_range = 2.0) {
  const Shape batch{1, pred_unit.dim(0), pred_unit.dim(1), pred_unit.dim(2)};
  const Tensor p = pred_unit.reshape(batch).to(device), t = target_unit.reshape(batch).to(device);
  const SsimResult s = ssim(p, t, data_range);
  const PsnrResult q = psnr(p, t, data_range);
  EXPECT_EQ(out.size(), 4u) << out.dump();
  EXPECT_EQ(out.at("ssim").get<double>(), double(s.per_sample.to_vector<float>()[0]));
  EXPECT_EQ(out.at("psnr").get<double>(), double(q.psnr.to_vector<float>()[0]));
  EXPECT_EQ(out.at("mse").get<double>(), double(q.mse.to_vector<float>()[0]));
  const std::vector<float> slices = s.per_slice.to_vector<float>();
  EXPECT_EQ(out.at("ssim_slices").get<std::vector<double>>(), std::vector<double>(slices.begin(), slices.end()));
}

TEST(CtsrMetrics, NpyInputsMatchTheKernels) {
  TempDir dir("metrics");
  const Pair v = noisy_pair(-1, 1, 0.1, 31);
  write(dir / "pred.npy", v.pred);
  write(dir / "target.npy", v.target);
  const std::string pred_path = (dir / "pred.npy").string(), target_path = (dir / "target.npy").string();
  const nlohmann::json out = run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cpu"});
  expect_matches_kernels(out, v.pred, v.target, Device::cpu());
  EXPECT_GT(out.at("ssim").get<double>(), 0.5);
  EXPECT_LT(out.at("ssim").get<double>(), 0.999);
  EXPECT_EQ(out.at("ssim_slices").size(), 4u);

  // Another data range, and the default device (cuda when a GPU is present, else cpu).
  const nlohmann::json r1 = run_metrics({"--pred", pred_path, "--target", target_path, "--data-range", "1.0"});
  expect_matches_kernels(r1, v.pred, v.target, cuda_available() ? Device::cuda(0) : Device::cpu(), 1.0);
#if CTSR_HAVE_CUDA_ON_CPU
  const nlohmann::json on_executor =
      run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cuda_on_cpu"});
  expect_matches_kernels(on_executor, v.pred, v.target, Device::cuda_on_cpu());
#endif
}

TEST(CtsrMetrics, NiftiInputsAreWindowedHu) {
  TempDir dir("metrics");
  // HU from -400 to 400: half the voxels lie outside the default window [-200, 200].
  const Pair v = noisy_pair(-400, 400, 40, 41);
  write(dir / "pred.nii.gz", v.pred);
  write(dir / "target.nii", v.target);
  const io::HuWindow window;
  const std::string pred_path = (dir / "pred.nii.gz").string(), target_path = (dir / "target.nii").string();
  const nlohmann::json out = run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cpu"});
  expect_matches_kernels(out, io::hu_to_unit(v.pred, window), io::hu_to_unit(v.target, window), Device::cpu());

  const io::HuWindow wide{-1000, 1000};
  const nlohmann::json out_wide =
      run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cpu", "--window", "-1000,1000"});
  expect_matches_kernels(out_wide, io::hu_to_unit(v.pred, wide), io::hu_to_unit(v.target, wide), Device::cpu());
}

TEST(CtsrMetrics, HuAboveTheWindowIsClipped) {
  // pred and target differ only where both are above 200 HU (500 vs 300 HU): after windowing
  // both are 1, so the volumes are identical (SSIM 1, MSE 0, PSNR +inf written as null); with
  // a window that reaches 500 HU they differ.
  TempDir dir("metrics");
  const Pair v = noisy_pair(-150, 150, 0, 51);
  Tensor pred = v.target.clone(), target = v.target.clone();
  for (int64_t i = 0; i < pred.numel(); i += 7) {
    pred.data<float>()[i] = 500;
    target.data<float>()[i] = 300;
  }
  write(dir / "pred.nii", pred);
  write(dir / "target.nii", target);
  const std::string pred_path = (dir / "pred.nii").string(), target_path = (dir / "target.nii").string();
  const nlohmann::json out = run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cpu"});
  EXPECT_EQ(out.at("ssim").get<double>(), 1.0);
  EXPECT_EQ(out.at("mse").get<double>(), 0.0);
  EXPECT_TRUE(out.at("psnr").is_null()) << out.dump();
  for (double s : out.at("ssim_slices").get<std::vector<double>>()) EXPECT_EQ(s, 1.0);

  // "-600,600" after --window is a value, not an option, to CLI11 (it starts with a digit).
  const nlohmann::json seen =
      run_metrics({"--pred", pred_path, "--target", target_path, "--device", "cpu", "--window", "-600,600"});
  EXPECT_LT(seen.at("ssim").get<double>(), 1.0);
  EXPECT_GT(seen.at("mse").get<double>(), 0.0);
  const io::HuWindow w{-600, 600};
  expect_matches_kernels(seen, io::hu_to_unit(pred, w), io::hu_to_unit(target, w), Device::cpu());
}

// A failed run: exit status 1 and one line "ctsr_metrics: error: ..." holding every part.
void expect_fails(const std::vector<std::string>& args, const std::vector<std::string>& parts) {
  const ToolResult r = run_tool("ctsr_metrics", args);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("ctsr_metrics: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  for (const std::string& part : parts) expect_contains(r.output, part);
}

// DICOM series are read as HU and windowed like NIfTI; --series-uid picks the series of a folder
// holding several (every DICOM input), --pred-series-uid / --target-series-uid one input's.
TEST(CtsrMetrics, DicomSeriesAreWindowedHuAndChosenBySeriesUid) {
  const std::string two = std::string(CTSR_TEST_DATA_DIR) + "/dicom/two_series";
  const std::string first = "1.2.826.0.1.3680043.10.1011.3.7.1", second = "1.2.826.0.1.3680043.10.1011.3.7.2";
  const io::HuWindow window;
  const Tensor a = io::read_volume_unit(two, window, io::VolumeReadOptions{first}).data;
  const Tensor b = io::read_volume_unit(two, window, io::VolumeReadOptions{second}).data;
  const nlohmann::json same =
      run_metrics({"--pred", two, "--target", two, "--series-uid", second, "--device", "cpu"});
  EXPECT_EQ(same["ssim"].get<double>(), 1.0);  // the same series twice
  EXPECT_TRUE(same["psnr"].is_null());
  EXPECT_EQ(same["ssim_slices"].size(), 4u);
  const nlohmann::json apart = run_metrics({"--pred", two, "--target", two, "--series-uid", second,
                                            "--pred-series-uid", first, "--device", "cpu"});
  expect_matches_kernels(apart, a, b, Device::cpu());
  EXPECT_LT(apart["ssim"].get<double>(), 1.0);
  // A NIfTI input beside a chosen series ignores --series-uid.
  TempDir dir("metrics");
  write(dir / "target.nii.gz", io::unit_to_hu(b, window));
  const nlohmann::json mixed = run_metrics({"--pred", two, "--target", (dir / "target.nii.gz").string(),
                                            "--series-uid", first, "--device", "cpu"});
  expect_matches_kernels(mixed, a, io::read_volume_unit(dir / "target.nii.gz", window).data, Device::cpu());
  // Without a choice: one line naming the folder and the flag.
  const ToolResult r = run_tool("ctsr_metrics", {"--pred", two, "--target", two, "--device", "cpu"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  expect_contains(r.output, "two_series");
  expect_contains(r.output, "--series-uid");
}

TEST(CtsrMetrics, BadInvocationsFailWithOneLine) {
  TempDir dir("metrics");
  const Pair v = noisy_pair(-1, 1, 0.1, 61);
  write(dir / "a.npy", v.pred);
  write(dir / "b.npy", v.target.slice(0, 3).clone());
  write(dir / "small.npy", Tensor::zeros({4, 10, 13}));
  const std::string a = (dir / "a.npy").string(), b = (dir / "b.npy").string();
  expect_fails({"--pred", a, "--target", b}, {a, b, "[4, 16, 13]", "[3, 16, 13]", "expected the same shape"});
  expect_fails({"--pred", a, "--target", (dir / "missing.npy").string()}, {"missing.npy", "no such file"});
  expect_fails({"--pred", a, "--target", a, "--window", "200,-200"}, {"'200,-200'", "lo < hi"});
  expect_fails({"--pred", a, "--target", a, "--window", "abc"}, {"'abc'", "expected 'lo,hi'"});
  expect_fails({"--pred", a, "--target", a, "--data-range", "0"}, {"--data-range 0", "expected a finite number > 0"});
  expect_fails({"--pred", a, "--target", a, "--device", "tpu"}, {"'tpu'", "expected cpu, cuda, cuda:N or cuda_on_cpu"});
  expect_fails({"--pred", (dir / "small.npy").string(), "--target", (dir / "small.npy").string()},
               {"small.npy", "H x W = 10 x 13", "at least 11"});
  expect_fails({"--pred", (dir / "scan.mha").string(), "--target", a}, {"scan.mha", ".nii, .nii.gz or .npy"});
  if (!cuda_available()) expect_fails({"--pred", a, "--target", a, "--device", "cuda"}, {"no CUDA GPU"});
  // A usage error: CLI11's message and its exit status (RequiredError: 106), not a crash.
  const ToolResult usage = run_tool("ctsr_metrics", {"--pred", a});
  EXPECT_NE(usage.exit_code, 0);
  EXPECT_NE(usage.exit_code, 1);
  expect_contains(usage.output, "--target is required");
}

}  // namespace
}  // namespace ctsr::test
