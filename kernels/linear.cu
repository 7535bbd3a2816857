// CUDA kernels of the fully connected layer (kernels/linear.h), float32. The GEMMs are cuBLAS
// (ctsr::gemm); these are the two small memory-bound passes around them.
//
// bias_add: y [rows, out] += b [out]. One thread per element, grid-stride; the column index is
// carried along incrementally (the stride modulo `out` is added each step) instead of taking a
// 64-bit modulo per element.
//
// Bias gradient, deterministic two-pass column sums of dy [rows, out]:
//   1. bias_grad_partial   block (column tile, row chunk) of 32 lanes x 8 row groups: lane l owns
//                          column 32 * tile + l, so every warp reads 128 contiguous bytes of a
//                          row; row group r takes rows r, r + 8, ... of the chunk; the 8 group
//                          sums are combined in order in shared memory -> partial[chunk, column]
//   2. bias_grad_finalize  one thread per column adds its chunks' partials in chunk order and
//                          accumulates into db
// The chunking depends on (rows, out) only, never on the device, so db is bitwise reproducible;
// nothing uses atomics.
#include "runtime/kernel_prelude.h"

#include "kernels/linear.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // bias_add: grid-stride beyond this

__global__ void bias_add_kernel(const float* __restrict__ bias, int64_t n, int64_t out, float* __restrict__ y) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t column_step = stride % out;
  int64_t column = first % out;
  for (int64_t i = first; i < n; i += stride) {
    y[i] += bias[column];
    column += column_step;
    if (column >= out) column -= out;
  }
}

constexpr int kLanes = 32;      // columns per block
constexpr int kRowGroups = 8;   // kLanes * kRowGroups = 256 threads
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinChunkRows = 32;

struct ChunkGeometry {
  int64_t tiles = 0, chunk_rows = 0, chunks = 0;
};

ChunkGeometry chunk_geometry(int64_t rows, int64_t out) {
  ChunkGeometry g;
  g.tiles = (out + kLanes - 1) / kLanes;
  const int64_t wanted_chunks = std::max<int64_t>(1, (kTargetBlocks + g.tiles - 1) / g.tiles);
  g.chunk_rows = std::max<int64_t>(kMinChunkRows, (rows + wanted_chunks - 1) / wanted_chunks);
  g.chunks = (rows + g.chunk_rows - 1) / g.chunk_rows;
  return g;
}

__global__ void __launch_bounds__(kLanes * kRowGroups)
    bias_grad_partial_kernel(const float* __restrict__ dy, int64_t rows, int64_t out, int64_t chunk_rows,
                             float* __restrict__ partial) {
  CTSR_LAUNCH_BOUNDS_CHECK(kLanes * kRowGroups);
  CTSR_STATIC_SHARED(group_sums, float[kRowGroups][kLanes]);
  const int lane = int(threadIdx.x) % kLanes, group = int(threadIdx.x) / kLanes;
  const int64_t column = int64_t(blockIdx.x) * kLanes + lane;
  const int64_t chunk = blockIdx.y;
  const int64_t row_end = min(rows, (chunk + 1) * chunk_rows);
  float sum = 0.0f;
  if (column < out) {
    for (int64_t r = chunk * chunk_rows + group; r < row_end; r += kRowGroups) sum += dy[r * out + column];
  }
  group_sums[group][lane] = sum;
  __syncthreads();
  if (group == 0 && column < out) {
    float total = group_sums[0][lane];
    for (int g = 1; g < kRowGroups; ++g) total += group_sums[g][lane];
    partial[chunk * out + column] = total;
  }
}

__global__ void bias_grad_finalize_kernel(const float* __restrict__ partial, int64_t chunks, int64_t out,
                                          float* __restrict__ dbias) {
  const int64_t column = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (column >= out) return;
  float total = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) total += partial[c * out + column];
  dbias[column] += total;
}

}  // namespace

void linear_bias_add(const Tensor& bias, int64_t rows, Tensor& y) {
  bias.check_dtype(DType::float32, "linear_bias_add (CUDA) bias");
  const int64_t out = bias.numel(), n = rows * out;
  const unsigned blocks = std::min<unsigned>(kMaxBlocks, std::max<unsigned>(1, blocks_for(n, kThreads)));
  launch_kernel(y.device(), bias_add_kernel, blocks, kThreads, 0, bias.data<float>(), n, out, y.data<float>());
}

void linear_bias_grad_accumulate(const Tensor& dy, int64_t rows, Tensor& dbias) {
  dy.check_dtype(DType::float32, "linear_bias_grad (CUDA) dy");
  const int64_t out = dbias.numel();
  if (rows == 0) return;
  const ChunkGeometry g = chunk_geometry(rows, out);
  Tensor partial = Tensor::empty(Shape{g.chunks, out}, DType::float32, dy.device());
  launch_kernel(dy.device(), bias_grad_partial_kernel, dim3(unsigned(g.tiles), unsigned(g.chunks)),
                unsigned(kLanes * kRowGroups), 0, dy.data<float>(), rows, out, g.chunk_rows,
                partial.data<float>());
  launch_kernel(dy.device(), bias_grad_finalize_kernel, blocks_for(out, kThreads), kThreads, 0,
                partial.data<float>(), g.chunks, out, dbias.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
