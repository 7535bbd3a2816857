// Image-quality metrics for batches of volumes: SSIM and PSNR (no backward; they score, they are
// not trained through).
//
// Layout: pred and target [B, D, H, W] (the single-channel NDHWC volume without its C = 1), on
// the [-1, 1] intensity scale, where data_range = 2.0 (the design's convention). Axial slices
// are along D.
//
// SSIM is scikit-image's structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
// use_sample_covariance=False, data_range=R) applied to every axial slice (2-D, over H x W),
// then averaged over the slices of a volume:
//   window   11 taps, w[k] = exp(-k^2 / (2 sigma^2)) for k = -5..5, normalised to sum 1
//            (sigma 1.5, truncate 3.5: radius int(3.5 * 1.5 + 0.5) = 5), applied separably
//   moments  ux, uy, uxx, uyy, uxy = window-weighted means of x, y, x^2, y^2, x*y
//            vx = uxx - ux^2, vy = uyy - uy^2, vxy = uxy - ux uy   (population covariance)
//   map      S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)),
//            C1 = (0.01 R)^2, C2 = (0.03 R)^2
//   mean     over the interior only: pixels at least 5 from every border of the slice, whose
//            window fits inside it (scikit-image crops (win_size - 1) / 2 = 5 after filtering,
//            so its padding mode never reaches the mean), i.e. (H - 10) x (W - 10) pixels
// H and W must be at least 11 (one interior pixel), D at least 1. Results: per_slice [B, D],
// per_sample [B] (the mean of the sample's D per-slice values).
//
// PSNR per sample over the whole volume: mse = mean((pred - target)^2), psnr = 10 log10(R^2 /
// mse), +inf when mse is 0 (pred == target), as scikit-image's peak_signal_noise_ratio gives.
//
// Paths: cpu reference (float32, float64 inputs; everything computed in double), CUDA and
// CUDA-on-CPU (float32 inputs; moments filtered and everything accumulated in double, see
// kernels/metrics.cu for why). Results have the inputs' dtype and device. The CUDA path is
// deterministic (fixed reduction orders, no atomics); one launch scores every slice of the
// batch, a second one averages per sample.
#pragma once

#include <cmath>

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct SsimResult {
  Tensor per_sample;  // [B]
  Tensor per_slice;   // [B, D]
};

struct PsnrResult {
  Tensor psnr;  // [B], decibels
  Tensor mse;   // [B]
};

SsimResult ssim(const Tensor& pred, const Tensor& target, double data_range = 2.0);
// pred, target [B, ...]: any shape with a batch dimension first ([B, D, H, W] for volumes).
PsnrResult psnr(const Tensor& pred, const Tensor& target, double data_range = 2.0);

}  // namespace ctsr

namespace ctsr::kernels {

// The Gaussian window of SSIM: scipy.ndimage's gaussian kernel for sigma 1.5, truncate 3.5.
constexpr int kSsimRadius = 5;
constexpr int kSsimTaps = 2 * kSsimRadius + 1;
constexpr double kSsimSigma = 1.5;
constexpr double kSsimK1 = 0.01, kSsimK2 = 0.03;

// The weights in double, normalised to sum 1: w[k] for the offset k - 5. scipy computes
// exp(-0.5 / sigma^2 * k^2) and divides by the sum, as here.
inline void ssim_window_weights(double w[kSsimTaps]) {
  double sum = 0.0;
  for (int k = 0; k < kSsimTaps; ++k) {
    const double offset = double(k - kSsimRadius);
    w[k] = std::exp(-0.5 / (kSsimSigma * kSsimSigma) * offset * offset);
    sum += w[k];
  }
  for (int k = 0; k < kSsimTaps; ++k) w[k] /= sum;
}

struct MetricShape {
  int64_t b = 0, d = 0, h = 0, w = 0;  // SSIM: [B, D, H, W]; PSNR: b samples of d * h * w values (h = w = 1)
  int64_t per_sample() const { return d * h * w; }
};

}  // namespace ctsr::kernels

// CUDA launchers (float32): outputs allocated by the dispatch. c1, c2 are the SSIM constants.
CTSR_DECLARE_LAUNCHERS(
  void ssim(const MetricShape& shape, const Tensor& pred, const Tensor& target, double c1, double c2,
            Tensor& per_slice, Tensor& per_sample);
  void psnr(const MetricShape& shape, const Tensor& pred, const Tensor& target, double data_range, Tensor& psnr,
            Tensor& mse);
)

namespace ctsr::kernels::cpu {
template <class T>
void ssim(const MetricShape& shape, const T* pred, const T* target, double c1, double c2, T* per_slice,
          T* per_sample);
template <class T>
void psnr(const MetricShape& shape, const T* pred, const T* target, double data_range, T* psnr, T* mse);
}  // namespace ctsr::kernels::cpu
