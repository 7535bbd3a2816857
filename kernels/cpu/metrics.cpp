// Reference SSIM and PSNR (kernels/metrics.h): plain loops, float or double inputs, every
// quantity computed and accumulated in double. SSIM filters each slice separably like
// scipy.ndimage (rows, then columns), but only where the result is used: the horizontal pass
// covers every row and the W - 10 columns whose window fits, the vertical pass the H - 10 rows
// whose window fits.
#include <cmath>
#include <vector>

#include "kernels/metrics.h"

namespace ctsr::kernels::cpu {

template <class T>
void ssim(const MetricShape& shape, const T* pred, const T* target, double c1, double c2, T* per_slice,
          T* per_sample) {
  const int64_t B = shape.b, D = shape.d, H = shape.h, W = shape.w;
  const int64_t Ho = H - 2 * kSsimRadius, Wo = W - 2 * kSsimRadius;
  double weights[kSsimTaps];
  ssim_window_weights(weights);
  std::vector<double> slice_means(size_t(B * D));
#pragma omp parallel if (B * D * H * W > 65536)
  {
    // Horizontal moments of one slice: [5][H][Wo] (x, y, xx, yy, xy).
    std::vector<double> moments(size_t(5 * H * Wo));
#pragma omp for
    for (int64_t slice = 0; slice < B * D; ++slice) {
      const T* x = pred + slice * H * W;
      const T* y = target + slice * H * W;
      for (int64_t r = 0; r < H; ++r) {
        for (int64_t c = 0; c < Wo; ++c) {
          double mx = 0, my = 0, mxx = 0, myy = 0, mxy = 0;
          for (int k = 0; k < kSsimTaps; ++k) {
            const double xv = double(x[r * W + c + k]), yv = double(y[r * W + c + k]);
            mx += weights[k] * xv;
            my += weights[k] * yv;
            mxx += weights[k] * (xv * xv);
            myy += weights[k] * (yv * yv);
            mxy += weights[k] * (xv * yv);
          }
          const size_t at = size_t(r * Wo + c), plane = size_t(H * Wo);
          moments[at] = mx;
          moments[plane + at] = my;
          moments[2 * plane + at] = mxx;
          moments[3 * plane + at] = myy;
          moments[4 * plane + at] = mxy;
        }
      }
      double sum = 0;
      const size_t plane = size_t(H * Wo);
      for (int64_t r = 0; r < Ho; ++r) {
        for (int64_t c = 0; c < Wo; ++c) {
          double u[5] = {0, 0, 0, 0, 0};
          for (int k = 0; k < kSsimTaps; ++k) {
            const size_t at = size_t((r + k) * Wo + c);
            for (int m = 0; m < 5; ++m) u[m] += weights[k] * moments[m * plane + at];
          }
          const double ux = u[0], uy = u[1];
          const double vx = u[2] - ux * ux, vy = u[3] - uy * uy, vxy = u[4] - ux * uy;
          const double numerator = (2 * ux * uy + c1) * (2 * vxy + c2);
          const double denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2);
          sum += numerator / denominator;
        }
      }
      slice_means[size_t(slice)] = sum / double(Ho * Wo);
      per_slice[slice] = T(slice_means[size_t(slice)]);
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t d = 0; d < D; ++d) sum += slice_means[size_t(b * D + d)];
    per_sample[b] = T(sum / double(D));
  }
}

template <class T>
void psnr(const MetricShape& shape, const T* pred, const T* target, double data_range, T* psnr, T* mse) {
  const int64_t n = shape.per_sample();
#pragma omp parallel for if (shape.b * n > 65536)
  for (int64_t b = 0; b < shape.b; ++b) {
    double sum = 0;
    for (int64_t i = b * n; i < (b + 1) * n; ++i) {
      const double diff = double(pred[i]) - double(target[i]);
      sum += diff * diff;
    }
    const double m = sum / double(n);
    mse[b] = T(m);
    psnr[b] = T(10.0 * std::log10(data_range * data_range / m));  // +inf for m == 0
  }
}

#define CTSR_INSTANTIATE(T)                                                                          \
  template void ssim<T>(const MetricShape&, const T*, const T*, double, double, T*, T*);            \
  template void psnr<T>(const MetricShape&, const T*, const T*, double, T*, T*);
CTSR_INSTANTIATE(float)
CTSR_INSTANTIATE(double)
#undef CTSR_INSTANTIATE

}  // namespace ctsr::kernels::cpu
