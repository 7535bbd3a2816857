// ctsr_metrics: SSIM and PSNR of a predicted volume against a target, as kernels/metrics.h
// computes them (scikit-image's definitions; axial slices along D).
//
//   ctsr_metrics --pred A --target B [--data-range 2.0] [--window -200,200] [--device auto|cpu|cuda|cuda:N|cuda_on_cpu]
//                [--series-uid UID] [--pred-series-uid UID] [--target-series-uid UID]
//
// NIfTI inputs (.nii, .nii.gz) and DICOM series (a folder, or a .dcm file) are read as HU and
// windowed to [-1, 1]; .npy inputs are taken as already on [-1, 1] (DESIGN.md, Conventions), so the
// default data range is 2. --series-uid picks the series of every DICOM input (NIfTI and .npy
// inputs ignore it); --pred-series-uid and --target-series-uid pick one input's (when the two are
// different series, e.g. a result folder and a folder holding several). Prints one JSON object on
// stdout:
//   {"ssim": mean over slices, "psnr": dB, "mse": mean squared error, "ssim_slices": [per slice]}
// psnr is null when the volumes are identical (mse 0, PSNR +inf, which JSON cannot write).
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/metrics.h"
#include "runtime/device.h"
#include "runtime/formats/volume.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"SSIM and PSNR of a predicted CT volume against a target; prints one JSON object", "ctsr_metrics"};
  std::string pred_path, target_path, window_text = "-200,200";
  std::string device_text = "auto", series_uid, pred_series_uid, target_series_uid;
  double data_range = 2.0;
  app.add_option("--pred", pred_path, "predicted volume (.nii, .nii.gz, a DICOM series folder or .dcm file as HU; "
                                      ".npy on [-1, 1])")->required();
  app.add_option("--target", target_path, "reference volume, same shape")->required();
  app.add_option("--data-range", data_range, "intensity range of the [-1, 1] scale")->capture_default_str();
  app.add_option("--window", window_text, "HU window lo,hi mapped to [-1, 1] for NIfTI and DICOM inputs")
      ->capture_default_str();
  app.add_option("--series-uid", series_uid,
                 "DICOM: the SeriesInstanceUID to read from a folder holding several series (every DICOM input)");
  app.add_option("--pred-series-uid", pred_series_uid, "DICOM: --series-uid for --pred alone");
  app.add_option("--target-series-uid", target_series_uid, "DICOM: --series-uid for --target alone");
  app.add_option("--device", device_text, "auto (the GPU when there is one), cpu, cuda, cuda:N or cuda_on_cpu")
      ->capture_default_str();

  return ctsr::tools::run_program(app, argc, argv, [&] {
    using namespace ctsr;
    // Everything the user typed is checked before a volume is read.
    const io::HuWindow window = io::parse_hu_window(window_text);
    CTSR_CHECK(std::isfinite(data_range) && data_range > 0, "--data-range ", data_range,
               ": expected a finite number > 0 (2.0 for intensities on [-1, 1])");
    const Device device = tools::device_from_flag(device_text);

    // --series-uid applies to the DICOM inputs; --pred-series-uid / --target-series-uid to theirs.
    const auto series_of = [&](const std::string& path, const std::string& own) {
      if (!own.empty()) return io::VolumeReadOptions{own};
      return io::VolumeReadOptions{io::volume_format(path) == io::VolumeFormat::dicom ? series_uid : std::string()};
    };
    const io::Volume pred = io::read_volume_unit(pred_path, window, series_of(pred_path, pred_series_uid));
    const io::Volume target = io::read_volume_unit(target_path, window, series_of(target_path, target_series_uid));
    CTSR_CHECK(pred.data.shape() == target.data.shape(), "--pred '", pred_path, "' is ", pred.data.shape().str(),
               " but --target '", target_path, "' is ", target.data.shape().str(),
               " ([D, H, W]); expected the same shape");
    const Shape& s = pred.data.shape();
    constexpr int taps = kernels::kSsimTaps;
    CTSR_CHECK(s[1] >= taps && s[2] >= taps, "--pred '", pred_path, "' has slices of H x W = ", s[1], " x ", s[2],
               "; SSIM's ", taps, " x ", taps, " window needs H and W of at least ", taps);

    // One volume is a batch of one: [D, H, W] -> [1, D, H, W].
    const Shape batch{1, s[0], s[1], s[2]};
    const Tensor p = pred.data.reshape(batch).to(device);
    const Tensor t = target.data.reshape(batch).to(device);
    const SsimResult ssim_result = ssim(p, t, data_range);
    const PsnrResult psnr_result = psnr(p, t, data_range);

    const std::vector<float> slices = ssim_result.per_slice.to_vector<float>();
    nlohmann::ordered_json out;
    out["ssim"] = double(ssim_result.per_sample.to_vector<float>()[0]);
    out["psnr"] = double(psnr_result.psnr.to_vector<float>()[0]);  // +inf is written as null
    out["mse"] = double(psnr_result.mse.to_vector<float>()[0]);
    out["ssim_slices"] = std::vector<double>(slices.begin(), slices.end());
    std::cout << out.dump() << std::endl;
  });
}
