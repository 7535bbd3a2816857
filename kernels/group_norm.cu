// CUDA kernels for group normalisation and its fused SiLU form (kernels/group_norm.h), float32
// (forward's y also bfloat16), channels-last x seen as [N, S, C].
//
// A group (n, g) is C/G channels strided by C through S rows: in channels-last memory it is
// not contiguous, and a block per (n, g) would read 4 of every 512 bytes of a row at C = 128,
// G = 32. So every pass walks whole rows instead (coalesced), one block per (n, chunk of rows,
// tile of channels), and keeps per-CHANNEL partial results; a small second kernel then combines
// the partials of each group in a fixed order. Nothing uses atomics, so results are bitwise
// reproducible.
//
// Forward (3 kernels; x is read twice, y written once: 12 bytes per element in float32, 10 with
// a bf16 y; the second pass walks the rows in reverse so that its first reads can hit in L2):
//   1. stats_partial   per (n, chunk, channel): count, mean, M2 (sum of squared deviations)
//   2. stats_finalize  per (n, g), one warp: merges chunks x channels of partials -> mean, rstd
//   3. normalize       y = (x - mean) * (rstd * gamma) + beta, optionally silu(.)
// Variance: a one-pass sum of squares (E[x^2] - E[x]^2) cancels catastrophically when
// |mean| >> std, and a true two-pass method would read x a third time. We use Welford/Chan
// updates instead: each thread takes 4 rows at a time, computes their mean and squared
// deviations exactly in registers (a two-pass over 4 values), and merges that batch into its
// running (count, mean, M2) with Chan's parallel formula; threads, chunks and channels are
// merged the same way. M2 is a sum of non-negative terms, so the variance can never come out
// negative, and there is no E[x^2] - E[x]^2 difference for |mean| / std to amplify (the test
// VarianceSurvivesLargeMean runs at |mean| / std ~ 900). One division per 4 rows keeps the
// arithmetic well below the memory time.
//
// Backward (4 kernels; x and dy read twice, dx written once: 20 bytes per element; input_grad
// walks the rows in reverse, like normalize):
//   1. grad_partial    per (n, chunk, channel): A = sum dz, B = sum dz * (x - mean), where dz is
//                      dy, or dy * silu'(z) with z = gamma * xhat + beta rebuilt from x, mean,
//                      rstd (the fused op saves nothing extra). Taking x - mean with the saved
//                      mean avoids the cancellation of sum(dz * x) - mean * sum(dz).
//   2. grad_finalize   per n: A, B summed over chunks -> [N, C]; per group the coefficients
//                      u = -rstd/M sum gamma A, w = -rstd^3/M sum gamma B  (M = S * C/G)
//   3. param_grads     per channel: dgamma += sum_n rstd B, dbeta += sum_n A (ordered over n)
//   4. input_grad      dx = rstd * gamma * dz + (x - mean) * w + u
#include "runtime/kernel_prelude.h"

#include "kernels/vector_access.h"

#include "kernels/group_norm.h"
#include "kernels/reference_dispatch.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

// ---- launch geometry ------------------------------------------------------------------------
// Threads of a block cover `lanes` x `rows`: lane l owns channels [tile * blockIdx.y + l * vec,
// + vec) of the tile, and the block's threads step through the chunk's rows `rows` at a time.
// vec = 4 (16-byte loads) when C % 4 == 0 and every pointer is 16-byte aligned.
constexpr int64_t kTargetBlocks = 1024;  // enough blocks to fill a GPU; fixed so results do not depend on the device
constexpr int64_t kNarrowTileMax = 512;  // up to this many channels, one tile spans the whole row
constexpr int64_t kWideTile = 256;

struct Geometry {
  int vec = 1;
  int64_t tile = 0, tiles = 0;
  int lanes = 0, rows = 0, threads = 0;
  int64_t chunk_rows = 0, chunks = 0;
};

Geometry make_geometry(const GroupNormShape& shape, int vec) {
  Geometry g;
  g.vec = vec;
  g.tile = shape.c <= kNarrowTileMax ? shape.c : kWideTile;
  g.tiles = (shape.c + g.tile - 1) / g.tile;
  g.lanes = int((g.tile + vec - 1) / vec);
  g.rows = std::max(1, 256 / g.lanes);
  g.threads = g.lanes * g.rows;
  const int64_t wanted = std::max<int64_t>(1, (kTargetBlocks + shape.n * g.tiles - 1) / (shape.n * g.tiles));
  g.chunk_rows = std::max<int64_t>((shape.s + wanted - 1) / wanted, 4 * int64_t(g.rows));
  g.chunks = (shape.s + g.chunk_rows - 1) / g.chunk_rows;
  return g;
}

dim3 grid_of(const GroupNormShape& shape, const Geometry& g) {
  return dim3(unsigned(g.chunks), unsigned(g.tiles), unsigned(shape.n));
}

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

// ---- small device helpers -------------------------------------------------------------------

CTSR_DEVICE_INLINE float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// Chan's parallel update: merges a batch (count_b, mean_b, m2_b) into (count_a, mean_a, m2_a);
// the caller adds count_b to count_a afterwards. Exact for count_a == 0.
CTSR_DEVICE_INLINE void chan_merge(float& mean_a, float& m2_a, float count_a, float mean_b, float m2_b,
                                   float count_b) {
  if (count_b == 0.0f) return;
  const float fraction_b = count_b / (count_a + count_b);
  const float delta = mean_b - mean_a;
  mean_a += delta * fraction_b;
  m2_a += m2_b + delta * delta * count_a * fraction_b;
}

// ---- forward --------------------------------------------------------------------------------

// Partial statistics of one (n, chunk) for the channels of one tile. Dynamic shared memory:
// threads x (2 vec + 1) floats.
template <int V>
__global__ void __launch_bounds__(512)
    stats_partial_kernel(const float* __restrict__ x, int64_t S, int64_t C, int64_t tile, int lanes, int rows,
                         int64_t chunk_rows, float* __restrict__ part_mean, float* __restrict__ part_m2) {
  CTSR_LAUNCH_BOUNDS_CHECK(512);
  CTSR_DYNAMIC_SHARED(float, shared);
  const int t = int(threadIdx.x);
  const int lane = t % lanes, r = t / lanes;
  const int threads = lanes * rows;
  const int64_t chunk = blockIdx.x, n = blockIdx.z;
  const int64_t c0 = int64_t(blockIdx.y) * tile + int64_t(lane) * V;
  const bool active = c0 < C;
  const int64_t s_begin = chunk * chunk_rows, s_end = min(S, s_begin + chunk_rows);

  float mean[V], m2[V];
  for (int j = 0; j < V; ++j) mean[j] = 0.0f, m2[j] = 0.0f;
  float count = 0.0f;
  if (active) {
    const float* base = x + n * S * C + c0;
    int64_t s = s_begin + r;
    for (; s + 3 * int64_t(rows) < s_end; s += 4 * int64_t(rows)) {
      const Pack<V> a = load_pack<V>(base + s * C);
      const Pack<V> b = load_pack<V>(base + (s + rows) * C);
      const Pack<V> c = load_pack<V>(base + (s + 2 * rows) * C);
      const Pack<V> d = load_pack<V>(base + (s + 3 * rows) * C);
      const float fraction = 4.0f / (count + 4.0f);
      for (int j = 0; j < V; ++j) {
        const float batch_mean = ((a.v[j] + b.v[j]) + (c.v[j] + d.v[j])) * 0.25f;
        const float da = a.v[j] - batch_mean, db = b.v[j] - batch_mean;
        const float dc = c.v[j] - batch_mean, dd = d.v[j] - batch_mean;
        const float batch_m2 = (da * da + db * db) + (dc * dc + dd * dd);
        const float delta = batch_mean - mean[j];
        mean[j] += delta * fraction;
        m2[j] += batch_m2 + delta * delta * count * fraction;
      }
      count += 4.0f;
    }
    for (; s < s_end; s += rows) {  // Welford for the last rows
      const Pack<V> a = load_pack<V>(base + s * C);
      count += 1.0f;
      const float inv = 1.0f / count;
      for (int j = 0; j < V; ++j) {
        const float delta = a.v[j] - mean[j];
        mean[j] += delta * inv;
        m2[j] += delta * (a.v[j] - mean[j]);
      }
    }
  }
  float* shared_mean = shared;
  float* shared_m2 = shared + threads * V;
  float* shared_count = shared + 2 * threads * V;
  for (int j = 0; j < V; ++j) shared_mean[t * V + j] = mean[j], shared_m2[t * V + j] = m2[j];
  shared_count[t] = count;
  __syncthreads();
  if (r == 0 && active) {
    // Row groups merged in order 1, 2, ..., rows - 1: deterministic.
    for (int rr = 1; rr < rows; ++rr) {
      const int other = rr * lanes + lane;
      const float other_count = shared_count[other];
      for (int j = 0; j < V; ++j)
        chan_merge(mean[j], m2[j], count, shared_mean[other * V + j], shared_m2[other * V + j], other_count);
      count += other_count;
    }
    const int64_t out = (n * gridDim.x + chunk) * C + c0;
    for (int j = 0; j < V; ++j) part_mean[out + j] = mean[j], part_m2[out + j] = m2[j];
  }
}

// One warp per (n, g): lane l merges partials l, l + 32, ... of the group's chunks x channels
// (in that order), then a fixed shuffle tree merges the lanes.
__global__ void stats_finalize_kernel(const float* __restrict__ part_mean, const float* __restrict__ part_m2,
                                      int64_t N, int64_t S, int64_t C, int64_t G, int64_t chunk_rows, int64_t chunks,
                                      float eps, float* __restrict__ mean_out, float* __restrict__ rstd_out) {
  const int64_t group = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (group >= N * G) return;  // whole warps only: blockDim.x is a multiple of 32
  const int64_t n = group / G, g = group % G, Cg = C / G;
  float mean = 0.0f, m2 = 0.0f, count = 0.0f;
  for (int64_t p = lane; p < chunks * Cg; p += 32) {
    const int64_t chunk = p / Cg, c = g * Cg + p % Cg;
    const int64_t at = (n * chunks + chunk) * C + c;
    const float rows_here = float(min(S, (chunk + 1) * chunk_rows) - chunk * chunk_rows);
    chan_merge(mean, m2, count, part_mean[at], part_m2[at], rows_here);
    count += rows_here;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other_mean = __shfl_down_sync(0xffffffffu, mean, offset);
    const float other_m2 = __shfl_down_sync(0xffffffffu, m2, offset);
    const float other_count = __shfl_down_sync(0xffffffffu, count, offset);
    chan_merge(mean, m2, count, other_mean, other_m2, other_count);
    count += other_count;
  }
  if (lane == 0) {
    const float variance = m2 / float(S * Cg);
    mean_out[group] = mean;
    rstd_out[group] = 1.0f / sqrtf(variance + eps);
  }
}

// Y: float, or bfloat16 for the operand of a bf16 convolution (rounded as it is stored).
template <int V, bool Silu, class Y>
__global__ void __launch_bounds__(512) normalize_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                 const float* __restrict__ beta, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, int64_t S, int64_t C, int64_t G, int64_t tile,
                                 int lanes, int rows, int64_t chunk_rows, Y* __restrict__ y) {
  CTSR_LAUNCH_BOUNDS_CHECK(512);
  const int t = int(threadIdx.x);
  const int lane = t % lanes, r = t / lanes;
  // Blocks start roughly in index order, so walking (n, chunk) backwards begins with the rows
  // the statistics pass read last, which may still be in L2 (50 MB on an H100, against 105 MB
  // of x at the production shape); the first pass's order would begin with rows long evicted.
  const int64_t chunk = gridDim.x - 1 - blockIdx.x, n = gridDim.z - 1 - blockIdx.z;
  const int64_t c0 = int64_t(blockIdx.y) * tile + int64_t(lane) * V;
  if (c0 >= C) return;  // no barriers in this kernel
  const int64_t Cg = C / G;
  float mu[V], scale[V], shift[V];
  for (int j = 0; j < V; ++j) {
    const int64_t ng = n * G + (c0 + j) / Cg;
    mu[j] = mean[ng];
    scale[j] = rstd[ng] * gamma[c0 + j];
    shift[j] = beta[c0 + j];
  }
  auto transform = [&](Pack<V> v) {
    for (int j = 0; j < V; ++j) {
      const float z = (v.v[j] - mu[j]) * scale[j] + shift[j];
      v.v[j] = Silu ? z * sigmoid(z) : z;
    }
    return v;
  };
  const int64_t s_begin = chunk * chunk_rows, s_end = min(S, s_begin + chunk_rows);
  const float* xb = x + n * S * C + c0;
  Y* yb = y + n * S * C + c0;
  int64_t s = s_begin + r;
  for (; s + 3 * int64_t(rows) < s_end; s += 4 * int64_t(rows)) {  // 4 loads in flight per thread
    const Pack<V> a = load_pack<V>(xb + s * C);
    const Pack<V> b = load_pack<V>(xb + (s + rows) * C);
    const Pack<V> c = load_pack<V>(xb + (s + 2 * rows) * C);
    const Pack<V> d = load_pack<V>(xb + (s + 3 * rows) * C);
    store_pack<V>(yb + s * C, transform(a));
    store_pack<V>(yb + (s + rows) * C, transform(b));
    store_pack<V>(yb + (s + 2 * rows) * C, transform(c));
    store_pack<V>(yb + (s + 3 * rows) * C, transform(d));
  }
  for (; s < s_end; s += rows) store_pack<V>(yb + s * C, transform(load_pack<V>(xb + s * C)));
}

// ---- backward -------------------------------------------------------------------------------

// Per-thread constants of the channels a thread owns, for the backward passes.
template <int V, bool Silu>
struct ChannelConstants {
  float mu[V], rstd[V], gamma[V], beta[V];
  CTSR_DEVICE_INLINE void load(const float* mean_in, const float* rstd_in, const float* gamma_in,
                               const float* beta_in, int64_t n, int64_t c0, int64_t G, int64_t Cg) {
    for (int j = 0; j < V; ++j) {
      const int64_t ng = n * G + (c0 + j) / Cg;
      mu[j] = mean_in[ng];
      rstd[j] = rstd_in[ng];
      gamma[j] = gamma_in[c0 + j];
      beta[j] = Silu ? beta_in[c0 + j] : 0.0f;
    }
  }
  // Gradient at the pre-activation z = gamma * xhat + beta.
  CTSR_DEVICE_INLINE float grad_z(int j, float xv, float dyv) const {
    if (!Silu) return dyv;
    const float z = (xv - mu[j]) * (rstd[j] * gamma[j]) + beta[j];
    const float s = sigmoid(z);
    return dyv * s * (1.0f + z * (1.0f - s));
  }
};

// Partial sums A = sum dz and B = sum dz * (x - mean) of one (n, chunk) for the channels of a
// tile. Dynamic shared memory: threads x 2 vec floats.
template <int V, bool Silu>
__global__ void __launch_bounds__(512) grad_partial_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                    const float* __restrict__ gamma, const float* __restrict__ beta,
                                    const float* __restrict__ mean, const float* __restrict__ rstd, int64_t S,
                                    int64_t C, int64_t G, int64_t tile, int lanes, int rows, int64_t chunk_rows,
                                    float* __restrict__ part_a, float* __restrict__ part_b) {
  CTSR_LAUNCH_BOUNDS_CHECK(512);
  CTSR_DYNAMIC_SHARED(float, shared);
  const int t = int(threadIdx.x);
  const int lane = t % lanes, r = t / lanes;
  const int threads = lanes * rows;
  const int64_t chunk = blockIdx.x, n = blockIdx.z;
  const int64_t c0 = int64_t(blockIdx.y) * tile + int64_t(lane) * V;
  const bool active = c0 < C;
  float a[V], b[V];
  for (int j = 0; j < V; ++j) a[j] = 0.0f, b[j] = 0.0f;
  if (active) {
    ChannelConstants<V, Silu> k;
    k.load(mean, rstd, gamma, beta, n, c0, G, C / G);
    const int64_t s_begin = chunk * chunk_rows, s_end = min(S, s_begin + chunk_rows);
    const float* xb = x + n * S * C + c0;
    const float* db = dy + n * S * C + c0;
    auto accumulate = [&](const Pack<V>& xv, const Pack<V>& dv) {
      for (int j = 0; j < V; ++j) {
        const float dz = k.grad_z(j, xv.v[j], dv.v[j]);
        a[j] += dz;
        b[j] += dz * (xv.v[j] - k.mu[j]);
      }
    };
    int64_t s = s_begin + r;
    for (; s + int64_t(rows) < s_end; s += 2 * int64_t(rows)) {  // 4 loads in flight per thread
      const Pack<V> x0 = load_pack<V>(xb + s * C), d0 = load_pack<V>(db + s * C);
      const Pack<V> x1 = load_pack<V>(xb + (s + rows) * C), d1 = load_pack<V>(db + (s + rows) * C);
      accumulate(x0, d0);
      accumulate(x1, d1);
    }
    if (s < s_end) accumulate(load_pack<V>(xb + s * C), load_pack<V>(db + s * C));
  }
  float* shared_a = shared;
  float* shared_b = shared + threads * V;
  for (int j = 0; j < V; ++j) shared_a[t * V + j] = a[j], shared_b[t * V + j] = b[j];
  __syncthreads();
  if (r == 0 && active) {
    for (int rr = 1; rr < rows; ++rr) {
      const int other = rr * lanes + lane;
      for (int j = 0; j < V; ++j) a[j] += shared_a[other * V + j], b[j] += shared_b[other * V + j];
    }
    const int64_t out = (n * gridDim.x + chunk) * C + c0;
    for (int j = 0; j < V; ++j) part_a[out + j] = a[j], part_b[out + j] = b[j];
  }
}

// Block n: sums the chunks' partials per channel into sum_a, sum_b [N, C], then per group the
// dx coefficients u, w ([N, G, 2]).
__global__ void grad_finalize_kernel(const float* __restrict__ part_a, const float* __restrict__ part_b,
                                     const float* __restrict__ gamma, const float* __restrict__ rstd, int64_t S,
                                     int64_t C, int64_t G, int64_t chunks, float* __restrict__ sum_a,
                                     float* __restrict__ sum_b, float* __restrict__ coefficients) {
  const int64_t n = blockIdx.x;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float a = 0.0f, b = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) {
      a += part_a[(n * chunks + k) * C + c];
      b += part_b[(n * chunks + k) * C + c];
    }
    sum_a[n * C + c] = a;
    sum_b[n * C + c] = b;
  }
  __syncthreads();  // makes this block's sum_a, sum_b writes visible to its other threads
  const int64_t Cg = C / G;
  const float count = float(S * Cg);
  for (int64_t g = threadIdx.x; g < G; g += blockDim.x) {
    float ga = 0.0f, gb = 0.0f;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
      ga += gamma[c] * sum_a[n * C + c];
      gb += gamma[c] * sum_b[n * C + c];
    }
    const float r = rstd[n * G + g];
    coefficients[(n * G + g) * 2 + 0] = -r / count * ga;
    coefficients[(n * G + g) * 2 + 1] = -(r * r * r) / count * gb;
  }
}

// dgamma[c] += sum_n rstd[n, g(c)] B[n, c], dbeta[c] += sum_n A[n, c]: one thread per channel,
// n in order (no atomics).
__global__ void param_grads_kernel(const float* __restrict__ sum_a, const float* __restrict__ sum_b,
                                   const float* __restrict__ rstd, int64_t N, int64_t C, int64_t G,
                                   float* __restrict__ dgamma, float* __restrict__ dbeta) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t g = c / (C / G);
  float dg = 0.0f, db = 0.0f;
  for (int64_t n = 0; n < N; ++n) {
    dg += rstd[n * G + g] * sum_b[n * C + c];
    db += sum_a[n * C + c];
  }
  dgamma[c] += dg;
  dbeta[c] += db;
}

template <int V, bool Silu>
__global__ void __launch_bounds__(512) input_grad_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                  const float* __restrict__ gamma, const float* __restrict__ beta,
                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                  const float* __restrict__ coefficients, int64_t S, int64_t C, int64_t G,
                                  int64_t tile, int lanes, int rows, int64_t chunk_rows, float* __restrict__ dx) {
  CTSR_LAUNCH_BOUNDS_CHECK(512);
  const int t = int(threadIdx.x);
  const int lane = t % lanes, r = t / lanes;
  // Backwards over (n, chunk), as in normalize_kernel: x and dy still in L2 come first.
  const int64_t chunk = gridDim.x - 1 - blockIdx.x, n = gridDim.z - 1 - blockIdx.z;
  const int64_t c0 = int64_t(blockIdx.y) * tile + int64_t(lane) * V;
  if (c0 >= C) return;  // no barriers in this kernel
  const int64_t Cg = C / G;
  ChannelConstants<V, Silu> k;
  k.load(mean, rstd, gamma, beta, n, c0, G, Cg);
  float scale[V], u[V], w[V];
  for (int j = 0; j < V; ++j) {
    const int64_t ng = n * G + (c0 + j) / Cg;
    scale[j] = k.rstd[j] * k.gamma[j];
    u[j] = coefficients[ng * 2 + 0];
    w[j] = coefficients[ng * 2 + 1];
  }
  auto gradient = [&](const Pack<V>& xv, const Pack<V>& dv) {
    Pack<V> out;
    for (int j = 0; j < V; ++j)
      out.v[j] = scale[j] * k.grad_z(j, xv.v[j], dv.v[j]) + (xv.v[j] - k.mu[j]) * w[j] + u[j];
    return out;
  };
  const int64_t s_begin = chunk * chunk_rows, s_end = min(S, s_begin + chunk_rows);
  const float* xb = x + n * S * C + c0;
  const float* db = dy + n * S * C + c0;
  float* out = dx + n * S * C + c0;
  int64_t s = s_begin + r;
  for (; s + int64_t(rows) < s_end; s += 2 * int64_t(rows)) {
    const Pack<V> x0 = load_pack<V>(xb + s * C), d0 = load_pack<V>(db + s * C);
    const Pack<V> x1 = load_pack<V>(xb + (s + rows) * C), d1 = load_pack<V>(db + (s + rows) * C);
    store_pack<V>(out + s * C, gradient(x0, d0));
    store_pack<V>(out + (s + rows) * C, gradient(x1, d1));
  }
  if (s < s_end) store_pack<V>(out + s * C, gradient(load_pack<V>(xb + s * C), load_pack<V>(db + s * C)));
}

// ---- launch helpers -------------------------------------------------------------------------

void check_launchable(const char* op, const GroupNormShape& shape) {
  CTSR_CHECK(shape.n <= 65535, op, " (CUDA): batch ", shape.n, " exceeds the grid's z limit of 65535");
}

template <int V, bool Silu>
void forward_launch(const GroupNormShape& shape, const Geometry& geo, const Tensor& x, const Tensor& gamma,
                    const Tensor& beta, float eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  const Device dev = x.device();
  const int64_t partials = shape.n * geo.chunks * shape.c;
  Tensor part_mean = Tensor::empty(Shape{partials}, DType::float32, dev);
  Tensor part_m2 = Tensor::empty(Shape{partials}, DType::float32, dev);
  const dim3 grid = grid_of(shape, geo);
  launch_kernel(dev, stats_partial_kernel<V>, grid, unsigned(geo.threads),
                size_t(geo.threads) * (2 * V + 1) * sizeof(float), x.data<float>(), shape.s, shape.c, geo.tile,
                geo.lanes, geo.rows, geo.chunk_rows, part_mean.data<float>(), part_m2.data<float>());
  constexpr unsigned kFinalizeThreads = 256;  // 8 warps, one per group
  const int64_t groups_total = shape.n * shape.groups;
  launch_kernel(dev, stats_finalize_kernel, unsigned((groups_total + 7) / 8), kFinalizeThreads, 0,
                part_mean.data<float>(), part_m2.data<float>(), shape.n, shape.s, shape.c, shape.groups,
                geo.chunk_rows, geo.chunks, eps, mean.data<float>(), rstd.data<float>());
  with_operand_type(y, "group_norm_forward (CUDA) y", [&](auto tag) {
    using Y = decltype(tag);
    launch_kernel(dev, normalize_kernel<V, Silu, Y>, grid, unsigned(geo.threads), 0, x.data<float>(),
                  gamma.data<float>(), beta.data<float>(), mean.data<float>(), rstd.data<float>(), shape.s, shape.c,
                  shape.groups, geo.tile, geo.lanes, geo.rows, geo.chunk_rows, y.data<Y>());
  });
}

template <int V, bool Silu>
void backward_launch(const GroupNormShape& shape, const Geometry& geo, const Tensor& x, const Tensor& gamma,
                     const Tensor& beta, const Tensor& mean, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                     Tensor& dgamma, Tensor& dbeta) {
  const Device dev = x.device();
  const int64_t partials = shape.n * geo.chunks * shape.c;
  Tensor part_a = Tensor::empty(Shape{partials}, DType::float32, dev);
  Tensor part_b = Tensor::empty(Shape{partials}, DType::float32, dev);
  Tensor sum_a = Tensor::empty(Shape{shape.n, shape.c}, DType::float32, dev);
  Tensor sum_b = Tensor::empty(Shape{shape.n, shape.c}, DType::float32, dev);
  Tensor coefficients = Tensor::empty(Shape{shape.n, shape.groups, 2}, DType::float32, dev);
  const float* beta_ptr = Silu ? beta.data<float>() : nullptr;
  const dim3 grid = grid_of(shape, geo);
  launch_kernel(dev, grad_partial_kernel<V, Silu>, grid, unsigned(geo.threads),
                size_t(geo.threads) * 2 * V * sizeof(float), x.data<float>(), dy.data<float>(), gamma.data<float>(),
                beta_ptr, mean.data<float>(), rstd.data<float>(), shape.s, shape.c, shape.groups, geo.tile, geo.lanes,
                geo.rows, geo.chunk_rows, part_a.data<float>(), part_b.data<float>());
  launch_kernel(dev, grad_finalize_kernel, unsigned(shape.n), 256u, 0, part_a.data<float>(), part_b.data<float>(),
                gamma.data<float>(), rstd.data<float>(), shape.s, shape.c, shape.groups, geo.chunks,
                sum_a.data<float>(), sum_b.data<float>(), coefficients.data<float>());
  launch_kernel(dev, param_grads_kernel, blocks_for(shape.c, 256), 256u, 0, sum_a.data<float>(), sum_b.data<float>(),
                rstd.data<float>(), shape.n, shape.c, shape.groups, dgamma.data<float>(), dbeta.data<float>());
  launch_kernel(dev, input_grad_kernel<V, Silu>, grid, unsigned(geo.threads), 0, x.data<float>(), dy.data<float>(),
                gamma.data<float>(), beta_ptr, mean.data<float>(), rstd.data<float>(), coefficients.data<float>(),
                shape.s, shape.c, shape.groups, geo.tile, geo.lanes, geo.rows, geo.chunk_rows, dx.data<float>());
}

}  // namespace

void group_norm_forward(const GroupNormShape& shape, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                        float eps, bool silu, Tensor& y, Tensor& mean, Tensor& rstd) {
  x.check_dtype(DType::float32, "group_norm_forward (CUDA) x");
  check_launchable("group_norm_forward", shape);
  const bool vec4 = shape.c % 4 == 0 && aligned16(x) && aligned16(y);
  const Geometry geo = make_geometry(shape, vec4 ? 4 : 1);
  if (vec4) {
    if (silu) forward_launch<4, true>(shape, geo, x, gamma, beta, eps, y, mean, rstd);
    else forward_launch<4, false>(shape, geo, x, gamma, beta, eps, y, mean, rstd);
  } else {
    if (silu) forward_launch<1, true>(shape, geo, x, gamma, beta, eps, y, mean, rstd);
    else forward_launch<1, false>(shape, geo, x, gamma, beta, eps, y, mean, rstd);
  }
}

void group_norm_backward(const GroupNormShape& shape, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& mean, const Tensor& rstd, const Tensor& dy, bool silu, Tensor& dx,
                         Tensor& dgamma, Tensor& dbeta) {
  x.check_dtype(DType::float32, "group_norm_backward (CUDA) x");
  check_launchable("group_norm_backward", shape);
  const bool vec4 = shape.c % 4 == 0 && aligned16(x) && aligned16(dy) && aligned16(dx);
  const Geometry geo = make_geometry(shape, vec4 ? 4 : 1);
  if (vec4) {
    if (silu) backward_launch<4, true>(shape, geo, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta);
    else backward_launch<4, false>(shape, geo, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta);
  } else {
    if (silu) backward_launch<1, true>(shape, geo, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta);
    else backward_launch<1, false>(shape, geo, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta);
  }
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
