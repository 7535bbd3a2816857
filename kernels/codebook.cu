// CUDA kernels for vector quantisation (kernels/codebook.h), float32.
// nearest: one thread per latent row, its C values in registers (the kernel is instantiated for
// C <= 8, 16, 32, 64 so the row array is indexed by constants only); the block walks the codebook
// in shared-memory tiles that every thread reads at the same address (a broadcast, no bank
// conflicts). Distances use rounded:: arithmetic so the argmin is bit-identical to the reference.
// lookup: a gather, one thread per output element.
//
// statistics: a stable counting sort of the rows by code, then the fixed-order sums of
// kernels/codebook.h; integer atomics only (their results do not depend on the order), no
// float atomics, and no step whose float result depends on scheduling:
//   1. tile_histogram   rows are cut into tiles of T rows (T a multiple of 32 near
//                       sqrt(4 rows), at most 2048 tiles); one warp per tile counts its rows per
//                       code with integer atomics into tile_counts[tile][code], and notes the
//                       first row whose index is outside the codebook (integer atomicMin; read
//                       back and reported: the one host synchronisation of the op)
//   2. tile_prefix      one thread per code: tile_counts becomes the exclusive prefix over tiles
//                       (where the tile's rows of that code start among the code's rows), and the
//                       code's total
//   3. code_offsets     one block: exclusive scans over codes of the counts (row offsets) and of
//                       the runs per code, ceil(count / run); writes the float counts
//   4. scatter_rows     one warp per tile walks its rows in rounds of 32, in order: a lane's rank
//                       among the round's lanes with its code (read from shared memory), plus the
//                       tile's cursor for that code, gives its place; the last lane of each code
//                       advances the cursor. So `order` lists each code's rows in ascending order
//                       (the only stable order: the same bits whatever T is)
//   5. run_sums         one thread per (run, channel): the run's code by binary search over the
//                       run offsets, then its (at most 64) rows summed in order from 0
//   6. code_sums        one thread per (code, channel): its run sums in order from 0
// Memory beyond the outputs: tiles x K + ~(3K + rows) int32, and (rows / 64 + min(K, rows) + 1)
// x C floats of run sums; for 10^6 rows and 8192 codes about 40 MB.
//
// ema_embeddings: one block of 256 threads forms the total count in the fixed order of
// kernels/codebook.h (strided lanes, then a shared-memory pairwise tree), then one thread per
// element normalises or restarts it, with the reference's rounded operations in its order.
#include <climits>
#include <cmath>

#include "runtime/kernel_prelude.h"

#include "kernels/codebook.h"
#include "kernels/copy.h"
#include "runtime/rounded.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kRowsPerBlock = 64;
constexpr int kCodesPerTile = 128;

template <int MaxC>
__global__ void codebook_nearest_kernel(const float* __restrict__ latent, const float* __restrict__ embeddings,
                                        int64_t* __restrict__ indices, int64_t rows, int64_t codes, int channels) {
  CTSR_STATIC_SHARED(tile, float[kCodesPerTile * MaxC]);
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  const bool active = row < rows;
  float v[MaxC];
CTSR_UNROLL
  for (int c = 0; c < MaxC; ++c) v[c] = (active && c < channels) ? latent[row * channels + c] : 0.0f;

  int64_t best = 0;
  float best_distance = 0.0f;
  for (int64_t k0 = 0; k0 < codes; k0 += kCodesPerTile) {
    const int64_t tile_codes = codes - k0 < kCodesPerTile ? codes - k0 : kCodesPerTile;
    __syncthreads();  // the previous tile is no longer read
    for (int64_t i = threadIdx.x; i < tile_codes * channels; i += blockDim.x) tile[i] = embeddings[k0 * channels + i];
    __syncthreads();
    for (int64_t j = 0; j < tile_codes; ++j) {
      const float* e = tile + j * channels;
      float distance = 0.0f;
CTSR_UNROLL
      for (int c = 0; c < MaxC; ++c) {
        if (c < channels) {
          const float d = rounded::add(v[c], -e[c]);
          distance = rounded::add(distance, rounded::mul(d, d));
        }
      }
      const int64_t k = k0 + j;
      if (k == 0 || distance < best_distance) best = k, best_distance = distance;
    }
  }
  if (active) indices[row] = best;
}

// An index outside the codebook cannot throw from the device: its row is filled with NaN so it
// cannot pass unnoticed (the reference path reports it as an error).
__global__ void codebook_lookup_kernel(const int64_t* __restrict__ indices, const float* __restrict__ embeddings,
                                       float* __restrict__ out, int64_t total, int64_t codes, int64_t channels) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = indices[i / channels];
    out[i] = (k >= 0 && k < codes) ? embeddings[k * channels + i % channels] : __int_as_float(0x7fc00000);
  }
}

// ---- statistics ----

constexpr int kTilesPerBlock = 4;  // warps (one tile each) per block of passes 1 and 4
constexpr int64_t kMinTileRows = 256;
constexpr int64_t kMaxTiles = 2048;
constexpr unsigned kScanThreads = 1024;
constexpr unsigned kElementThreads = 256;
constexpr int64_t kRun = kCodebookStatisticsRun;

// Rows per tile: a multiple of 32 near sqrt(4 rows), so that the two serial chains, a warp's
// rounds of 32 rows (T / 32) and a code's walk over the tiles (rows / T), stay short together;
// at least kMinTileRows, and few enough for at most kMaxTiles tiles (memory: tiles x K ints).
// The result does not depend on it (the order is the stable one).
int64_t tile_rows_for(int64_t rows) {
  int64_t t = std::max<int64_t>(kMinTileRows, int64_t(std::sqrt(4.0 * double(rows))));
  t = std::max(t, (rows + kMaxTiles - 1) / kMaxTiles);
  return (t + 31) / 32 * 32;
}

__global__ void tile_histogram_kernel(const int64_t* __restrict__ indices, int64_t rows, int64_t codes,
                                      int64_t tile_rows, int64_t tiles, int* __restrict__ tile_counts,
                                      int* __restrict__ first_bad_row) {
  const int64_t tile = int64_t(blockIdx.x) * kTilesPerBlock + threadIdx.x / 32;
  if (tile >= tiles) return;
  const int64_t begin = tile * tile_rows, end = begin + tile_rows < rows ? begin + tile_rows : rows;
  for (int64_t r = begin + threadIdx.x % 32; r < end; r += 32) {
    const int64_t k = indices[r];
    if (k >= 0 && k < codes) {
      atomicAdd(&tile_counts[tile * codes + k], 1);
    } else {
      atomicMin(first_bad_row, int(r));
    }
  }
}

__global__ void tile_prefix_kernel(int* __restrict__ tile_counts, int64_t tiles, int64_t codes,
                                   int* __restrict__ code_counts) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < codes; k += int64_t(gridDim.x) * blockDim.x) {
    int running = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int count = tile_counts[t * codes + k];
      tile_counts[t * codes + k] = running;
      running += count;
    }
    code_counts[k] = running;
  }
}

// One block of kScanThreads: thread t owns a contiguous range of codes; a Hillis-Steele scan of
// the ranges' totals in shared memory (integers: exact in any order).
__global__ void __launch_bounds__(kScanThreads)
    code_offsets_kernel(const int* __restrict__ code_counts, int64_t codes, int* __restrict__ offsets,
                        int* __restrict__ run_offsets, float* __restrict__ counts) {
  CTSR_LAUNCH_BOUNDS_CHECK(kScanThreads);
  CTSR_STATIC_SHARED(row_scan, int[kScanThreads]);
  CTSR_STATIC_SHARED(run_scan, int[kScanThreads]);
  const int t = int(threadIdx.x);
  const int64_t per_thread = (codes + kScanThreads - 1) / kScanThreads;
  const int64_t begin = std::min<int64_t>(codes, t * per_thread), end = std::min<int64_t>(codes, begin + per_thread);
  int rows_in_range = 0, runs_in_range = 0;
  for (int64_t k = begin; k < end; ++k) {
    const int count = code_counts[k];
    rows_in_range += count;
    runs_in_range += int((count + kRun - 1) / kRun);
  }
  row_scan[t] = rows_in_range;
  run_scan[t] = runs_in_range;
  __syncthreads();
  for (int distance = 1; distance < int(kScanThreads); distance *= 2) {
    const int rows_before = t >= distance ? row_scan[t - distance] : 0;
    const int runs_before = t >= distance ? run_scan[t - distance] : 0;
    __syncthreads();
    row_scan[t] += rows_before;
    run_scan[t] += runs_before;
    __syncthreads();
  }
  int row_position = row_scan[t] - rows_in_range, run_position = run_scan[t] - runs_in_range;
  for (int64_t k = begin; k < end; ++k) {
    const int count = code_counts[k];
    offsets[k] = row_position;
    run_offsets[k] = run_position;
    counts[k] = float(count);
    row_position += count;
    run_position += int((count + kRun - 1) / kRun);
  }
  if (t == int(kScanThreads) - 1) {
    offsets[codes] = row_scan[t];
    run_offsets[codes] = run_scan[t];
  }
}

__global__ void __launch_bounds__(kTilesPerBlock * 32)
    scatter_rows_kernel(const int64_t* __restrict__ indices, int64_t rows, int64_t codes, int64_t tile_rows,
                        int64_t tiles, const int* __restrict__ offsets, int* __restrict__ tile_cursors,
                        int* __restrict__ order) {
  CTSR_LAUNCH_BOUNDS_CHECK(kTilesPerBlock * 32);
  CTSR_STATIC_SHARED(round_codes, int64_t[kTilesPerBlock][32]);
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int64_t tile = int64_t(blockIdx.x) * kTilesPerBlock + warp;
  if (tile >= tiles) return;  // the whole warp: its lanes share the tile
  const int64_t begin = tile * tile_rows, end = begin + tile_rows < rows ? begin + tile_rows : rows;
  int* cursor = tile_cursors + tile * codes;
  for (int64_t base = begin; base < end; base += 32) {
    const int64_t r = base + lane;
    int64_t k = r < end ? indices[r] : -1;
    if (k < 0 || k >= codes) k = -1;  // past the tile, or a bad index (reported by pass 1)
    round_codes[warp][lane] = k;
    __syncwarp();
    int rank = 0, group = 0;
    for (int j = 0; j < 32; ++j) {
      if (round_codes[warp][j] == k) {
        ++group;
        rank += j < lane;
      }
    }
    const int start = k >= 0 ? cursor[k] : 0;
    __syncwarp();  // every lane has read its cursor before any is advanced
    if (k >= 0) {
      order[offsets[k] + start + rank] = int(r);
      if (rank == group - 1) cursor[k] = start + group;
    }
    __syncwarp();  // the advance is seen by the next round, and round_codes may be rewritten
  }
}

__global__ void run_sums_kernel(const float* __restrict__ latents, const int* __restrict__ order,
                                const int* __restrict__ offsets, const int* __restrict__ run_offsets, int64_t codes,
                                int64_t channels, int64_t max_runs, float* __restrict__ partial) {
  const int64_t runs = run_offsets[codes];
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < max_runs * channels;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t run = item / channels, c = item - run * channels;
    if (run >= runs) break;  // items only grow along the grid stride
    int64_t lo = 0, hi = codes;  // run_offsets[lo] <= run < run_offsets[hi]
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (run_offsets[mid] <= run) lo = mid;
      else hi = mid;
    }
    const int64_t first = offsets[lo] + (run - run_offsets[lo]) * kRun;
    const int64_t last = first + kRun < offsets[lo + 1] ? first + kRun : offsets[lo + 1];
    float sum = 0.0f;
    for (int64_t m = first; m < last; ++m) sum = rounded::add(sum, latents[int64_t(order[m]) * channels + c]);
    partial[item] = sum;
  }
}

__global__ void code_sums_kernel(const float* __restrict__ partial, const int* __restrict__ run_offsets,
                                 int64_t codes, int64_t channels, float* __restrict__ sums) {
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < codes * channels;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = item / channels, c = item - k * channels;
    float sum = 0.0f;
    for (int64_t run = run_offsets[k]; run < run_offsets[k + 1]; ++run)
      sum = rounded::add(sum, partial[run * channels + c]);
    sums[item] = sum;
  }
}

// ---- EMA normalisation and restart ----

__global__ void __launch_bounds__(kCodebookTotalLanes)
    code_total_kernel(const float* __restrict__ ema_counts, int64_t codes, float* __restrict__ total) {
  CTSR_LAUNCH_BOUNDS_CHECK(kCodebookTotalLanes);
  CTSR_STATIC_SHARED(lanes, float[kCodebookTotalLanes]);
  const int j = int(threadIdx.x);
  float sum = 0.0f;
  for (int64_t k = j; k < codes; k += kCodebookTotalLanes) sum = rounded::add(sum, ema_counts[k]);
  lanes[j] = sum;
  __syncthreads();
  for (int half = kCodebookTotalLanes / 2; half >= 1; half /= 2) {
    if (j < half) lanes[j] = rounded::add(lanes[j], lanes[j + half]);
    __syncthreads();
  }
  if (j == 0) total[0] = lanes[0];
}

__global__ void ema_embeddings_kernel(const float* __restrict__ ema_counts, const float* __restrict__ ema_sums,
                                      const float* __restrict__ total, int64_t codes, int64_t channels,
                                      float smoothing, float smoothing_total, float threshold,
                                      const float* __restrict__ candidates, float* __restrict__ embeddings) {
  const float n = total[0];
  const float denominator = rounded::add(n, smoothing_total);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < codes * channels;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float count = ema_counts[i / channels];
    if (candidates && !(count >= threshold)) {
      embeddings[i] = candidates[i];
    } else {
      const float weight = rounded::mul(rounded::div(rounded::add(count, smoothing), denominator), n);
      embeddings[i] = rounded::div(ema_sums[i], weight);
    }
  }
}

unsigned element_grid(int64_t n) {
  return std::min<unsigned>(4096, std::max<unsigned>(1, blocks_for(n, kElementThreads)));
}

}  // namespace

void codebook_nearest(const Tensor& latent, const Tensor& embeddings, Tensor& indices) {
  latent.check_dtype(DType::float32, "codebook_nearest (CUDA) latent");
  const int64_t rows = indices.numel(), codes = embeddings.dim(0);
  const int channels = static_cast<int>(embeddings.dim(1));
  CTSR_CHECK(channels <= 64, "codebook_nearest (CUDA): ", channels, " channels; the CUDA path takes at most 64");
  if (rows == 0) return;
  const unsigned grid = blocks_for(rows, kRowsPerBlock);
  auto go = [&](auto kernel) {
    launch_kernel(latent.device(), kernel, grid, kRowsPerBlock, 0, latent.data<float>(), embeddings.data<float>(),
                  indices.data<int64_t>(), rows, codes, channels);
  };
  if (channels <= 8) go(codebook_nearest_kernel<8>);
  else if (channels <= 16) go(codebook_nearest_kernel<16>);
  else if (channels <= 32) go(codebook_nearest_kernel<32>);
  else go(codebook_nearest_kernel<64>);
}

void codebook_lookup(const Tensor& indices, const Tensor& embeddings, Tensor& out) {
  embeddings.check_dtype(DType::float32, "codebook_lookup (CUDA) embeddings");
  const int64_t total = out.numel();
  if (total == 0) return;
  constexpr unsigned threads = 256;
  const unsigned grid = std::min<unsigned>(4096, blocks_for(total, threads));
  launch_kernel(out.device(), codebook_lookup_kernel, grid, threads, 0, indices.data<int64_t>(),
                embeddings.data<float>(), out.data<float>(), total, embeddings.dim(0), embeddings.dim(1));
}

void codebook_statistics(const Tensor& latents, const Tensor& indices, Tensor& counts, Tensor& sums) {
  latents.check_dtype(DType::float32, "codebook_statistics (CUDA) latents");
  const Device device = latents.device();
  const int64_t rows = indices.numel(), codes = counts.dim(0), channels = sums.dim(1);
  const int64_t tile_rows = tile_rows_for(rows), tiles = (rows + tile_rows - 1) / tile_rows;
  const unsigned tile_blocks = unsigned((tiles + kTilesPerBlock - 1) / kTilesPerBlock);
  const int64_t* index_data = indices.data<int64_t>();

  Tensor tile_counts = Tensor::empty(Shape{tiles * codes}, DType::int32, device);
  // The copy family's fill kernel (Tensor::zeros would copy a buffer of zeros from the host).
  kernels::CTSR_KERNEL_NS::fill(tile_counts, 0.0);
  Tensor first_bad_row = Tensor::from_vector<int32_t>({INT_MAX}, Shape{1}, device);
  launch_kernel(device, tile_histogram_kernel, tile_blocks, kTilesPerBlock * 32, 0, index_data, rows, codes, tile_rows,
                tiles, tile_counts.data<int>(), first_bad_row.data<int>());
  const int bad_row = first_bad_row.to_vector<int32_t>()[0];
  if (bad_row != INT_MAX) {
    const int64_t bad = indices.reshape(Shape{rows}).slice(bad_row, bad_row + 1).to_vector<int64_t>()[0];
    CTSR_FAIL("codebook_statistics: index ", bad, " at row ", bad_row, " is outside the codebook [0, ", codes, ")");
  }

  Tensor code_counts = Tensor::empty(Shape{codes}, DType::int32, device);
  launch_kernel(device, tile_prefix_kernel, blocks_for(codes, kElementThreads), kElementThreads, 0,
                tile_counts.data<int>(), tiles, codes, code_counts.data<int>());
  Tensor offsets = Tensor::empty(Shape{codes + 1}, DType::int32, device);
  Tensor run_offsets = Tensor::empty(Shape{codes + 1}, DType::int32, device);
  launch_kernel(device, code_offsets_kernel, 1, kScanThreads, 0, code_counts.data<int>(), codes, offsets.data<int>(),
                run_offsets.data<int>(), counts.data<float>());
  Tensor order = Tensor::empty(Shape{rows}, DType::int32, device);
  launch_kernel(device, scatter_rows_kernel, tile_blocks, kTilesPerBlock * 32, 0, index_data, rows, codes, tile_rows,
                tiles, offsets.data<int>(), tile_counts.data<int>(), order.data<int>());
  // Every code with rows adds at most one partial run: an upper bound known without a read-back.
  const int64_t max_runs = rows / kRun + std::min(codes, rows) + 1;
  Tensor partial = Tensor::empty(Shape{max_runs * channels}, DType::float32, device);
  launch_kernel(device, run_sums_kernel, element_grid(max_runs * channels), kElementThreads, 0,
                latents.data<float>(), order.data<int>(), offsets.data<int>(), run_offsets.data<int>(), codes,
                channels, max_runs, partial.data<float>());
  launch_kernel(device, code_sums_kernel, element_grid(codes * channels), kElementThreads, 0, partial.data<float>(),
                run_offsets.data<int>(), codes, channels, sums.data<float>());
}

void codebook_ema_embeddings(const Tensor& ema_counts, const Tensor& ema_sums, float smoothing, float smoothing_total,
                             float threshold, const Tensor& candidates, Tensor& embeddings) {
  ema_sums.check_dtype(DType::float32, "codebook_ema_embeddings (CUDA) ema_sums");
  const Device device = ema_sums.device();
  const int64_t codes = ema_sums.dim(0), channels = ema_sums.dim(1);
  Tensor total = Tensor::empty(Shape{1}, DType::float32, device);
  launch_kernel(device, code_total_kernel, 1, unsigned(kCodebookTotalLanes), 0, ema_counts.data<float>(), codes,
                total.data<float>());
  launch_kernel(device, ema_embeddings_kernel, element_grid(codes * channels), kElementThreads, 0,
                ema_counts.data<float>(), ema_sums.data<float>(), total.data<float>(), codes, channels, smoothing,
                smoothing_total, threshold, candidates.defined() ? candidates.data<float>() : nullptr,
                embeddings.data<float>());
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
