// CUDA kernels for SSIM and PSNR (kernels/metrics.h), float32 inputs [B, D, H, W].
//
// SSIM, 2 launches for the whole batch:
//   1. ssim_slices   one block per axial slice (B * D blocks). The block walks the slice's
//                    interior in tiles of 16 x 32 output pixels. Per tile it stages the 26 x 42
//                    input patch of x and y in shared memory, filters the five moments (x, y,
//                    x^2, y^2, xy) along rows into a 26 x 32 shared tile, then along columns,
//                    evaluates the SSIM map there and adds it to a per-thread sum. A fixed
//                    shared-memory tree then sums the block's threads: the slice mean.
//   2. sample_means  one thread per sample: the mean of its D slice means, in order.
// The moments are filtered in double. SSIM takes variances as uxx - ux^2, a difference of two
// numbers of the size of x^2 (up to 1) that must resolve variances next to C2 = 9e-4 (R = 1);
// in float32 that costs ~1e-4 of SSIM per pixel wherever a window is (nearly) constant, and CT
// is full of exactly constant regions (air clipped to -1 by the intensity window). In double the
// products of float inputs are exact and the difference keeps ~1e-16, as scikit-image's float64
// does. The cost is 2 x 55 double multiply-adds per pixel: at half the float32 rate on an H100
// (and the kernel is not the validation loop's bottleneck on any GPU).
// Shared memory per block: 2 x 26 x 42 floats, 5 x 26 x 32 + 256 doubles: 44 KB (static).
//
// PSNR, 2 launches:
//   1. sse_partial   grid (chunks, B): block (k, b) sums (pred - target)^2 over chunk k of sample
//                    b in double, then a fixed tree over its threads.
//   2. psnr_finalize one thread per sample: the chunks in order, mse = sum / n, psnr.
// Chunks have a fixed size, so results do not depend on the device. No atomics anywhere.
#include "runtime/kernel_prelude.h"

#include "kernels/block_sum.h"
#include "kernels/metrics.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kThreads = 256;                       // a power of two: the reduction trees halve it
constexpr int kTileRows = 16, kTileCols = 32;        // interior output pixels per tile
constexpr int kPatchRows = kTileRows + 2 * kSsimRadius;  // 26 input rows per tile
constexpr int kPatchCols = kTileCols + 2 * kSsimRadius;  // 42 input columns per tile
constexpr int64_t kPsnrChunk = 16 * kThreads;       // elements per sse_partial block

struct Window {
  double w[kSsimTaps];
};

__global__ void __launch_bounds__(kThreads)
    ssim_slices_kernel(const float* __restrict__ pred, const float* __restrict__ target, int64_t H, int64_t W,
                       Window window, double c1, double c2, double* __restrict__ slice_means,
                       float* __restrict__ per_slice) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  constexpr int kPlane = kPatchRows * kTileCols;
  CTSR_STATIC_SHARED(patch_x, float[kPatchRows * kPatchCols]);
  CTSR_STATIC_SHARED(patch_y, float[kPatchRows * kPatchCols]);
  CTSR_STATIC_SHARED(rows, double[5 * kPlane]);  // row-filtered moments: [moment][patch row][output column]
  CTSR_STATIC_SHARED(reduce, double[kThreads]);

  const int t = int(threadIdx.x);
  const int64_t slice = blockIdx.x;
  const float* x = pred + slice * H * W;
  const float* y = target + slice * H * W;
  const int64_t Ho = H - 2 * kSsimRadius, Wo = W - 2 * kSsimRadius;
  const int64_t tiles_x = (Wo + kTileCols - 1) / kTileCols, tiles = (Ho + kTileRows - 1) / kTileRows * tiles_x;

  double sum = 0.0;
  for (int64_t tile = 0; tile < tiles; ++tile) {  // the same trip count for every thread
    // Output pixel (r0 + i, c0 + j) of the interior is input pixel (r0 + i + 5, c0 + j + 5); its
    // window covers patch rows i .. i + 10 and columns j .. j + 10.
    const int64_t r0 = tile / tiles_x * kTileRows, c0 = tile % tiles_x * kTileCols;
    for (int i = t; i < kPatchRows * kPatchCols; i += kThreads) {
      const int64_t r = r0 + i / kPatchCols, c = c0 + i % kPatchCols;
      const bool inside = r < H && c < W;  // outside: read only for pixels that are not scored
      patch_x[i] = inside ? x[r * W + c] : 0.0f;
      patch_y[i] = inside ? y[r * W + c] : 0.0f;
    }
    __syncthreads();
    // Along rows. (The previous tile's column pass read `rows` before every thread passed the
    // barrier above, so overwriting it here needs no third barrier per tile.)
    for (int i = t; i < kPlane; i += kThreads) {
      const float* px = patch_x + i / kTileCols * kPatchCols + i % kTileCols;
      const float* py = patch_y + i / kTileCols * kPatchCols + i % kTileCols;
      double mx = 0.0, my = 0.0, mxx = 0.0, myy = 0.0, mxy = 0.0;
      for (int k = 0; k < kSsimTaps; ++k) {
        const double w = window.w[k], xv = double(px[k]), yv = double(py[k]);
        mx += w * xv;
        my += w * yv;
        mxx += w * (xv * xv);  // products of two floats: exact in double
        myy += w * (yv * yv);
        mxy += w * (xv * yv);
      }
      rows[i] = mx;
      rows[kPlane + i] = my;
      rows[2 * kPlane + i] = mxx;
      rows[3 * kPlane + i] = myy;
      rows[4 * kPlane + i] = mxy;
    }
    __syncthreads();
    // Along columns, then the map at the tile's scored pixels.
    for (int i = t; i < kTileRows * kTileCols; i += kThreads) {
      const int orow = i / kTileCols, ocol = i % kTileCols;
      if (r0 + orow >= Ho || c0 + ocol >= Wo) continue;
      double u[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
      for (int k = 0; k < kSsimTaps; ++k) {
        const double w = window.w[k];
        const int at = (orow + k) * kTileCols + ocol;
        for (int m = 0; m < 5; ++m) u[m] += w * rows[m * kPlane + at];
      }
      const double ux = u[0], uy = u[1];
      const double vx = u[2] - ux * ux, vy = u[3] - uy * uy, vxy = u[4] - ux * uy;
      const double numerator = (2.0 * ux * uy + c1) * (2.0 * vxy + c2);
      const double denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2);
      sum += numerator / denominator;
    }
  }
  const double total = block_sum<kThreads>(sum, reduce);
  if (t == 0) {
    const double mean = total / double(Ho * Wo);
    slice_means[slice] = mean;
    per_slice[slice] = float(mean);
  }
}

__global__ void sample_means_kernel(const double* __restrict__ slice_means, int64_t B, int64_t D,
                                    float* __restrict__ per_sample) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  double sum = 0.0;
  for (int64_t d = 0; d < D; ++d) sum += slice_means[b * D + d];
  per_sample[b] = float(sum / double(D));
}

__global__ void __launch_bounds__(kThreads)
    sse_partial_kernel(const float* __restrict__ pred, const float* __restrict__ target, int64_t n,
                       double* __restrict__ partial) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_STATIC_SHARED(reduce, double[kThreads]);
  const int64_t b = blockIdx.y, chunk = blockIdx.x;
  const int64_t begin = b * n + chunk * kPsnrChunk, end = b * n + min(n, (chunk + 1) * kPsnrChunk);
  double sum = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double diff = double(pred[i]) - double(target[i]);
    sum += diff * diff;
  }
  const double total = block_sum<kThreads>(sum, reduce);
  if (threadIdx.x == 0) partial[b * gridDim.x + chunk] = total;
}

__global__ void psnr_finalize_kernel(const double* __restrict__ partial, int64_t B, int64_t chunks, int64_t n,
                                     double range_squared, float* __restrict__ psnr, float* __restrict__ mse) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  double sum = 0.0;
  for (int64_t k = 0; k < chunks; ++k) sum += partial[b * chunks + k];
  const double m = sum / double(n);
  mse[b] = float(m);
  psnr[b] = float(10.0 * log10(range_squared / m));  // +inf for m == 0
}

}  // namespace

void ssim(const MetricShape& shape, const Tensor& pred, const Tensor& target, double c1, double c2,
          Tensor& per_slice, Tensor& per_sample) {
  pred.check_dtype(DType::float32, "ssim (CUDA) pred");
  const Device dev = pred.device();
  const int64_t slices = shape.b * shape.d;
  CTSR_CHECK(slices <= 0x7fffffff, "ssim (CUDA): ", slices, " slices exceed the grid's x limit");
  double weights[kSsimTaps];
  ssim_window_weights(weights);
  Window window;
  for (int k = 0; k < kSsimTaps; ++k) window.w[k] = weights[k];
  Tensor slice_means = Tensor::empty(Shape{slices}, DType::float64, dev);
  launch_kernel(dev, ssim_slices_kernel, unsigned(slices), unsigned(kThreads), 0, pred.data<float>(),
                target.data<float>(), shape.h, shape.w, window, c1, c2, slice_means.data<double>(),
                per_slice.data<float>());
  launch_kernel(dev, sample_means_kernel, blocks_for(shape.b, 128), 128u, 0, slice_means.data<double>(), shape.b,
                shape.d, per_sample.data<float>());
}

void psnr(const MetricShape& shape, const Tensor& pred, const Tensor& target, double data_range, Tensor& psnr,
          Tensor& mse) {
  pred.check_dtype(DType::float32, "psnr (CUDA) pred");
  CTSR_CHECK(shape.b <= 65535, "psnr (CUDA): batch ", shape.b, " exceeds the grid's y limit of 65535");
  const Device dev = pred.device();
  const int64_t n = shape.per_sample();
  const int64_t chunks = (n + kPsnrChunk - 1) / kPsnrChunk;
  Tensor partial = Tensor::empty(Shape{shape.b * chunks}, DType::float64, dev);
  launch_kernel(dev, sse_partial_kernel, dim3(unsigned(chunks), unsigned(shape.b)), unsigned(kThreads), 0,
                pred.data<float>(), target.data<float>(), n, partial.data<double>());
  launch_kernel(dev, psnr_finalize_kernel, blocks_for(shape.b, 128), 128u, 0, partial.data<double>(), shape.b,
                chunks, n, data_range * data_range, psnr.data<float>(), mse.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
