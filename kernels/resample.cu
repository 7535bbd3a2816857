// CUDA kernels for nearest-neighbour resampling and channel concatenation (kernels/resample.h),
// float32, channels-last. All four are pure data movement: each reads and writes every element
// once. Threads of a block are laid out as `lanes` over channels x `rows` over voxels (or
// rows of the concatenation), so a warp reads and writes consecutive channels (coalesced) and a
// voxel's index is decomposed once per thread, not once per element.
#include "runtime/kernel_prelude.h"

#include "kernels/resample.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

struct RowLayout {
  int lanes = 0, rows = 0;
  unsigned threads() const { return unsigned(lanes * rows); }
};

// Up to 256 threads: one lane per channel (at most 128 lanes, looping beyond), the rest over rows.
RowLayout row_layout(int64_t channels) {
  RowLayout l;
  l.lanes = int(std::min<int64_t>(std::max<int64_t>(channels, 1), 128));
  l.rows = std::max(1, 256 / l.lanes);
  return l;
}

unsigned grid_rows(int64_t total_rows, const RowLayout& l) {
  const int64_t blocks = (total_rows + l.rows - 1) / l.rows;
  CTSR_CHECK(blocks < (int64_t(1) << 31), "resample: ", total_rows, " voxels exceed one launch's grid");
  return unsigned(blocks);
}

// One output voxel per row: copies the channels of its source voxel.
__global__ void resample_forward_kernel(const float* __restrict__ x, ResampleShape sh, int lanes, int rows,
                                        float* __restrict__ y) {
  const int lane = int(threadIdx.x) % lanes, r = int(threadIdx.x) / lanes;
  const int64_t voxel = int64_t(blockIdx.x) * rows + r;  // over N * od * oh * ow
  if (voxel >= sh.n * sh.od * sh.oh * sh.ow) return;
  const int64_t k = voxel % sh.ow, j = voxel / sh.ow % sh.oh, i = voxel / (sh.ow * sh.oh) % sh.od;
  const int64_t n = voxel / (sh.ow * sh.oh * sh.od);
  const int64_t src =
      ((n * sh.d + nearest_source_index(i, sh.d, sh.od)) * sh.h + nearest_source_index(j, sh.h, sh.oh)) * sh.w +
      nearest_source_index(k, sh.w, sh.ow);
  const float* in = x + src * sh.c;
  float* out = y + voxel * sh.c;
  for (int64_t c = lane; c < sh.c; c += lanes) out[c] = in[c];
}

// One input voxel per row: sums the gradients of the destination voxels that read it, in
// increasing (d, h, w) order (the reference's scatter order).
__global__ void resample_backward_kernel(const float* __restrict__ dy, ResampleShape sh, int lanes, int rows,
                                         float* __restrict__ dx) {
  const int lane = int(threadIdx.x) % lanes, r = int(threadIdx.x) / lanes;
  const int64_t voxel = int64_t(blockIdx.x) * rows + r;  // over N * d * h * w
  if (voxel >= sh.n * sh.d * sh.h * sh.w) return;
  const int64_t sk = voxel % sh.w, sj = voxel / sh.w % sh.h, si = voxel / (sh.w * sh.h) % sh.d;
  const int64_t n = voxel / (sh.w * sh.h * sh.d);
  const int64_t i0 = nearest_first_destination(si, sh.d, sh.od), i1 = nearest_first_destination(si + 1, sh.d, sh.od);
  const int64_t j0 = nearest_first_destination(sj, sh.h, sh.oh), j1 = nearest_first_destination(sj + 1, sh.h, sh.oh);
  const int64_t k0 = nearest_first_destination(sk, sh.w, sh.ow), k1 = nearest_first_destination(sk + 1, sh.w, sh.ow);
  float* out = dx + voxel * sh.c;
  for (int64_t c = lane; c < sh.c; c += lanes) {
    float sum = 0.0f;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t k = k0; k < k1; ++k) sum += dy[(((n * sh.od + i) * sh.oh + j) * sh.ow + k) * sh.c + c];
    out[c] = sum;
  }
}

__global__ void concat_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t total_rows, int64_t ca,
                              int64_t cb, int lanes, int rows, float* __restrict__ out) {
  const int lane = int(threadIdx.x) % lanes, r = int(threadIdx.x) / lanes;
  const int64_t row = int64_t(blockIdx.x) * rows + r;
  if (row >= total_rows) return;
  float* o = out + row * (ca + cb);
  for (int64_t c = lane; c < ca; c += lanes) o[c] = a[row * ca + c];
  for (int64_t c = lane; c < cb; c += lanes) o[ca + c] = b[row * cb + c];
}

__global__ void split_kernel(const float* __restrict__ in, int64_t total_rows, int64_t ca, int64_t cb, int lanes,
                             int rows, float* __restrict__ a, float* __restrict__ b) {
  const int lane = int(threadIdx.x) % lanes, r = int(threadIdx.x) / lanes;
  const int64_t row = int64_t(blockIdx.x) * rows + r;
  if (row >= total_rows) return;
  const float* i = in + row * (ca + cb);
  for (int64_t c = lane; c < ca; c += lanes) a[row * ca + c] = i[c];
  for (int64_t c = lane; c < cb; c += lanes) b[row * cb + c] = i[ca + c];
}

}  // namespace

void resample_nearest_forward(const ResampleShape& shape, const Tensor& x, Tensor& y) {
  x.check_dtype(DType::float32, "resample_nearest_forward (CUDA) x");
  const RowLayout l = row_layout(shape.c);
  launch_kernel(x.device(), resample_forward_kernel, grid_rows(shape.n * shape.od * shape.oh * shape.ow, l),
                l.threads(), 0, x.data<float>(), shape, l.lanes, l.rows, y.data<float>());
}

void resample_nearest_backward(const ResampleShape& shape, const Tensor& dy, Tensor& dx) {
  dy.check_dtype(DType::float32, "resample_nearest_backward (CUDA) dy");
  const RowLayout l = row_layout(shape.c);
  launch_kernel(dy.device(), resample_backward_kernel, grid_rows(shape.n * shape.d * shape.h * shape.w, l),
                l.threads(), 0, dy.data<float>(), shape, l.lanes, l.rows, dx.data<float>());
}

void concat_channels(int64_t rows, int64_t ca, int64_t cb, const Tensor& a, const Tensor& b, Tensor& out) {
  a.check_dtype(DType::float32, "concat_channels (CUDA) a");
  const RowLayout l = row_layout(ca + cb);
  // An empty side has no storage to point at; its loop never runs.
  const float* pa = ca > 0 ? a.data<float>() : nullptr;
  const float* pb = cb > 0 ? b.data<float>() : nullptr;
  launch_kernel(a.device(), concat_kernel, grid_rows(rows, l), l.threads(), 0, pa, pb, rows, ca, cb, l.lanes, l.rows,
                out.data<float>());
}

void split_channels(int64_t rows, int64_t ca, int64_t cb, const Tensor& in, Tensor& a, Tensor& b) {
  in.check_dtype(DType::float32, "split_channels (CUDA) dy");
  const RowLayout l = row_layout(ca + cb);
  float* pa = ca > 0 ? a.data<float>() : nullptr;
  float* pb = cb > 0 ? b.data<float>() : nullptr;
  launch_kernel(in.device(), split_kernel, grid_rows(rows, l), l.threads(), 0, in.data<float>(), rows, ca, cb,
                l.lanes, l.rows, pa, pb);
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
