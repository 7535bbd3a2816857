// CUDA kernels for multi-head attention (kernels/attention.h), float32, head_dim 32 or 64, in
// the manner of FlashAttention-2, in portable CUDA C++ (plain FMAs on shared-memory tiles, no
// tensor-core instructions) so that the same source runs on the CUDA-on-CPU executor.
//
// Every kernel is a block of 128 threads that owns a tile of 64 rows of one (b, h) (queries,
// or keys in dk/dv) and streams the other side through shared memory 64 rows at a time:
//   forward        block per (query tile, h, b): for each key/value tile, S = q k^T (scaled,
//                  in log2 units so exp2 does the exponentials), online softmax with a running
//                  row max m and row sum l (the accumulator is rescaled when m grows), then
//                  acc += P v. Writes o = acc / l and lse = (m + log2 l) ln 2.
//   backward       1. delta       D_i = dO_i . o_i, one thread per (b, row, h)
//                  2. dk_dv       block per (key tile, h, b), over query tiles: P and
//                                 dS = P (dO v^T - D) rebuilt from q, k, lse; dv += P^T dO,
//                                 dk += dS^T q in registers
//                  3. dq          block per (query tile, h, b), over key tiles: the same P and dS,
//                                 dq += dS k in registers
//                  dq gets its own kernel (recomputing S and dP: seven tile products where
//                  five would do) rather than float atomics or partial-dq buffers: atomics
//                  would make results order-dependent, and partials per key tile would need
//                  O(N^2 / 64) memory. Every value is summed in a fixed order: bitwise
//                  reproducible.
// Nothing of size N x N exists; besides its inputs and outputs, backward allocates only D.
// Shared memory is dynamic (head_dim 64 / 32): forward 51 / 35 KiB, dk_dv 103 / 71 KiB, dq
// 85 / 53 KiB; launch_kernel opts in above 48 KiB.
//
// Thread layout inside a tile (t = threadIdx.x): lane group g = t % 8 and row group rg = t / 8.
// A thread owns rows rg + 16 i (i < 4) of the block's tile, columns g + 8 j (j < 8) of each
// 64 x 64 score tile, and output dims 4 g + 32 k + e (k < head_dim / 32, e < 4). The 8 threads
// of a row group are consecutive lanes of one warp, so a row's softmax statistics combine with
// three xor shuffles. Products read shared memory as float4: q, k, v and dO tiles are stored
// with rows of head_dim + 4 floats, score tiles with rows of 68, and rows / columns are dealt
// out interleaved (rg + 16 i, g + 8 j) so that the float4s a warp reads at once fall in
// distinct banks. Rows past N load as zeros, so N needs no padding. In forward, keys past N
// are masked to probability 0 (a zero key would still score 0 and take a share of the
// softmax). In backward, zero rows past N already add nothing to dq, dk or dv; the same mask
// is applied anyway, so that this does not hinge on the fill.
#include "runtime/kernel_prelude.h"

#include "kernels/attention.h"
#include "kernels/mma.h"

#if defined(__CUDACC__)
#define CTSR_ATTENTION_UNROLL _Pragma("unroll")
#else
#define CTSR_ATTENTION_UNROLL
#endif

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kThreads = 128;
constexpr int kGroupLanes = 8;                         // threads sharing a row
constexpr int kRowGroups = kThreads / kGroupLanes;     // 16
constexpr int kTile = 64;                              // rows of a tile, either side
constexpr int kRowsPerThread = kTile / kRowGroups;     // 4
constexpr int kColsPerThread = kTile / kGroupLanes;    // 8
constexpr int kScoreStride = kTile + 4;                // floats per row of a score tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D>
constexpr int row_stride() {  // floats per row of a q, k, v or dO tile
  return D + 4;
}
template <int D>
constexpr int dims_per_thread() {
  return D / 8;
}

struct Float4 {
  float v[4];
};

CTSR_DEVICE_INLINE Float4 load4(const float* p) {  // p is 16-byte aligned shared memory
  const float4 t = *reinterpret_cast<const float4*>(p);
  return {{t.x, t.y, t.z, t.w}};
}

// Rows [row0, row0 + 64) of one head's D columns into a shared tile with rows of D + 4
// floats; rows at or past N become zeros. `src` points at row 0 of the head's columns, rows
// `stride` floats apart. Consecutive threads read consecutive columns (coalesced).
template <int D>
CTSR_DEVICE_INLINE void load_tile(const float* __restrict__ src, int64_t stride, int64_t row0, int64_t N,
                                  float* __restrict__ tile) {
  for (int idx = int(threadIdx.x); idx < kTile * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int64_t row = row0 + r;
    tile[r * row_stride<D>() + d] = row < N ? src[row * stride + d] : 0.0f;
  }
}

// s[i][j] = sum_d a[rg + 16 i][d] * b[g + 8 j][d] over two shared tiles with rows of D + 4.
template <int D>
CTSR_DEVICE_INLINE void tile_dot(const float* __restrict__ a, const float* __restrict__ b, int rg, int g,
                                 float (&s)[kRowsPerThread][kColsPerThread]) {
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i)
    CTSR_ATTENTION_UNROLL
    for (int j = 0; j < kColsPerThread; ++j) s[i][j] = 0.0f;
  for (int d = 0; d < D; d += 4) {
    Float4 av[kRowsPerThread], bv[kColsPerThread];
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) av[i] = load4(a + (rg + kRowGroups * i) * row_stride<D>() + d);
    CTSR_ATTENTION_UNROLL
    for (int j = 0; j < kColsPerThread; ++j) bv[j] = load4(b + (g + kGroupLanes * j) * row_stride<D>() + d);
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i)
      CTSR_ATTENTION_UNROLL
      for (int j = 0; j < kColsPerThread; ++j)
        CTSR_ATTENTION_UNROLL
        for (int e = 0; e < 4; ++e) s[i][j] += av[i].v[e] * bv[j].v[e];
  }
}

// acc[i][4 k + e] += sum_c p[rg + 16 i][c] * x[c][4 g + 32 k + e] over the 64 columns of a
// score tile p (rows of 68) and the 64 rows of a tile x (rows of D + 4).
template <int D>
CTSR_DEVICE_INLINE void tile_accumulate(const float* __restrict__ p, const float* __restrict__ x, int rg, int g,
                                        float (&acc)[kRowsPerThread][dims_per_thread<D>()]) {
  for (int c = 0; c < kTile; c += 4) {
    Float4 pv[kRowsPerThread];
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) pv[i] = load4(p + (rg + kRowGroups * i) * kScoreStride + c);
    CTSR_ATTENTION_UNROLL
    for (int e = 0; e < 4; ++e) {
      CTSR_ATTENTION_UNROLL
      for (int k = 0; k < D / 32; ++k) {
        const Float4 xv = load4(x + (c + e) * row_stride<D>() + 4 * g + 32 * k);
        CTSR_ATTENTION_UNROLL
        for (int i = 0; i < kRowsPerThread; ++i)
          CTSR_ATTENTION_UNROLL
          for (int f = 0; f < 4; ++f) acc[i][4 * k + f] += pv[i].v[e] * xv.v[f];
      }
    }
  }
}

template <int D>
CTSR_DEVICE_INLINE void zero(float (&acc)[kRowsPerThread][dims_per_thread<D>()]) {
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i)
    CTSR_ATTENTION_UNROLL
    for (int k = 0; k < dims_per_thread<D>(); ++k) acc[i][k] = 0.0f;
}

// Writes acc * factor to rows row0 + rg + 16 i (< N) of a head's columns at `dst` (rows
// `stride` floats apart): the 8 threads of a row group write 32 consecutive floats at a time.
template <int D>
CTSR_DEVICE_INLINE void store_rows(const float (&acc)[kRowsPerThread][dims_per_thread<D>()], float factor,
                                   int64_t row0, int64_t N, int rg, int g, float* __restrict__ dst, int64_t stride) {
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t row = row0 + rg + kRowGroups * i;
    if (row >= N) continue;
    CTSR_ATTENTION_UNROLL
    for (int k = 0; k < D / 32; ++k)
      CTSR_ATTENTION_UNROLL
      for (int f = 0; f < 4; ++f) dst[row * stride + 32 * k + 4 * g + f] = acc[i][4 * k + f] * factor;
  }
}

// ---- forward --------------------------------------------------------------------------------

template <int D>
constexpr size_t forward_shared_bytes() {
  // q tile, the key tile (reused for the probabilities once the scores are taken), value tile
  return sizeof(float) * size_t(kTile * row_stride<D>() + kTile * kScoreStride + kTile * row_stride<D>());
}

// At most 128 registers (4 resident blocks of 128 threads, as many as head_dim 64's shared tiles
// allow anyway): left to itself, ptxas (CUDA 13, sm_90) took 96 registers for head_dim 32 and
// spilled 4 bytes (the main job's UNet has head_channels 32); with the bound it takes 128 and
// 122 for head_dim 64, neither spilling (scripts/kernel_resources.py checks).
constexpr int kForwardMinBlocks = 4;

template <int D>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks)
    attention_forward_kernel(const float* __restrict__ qkv, int64_t N, int64_t H, float scale_log2,
                             float* __restrict__ o, float* __restrict__ lse) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_DYNAMIC_SHARED(float, shared);
  float* q_tile = shared;
  float* kp_tile = q_tile + kTile * row_stride<D>();  // keys, then probabilities
  float* v_tile = kp_tile + kTile * kScoreStride;
  const int t = int(threadIdx.x), g = t % kGroupLanes, rg = t / kGroupLanes;
  const int64_t b = blockIdx.z, h = blockIdx.y, row0 = int64_t(blockIdx.x) * kTile;
  const int64_t C = H * D, stride = 3 * C;
  const float* q_src = qkv + b * N * stride + h * D;
  load_tile<D>(q_src, stride, row0, N, q_tile);

  float m[kRowsPerThread], l[kRowsPerThread], acc[kRowsPerThread][dims_per_thread<D>()];
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i) m[i] = -INFINITY, l[i] = 0.0f;
  zero<D>(acc);

  for (int64_t col0 = 0; col0 < N; col0 += kTile) {
    __syncthreads();  // the last step is done with kp_tile and v_tile (and q_tile is in, on the first)
    load_tile<D>(q_src + C, stride, col0, N, kp_tile);
    load_tile<D>(q_src + 2 * C, stride, col0, N, v_tile);
    __syncthreads();
    float s[kRowsPerThread][kColsPerThread];
    tile_dot<D>(q_tile, kp_tile, rg, g, s);
    __syncthreads();  // every thread has read the keys: kp_tile takes the probabilities
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) {
      float tile_max = -INFINITY;
      CTSR_ATTENTION_UNROLL
      for (int j = 0; j < kColsPerThread; ++j) {
        s[i][j] = col0 + g + kGroupLanes * j < N ? s[i][j] * scale_log2 : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      CTSR_ATTENTION_UNROLL
      for (int offset = 1; offset < kGroupLanes; offset *= 2)
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      // Column col0 < N is in every tile, so m_new is finite; alpha is 0 on the first tile.
      const float m_new = fmaxf(m[i], tile_max);
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      l[i] *= alpha;
      CTSR_ATTENTION_UNROLL
      for (int k = 0; k < dims_per_thread<D>(); ++k) acc[i][k] *= alpha;
      float* p_row = kp_tile + (rg + kRowGroups * i) * kScoreStride + g;
      CTSR_ATTENTION_UNROLL
      for (int j = 0; j < kColsPerThread; ++j) {
        const float p = exp2f(s[i][j] - m_new);  // 0 for masked columns
        l[i] += p;                               // this thread's columns; summed over the group at the end
        p_row[kGroupLanes * j] = p;
      }
    }
    __syncthreads();
    tile_accumulate<D>(kp_tile, v_tile, rg, g, acc);
  }

  // An xor butterfly leaves the same, order-independent bits in every lane of the group.
  float inv_l[kRowsPerThread];
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i) {
    float sum = l[i];
    CTSR_ATTENTION_UNROLL
    for (int offset = 1; offset < kGroupLanes; offset *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    inv_l[i] = 1.0f / sum;
    const int64_t row = row0 + rg + kRowGroups * i;
    if (g == 0 && row < N) lse[(b * H + h) * N + row] = (m[i] + log2f(sum)) * kLn2;
  }
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i)
    CTSR_ATTENTION_UNROLL
    for (int k = 0; k < dims_per_thread<D>(); ++k) acc[i][k] *= inv_l[i];
  store_rows<D>(acc, 1.0f, row0, N, rg, g, o + b * N * C + h * D, C);
}

// ---- backward -------------------------------------------------------------------------------

// delta[b, h, n] = sum_d dO[b, n, h, d] * o[b, n, h, d]; one thread per (b, n, h), h fastest so
// that a warp reads contiguous memory.
template <class T>
__global__ void attention_delta_kernel(const T* __restrict__ o, const T* __restrict__ d_o, int64_t B,
                                       int64_t N, int64_t H, int64_t D, float* __restrict__ delta) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * N * H) return;  // no barriers in this kernel
  const int64_t h = idx % H, n = (idx / H) % N, b = idx / (H * N);
  const T* op = o + idx * D;  // [B, N, C] with C = H * D: (b, n, h) starts at idx * D
  const T* dp = d_o + idx * D;
  float sum = 0.0f;
  for (int64_t d = 0; d < D; ++d) sum += float(op[d]) * float(dp[d]);
  delta[(b * H + h) * N + n] = sum;
}

template <int D>
constexpr size_t dk_dv_shared_bytes() {
  // k, v, q, dO tiles; P^T and dS^T score tiles; lse and delta of the query tile
  return sizeof(float) * size_t(4 * kTile * row_stride<D>() + 2 * kTile * kScoreStride + 2 * kTile);
}

// Rows of the block's tile are keys j, columns of the score tiles are queries i: the thread
// holds P^T and dS^T, and accumulates dv_j = sum_i P_ij dO_i and dk_j = sum_i dS_ij q_i.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_dk_dv_kernel(const float* __restrict__ qkv, const float* __restrict__ d_o,
                           const float* __restrict__ lse, const float* __restrict__ delta, int64_t N, int64_t H,
                           float scale, float scale_log2, float* __restrict__ d_qkv) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_DYNAMIC_SHARED(float, shared);
  float* k_tile = shared;
  float* v_tile = k_tile + kTile * row_stride<D>();
  float* q_tile = v_tile + kTile * row_stride<D>();
  float* do_tile = q_tile + kTile * row_stride<D>();
  float* p_tile = do_tile + kTile * row_stride<D>();
  float* ds_tile = p_tile + kTile * kScoreStride;
  float* lse_tile = ds_tile + kTile * kScoreStride;  // in log2 units
  float* delta_tile = lse_tile + kTile;
  const int t = int(threadIdx.x), g = t % kGroupLanes, rg = t / kGroupLanes;
  const int64_t b = blockIdx.z, h = blockIdx.y, row0 = int64_t(blockIdx.x) * kTile;
  const int64_t C = H * D, stride = 3 * C;
  const float* q_src = qkv + b * N * stride + h * D;
  const float* do_src = d_o + b * N * C + h * D;
  const float* lse_src = lse + (b * H + h) * N;
  const float* delta_src = delta + (b * H + h) * N;
  load_tile<D>(q_src + C, stride, row0, N, k_tile);
  load_tile<D>(q_src + 2 * C, stride, row0, N, v_tile);

  float dk[kRowsPerThread][dims_per_thread<D>()], dv[kRowsPerThread][dims_per_thread<D>()];
  zero<D>(dk);
  zero<D>(dv);
  for (int64_t col0 = 0; col0 < N; col0 += kTile) {
    __syncthreads();  // the last step is done with the query-side tiles
    load_tile<D>(q_src, stride, col0, N, q_tile);
    load_tile<D>(do_src, C, col0, N, do_tile);
    if (t < kTile) {
      const bool valid = col0 + t < N;
      lse_tile[t] = valid ? lse_src[col0 + t] * kLog2e : 0.0f;
      delta_tile[t] = valid ? delta_src[col0 + t] : 0.0f;
    }
    __syncthreads();
    float s[kRowsPerThread][kColsPerThread], dp[kRowsPerThread][kColsPerThread];
    tile_dot<D>(k_tile, q_tile, rg, g, s);
    tile_dot<D>(v_tile, do_tile, rg, g, dp);
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) {
      float* p_row = p_tile + (rg + kRowGroups * i) * kScoreStride + g;
      float* ds_row = ds_tile + (rg + kRowGroups * i) * kScoreStride + g;
      CTSR_ATTENTION_UNROLL
      for (int j = 0; j < kColsPerThread; ++j) {
        const int c = g + kGroupLanes * j;
        const float p = col0 + c < N ? exp2f(s[i][j] * scale_log2 - lse_tile[c]) : 0.0f;
        p_row[kGroupLanes * j] = p;
        ds_row[kGroupLanes * j] = p * (dp[i][j] - delta_tile[c]);
      }
    }
    __syncthreads();
    tile_accumulate<D>(p_tile, do_tile, rg, g, dv);
    tile_accumulate<D>(ds_tile, q_tile, rg, g, dk);
  }
  float* dk_dst = d_qkv + b * N * stride + C + h * D;
  store_rows<D>(dk, scale, row0, N, rg, g, dk_dst, stride);
  store_rows<D>(dv, 1.0f, row0, N, rg, g, dk_dst + C, stride);
}

template <int D>
constexpr size_t dq_shared_bytes() {
  // q, dO, k, v tiles; the dS score tile
  return sizeof(float) * size_t(4 * kTile * row_stride<D>() + kTile * kScoreStride);
}

// Rows of the block's tile are queries i, columns keys j: dq_i = scale sum_j dS_ij k_j.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(const float* __restrict__ qkv, const float* __restrict__ d_o, const float* __restrict__ lse,
                        const float* __restrict__ delta, int64_t N, int64_t H, float scale, float scale_log2,
                        float* __restrict__ d_qkv) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_DYNAMIC_SHARED(float, shared);
  float* q_tile = shared;
  float* do_tile = q_tile + kTile * row_stride<D>();
  float* k_tile = do_tile + kTile * row_stride<D>();
  float* v_tile = k_tile + kTile * row_stride<D>();
  float* ds_tile = v_tile + kTile * row_stride<D>();
  const int t = int(threadIdx.x), g = t % kGroupLanes, rg = t / kGroupLanes;
  const int64_t b = blockIdx.z, h = blockIdx.y, row0 = int64_t(blockIdx.x) * kTile;
  const int64_t C = H * D, stride = 3 * C;
  const float* q_src = qkv + b * N * stride + h * D;
  load_tile<D>(q_src, stride, row0, N, q_tile);
  load_tile<D>(d_o + b * N * C + h * D, C, row0, N, do_tile);
  float lse_row[kRowsPerThread], delta_row[kRowsPerThread];  // rows past N: any finite value
  CTSR_ATTENTION_UNROLL
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t row = row0 + rg + kRowGroups * i;
    lse_row[i] = row < N ? lse[(b * H + h) * N + row] * kLog2e : 0.0f;
    delta_row[i] = row < N ? delta[(b * H + h) * N + row] : 0.0f;
  }

  float dq[kRowsPerThread][dims_per_thread<D>()];
  zero<D>(dq);
  for (int64_t col0 = 0; col0 < N; col0 += kTile) {
    __syncthreads();  // the last step is done with k_tile, v_tile and ds_tile
    load_tile<D>(q_src + C, stride, col0, N, k_tile);
    load_tile<D>(q_src + 2 * C, stride, col0, N, v_tile);
    __syncthreads();
    float s[kRowsPerThread][kColsPerThread], dp[kRowsPerThread][kColsPerThread];
    tile_dot<D>(q_tile, k_tile, rg, g, s);
    tile_dot<D>(do_tile, v_tile, rg, g, dp);
    CTSR_ATTENTION_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) {
      float* ds_row = ds_tile + (rg + kRowGroups * i) * kScoreStride + g;
      CTSR_ATTENTION_UNROLL
      for (int j = 0; j < kColsPerThread; ++j) {
        const float p = col0 + g + kGroupLanes * j < N ? exp2f(s[i][j] * scale_log2 - lse_row[i]) : 0.0f;
        ds_row[kGroupLanes * j] = p * (dp[i][j] - delta_row[i]);
      }
    }
    __syncthreads();
    tile_accumulate<D>(ds_tile, k_tile, rg, g, dq);
  }
  store_rows<D>(dq, scale, row0, N, rg, g, d_qkv + b * N * stride + h * D, stride);
}

// ---- bfloat16 on tensor cores ------------------------------------------------------------------
//
// The same three products on bf16 q, k, v and dO with kernels/mma.h: a block of 4 warps owns 64
// rows of one (b, h), each warp 16 of them, and streams the other side 64 rows at a time through
// shared memory (bf16 tiles of rows of head_dim + 8). Scores, probabilities and every accumulator
// are float; P and dS are rounded to bf16 only as the A operand of the next mma, straight from the
// registers that hold them (mma::a_from_accumulators). A lane holds rows g and g + 8 of its warp's
// 16 (g = lane / 4) and the columns 2t, 2t + 1 of each 8-wide tile (t = lane % 4), so a row's
// max and sum combine over the 4 lanes of a group with two xor shuffles. Keys past N are masked
// to probability 0 (in forward as -inf scores, in backward as P = 0), queries past N likewise in
// dk_dv, where their lse would otherwise be read; rows past N load as zeros.

template <int D>
constexpr int kMmaRowStride = D + 8;  // bf16 per row of a tile

// Two bf16 moved as one 4-byte word. On the executor the type may alias the uint16_t arrays it is
// read from and written to (as cuda_compat.h's vector types do), so the host compiler cannot
// reorder it against the fragment loaders' 2-byte reads.
#if defined(__CUDACC__)
using Bf16Pair = uint32_t;
#else
typedef uint32_t __attribute__((may_alias)) Bf16Pair;
#endif

// A 64-row bf16 tile, aligned for the 4-byte loads and stores of load_rows_bf16.
template <int D>
struct alignas(16) Bf16Tile {
  uint16_t v[kTile * kMmaRowStride<D>];
};

// Declares a block-shared Bf16Tile<D> and `name`, the pointer to its elements.
#define CTSR_BF16_TILE(name)                        \
  CTSR_STATIC_SHARED(name##_shared, Bf16Tile<D>); \
  uint16_t* name = name##_shared.v

// Where a tensor-core block works: batch b, head h, the first row of its 64-row tile (queries or
// keys), the channels C = H D and the qkv row width 3C, and the thread's warp and lane.
struct MmaBlock {
  int64_t b, h, row0, C, width;
  int warp, lane;
};
template <int D>
CTSR_DEVICE_INLINE MmaBlock mma_block(int64_t H) {
  return {blockIdx.z, blockIdx.y, int64_t(blockIdx.x) * kTile, H * D, 3 * H * D, int(threadIdx.x) / 32,
          int(threadIdx.x) % 32};
}

// Rows [row0, row0 + 64) of columns [col, col + D) of a bf16 matrix with `width` columns (the
// batch's rows start at base) into tile[64][D + 8]; rows past n_rows become zeros. Two bf16 per
// load (col, width and D are even).
template <int D>
CTSR_DEVICE_INLINE void load_rows_bf16(uint16_t* tile, const uint16_t* base, int64_t width, int64_t col, int64_t row0,
                                       int64_t n_rows) {
  constexpr int ld = kMmaRowStride<D>;
  for (int e = int(threadIdx.x); e < kTile * (D / 2); e += kThreads) {
    const int r = e / (D / 2), c = 2 * (e % (D / 2));
    const int64_t n = row0 + r;
    const Bf16Pair v = n < n_rows ? *reinterpret_cast<const Bf16Pair*>(base + n * width + col + c) : 0u;
    *reinterpret_cast<Bf16Pair*>(tile + r * ld + c) = v;
  }
}

CTSR_DEVICE_INLINE float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
CTSR_DEVICE_INLINE float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

CTSR_DEVICE_INLINE void zero_fragments(mma::FragC* c, int n) {
  for (int j = 0; j < n; ++j)
    for (int e = 0; e < 4; ++e) c[j].v[e] = 0.0f;
}

CTSR_DEVICE_INLINE uint16_t bf16_bits(float v) { return bfloat16::from_float(v); }

// acc[j] (j < D / 8) += (the warp's 16 x 64 probabilities p[0..8)) x (a 64 x D tile, k-major).
template <int D>
CTSR_DEVICE_INLINE void multiply_probabilities(const mma::FragC (&p)[8], const uint16_t* tile, int lane,
                                               mma::FragC (&acc)[D / 8]) {
  constexpr int ld = kMmaRowStride<D>;
  CTSR_UNROLL
  for (int kk = 0; kk < kTile / 16; ++kk) {
    const mma::FragA a = mma::a_from_accumulators(p[2 * kk], p[2 * kk + 1]);
    CTSR_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      mma::FragB b;
      mma::load_b_k_major(b, tile + 16 * kk * ld + 8 * n, ld, lane);
      mma::mma_bf16(acc[n], a, b);
    }
  }
}

// s[j] (j < 8) = (the warp's 16 rows, as A fragments a[D / 16]) x (the 64 rows of tile)^T.
template <int D>
CTSR_DEVICE_INLINE void multiply_transposed(const mma::FragA (&a)[D / 16], const uint16_t* tile, int lane,
                                            mma::FragC (&s)[8]) {
  constexpr int ld = kMmaRowStride<D>;
  zero_fragments(s, 8);
  CTSR_UNROLL
  for (int j = 0; j < 8; ++j) {
    CTSR_UNROLL
    for (int kd = 0; kd < D / 16; ++kd) {
      mma::FragB b;
      mma::load_b_n_major(b, tile + 8 * j * ld + 16 * kd, ld, lane);
      mma::mma_bf16(s[j], a[kd], b);
    }
  }
}

template <int D>
CTSR_DEVICE_INLINE void load_a_rows(mma::FragA (&a)[D / 16], const uint16_t* tile, int warp, int lane) {
  constexpr int ld = kMmaRowStride<D>;
  CTSR_UNROLL
  for (int kd = 0; kd < D / 16; ++kd) mma::load_a_row_major(a[kd], tile + 16 * warp * ld + 16 * kd, ld, lane);
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_forward_mma_kernel(const uint16_t* __restrict__ qkv, int64_t N, int64_t H, float scale_log2,
                                 uint16_t* __restrict__ o, float* __restrict__ lse) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_BF16_TILE(q_tile);
  CTSR_BF16_TILE(k_tile);
  CTSR_BF16_TILE(v_tile);
  const auto [b, h, q0, C, width, warp, lane] = mma_block<D>(H);
  const uint16_t* base = qkv + b * N * width;
  using L = mma::FragmentLayout;

  load_rows_bf16<D>(q_tile, base, width, h * D, q0, N);
  __syncthreads();
  mma::FragA qa[D / 16];
  load_a_rows<D>(qa, q_tile, warp, lane);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8
  mma::FragC acc[D / 8];
  zero_fragments(acc, D / 8);
  for (int64_t k0 = 0; k0 < N; k0 += kTile) {
    __syncthreads();  // the previous key and value tiles are consumed
    load_rows_bf16<D>(k_tile, base, width, C + h * D, k0, N);
    load_rows_bf16<D>(v_tile, base, width, 2 * C + h * D, k0, N);
    __syncthreads();
    mma::FragC s[8];
    multiply_transposed<D>(qa, k_tile, lane, s);
    float mx[2] = {m[0], m[1]};
    for (int j = 0; j < 8; ++j) {
      for (int e = 0; e < 4; ++e) {
        const bool key = k0 + 8 * j + L::c_col(lane, e) < N;
        s[j].v[e] = key ? s[j].v[e] * scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j].v[e]);
      }
    }
    float alpha[2], sum[2] = {0.0f, 0.0f};
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);  // finite: key k0 < N is in every tile's first column
      alpha[r] = exp2f(m[r] - mx[r]);
      m[r] = mx[r];
    }
    for (int j = 0; j < 8; ++j) {
      for (int e = 0; e < 4; ++e) {
        s[j].v[e] = exp2f(s[j].v[e] - m[e >> 1]);  // 0 for masked keys
        sum[e >> 1] += s[j].v[e];
      }
    }
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + quad_sum(sum[r]);
    for (int n = 0; n < D / 8; ++n)
      for (int e = 0; e < 4; ++e) acc[n].v[e] *= alpha[e >> 1];
    multiply_probabilities<D>(s, v_tile, lane, acc);
  }
  for (int n = 0; n < D / 8; ++n) {
    for (int e = 0; e < 4; ++e) {
      const int64_t row = q0 + 16 * warp + L::c_row(lane, e);
      if (row < N) o[(b * N + row) * C + h * D + 8 * n + L::c_col(lane, e)] = bf16_bits(acc[n].v[e] / l[e >> 1]);
    }
  }
  if (lane % 4 == 0) {
    for (int r = 0; r < 2; ++r) {
      const int64_t row = q0 + 16 * warp + lane / 4 + 8 * r;
      if (row < N) lse[(b * H + h) * N + row] = (m[r] + log2f(l[r])) * kLn2;
    }
  }
}

// Rows of the block's tile are keys j; the warp accumulates dv_j = sum_i P_ij dO_i and
// dk_j = scale sum_i dS_ij q_i over every query tile, with P^T and dS^T rebuilt from k q^T, lse
// and dP^T = v dO^T.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_dk_dv_mma_kernel(const uint16_t* __restrict__ qkv, const uint16_t* __restrict__ d_o,
                               const float* __restrict__ lse, const float* __restrict__ delta, int64_t N, int64_t H,
                               float scale, float scale_log2, uint16_t* __restrict__ d_qkv) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_BF16_TILE(k_tile);
  CTSR_BF16_TILE(v_tile);
  CTSR_BF16_TILE(q_tile);
  CTSR_BF16_TILE(do_tile);
  CTSR_STATIC_SHARED(lse_tile, float[kTile]);    // log2 units
  CTSR_STATIC_SHARED(delta_tile, float[kTile]);
  const auto [b, h, k0, C, width, warp, lane] = mma_block<D>(H);
  const uint16_t* base = qkv + b * N * width;
  const uint16_t* do_base = d_o + b * N * C;
  using L = mma::FragmentLayout;

  load_rows_bf16<D>(k_tile, base, width, C + h * D, k0, N);
  load_rows_bf16<D>(v_tile, base, width, 2 * C + h * D, k0, N);
  __syncthreads();
  mma::FragA ka[D / 16], va[D / 16];
  load_a_rows<D>(ka, k_tile, warp, lane);
  load_a_rows<D>(va, v_tile, warp, lane);
  mma::FragC dk[D / 8], dv[D / 8];
  zero_fragments(dk, D / 8);
  zero_fragments(dv, D / 8);
  for (int64_t q0 = 0; q0 < N; q0 += kTile) {
    __syncthreads();  // the previous query tiles are consumed
    load_rows_bf16<D>(q_tile, base, width, h * D, q0, N);
    load_rows_bf16<D>(do_tile, do_base, C, h * D, q0, N);
    for (int r = int(threadIdx.x); r < kTile; r += kThreads) {
      const int64_t i = q0 + r;
      lse_tile[r] = i < N ? lse[(b * H + h) * N + i] * kLog2e : 0.0f;
      delta_tile[r] = i < N ? delta[(b * H + h) * N + i] : 0.0f;
    }
    __syncthreads();
    mma::FragC p[8], ds[8];
    multiply_transposed<D>(ka, q_tile, lane, p);   // S^T
    multiply_transposed<D>(va, do_tile, lane, ds);  // dP^T
    for (int j = 0; j < 8; ++j) {
      for (int e = 0; e < 4; ++e) {
        const int c = 8 * j + L::c_col(lane, e);
        const bool live = q0 + c < N && k0 + 16 * warp + L::c_row(lane, e) < N;
        p[j].v[e] = live ? exp2f(p[j].v[e] * scale_log2 - lse_tile[c]) : 0.0f;
        ds[j].v[e] = p[j].v[e] * (ds[j].v[e] - delta_tile[c]);
      }
    }
    multiply_probabilities<D>(p, do_tile, lane, dv);
    multiply_probabilities<D>(ds, q_tile, lane, dk);
  }
  for (int n = 0; n < D / 8; ++n) {
    for (int e = 0; e < 4; ++e) {
      const int64_t key = k0 + 16 * warp + L::c_row(lane, e);
      if (key >= N) continue;
      uint16_t* row = d_qkv + (b * N + key) * width + h * D + 8 * n + L::c_col(lane, e);
      row[C] = bf16_bits(dk[n].v[e] * scale);
      row[2 * C] = bf16_bits(dv[n].v[e]);
    }
  }
}

// Rows of the block's tile are queries i: dq_i = scale sum_j dS_ij k_j over every key tile.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_dq_mma_kernel(const uint16_t* __restrict__ qkv, const uint16_t* __restrict__ d_o,
                            const float* __restrict__ lse, const float* __restrict__ delta, int64_t N, int64_t H,
                            float scale, float scale_log2, uint16_t* __restrict__ d_qkv) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  CTSR_BF16_TILE(q_tile);
  CTSR_BF16_TILE(do_tile);
  CTSR_BF16_TILE(k_tile);
  CTSR_BF16_TILE(v_tile);
  const auto [b, h, q0, C, width, warp, lane] = mma_block<D>(H);
  const uint16_t* base = qkv + b * N * width;
  using L = mma::FragmentLayout;

  load_rows_bf16<D>(q_tile, base, width, h * D, q0, N);
  load_rows_bf16<D>(do_tile, d_o + b * N * C, C, h * D, q0, N);
  __syncthreads();
  mma::FragA qa[D / 16], da[D / 16];
  load_a_rows<D>(qa, q_tile, warp, lane);
  load_a_rows<D>(da, do_tile, warp, lane);
  float row_lse[2], row_delta[2];  // rows g and g + 8 of the warp's 16
  for (int r = 0; r < 2; ++r) {
    const int64_t i = q0 + 16 * warp + lane / 4 + 8 * r;
    row_lse[r] = i < N ? lse[(b * H + h) * N + i] * kLog2e : 0.0f;
    row_delta[r] = i < N ? delta[(b * H + h) * N + i] : 0.0f;
  }
  mma::FragC dq[D / 8];
  zero_fragments(dq, D / 8);
  for (int64_t k0 = 0; k0 < N; k0 += kTile) {
    __syncthreads();
    load_rows_bf16<D>(k_tile, base, width, C + h * D, k0, N);
    load_rows_bf16<D>(v_tile, base, width, 2 * C + h * D, k0, N);
    __syncthreads();
    mma::FragC ds[8], dp[8];
    multiply_transposed<D>(qa, k_tile, lane, ds);  // S
    multiply_transposed<D>(da, v_tile, lane, dp);  // dP
    for (int j = 0; j < 8; ++j) {
      for (int e = 0; e < 4; ++e) {
        const bool key = k0 + 8 * j + L::c_col(lane, e) < N;
        const float p = key ? exp2f(ds[j].v[e] * scale_log2 - row_lse[e >> 1]) : 0.0f;
        ds[j].v[e] = p * (dp[j].v[e] - row_delta[e >> 1]);
      }
    }
    multiply_probabilities<D>(ds, k_tile, lane, dq);
  }
  for (int n = 0; n < D / 8; ++n) {
    for (int e = 0; e < 4; ++e) {
      const int64_t row = q0 + 16 * warp + L::c_row(lane, e);
      if (row < N) d_qkv[(b * N + row) * width + h * D + 8 * n + L::c_col(lane, e)] = bf16_bits(dq[n].v[e] * scale);
    }
  }
}

// ---- launchers ------------------------------------------------------------------------------

void check_launchable(const char* op, const AttentionShape& shape) {
  CTSR_CHECK(shape.head_dim == 32 || shape.head_dim == 64, op, " (CUDA): head_dim ", shape.head_dim, " (",
             shape.heads, " heads over ", shape.channels(),
             " channels) is not supported; the CUDA kernels are built for head_dim 32 and 64 (the cpu reference takes "
             "any)");
  CTSR_CHECK(shape.heads <= 65535, op, " (CUDA): ", shape.heads, " heads exceed the grid's y limit of 65535");
  CTSR_CHECK(shape.batch <= 65535, op, " (CUDA): batch ", shape.batch, " exceeds the grid's z limit of 65535");
}

dim3 tile_grid(const AttentionShape& shape) {
  return dim3(unsigned((shape.tokens + kTile - 1) / kTile), unsigned(shape.heads), unsigned(shape.batch));
}

template <int D>
void forward_launch(const AttentionShape& shape, const Tensor& qkv, Tensor& o, Tensor& lse) {
  const float scale_log2 = float(shape.scale() * 1.4426950408889634);
  launch_kernel(qkv.device(), attention_forward_kernel<D>, tile_grid(shape), unsigned(kThreads),
                forward_shared_bytes<D>(), qkv.data<float>(), shape.tokens, shape.heads, scale_log2, o.data<float>(),
                lse.data<float>());
}

template <int D>
void backward_launch(const AttentionShape& shape, const Tensor& qkv, const Tensor& o, const Tensor& lse,
                     const Tensor& d_o, Tensor& d_qkv) {
  const Device dev = qkv.device();
  const float scale = float(shape.scale());
  const float scale_log2 = float(shape.scale() * 1.4426950408889634);
  Tensor delta = Tensor::empty(Shape{shape.batch, shape.heads, shape.tokens}, DType::float32, dev);
  const int64_t rows = shape.batch * shape.tokens * shape.heads;
  launch_kernel(dev, attention_delta_kernel<float>, blocks_for(rows, 256), 256u, 0, o.data<float>(), d_o.data<float>(),
                shape.batch, shape.tokens, shape.heads, shape.head_dim, delta.data<float>());
  launch_kernel(dev, attention_dk_dv_kernel<D>, tile_grid(shape), unsigned(kThreads), dk_dv_shared_bytes<D>(),
                qkv.data<float>(), d_o.data<float>(), lse.data<float>(), delta.data<float>(), shape.tokens,
                shape.heads, scale, scale_log2, d_qkv.data<float>());
  launch_kernel(dev, attention_dq_kernel<D>, tile_grid(shape), unsigned(kThreads), dq_shared_bytes<D>(),
                qkv.data<float>(), d_o.data<float>(), lse.data<float>(), delta.data<float>(), shape.tokens,
                shape.heads, scale, scale_log2, d_qkv.data<float>());
}

const uint16_t* bits(const Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data<bfloat16>()); }
uint16_t* bits(Tensor& t) { return reinterpret_cast<uint16_t*>(t.data<bfloat16>()); }

template <int D>
void forward_mma_launch(const AttentionShape& shape, const Tensor& qkv, Tensor& o, Tensor& lse) {
  const float scale_log2 = float(shape.scale() * 1.4426950408889634);
  launch_kernel(qkv.device(), attention_forward_mma_kernel<D>, tile_grid(shape), unsigned(kThreads), 0, bits(qkv),
                shape.tokens, shape.heads, scale_log2, bits(o), lse.data<float>());
}

template <int D>
void backward_mma_launch(const AttentionShape& shape, const Tensor& qkv, const Tensor& o, const Tensor& lse,
                         const Tensor& d_o, Tensor& d_qkv) {
  const Device dev = qkv.device();
  const float scale = float(shape.scale());
  const float scale_log2 = float(shape.scale() * 1.4426950408889634);
  Tensor delta = Tensor::empty(Shape{shape.batch, shape.heads, shape.tokens}, DType::float32, dev);
  const int64_t rows = shape.batch * shape.tokens * shape.heads;
  launch_kernel(dev, attention_delta_kernel<bfloat16>, blocks_for(rows, 256), 256u, 0, o.data<bfloat16>(),
                d_o.data<bfloat16>(), shape.batch, shape.tokens, shape.heads, shape.head_dim, delta.data<float>());
  launch_kernel(dev, attention_dk_dv_mma_kernel<D>, tile_grid(shape), unsigned(kThreads), 0, bits(qkv), bits(d_o),
                lse.data<float>(), delta.data<float>(), shape.tokens, shape.heads, scale, scale_log2, bits(d_qkv));
  launch_kernel(dev, attention_dq_mma_kernel<D>, tile_grid(shape), unsigned(kThreads), 0, bits(qkv), bits(d_o),
                lse.data<float>(), delta.data<float>(), shape.tokens, shape.heads, scale, scale_log2, bits(d_qkv));
}

}  // namespace

// float32 on the FMA kernels, bfloat16 (lse float32) on the tensor-core kernels.
void attention_forward(const AttentionShape& shape, const Tensor& qkv, Tensor& o, Tensor& lse) {
  check_launchable("attention_forward", shape);
  if (qkv.dtype() == DType::bfloat16) {
    if (shape.head_dim == 32) forward_mma_launch<32>(shape, qkv, o, lse);
    else forward_mma_launch<64>(shape, qkv, o, lse);
    return;
  }
  qkv.check_dtype(DType::float32, "attention_forward (CUDA) qkv");
  if (shape.head_dim == 32) forward_launch<32>(shape, qkv, o, lse);
  else forward_launch<64>(shape, qkv, o, lse);
}

void attention_backward(const AttentionShape& shape, const Tensor& qkv, const Tensor& o, const Tensor& lse,
                        const Tensor& d_o, Tensor& d_qkv) {
  check_launchable("attention_backward", shape);
  if (qkv.dtype() == DType::bfloat16) {
    if (shape.head_dim == 32) backward_mma_launch<32>(shape, qkv, o, lse, d_o, d_qkv);
    else backward_mma_launch<64>(shape, qkv, o, lse, d_o, d_qkv);
    return;
  }
  qkv.check_dtype(DType::float32, "attention_backward (CUDA) qkv");
  if (shape.head_dim == 32) backward_launch<32>(shape, qkv, o, lse, d_o, d_qkv);
  else backward_launch<64>(shape, qkv, o, lse, d_o, d_qkv);
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
