// The classical baselines of evaluations (baselines.h): Gaussian, total variation, median, and
// the choice of their parameters on training pairs. Plain loops on the CPU, OpenMP across lines
// or slices; sums that decide anything (TV's energy) are taken per slice and then added in slice
// order, so the result does not depend on the number of threads.
#include "train/baselines.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/metrics.h"
#include "runtime/error.h"

namespace ctsr::train {

namespace {

struct Dims {
  int64_t d, h, w;
  int64_t numel() const { return d * h * w; }
};

Dims check_volume(const char* op, const Tensor& volume) {
  CTSR_CHECK(volume.defined(), op, ": the volume is undefined");
  CTSR_CHECK(volume.ndim() == 3, op, ": the volume has shape ", volume.shape().str(), "; expected [D, H, W]");
  CTSR_CHECK(volume.dtype() == DType::float32, op, ": the volume is ", dtype_name(volume.dtype()),
             "; expected float32");
  CTSR_CHECK(volume.device() == Device::cpu(), op, ": the volume is on ", volume.device().str(), "; expected cpu");
  CTSR_CHECK(volume.numel() > 0, op, ": the volume has shape ", volume.shape().str(), ", which is empty");
  return {volume.dim(0), volume.dim(1), volume.dim(2)};
}

// SciPy's Gaussian kernel (scipy.ndimage._filters._gaussian_kernel1d, order 0): taps 0 ... r of
// the symmetric kernel, normalised over all 2r + 1 of them.
std::vector<double> gaussian_half_kernel(double sigma) {
  const int radius = static_cast<int>(4.0 * sigma + 0.5);
  std::vector<double> half(static_cast<size_t>(radius) + 1);
  double sum = 0;
  for (int x = -radius; x <= radius; ++x) sum += std::exp(-0.5 / (sigma * sigma) * double(x) * double(x));
  for (int x = 0; x <= radius; ++x) half[size_t(x)] = std::exp(-0.5 / (sigma * sigma) * double(x) * double(x)) / sum;
  return half;
}

// One 1-D pass of the symmetric kernel along `axis` (0 = D, 1 = H, 2 = W), in place on float32
// data, the edge voxel repeated beyond each end. Each output is summed in double from the outer
// taps inwards (SciPy's order for symmetric kernels) and rounded to float32.
void correlate_along(float* data, const Dims& dims, int axis, const std::vector<double>& half) {
  const std::array<int64_t, 3> extent{dims.d, dims.h, dims.w};
  const int64_t n = extent[size_t(axis)];
  int64_t outer = 1, inner = 1;
  for (int a = 0; a < axis; ++a) outer *= extent[size_t(a)];
  for (int a = axis + 1; a < 3; ++a) inner *= extent[size_t(a)];
  const int64_t radius = int64_t(half.size()) - 1, lines = outer * inner;
#pragma omp parallel
  {
    std::vector<double> line(size_t(n + 2 * radius));
#pragma omp for schedule(static)
    for (int64_t l = 0; l < lines; ++l) {
      float* base = data + (l / inner) * n * inner + l % inner;
      for (int64_t k = -radius; k < n + radius; ++k)
        line[size_t(k + radius)] = base[std::clamp<int64_t>(k, 0, n - 1) * inner];
      for (int64_t k = 0; k < n; ++k) {
        const double* centre = &line[size_t(k + radius)];
        double sum = centre[0] * half[0];
        for (int64_t j = radius; j >= 1; --j) sum += (centre[-j] + centre[j]) * half[size_t(j)];
        base[k * inner] = static_cast<float>(sum);
      }
    }
  }
}

}  // namespace

Tensor gaussian_filter(const Tensor& volume, double sigma) {
  const Dims dims = check_volume("gaussian_filter", volume);
  CTSR_CHECK(std::isfinite(sigma) && sigma > 0 && sigma <= 64, "gaussian_filter: sigma is ", sigma,
             "; expected a positive width in voxels (at most 64)");
  const std::vector<double> half = gaussian_half_kernel(sigma);
  Tensor out = volume.clone();
  for (int axis = 0; axis < 3; ++axis) correlate_along(out.data<float>(), dims, axis, half);
  return out;
}

TvResult denoise_tv_chambolle(const Tensor& volume, double weight, const TvOptions& options) {
  const Dims dims = check_volume("denoise_tv_chambolle", volume);
  CTSR_CHECK(std::isfinite(weight) && weight > 0, "denoise_tv_chambolle: weight is ", weight,
             "; expected a positive number");
  CTSR_CHECK(options.max_iterations >= 1, "denoise_tv_chambolle: max_iterations is ", options.max_iterations,
             "; expected at least 1");
  CTSR_CHECK(std::isfinite(options.eps) && options.eps >= 0, "denoise_tv_chambolle: eps is ", options.eps,
             "; expected a non-negative number");
  const int64_t n = dims.numel(), plane = dims.h * dims.w, row = dims.w;
  const float* image = volume.data<float>();
  // The dual field, one component per axis; the component along an axis stays 0 at that axis's
  // last index (its forward difference there is 0), so div p needs no test at the far edges.
  std::vector<double> pd(size_t(n), 0.0), ph(size_t(n), 0.0), pw(size_t(n), 0.0), out(image, image + n);
  std::vector<double> slice_divergence(size_t(dims.d)), slice_gradient(size_t(dims.d));
  const double tau = 1.0 / 6.0;
  double first_energy = 0, previous_energy = 0;
  TvResult result;
  for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
    result.iterations = iteration + 1;
#pragma omp parallel for schedule(static)
    for (int64_t z = 0; z < dims.d; ++z) {
      double divergence_squared = 0;
      if (iteration > 0)
        for (int64_t y = 0; y < dims.h; ++y)
          for (int64_t x = 0; x < dims.w; ++x) {
            const int64_t i = z * plane + y * row + x;
            double div = -(pd[size_t(i)] + ph[size_t(i)] + pw[size_t(i)]);
            if (z > 0) div += pd[size_t(i - plane)];
            if (y > 0) div += ph[size_t(i - row)];
            if (x > 0) div += pw[size_t(i - 1)];
            out[size_t(i)] = double(image[i]) + div;
            divergence_squared += div * div;
          }
      slice_divergence[size_t(z)] = divergence_squared;
    }
#pragma omp parallel for schedule(static)
    for (int64_t z = 0; z < dims.d; ++z) {
      double gradient_norms = 0;
      for (int64_t y = 0; y < dims.h; ++y)
        for (int64_t x = 0; x < dims.w; ++x) {
          const int64_t i = z * plane + y * row + x;
          const double here = out[size_t(i)];
          const double gd = z + 1 < dims.d ? out[size_t(i + plane)] - here : 0.0;
          const double gh = y + 1 < dims.h ? out[size_t(i + row)] - here : 0.0;
          const double gw = x + 1 < dims.w ? out[size_t(i + 1)] - here : 0.0;
          const double norm = std::sqrt(gd * gd + gh * gh + gw * gw);
          gradient_norms += norm;
          const double denominator = 1.0 + norm * (tau / weight);
          pd[size_t(i)] = (pd[size_t(i)] - tau * gd) / denominator;
          ph[size_t(i)] = (ph[size_t(i)] - tau * gh) / denominator;
          pw[size_t(i)] = (pw[size_t(i)] - tau * gw) / denominator;
        }
      slice_gradient[size_t(z)] = gradient_norms;
    }
    double divergence_squared = 0, gradient_norms = 0;
    for (int64_t z = 0; z < dims.d; ++z) {
      divergence_squared += slice_divergence[size_t(z)];
      gradient_norms += slice_gradient[size_t(z)];
    }
    const double energy = (divergence_squared + weight * gradient_norms) / double(n);
    if (iteration == 0) {
      first_energy = previous_energy = energy;
    } else {
      if (std::abs(previous_energy - energy) < options.eps * first_energy) break;
      previous_energy = energy;
    }
  }
  std::vector<float> values(out.begin(), out.end());
  result.volume = Tensor::from_vector(values, volume.shape());
  return result;
}

Tensor median_filter3(const Tensor& volume) {
  const Dims dims = check_volume("median_filter3", volume);
  const float* in = volume.data<float>();
  Tensor out = Tensor::empty(volume.shape());
  float* result = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < dims.d; ++z) {
    std::array<float, 27> window;
    for (int64_t y = 0; y < dims.h; ++y)
      for (int64_t x = 0; x < dims.w; ++x) {
        size_t k = 0;
        for (int64_t dz = -1; dz <= 1; ++dz)
          for (int64_t dy = -1; dy <= 1; ++dy)
            for (int64_t dx = -1; dx <= 1; ++dx) {
              const int64_t zz = std::clamp<int64_t>(z + dz, 0, dims.d - 1);
              const int64_t yy = std::clamp<int64_t>(y + dy, 0, dims.h - 1);
              const int64_t xx = std::clamp<int64_t>(x + dx, 0, dims.w - 1);
              window[k++] = in[(zz * dims.h + yy) * dims.w + xx];
            }
        std::nth_element(window.begin(), window.begin() + 13, window.end());
        result[(z * dims.h + y) * dims.w + x] = window[13];
      }
  }
  return out;
}

double volume_psnr(const Tensor& volume, const Tensor& target) {
  const Shape batch{1, volume.dim(0), volume.dim(1), volume.dim(2)};
  return psnr(volume.reshape(batch), target.reshape(batch), 2.0).psnr.to_vector<float>()[0];
}

BaselineParameters select_baseline_parameters(int64_t count, const std::function<VolumePair(int64_t)>& read_pair,
                                              const std::vector<double>& sigmas,
                                              const std::vector<double>& tv_weights) {
  CTSR_CHECK(count > 0, "select_baseline_parameters: ", count, " pairs; expected at least one");
  CTSR_CHECK(!sigmas.empty() && !tv_weights.empty(), "select_baseline_parameters: an empty grid (",
             sigmas.size(), " sigmas, ", tv_weights.size(), " TV weights)");
  BaselineParameters p;
  p.pairs = count;
  p.sigma.grid = sigmas;
  p.tv_weight.grid = tv_weights;
  p.sigma.mean_psnr.assign(sigmas.size(), 0.0);
  p.tv_weight.mean_psnr.assign(tv_weights.size(), 0.0);
  for (int64_t i = 0; i < count; ++i) {
    const VolumePair pair = read_pair(i);
    CTSR_CHECK(pair.input.shape() == pair.target.shape(), "select_baseline_parameters: pair ", i, ": input ",
               pair.input.shape().str(), " but target ", pair.target.shape().str());
    for (size_t k = 0; k < sigmas.size(); ++k)
      p.sigma.mean_psnr[k] += volume_psnr(gaussian_filter(pair.input, sigmas[k]), pair.target) / double(count);
    for (size_t k = 0; k < tv_weights.size(); ++k)
      p.tv_weight.mean_psnr[k] +=
          volume_psnr(denoise_tv_chambolle(pair.input, tv_weights[k]).volume, pair.target) / double(count);
  }
  for (GridChoice* choice : {&p.sigma, &p.tv_weight}) {
    const auto best = std::max_element(choice->mean_psnr.begin(), choice->mean_psnr.end());
    choice->chosen = choice->grid[size_t(best - choice->mean_psnr.begin())];
  }
  return p;
}

GridChoice select_gaussian_sigma(int64_t count, const std::function<VolumePair(int64_t)>& read_pair,
                                 const std::vector<double>& sigmas) {
  CTSR_CHECK(count > 0 && !sigmas.empty(), "select_gaussian_sigma: ", count, " pairs and ", sigmas.size(),
             " sigmas; expected at least one of each");
  GridChoice choice;
  choice.grid = sigmas;
  choice.mean_psnr.assign(sigmas.size(), 0.0);
  for (int64_t i = 0; i < count; ++i) {
    const VolumePair pair = read_pair(i);
    CTSR_CHECK(pair.input.shape() == pair.target.shape(), "select_gaussian_sigma: pair ", i, ": input ",
               pair.input.shape().str(), " but target ", pair.target.shape().str());
    for (size_t k = 0; k < sigmas.size(); ++k)
      choice.mean_psnr[k] += volume_psnr(gaussian_filter(pair.input, sigmas[k]), pair.target) / double(count);
  }
  choice.chosen = sigmas[size_t(std::max_element(choice.mean_psnr.begin(), choice.mean_psnr.end()) - choice.mean_psnr.begin())];
  return choice;
}

}  // namespace ctsr::train
