// Classical baselines that every evaluation reports beside the model (specs/evaluation.md): a 3D
// Gaussian filter, Chambolle's total-variation denoising and a 3x3x3 median, each as the SciPy /
// scikit-image call the spec names, so that independent scripts give the same figures; and the
// choice of the Gaussian's sigma and the TV weight by mean PSNR on training pairs.
//
// Volumes are float32 cpu tensors [D, H, W] on the [-1, 1] scale; results have the same shape.
// Golden values: tests/data/baselines (tools/pytorch/make_baseline_golden.py).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr::train {

// The grids of specs/evaluation.md.
inline const std::vector<double> kGaussianSigmas{0.5, 0.75, 1.0, 1.25, 1.5};
inline const std::vector<double> kTvWeights{0.05, 0.1, 0.15, 0.2};

// scipy.ndimage.gaussian_filter(x, sigma, mode="nearest") (truncate 4.0): the kernel
// exp(-x^2 / (2 sigma^2)) for x = -r ... r, r = int(4 sigma + 0.5), normalised to sum 1, applied
// along D, then H, then W, each pass summed in double and rounded to float32 as SciPy does for a
// float32 array; beyond an edge the edge voxel repeats.
Tensor gaussian_filter(const Tensor& volume, double sigma);

// skimage.restoration.denoise_tv_chambolle(x, weight) as scikit-image 0.19 computes it, in double:
// Chambolle's projection iteration on the dual field p (one component per axis) with step
// tau = 1 / (2 * 3). Iteration i = 0, 1, ...:
//   out = x + div p                (div with backward differences; out = x when i = 0)
//   g   = forward differences of out along each axis (0 at the last index)
//   p   = (p - tau g) / (1 + (tau / weight) |g|)
//   E_i = (sum (div p_before)^2 + weight * sum |g|) / numel
// It stops after iteration i > 0 when |E_(i-1) - E_i| < eps * E_0, or after max_iterations, and
// returns that iteration's `out`.
struct TvOptions {
  double eps = 2e-4;
  int max_iterations = 200;
};
struct TvResult {
  Tensor volume;
  int iterations = 0;  // iterations run, the last one's `out` returned (i + 1 when it stopped at i)
};
TvResult denoise_tv_chambolle(const Tensor& volume, double weight, const TvOptions& options = {});

// scipy.ndimage.median_filter(x, 3, mode="nearest"): the median of the 27 voxels of the 3x3x3
// neighbourhood, indices clamped to the volume.
Tensor median_filter3(const Tensor& volume);

// ---- choosing the parameters -----------------------------------------------------------------

// One parameter's grid and the mean PSNR (data range 2.0, against the target) of the filtered
// input at each value; `chosen` is the value of the highest mean (the first of equal ones).
struct GridChoice {
  std::vector<double> grid, mean_psnr;
  double chosen = 0;
};
struct BaselineParameters {
  GridChoice sigma, tv_weight;
  int64_t pairs = 0;  // training pairs the means are over
};
struct VolumePair {
  Tensor input, target;  // [D, H, W] float32 cpu, on [-1, 1]
};
// Reads pair i of `count` through `read_pair` (one at a time, so only one pair is held) and
// scores every sigma of `sigmas` and every weight of `tv_weights` on it.
BaselineParameters select_baseline_parameters(int64_t count, const std::function<VolumePair(int64_t)>& read_pair,
                                              const std::vector<double>& sigmas = kGaussianSigmas,
                                              const std::vector<double>& tv_weights = kTvWeights);

// The Gaussian's sigma alone, the same way (the diffusion trainer's comparison panels).
GridChoice select_gaussian_sigma(int64_t count, const std::function<VolumePair(int64_t)>& read_pair,
                                 const std::vector<double>& sigmas = kGaussianSigmas);

// PSNR of one volume against another (data range 2.0), through the project's metric.
double volume_psnr(const Tensor& volume, const Tensor& target);

}  // namespace ctsr::train
