// Parallel-beam tomography of axial slices and the two degradations of a phantom (see tomograph.h).
#include "tools/phantom/tomograph.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "runtime/error.h"
#include "runtime/philox.h"

namespace ctsr::tools {
namespace {

constexpr double kPi = std::numbers::pi;

void check_volume(const Tensor& hu, const char* op) {
  hu.check_defined(op);
  CTSR_CHECK(hu.ndim() == 3, op, ": the volume must be [D, H, W], got ", hu.shape().str());
  hu.check_dtype(DType::float32, op);
  hu.check_device(Device::cpu(), op);
}

// ---- tomography ----------------------------------------------------------------------------------
struct Views {
  std::vector<double> cos_theta, sin_theta;
  explicit Views(int64_t angles) : cos_theta(size_t(angles)), sin_theta(size_t(angles)) {
    for (int64_t a = 0; a < angles; ++a) {
      const double theta = kPi * double(a) / double(angles);
      cos_theta[size_t(a)] = std::cos(theta);
      sin_theta[size_t(a)] = std::sin(theta);
    }
  }
};

// floor(u) for u >= -1, by truncation (no libm call; the callers clamp u to [-1, n] first).
inline int64_t floor_from_minus_one(double u) { return int64_t(u + 1.0) - 1; }

// The ramp kernel at offsets -(bins - 1) .. bins - 1 (index n + bins - 1), detector spacing 1.
std::vector<double> ramp_kernel(int64_t bins, RampFilter filter) {
  // Kak & Slaney, "Principles of Computerized Tomographic Imaging", eq. 3.61: the band-limited ramp
  // sampled in space, h(0) = 1/4, h(n odd) = -1/(pi n)^2, h(n even) = 0. Convolving in space with
  // the whole kernel avoids the DC offset of a ramp sampled in frequency and any wrap-around.
  auto ram_lak = [](int64_t n) {
    if (n == 0) return 0.25;
    if (n % 2 == 0) return 0.0;
    return -1.0 / (kPi * kPi * double(n) * double(n));
  };
  std::vector<double> h(size_t(2 * bins - 1));
  for (int64_t n = -(bins - 1); n <= bins - 1; ++n) {
    double v = ram_lak(n);
    // Hann window 0.5 + 0.5 cos(2 pi f) (f in cycles per bin, zero at Nyquist) is
    // 0.5 + 0.25 e^{2 pi i f} + 0.25 e^{-2 pi i f}: in space, 0.5 h[n] + 0.25 (h[n-1] + h[n+1]).
    if (filter == RampFilter::hann) v = 0.5 * v + 0.25 * (ram_lak(n - 1) + ram_lak(n + 1));
    h[size_t(n + bins - 1)] = v;
  }
  return h;
}

// Parallel-beam projection and filtered back-projection of [H, W] slices, with its scratch
// buffers (one per thread). Interpolation reads a copy of the data with a zero border (one before,
// two after along each interpolated axis), so sample positions clamped to [-1, n] need no branch
// and contribute exactly zero outside.
class Tomograph {
 public:
  Tomograph(int64_t H, int64_t W, int64_t angles, int64_t bins, RampFilter filter)
      : H_(H), W_(W), angles_(angles), bins_(bins), views_(angles), kernel_(ramp_kernel(bins, filter)),
        padded_(size_t((H + 3) * (W + 3)), 0.0), filtered_(size_t(angles * (bins + 3)), 0.0),
        row_offset_(size_t(angles)) {}

  // Joseph's projector. f: [H, W] row-major; sinogram: [angles, bins].
  void project(const double* f, double* sinogram) {
    const int64_t pw = W_ + 3;
    // The copy with its zero border, and the rows and columns where the slice is not zero: rays
    // and steps outside them add nothing (most of a CT slice's corners are air).
    int64_t j0 = H_, j1 = -1, i0 = W_, i1 = -1;
    for (int64_t j = 0; j < H_; ++j)
      for (int64_t i = 0; i < W_; ++i) {
        const double v = f[j * W_ + i];
        padded_[size_t((j + 1) * pw + i + 1)] = v;
        if (v != 0.0) {
          j0 = std::min(j0, j), j1 = std::max(j1, j);
          i0 = std::min(i0, i), i1 = std::max(i1, i);
        }
      }
    std::fill(sinogram, sinogram + angles_ * bins_, 0.0);
    if (j1 < 0) return;
    const double* p = padded_.data();
    const double half_w = 0.5 * double(W_ - 1), half_h = 0.5 * double(H_ - 1), half_b = 0.5 * double(bins_ - 1);
    for (int64_t a = 0; a < angles_; ++a) {
      const double c = views_.cos_theta[size_t(a)], s = views_.sin_theta[size_t(a)];
      double* out = sinogram + a * bins_;
      // Closer to horizontal (|s| >= |c|): one sample per column at y = (t - x c) / s, each
      // standing for a path of 1/|s|; otherwise one per row at x = (t - y s) / c.
      const bool by_column = std::abs(s) >= std::abs(c);
      const int64_t across = by_column ? H_ : W_;
      const int64_t first_step = by_column ? i0 : j0, last_step = by_column ? i1 : j1;
      const double support_lo = double(by_column ? j0 : i0) - 1.0, support_hi = double(by_column ? j1 : i1) + 1.0;
      const double inv = 1.0 / (by_column ? s : c), along = by_column ? c : s;
      const double half_steps = by_column ? half_w : half_h, half_across = by_column ? half_h : half_w;
      const double length = std::abs(inv);
      // Position across at step n: start + n * slope (pixels of the slice).
      const double slope = -along * inv;
      // Bins whose rays can meet the support (its corners' t, one pixel of margin).
      double t_lo = 1e300, t_hi = -1e300;
      for (double x : {double(i0) - half_w - 1.0, double(i1) - half_w + 1.0})
        for (double y : {double(j0) - half_h - 1.0, double(j1) - half_h + 1.0}) {
          t_lo = std::min(t_lo, x * c + y * s);
          t_hi = std::max(t_hi, x * c + y * s);
        }
      const int64_t b0 = std::max<int64_t>(0, int64_t(std::floor(t_lo + half_b)));
      const int64_t b1 = std::min<int64_t>(bins_ - 1, int64_t(std::ceil(t_hi + half_b)));
      for (int64_t b = b0; b <= b1; ++b) {
        const double t = double(b) - half_b;
        const double start = (t + half_steps * along) * inv + half_across;
        // Steps whose sample lies within the support; elsewhere the interpolation reads zeros.
        int64_t lo = first_step, hi = last_step;
        if (slope != 0.0) {
          const double n0 = (support_lo - start) / slope, n1 = (support_hi - start) / slope;
          lo = std::max<int64_t>(lo, int64_t(std::floor(std::min(n0, n1))) - 1);
          hi = std::min<int64_t>(hi, int64_t(std::ceil(std::max(n0, n1))) + 1);
        } else if (start < support_lo || start > support_hi) {
          hi = lo - 1;
        }
        double sum = 0.0;
        if (by_column) {
          for (int64_t n = lo; n <= hi; ++n) {
            const double r = std::clamp(start + double(n) * slope, -1.0, double(across));
            const int64_t j = floor_from_minus_one(r);
            const double w = r - double(j);
            sum += (1.0 - w) * p[(j + 1) * pw + n + 1] + w * p[(j + 2) * pw + n + 1];
          }
        } else {
          for (int64_t n = lo; n <= hi; ++n) {
            const double q = std::clamp(start + double(n) * slope, -1.0, double(across));
            const int64_t i = floor_from_minus_one(q);
            const double w = q - double(i);
            const double* row = p + (n + 1) * pw;
            sum += (1.0 - w) * row[i + 1] + w * row[i + 2];
          }
        }
        out[b] = sum * length;
      }
    }
  }

  // sinogram [angles, bins] -> f [H, W] in the sinogram's units per pixel (Kak & Slaney eq. 3.62:
  // f = pi / K sum_k Q_k(x cos theta_k + y sin theta_k)).
  void reconstruct(const double* sinogram, double* f) {
    const int64_t fw = bins_ + 3;
    for (int64_t a = 0; a < angles_; ++a) {
      const double* p = sinogram + a * bins_;
      double* q = filtered_.data() + a * fw + 1;
      std::fill(q, q + bins_, 0.0);
      // Q[b] = sum_k p[k] h[b - k], accumulated k by k so the loop over b vectorises; rays that
      // miss the object (p = 0) cost nothing.
      for (int64_t k = 0; k < bins_; ++k) {
        const double pk = p[k];
        if (pk == 0.0) continue;
        const double* h = kernel_.data() + (bins_ - 1 - k);  // h[b - k] at index b - k + bins - 1
        for (int64_t b = 0; b < bins_; ++b) q[b] += pk * h[b];
      }
    }
    // Back-projection pixel by pixel, the sum over views in a register; per row, the part of each
    // view's bin position that does not depend on the column.
    const double half_w = 0.5 * double(W_ - 1), half_h = 0.5 * double(H_ - 1), half_b = 0.5 * double(bins_ - 1);
    const double* cos_theta = views_.cos_theta.data();
    for (int64_t j = 0; j < H_; ++j) {
      for (int64_t a = 0; a < angles_; ++a)
        row_offset_[size_t(a)] = (double(j) - half_h) * views_.sin_theta[size_t(a)] + half_b;
      for (int64_t i = 0; i < W_; ++i) {
        const double x = double(i) - half_w;
        double sum = 0.0;
        const double* q = filtered_.data();  // q[b + 1] is bin b of view a
        for (int64_t a = 0; a < angles_; ++a, q += fw) {
          const double u = std::clamp(x * cos_theta[a] + row_offset_[size_t(a)], -1.0, double(bins_));
          const int64_t b = floor_from_minus_one(u);
          const double w = u - double(b);
          sum += (1.0 - w) * q[b + 1] + w * q[b + 2];
        }
        f[j * W_ + i] = sum;
      }
    }
    const double scale = kPi / double(angles_);
    for (int64_t n = 0; n < H_ * W_; ++n) f[n] *= scale;
  }

 private:
  int64_t H_, W_, angles_, bins_;
  Views views_;
  std::vector<double> kernel_, padded_, filtered_, row_offset_;
};

int64_t default_angles(int64_t H, int64_t W) { return std::max<int64_t>(8, std::llround(1.5 * double(std::max(H, W)))); }
// Rays through the slice reach |t| <= half the diagonal plus one pixel of interpolation support.
int64_t default_bins(int64_t H, int64_t W) { return int64_t(std::ceil(std::hypot(double(H), double(W)))) + 4; }

}  // namespace

// Poisson(lambda) from one Philox block: inverse transform sampling (exact up to rounding) below
// 30, where one 53-bit uniform suffices and the loop is short; above, the normal approximation
// lambda + sqrt(lambda) z, whose error in distribution is O(1 / sqrt(lambda)) and invisible after
// the log (energy-integrating detectors do not count integers anyway).
double sample_photon_count(double lambda, const philox::Words& w) {
  if (lambda < 30.0) {
    const double u = double((uint64_t(w.v[0]) << 21) ^ (w.v[1] >> 11)) * 0x1p-53;
    double p = std::exp(-lambda), cdf = p;
    int k = 0;
    // The cap only matters when rounding leaves the summed cdf below a u within 1e-15 of 1.
    const int cap = int(lambda + 12.0 * std::sqrt(lambda) + 40.0);
    while (u >= cdf && k < cap) {
      ++k;
      p *= lambda / double(k);
      cdf += p;
    }
    return double(k);
  }
  float z0, z1;
  philox::normal_pair(w.v[2], w.v[3], &z0, &z1);
  return lambda + std::sqrt(lambda) * double(z0);
}

RampFilter parse_ramp_filter(const std::string& text) {
  if (text == "ram-lak") return RampFilter::ram_lak;
  if (text == "hann") return RampFilter::hann;
  CTSR_FAIL("filter '", text, "' is not known: expected ram-lak or hann");
}

Tensor radon_transform(const Tensor& slice, int64_t angles, int64_t bins) {
  slice.check_defined("radon_transform");
  CTSR_CHECK(slice.ndim() == 2, "radon_transform: slice must be [H, W], got ", slice.shape().str());
  slice.check_dtype(DType::float64, "radon_transform");
  slice.check_device(Device::cpu(), "radon_transform");
  CTSR_CHECK(angles >= 1 && bins >= 1, "radon_transform: angles ", angles, " and bins ", bins, " must be >= 1");
  Tensor out = Tensor::empty({angles, bins}, DType::float64);
  Tomograph(slice.dim(0), slice.dim(1), angles, bins, RampFilter::ram_lak).project(slice.data<double>(), out.data<double>());
  return out;
}

Tensor filtered_back_projection(const Tensor& sinogram, int64_t height, int64_t width, RampFilter filter) {
  sinogram.check_defined("filtered_back_projection");
  CTSR_CHECK(sinogram.ndim() == 2, "filtered_back_projection: sinogram must be [angles, bins], got ",
             sinogram.shape().str());
  sinogram.check_dtype(DType::float64, "filtered_back_projection");
  sinogram.check_device(Device::cpu(), "filtered_back_projection");
  CTSR_CHECK(height >= 1 && width >= 1, "filtered_back_projection: size ", height, "x", width, " must be positive");
  const int64_t angles = sinogram.dim(0), bins = sinogram.dim(1);
  Tensor out = Tensor::empty({height, width}, DType::float64);
  Tomograph(height, width, angles, bins, filter).reconstruct(sinogram.data<double>(), out.data<double>());
  return out;
}

Tensor degrade_low_dose(const Tensor& hu, const LowDoseOptions& options, uint64_t seed, uint64_t index) {
  check_volume(hu, "degrade_low_dose");
  CTSR_CHECK(options.i0 > 0.0 && std::isfinite(options.i0), "degrade_low_dose: i0 must be a positive number of photons, got ",
             options.i0);
  CTSR_CHECK(options.pixel_mm > 0.0 && options.mu_water_per_mm > 0.0, "degrade_low_dose: pixel_mm ", options.pixel_mm,
             " and mu_water_per_mm ", options.mu_water_per_mm, " must be positive");
  CTSR_CHECK(options.angles >= 0 && options.bins >= 0, "degrade_low_dose: angles ", options.angles, " and bins ",
             options.bins, " must be >= 0 (0: the default)");
  const int64_t D = hu.dim(0), H = hu.dim(1), W = hu.dim(2);
  const int64_t angles = options.angles ? options.angles : default_angles(H, W);
  const int64_t bins = options.bins ? options.bins : default_bins(H, W);
  const double mu_pixel = options.mu_water_per_mm * options.pixel_mm;  // water, per pixel
  const double log_i0 = std::log(options.i0);
  const uint64_t offset = philox::stream_offset(kPhantomDosePurpose, index);
  const float* in = hu.data<float>();
  Tensor out = Tensor::empty(hu.shape(), DType::float32);
  float* result = out.data<float>();

#pragma omp parallel
  {
    Tomograph tomograph(H, W, angles, bins, options.filter);
    std::vector<double> mu(size_t(H * W)), sinogram(size_t(angles * bins)), f(size_t(H * W));
#pragma omp for schedule(static)
    for (int64_t k = 0; k < D; ++k) {
      const float* slice = in + k * H * W;
      // HU below -1000 (scanner padding, -1024) would be negative attenuation: clamp to air.
      for (int64_t p = 0; p < H * W; ++p) mu[size_t(p)] = mu_pixel * std::max(0.0, 1.0 + double(slice[p]) / 1000.0);
      tomograph.project(mu.data(), sinogram.data());
      for (int64_t r = 0; r < angles * bins; ++r) {
        // One Philox block per ray, counted over the whole volume: independent of threads.
        const philox::Words w = philox::philox4x32_10(uint64_t(k * angles * bins + r), offset, seed);
        const double expected = options.i0 * std::exp(-sinogram[size_t(r)]);
        const double counts = std::max(1.0, sample_photon_count(expected, w));  // a ray with no photon has no log
        sinogram[size_t(r)] = log_i0 - std::log(counts);
      }
      tomograph.reconstruct(sinogram.data(), f.data());
      float* dst = result + k * H * W;
      for (int64_t p = 0; p < H * W; ++p) dst[p] = float(1000.0 * (f[size_t(p)] / mu_pixel - 1.0));
    }
  }
  return out;
}

Tensor degrade_low_resolution(const Tensor& hu, int64_t slab) {
  check_volume(hu, "degrade_low_resolution");
  const int64_t D = hu.dim(0), plane = hu.dim(1) * hu.dim(2);
  CTSR_CHECK(slab >= 1 && slab <= D, "degrade_low_resolution: slab ", slab, " must be in [1, D = ", D, "]");
  const int64_t slabs = (D + slab - 1) / slab;
  std::vector<double> centers(static_cast<size_t>(slabs));
  std::vector<float> means(static_cast<size_t>(slabs * plane));
  const float* in = hu.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < slabs; ++s) {
    const int64_t begin = s * slab, end = std::min(D, begin + slab);
    centers[size_t(s)] = 0.5 * double(begin + end - 1);
    for (int64_t p = 0; p < plane; ++p) {
      double sum = 0.0;
      for (int64_t k = begin; k < end; ++k) sum += in[k * plane + p];
      means[size_t(s * plane + p)] = float(sum / double(end - begin));
    }
  }
  Tensor out = Tensor::empty(hu.shape(), DType::float32);
  float* result = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < D; ++k) {
    // Slab s0 and s0 + 1 around slice k (clamped at the ends), and the weight of s0 + 1.
    int64_t s0 = 0;
    while (s0 + 1 < slabs && centers[size_t(s0 + 1)] <= double(k)) ++s0;
    const int64_t s1 = std::min(s0 + 1, slabs - 1);
    double w = 0.0;
    if (s1 != s0) w = std::clamp((double(k) - centers[size_t(s0)]) / (centers[size_t(s1)] - centers[size_t(s0)]), 0.0, 1.0);
    const float* a = means.data() + s0 * plane;
    const float* b = means.data() + s1 * plane;
    for (int64_t p = 0; p < plane; ++p) result[k * plane + p] = float((1.0 - w) * a[p] + w * b[p]);
  }
  return out;
}

}  // namespace ctsr::tools
