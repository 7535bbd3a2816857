// CUDA kernels for 3D convolution (kernels/conv3d.h), float32, channels-last: implicit GEMM,
// nothing materialised. Every op is a GEMM whose operand tiles are gathered on the fly into
// shared memory, zero where a window leaves the (padded) volume:
//
//   forward          Y[m, co]   = sum_(tap, ci)  X[m + tap, ci] * W[co, tap, ci]
//                    M = N Do Ho Wo output voxels, N = Co, reduction over (tap, ci-chunk).
//   backward_data    dX[i, ci]  = sum_(tap, co)  dY[(i + p - tap) / s, co] * W[co, tap, ci]
//                    over the taps for which (i + p - tap) is a multiple of s in every axis. With
//                    stride s the input voxels fall into s^3 residue classes ((i + p) mod s per
//                    axis); all voxels of one class use the same taps (tap = r + s j), so each
//                    class is its own GEMM (blockIdx.z) over exactly its valid taps, and no work is
//                    spent on the (s^3 - 1)/s^3 of (voxel, tap) pairs that do not meet.
//   backward_weight  dW[co, (tap, ci)] += sum_m dY[m, co] * X[m + tap, ci]
//                    a reduction over M: the voxels are split into `splits` ranges (blockIdx.z),
//                    each block writes its tile's partial sums to [splits, Co, K], and a second
//                    kernel adds them to dW in split order. No float atomics: deterministic.
//   backward_bias    db[co] += sum_m dY[m, co], the same split-then-ordered-sum scheme.
//
// Tiling: a block of 256 threads computes a (64 GM) x (64 GN) output tile, GM, GN in {1, 2}
// (64x64, or 128x128 for large problems), stepping through the reduction 16 at a time. Thread
// (ty, tx) = (t / 16, t % 16) owns rows g 64 + 4 ty + i and columns g 64 + 4 tx + j of the tile
// (a 4 GM x 4 GN register tile), so each reduction step reads 4-float vectors from shared
// memory. Operand tiles are double-buffered: the next step's global loads are issued into
// registers before the current step's multiply, then stored to the other buffer, one barrier
// per step. Where channel counts are multiples of 4 and pointers 16-byte aligned, the gathers
// load float4s. The reduction over (tap, channel) runs tap-major in chunks of 16 channels, so
// the window offset is uniform over a step; a channel count that is not a multiple of 16 pads
// its last chunk with zeros (cheap for the small-channel layers where it happens).
// Registers (ptxas, sm_90): 64-127 per thread for 64x64 tiles, 170-245 for 128x128, which
// therefore run one block (8 warps) per SM; __launch_bounds__(256, 2) made ptxas spill 100-1300
// bytes per thread, so it is not used. Most of the excess is 64-bit index state.
#include "runtime/kernel_prelude.h"

#include <type_traits>

#include "kernels/conv3d.h"
#include "kernels/reference_dispatch.h"
#include "kernels/mma.h"
#include "kernels/vector_access.h"

#if defined(__CUDACC__)
#define CTSR_CONV_UNROLL _Pragma("unroll")
#else
#define CTSR_CONV_UNROLL
#endif

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kThreads = 256;
constexpr int kTileK = 16;  // reduction step
constexpr int kPad = 4;     // shared rows padded by 4 floats: float4-aligned, transposed stores 2-way at most
// 128x128 tiles when there are more than 64 output columns and they still make this many blocks
// (about two waves of one block per SM on an H100; fixed, not device-dependent).
constexpr int64_t kLargeTileMinBlocks = 256;
constexpr int64_t kTargetBlocks = 1024;    // split reductions until about this many blocks; fixed, so
                                           // results do not depend on the device

using Vec4 = Pack<4>;

// Channels c .. c + 3 of a row starting at base + offset (offset points at channel c), zero for
// channels >= limit and everywhere when !inside. With kVec (limit % 4 == 0, c % 4 == 0, row
// 16-byte aligned) the four are all in or all out, and one float4 load fetches them. The
// address is formed only when inside.
// One element as float (bf16 widens exactly).
CTSR_DEVICE_INLINE float load_elem(const float* p) { return __ldg(p); }
CTSR_DEVICE_INLINE float load_elem(const bfloat16* p) {
  return __uint_as_float(uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p))) << 16);
}
CTSR_DEVICE_INLINE void store_elem(float* p, float v) { *p = v; }
CTSR_DEVICE_INLINE void store_elem(bfloat16* p, float v) { *p = bfloat16(v); }  // nearest, ties to even

// Four consecutive elements in one load (16 bytes of float, 8 of bf16; the caller guarantees the
// alignment).
CTSR_DEVICE_INLINE Vec4 load4(const float* p) { return load_pack<4>(p); }
CTSR_DEVICE_INLINE Vec4 load4(const bfloat16* p) {
  const int2 t = *reinterpret_cast<const int2*>(p);
  const uint32_t lo = uint32_t(t.x), hi = uint32_t(t.y);
  return Vec4{{__uint_as_float(lo << 16), __uint_as_float(lo & 0xffff0000u), __uint_as_float(hi << 16),
               __uint_as_float(hi & 0xffff0000u)}};
}

template <bool kVec, class T>
CTSR_DEVICE_INLINE Vec4 fetch4(const T* base, int64_t offset, bool inside, int64_t c, int64_t limit) {
  Vec4 r{{0.0f, 0.0f, 0.0f, 0.0f}};
  if (inside) {
    if constexpr (kVec) {
      if (c < limit) r = load4(base + offset);
    } else {
      for (int j = 0; j < 4; ++j)
        if (c + j < limit) r.v[j] = load_elem(base + offset + j);
    }
  }
  return r;
}

template <int GM, int GN>
struct GemmTiles {
  static constexpr int kRowA = 64 * GM + kPad, kRowB = 64 * GN + kPad;
  alignas(16) float a[2][kTileK][kRowA];  // [buffer][reduction][tile row]
  alignas(16) float b[2][kTileK][kRowB];  // [buffer][reduction][tile column]
};

// acc[i][j] += sum_k a[k][row(i)] * b[k][col(j)] over one reduction step.
template <int GM, int GN>
CTSR_DEVICE_INLINE void multiply_tiles(const float* a, const float* b, int ty, int tx, float (&acc)[4 * GM][4 * GN]) {
  constexpr int kRowA = GemmTiles<GM, GN>::kRowA, kRowB = GemmTiles<GM, GN>::kRowB;
  CTSR_CONV_UNROLL
  for (int k = 0; k < kTileK; ++k) {
    float av[4 * GM], bv[4 * GN];
    CTSR_CONV_UNROLL
    for (int g = 0; g < GM; ++g) {
      const Vec4 t = load_pack<4>(a + k * kRowA + g * 64 + ty * 4);
      for (int i = 0; i < 4; ++i) av[g * 4 + i] = t.v[i];
    }
    CTSR_CONV_UNROLL
    for (int g = 0; g < GN; ++g) {
      const Vec4 t = load_pack<4>(b + k * kRowB + g * 64 + tx * 4);
      for (int j = 0; j < 4; ++j) bv[g * 4 + j] = t.v[j];
    }
    CTSR_CONV_UNROLL
    for (int i = 0; i < 4 * GM; ++i) {
      CTSR_CONV_UNROLL
      for (int j = 0; j < 4 * GN; ++j) acc[i][j] += av[i] * bv[j];
    }
  }
}

// Row i of the thread's register tile -> row within the block tile (same for columns).
CTSR_DEVICE_INLINE int tile_index(int i, int t16) { return (i / 4) * 64 + t16 * 4 + (i % 4); }

// The two ways a block multiplies its operand tiles. Both hold the tiles k-major ([buffer][k][row]),
// so the kernels' loaders are shared; they differ in the element kept in shared memory and in who
// owns which accumulator:
//   FmaEngine  float32 operands: float tiles, the FMA register tile above (thread (ty, tx) owns a
//              4 GM x 4 GN block of the output tile).
//   MmaEngine  bf16 operands: bf16 tiles and tensor cores (kernels/mma.h). The 8 warps form a 2 x 4
//              grid; warp (wm, wn) owns rows wm 32 GM + [0, 32 GM) and columns wn 16 GN + [0, 16 GN)
//              of the tile, as 2 GM x 2 GN mma tiles of 16 x 8, and each reduction step of 16 is one
//              mma per tile. Accumulation is float.
template <int GM_, int GN_>
struct FmaEngine {
  static constexpr int GM = GM_, GN = GN_;
  using Tiles = GemmTiles<GM, GN>;
  struct Acc {
    float v[4 * GM][4 * GN];
  };
  CTSR_DEVICE_INLINE static void put_a(Tiles& t, int buf, int k, int row, float v) { t.a[buf][k][row] = v; }
  CTSR_DEVICE_INLINE static void put_b(Tiles& t, int buf, int k, int col, float v) { t.b[buf][k][col] = v; }
  CTSR_DEVICE_INLINE static void zero(Acc& acc) {
    CTSR_UNROLL
    for (int i = 0; i < 4 * GM; ++i)
      CTSR_UNROLL
      for (int j = 0; j < 4 * GN; ++j) acc.v[i][j] = 0.0f;
  }
  CTSR_DEVICE_INLINE static void multiply(const Tiles& t, int buf, int thread, Acc& acc) {
    multiply_tiles<GM, GN>(&t.a[buf][0][0], &t.b[buf][0][0], thread / 16, thread % 16, acc.v);
  }
  // f(row, column, value) for each accumulator of the thread, row and column within the tile.
  template <class F>
  CTSR_DEVICE_INLINE static void for_each(const Acc& acc, int thread, F&& f) {
    const int ty = thread / 16, tx = thread % 16;
    CTSR_UNROLL
    for (int i = 0; i < 4 * GM; ++i)
      CTSR_UNROLL
      for (int j = 0; j < 4 * GN; ++j) f(tile_index(i, ty), tile_index(j, tx), acc.v[i][j]);
  }
};

template <int GM_, int GN_>
struct MmaEngine {
  static_assert(kTileK == mma::kK, "one reduction step is one mma");
  static constexpr int GM = GM_, GN = GN_;
  static constexpr int kRowA = 64 * GM + 8, kRowB = 64 * GN + 8;  // bf16 elements per k row
  struct Tiles {
    alignas(16) uint16_t a[2][kTileK][kRowA];
    alignas(16) uint16_t b[2][kTileK][kRowB];
  };
  struct Acc {
    mma::FragC c[2 * GM][2 * GN];
  };
  // The operands arrive as floats that are bf16 values, so the conversion is exact.
  CTSR_DEVICE_INLINE static void put_a(Tiles& t, int buf, int k, int row, float v) {
    t.a[buf][k][row] = bfloat16::from_float(v);
  }
  CTSR_DEVICE_INLINE static void put_b(Tiles& t, int buf, int k, int col, float v) {
    t.b[buf][k][col] = bfloat16::from_float(v);
  }
  CTSR_DEVICE_INLINE static void zero(Acc& acc) {
    CTSR_UNROLL
    for (int i = 0; i < 2 * GM; ++i)
      CTSR_UNROLL
      for (int j = 0; j < 2 * GN; ++j)
        CTSR_UNROLL
        for (int e = 0; e < 4; ++e) acc.c[i][j].v[e] = 0.0f;
  }
  CTSR_DEVICE_INLINE static void multiply(const Tiles& t, int buf, int thread, Acc& acc) {
    const int warp = thread / 32, lane = thread % 32, wm = warp / 4, wn = warp % 4;
    mma::FragB b[2 * GN];
    CTSR_UNROLL
    for (int j = 0; j < 2 * GN; ++j) mma::load_b_k_major(b[j], &t.b[buf][0][wn * 16 * GN + 8 * j], kRowB, lane);
    CTSR_UNROLL
    for (int i = 0; i < 2 * GM; ++i) {
      mma::FragA a;
      mma::load_a_k_major(a, &t.a[buf][0][wm * 32 * GM + 16 * i], kRowA, lane);
      CTSR_UNROLL
      for (int j = 0; j < 2 * GN; ++j) mma::mma_bf16(acc.c[i][j], a, b[j]);
    }
  }
  template <class F>
  CTSR_DEVICE_INLINE static void for_each(const Acc& acc, int thread, F&& f) {
    const int warp = thread / 32, lane = thread % 32, wm = warp / 4, wn = warp % 4;
    CTSR_UNROLL
    for (int i = 0; i < 2 * GM; ++i)
      CTSR_UNROLL
      for (int j = 0; j < 2 * GN; ++j)
        CTSR_UNROLL
        for (int e = 0; e < 4; ++e)
          f(wm * 32 * GM + 16 * i + mma::FragmentLayout::c_row(lane, e),
            wn * 16 * GN + 8 * j + mma::FragmentLayout::c_col(lane, e), acc.c[i][j].v[e]);
  }
};

// The engine for an operand type: bf16 on tensor cores, float on FMA.
template <class T, int GM, int GN>
using EngineFor = std::conditional_t<std::is_same_v<T, bfloat16>, MmaEngine<GM, GN>, FmaEngine<GM, GN>>;

CTSR_DEVICE_INLINE bool in_range(int64_t v, int64_t n) { return v >= 0 && v < n; }

// ---- forward ------------------------------------------------------------------------------

// 64x64 tiles ask for 2 resident blocks (at most 128 registers): left to itself ptxas (CUDA 13,
// sm_90) took 64 registers and spilled 8-12 bytes; with the bound it takes 95-96 and none (80, from
// 3 blocks, still spilled). 0 leaves the 128x128 tiles' choice to ptxas, as before.
template <int GM, int GN>
constexpr int forward_min_blocks() {
  return GM * GN == 1 ? 2 : 0;
}

template <class T, int GM, int GN, bool kVec>
__global__ void __launch_bounds__(kThreads, forward_min_blocks<GM, GN>())
    conv3d_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ bias,
                          Conv3dShape s, T* __restrict__ y) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  using E = EngineFor<T, GM, GN>;
  CTSR_STATIC_SHARED(tiles, typename E::Tiles);
  const int t = int(threadIdx.x);
  const int lrow = t / 4, lcol = (t % 4) * 4;  // loader: tile rows lrow + 64 g, step channels lcol .. + 3
  const int64_t M = s.out_voxels();
  const int64_t m0 = int64_t(blockIdx.x) * (64 * GM), n0 = int64_t(blockIdx.y) * (64 * GN);

  // A loader: the window origin of each of my output voxels.
  int64_t a_base[GM], a_d[GM], a_h[GM], a_w[GM];
  bool a_ok[GM];
  for (int g = 0; g < GM; ++g) {
    const int64_t m = m0 + lrow + 64 * g;
    a_ok[g] = m < M;
    const int64_t mm = a_ok[g] ? m : 0;
    const int64_t ow = mm % s.ow, oh = mm / s.ow % s.oh, od = mm / (s.ow * s.oh) % s.od, n = mm / (s.ow * s.oh * s.od);
    a_d[g] = od * s.sd - s.pd, a_h[g] = oh * s.sh - s.ph, a_w[g] = ow * s.sw - s.pw;
    a_base[g] = (((n * s.d + a_d[g]) * s.h + a_h[g]) * s.w + a_w[g]) * s.ci;
  }
  // B loader: weight rows (output channels) n0 + lrow + 64 g.
  const int64_t K = s.reduction();
  int64_t b_base[GN];
  bool b_ok[GN];
  for (int g = 0; g < GN; ++g) {
    const int64_t co = n0 + lrow + 64 * g;
    b_ok[g] = co < s.co;
    b_base[g] = b_ok[g] ? co * K : 0;
  }

  const int64_t steps = s.taps() * ((s.ci + kTileK - 1) / kTileK);
  int64_t c0 = 0, kd = 0, kh = 0, kw = 0;  // the step being loaded
  Vec4 ra[GM], rb[GN];
  auto load = [&]() {
    const int64_t window = ((kd * s.h + kh) * s.w + kw) * s.ci;
    const int64_t tap = (kd * s.kh + kh) * s.kw + kw;
    const int64_t c = c0 + lcol;
    for (int g = 0; g < GM; ++g) {
      const bool inside =
          a_ok[g] && in_range(a_d[g] + kd, s.d) && in_range(a_h[g] + kh, s.h) && in_range(a_w[g] + kw, s.w);
      ra[g] = fetch4<kVec>(x, a_base[g] + window + c, inside, c, s.ci);
    }
    for (int g = 0; g < GN; ++g) rb[g] = fetch4<kVec>(w, b_base[g] + tap * s.ci + c, b_ok[g], c, s.ci);
  };
  auto store = [&](int buf) {
    for (int g = 0; g < GM; ++g)
      for (int j = 0; j < 4; ++j) E::put_a(tiles, buf, lcol + j, lrow + 64 * g, ra[g].v[j]);
    for (int g = 0; g < GN; ++g)
      for (int j = 0; j < 4; ++j) E::put_b(tiles, buf, lcol + j, lrow + 64 * g, rb[g].v[j]);
  };
  auto advance = [&]() {
    c0 += kTileK;
    if (c0 >= s.ci) {
      c0 = 0;
      if (++kw == s.kw) {
        kw = 0;
        if (++kh == s.kh) kh = 0, ++kd;
      }
    }
  };

  typename E::Acc acc;
  E::zero(acc);
  load();
  store(0);
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int buf = int(step & 1);
    const bool more = step + 1 < steps;
    if (more) advance(), load();
    E::multiply(tiles, buf, t, acc);
    if (more) store(buf ^ 1);
    __syncthreads();
  }

  E::for_each(acc, t, [&](int r, int c, float v) {
    const int64_t m = m0 + r, co = n0 + c;
    if (m < M && co < s.co) store_elem(y + m * s.co + co, v + (bias ? bias[co] : 0.0f));
  });
}

// ---- backward data --------------------------------------------------------------------------

// The input indices along one axis whose (i + p) mod s == r: i = first + s q for q < count;
// they meet the taps k = r + s j for j < taps, at output index t0 + q - j.
struct ResidueAxis {
  int64_t first = 0, count = 0, taps = 0, t0 = 0;
};

CTSR_DEVICE_INLINE ResidueAxis residue_axis(int64_t n_in, int64_t k, int64_t s, int64_t p, int64_t r) {
  ResidueAxis a;
  a.first = ((r - p) % s + s) % s;
  a.count = a.first < n_in ? (n_in - a.first + s - 1) / s : 0;
  a.taps = r < k ? (k - r + s - 1) / s : 0;
  a.t0 = (a.first + p - r) / s;  // exact: first + p - r is a multiple of s, and >= 0
  return a;
}

template <class T, int GM, int GN, bool kVec>
__global__ void __launch_bounds__(kThreads)
    conv3d_backward_data_kernel(const T* __restrict__ dy, const T* __restrict__ w, const float* __restrict__ bias,
                                Conv3dShape s, T* __restrict__ dx) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  using E = EngineFor<T, GM, GN>;
  CTSR_STATIC_SHARED(tiles, typename E::Tiles);
  const int64_t cls = blockIdx.z;
  const int64_t rw = cls % s.sw, rh = cls / s.sw % s.sh, rd = cls / (s.sw * s.sh);
  const ResidueAxis ad = residue_axis(s.d, s.kd, s.sd, s.pd, rd);
  const ResidueAxis ah = residue_axis(s.h, s.kh, s.sh, s.ph, rh);
  const ResidueAxis aw = residue_axis(s.w, s.kw, s.sw, s.pw, rw);
  const int64_t M = s.n * ad.count * ah.count * aw.count;  // voxels of this class
  const int64_t m0 = int64_t(blockIdx.x) * (64 * GM), n0 = int64_t(blockIdx.y) * (64 * GN);
  if (m0 >= M) return;  // the whole block (the grid is sized for the largest class), before any barrier

  const int t = int(threadIdx.x);
  const int lrow = t / 4, lcol = (t % 4) * 4;  // A loader: rows lrow + 64 g, output channels lcol .. + 3
  const int bk = t / 16, bc = (t % 16) * 4;     // B loader: output channel bk, input channels bc + 64 g .. + 3

  // A loader: the output voxel that tap j = 0 reaches from each of my input voxels.
  int64_t a_base[GM], a_d[GM], a_h[GM], a_w[GM];
  bool a_ok[GM];
  for (int g = 0; g < GM; ++g) {
    const int64_t m = m0 + lrow + 64 * g;
    a_ok[g] = m < M;
    const int64_t mm = a_ok[g] ? m : 0;
    const int64_t qw = mm % aw.count, qh = mm / aw.count % ah.count, qd = mm / (aw.count * ah.count) % ad.count;
    const int64_t n = mm / (aw.count * ah.count * ad.count);
    a_d[g] = ad.t0 + qd, a_h[g] = ah.t0 + qh, a_w[g] = aw.t0 + qw;
    a_base[g] = (((n * s.od + a_d[g]) * s.oh + a_h[g]) * s.ow + a_w[g]) * s.co;
  }

  const int64_t taps = ad.taps * ah.taps * aw.taps;
  const int64_t steps = taps * ((s.co + kTileK - 1) / kTileK);
  int64_t c0 = 0, jd = 0, jh = 0, jw = 0;  // the step being loaded: output channels c0 .., tap (r + s j)
  Vec4 ra[GM], rb[GN];
  auto load = [&]() {
    const int64_t shift = ((jd * s.oh + jh) * s.ow + jw) * s.co;
    const int64_t c = c0 + lcol;
    for (int g = 0; g < GM; ++g) {
      const bool inside =
          a_ok[g] && in_range(a_d[g] - jd, s.od) && in_range(a_h[g] - jh, s.oh) && in_range(a_w[g] - jw, s.ow);
      ra[g] = fetch4<kVec>(dy, a_base[g] - shift + c, inside, c, s.co);
    }
    const int64_t tap = ((rd + s.sd * jd) * s.kh + (rh + s.sh * jh)) * s.kw + (rw + s.sw * jw);
    const int64_t co = c0 + bk;
    const bool row_ok = co < s.co;
    const int64_t row = row_ok ? (co * s.taps() + tap) * s.ci : 0;
    for (int g = 0; g < GN; ++g) {
      const int64_t ci = n0 + bc + 64 * g;
      rb[g] = fetch4<kVec>(w, row + ci, row_ok, ci, s.ci);
    }
  };
  auto store = [&](int buf) {
    for (int g = 0; g < GM; ++g)
      for (int j = 0; j < 4; ++j) E::put_a(tiles, buf, lcol + j, lrow + 64 * g, ra[g].v[j]);
    for (int g = 0; g < GN; ++g)
      for (int j = 0; j < 4; ++j) E::put_b(tiles, buf, bk, bc + 64 * g + j, rb[g].v[j]);
  };
  auto advance = [&]() {
    c0 += kTileK;
    if (c0 >= s.co) {
      c0 = 0;
      if (++jw == aw.taps) {
        jw = 0;
        if (++jh == ah.taps) jh = 0, ++jd;
      }
    }
  };

  typename E::Acc acc;
  E::zero(acc);
  if (steps > 0) {  // uniform over the block
    load();
    store(0);
  }
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int buf = int(step & 1);
    const bool more = step + 1 < steps;
    if (more) advance(), load();
    E::multiply(tiles, buf, t, acc);
    if (more) store(buf ^ 1);
    __syncthreads();
  }

  E::for_each(acc, t, [&](int r, int c, float v) {
    const int64_t m = m0 + r, ci = n0 + c;
    if (m >= M || ci >= s.ci) return;
    const int64_t qw = m % aw.count, qh = m / aw.count % ah.count, qd = m / (aw.count * ah.count) % ad.count;
    const int64_t n = m / (aw.count * ah.count * ad.count);
    const int64_t voxel =
        ((n * s.d + ad.first + s.sd * qd) * s.h + ah.first + s.sh * qh) * s.w + aw.first + s.sw * qw;
    store_elem(dx + voxel * s.ci + ci, v + (bias ? bias[ci] : 0.0f));
  });
}

// ---- backward weight ------------------------------------------------------------------------

// Tile: output channels co0 + [0, 64 GM) x reduction columns k0 + [0, 64 GN) of dW [Co, K];
// sums over voxels [split * rows_per_split, + rows_per_split). Writes partial[split] when
// partial is set, else adds to dw (a single split: each element has one writer).
template <class T, int GM, int GN, bool kVec>
__global__ void __launch_bounds__(kThreads)
    conv3d_backward_weight_kernel(const T* __restrict__ x, const T* __restrict__ dy, Conv3dShape s,
                                  int64_t rows_per_split, float* __restrict__ partial, float* __restrict__ dw) {
  CTSR_LAUNCH_BOUNDS_CHECK(kThreads);
  using E = EngineFor<T, GM, GN>;
  CTSR_STATIC_SHARED(tiles, typename E::Tiles);
  const int t = int(threadIdx.x);
  const int lr = t / 16, lq = (t % 16) * 4;  // loader: voxel lr of the step, columns lq + 64 g .. + 3
  const int64_t M = s.out_voxels(), K = s.reduction();
  const int64_t k0 = int64_t(blockIdx.x) * (64 * GN), co0 = int64_t(blockIdx.y) * (64 * GM);
  const int64_t m_begin = int64_t(blockIdx.z) * rows_per_split;
  const int64_t m_end = min(M, m_begin + rows_per_split);

  // My reduction columns, decoded once: column k = (tap, c) -> window offset and tap (kd, kh, kw).
  // With kVec the 4 columns of a group share a tap (ci % 4 == 0), so only the first is decoded.
  constexpr int kCols = kVec ? 1 : 4;
  int64_t col_off[GN][kCols], col_d[GN][kCols], col_h[GN][kCols], col_w[GN][kCols];
  bool col_ok[GN][kCols];
  for (int g = 0; g < GN; ++g) {
    for (int j = 0; j < kCols; ++j) {
      const int64_t k = k0 + lq + 64 * g + j;
      col_ok[g][j] = k < K;
      const int64_t kk = col_ok[g][j] ? k : 0;
      const int64_t c = kk % s.ci, tap = kk / s.ci;
      col_w[g][j] = tap % s.kw, col_h[g][j] = tap / s.kw % s.kh, col_d[g][j] = tap / (s.kw * s.kh);
      col_off[g][j] = ((col_d[g][j] * s.h + col_h[g][j]) * s.w + col_w[g][j]) * s.ci + c;
    }
  }

  const int64_t steps = (m_end - m_begin + kTileK - 1) / kTileK;
  int64_t m = m_begin + lr;  // the voxel this thread loads in the step being loaded, and its
  int64_t ow = m % s.ow, oh = m / s.ow % s.oh, od = m / (s.ow * s.oh) % s.od, n = m / (s.ow * s.oh * s.od);
  // coordinates, advanced by kTileK per step with carries instead of 64-bit divisions.
  auto advance = [&]() {
    m += kTileK;
    for (ow += kTileK; ow >= s.ow;) {
      ow -= s.ow;
      if (++oh == s.oh) {
        oh = 0;
        if (++od == s.od) od = 0, ++n;
      }
    }
  };
  Vec4 ra[GM], rb[GN];
  auto load = [&]() {
    const bool row_ok = m < m_end;
    for (int g = 0; g < GM; ++g) {
      const int64_t co = co0 + lq + 64 * g;
      ra[g] = fetch4<kVec>(dy, m * s.co + co, row_ok, co, s.co);
    }
    const int64_t id = od * s.sd - s.pd, ih = oh * s.sh - s.ph, iw = ow * s.sw - s.pw;
    const int64_t base = (((n * s.d + id) * s.h + ih) * s.w + iw) * s.ci;
    for (int g = 0; g < GN; ++g) {
      if constexpr (kVec) {
        const bool inside = row_ok && col_ok[g][0] && in_range(id + col_d[g][0], s.d) &&
                            in_range(ih + col_h[g][0], s.h) && in_range(iw + col_w[g][0], s.w);
        rb[g] = fetch4<true>(x, base + col_off[g][0], inside, 0, 1);
      } else {
        for (int j = 0; j < 4; ++j) {
          const bool inside = row_ok && col_ok[g][j] && in_range(id + col_d[g][j], s.d) &&
                              in_range(ih + col_h[g][j], s.h) && in_range(iw + col_w[g][j], s.w);
          rb[g].v[j] = inside ? load_elem(x + base + col_off[g][j]) : 0.0f;
        }
      }
    }
  };
  auto store = [&](int buf) {
    for (int g = 0; g < GM; ++g)
      for (int j = 0; j < 4; ++j) E::put_a(tiles, buf, lr, lq + 64 * g + j, ra[g].v[j]);
    for (int g = 0; g < GN; ++g)
      for (int j = 0; j < 4; ++j) E::put_b(tiles, buf, lr, lq + 64 * g + j, rb[g].v[j]);
  };

  typename E::Acc acc;
  E::zero(acc);
  if (steps > 0) {  // uniform over the block
    load();
    store(0);
  }
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int buf = int(step & 1);
    const bool more = step + 1 < steps;
    if (more) advance(), load();
    E::multiply(tiles, buf, t, acc);
    if (more) store(buf ^ 1);
    __syncthreads();
  }

  E::for_each(acc, t, [&](int r, int c, float v) {
    const int64_t co = co0 + r, k = k0 + c;
    if (co >= s.co || k >= K) return;
    if (partial) partial[(int64_t(blockIdx.z) * s.co + co) * K + k] = v;
    else dw[co * K + k] += v;
  });
}

// out[e] += sum_z partial[z, e], z in order.
__global__ void add_partials_kernel(const float* __restrict__ partial, int64_t splits, int64_t n,
                                    float* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t z = 0; z < splits; ++z) sum += partial[z * n + e];
    out[e] += sum;
  }
}

// ---- backward bias --------------------------------------------------------------------------

constexpr int kBiasLanes = 32, kBiasRows = 8;

// Block: 32 channels x 8 row lanes over the rows [split * rows_per_split, + rows_per_split);
// row lanes are combined in order, then written to partial[split] (or added to db when there is
// a single split).
template <class T>
__global__ void __launch_bounds__(kBiasLanes * kBiasRows)
    bias_partial_kernel(const T* __restrict__ dy, int64_t rows, int64_t channels, int64_t rows_per_split,
                        float* __restrict__ partial, float* __restrict__ db) {
  CTSR_LAUNCH_BOUNDS_CHECK(kBiasLanes * kBiasRows);
  CTSR_STATIC_SHARED(sums, float[kBiasRows][kBiasLanes]);
  const int lane = int(threadIdx.x) % kBiasLanes, r = int(threadIdx.x) / kBiasLanes;
  const int64_t c = int64_t(blockIdx.y) * kBiasLanes + lane;
  const int64_t begin = int64_t(blockIdx.x) * rows_per_split, end = min(rows, begin + rows_per_split);
  float acc = 0.0f;
  if (c < channels)
    for (int64_t row = begin + r; row < end; row += kBiasRows) acc += load_elem(dy + row * channels + c);
  sums[r][lane] = acc;
  __syncthreads();
  if (r == 0 && c < channels) {
    float total = sums[0][lane];
    for (int rr = 1; rr < kBiasRows; ++rr) total += sums[rr][lane];
    if (partial) partial[int64_t(blockIdx.x) * channels + c] = total;
    else db[c] += total;
  }
}

// ---- launch helpers -------------------------------------------------------------------------

// Whether four consecutive elements of t can be read as one vector (16 bytes of float, 8 of bf16).
bool vector_aligned(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % (4 * dtype_size(t.dtype())) == 0; }

const float* optional_float(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

unsigned grid_dim_checked(int64_t blocks, int64_t limit, const char* what) {
  CTSR_CHECK(blocks <= limit, "conv3d: ", blocks, " blocks along ", what, " exceed the launch limit ", limit);
  return unsigned(blocks);
}

// Splits a reduction of `rows` into ranges of a multiple of `granule` rows so that `tiles`
// blocks per range make about kTargetBlocks in all.
struct Split {
  int64_t count = 1, rows_per_split = 0;
};

Split split_rows(int64_t rows, int64_t tiles, int64_t granule, int64_t min_rows) {
  Split sp;
  const int64_t wanted = std::max<int64_t>(1, (kTargetBlocks + tiles - 1) / tiles);
  const int64_t most = std::max<int64_t>(1, rows / min_rows);
  sp.count = std::min(wanted, most);
  sp.rows_per_split = (rows + sp.count - 1) / sp.count;
  sp.rows_per_split = (sp.rows_per_split + granule - 1) / granule * granule;
  sp.count = std::max<int64_t>(1, (rows + sp.rows_per_split - 1) / sp.rows_per_split);
  return sp;
}

// Adds partial [splits, n] (summed over splits in order) into out [n].
void add_partials(Device device, const Tensor& partial, int64_t splits, int64_t n, Tensor& out) {
  const unsigned blocks = std::min<unsigned>(4096, std::max<unsigned>(1, blocks_for(n, kThreads)));
  launch_kernel(device, add_partials_kernel, blocks, kThreads, 0, partial.data<float>(), splits, n, out.data<float>());
}

template <class T, int GM, int GN>
void launch_forward(const Conv3dShape& s, bool vec, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  const dim3 grid(grid_dim_checked((s.out_voxels() + 64 * GM - 1) / (64 * GM), INT32_MAX, "output voxels"),
                  grid_dim_checked((s.co + 64 * GN - 1) / (64 * GN), 65535, "output channels"));
  auto kernel = vec ? conv3d_forward_kernel<T, GM, GN, true> : conv3d_forward_kernel<T, GM, GN, false>;
  launch_kernel(x.device(), kernel, grid, kThreads, 0, x.data<T>(), w.data<T>(), optional_float(bias), s,
                y.data<T>());
}

template <class T, int GM, int GN>
void launch_backward_data(const Conv3dShape& s, bool vec, const Tensor& dy, const Tensor& w, const Tensor& bias,
                          Tensor& dx) {
  // Sized for the largest residue class (the one starting at index 0 along every axis).
  const int64_t largest = s.n * ((s.d + s.sd - 1) / s.sd) * ((s.h + s.sh - 1) / s.sh) * ((s.w + s.sw - 1) / s.sw);
  const dim3 grid(grid_dim_checked((largest + 64 * GM - 1) / (64 * GM), INT32_MAX, "input voxels"),
                  grid_dim_checked((s.ci + 64 * GN - 1) / (64 * GN), 65535, "input channels"),
                  grid_dim_checked(s.sd * s.sh * s.sw, 65535, "stride residue classes"));
  auto kernel = vec ? conv3d_backward_data_kernel<T, GM, GN, true> : conv3d_backward_data_kernel<T, GM, GN, false>;
  launch_kernel(dy.device(), kernel, grid, kThreads, 0, dy.data<T>(), w.data<T>(), optional_float(bias), s,
                dx.data<T>());
}

template <class T, int GM, int GN>
void launch_backward_weight(const Conv3dShape& s, bool vec, const Tensor& x, const Tensor& dy, Tensor& dw) {
  const int64_t K = s.reduction();
  const int64_t k_tiles = (K + 64 * GN - 1) / (64 * GN), co_tiles = (s.co + 64 * GM - 1) / (64 * GM);
  const Split sp = split_rows(s.out_voxels(), k_tiles * co_tiles, kTileK, 16 * kTileK);
  const dim3 grid(grid_dim_checked(k_tiles, INT32_MAX, "weight columns"),
                  grid_dim_checked(co_tiles, 65535, "output channels"),
                  grid_dim_checked(sp.count, 65535, "voxel splits"));
  auto kernel =
      vec ? conv3d_backward_weight_kernel<T, GM, GN, true> : conv3d_backward_weight_kernel<T, GM, GN, false>;
  if (sp.count == 1) {
    launch_kernel(x.device(), kernel, grid, kThreads, 0, x.data<T>(), dy.data<T>(), s, sp.rows_per_split,
                  static_cast<float*>(nullptr), dw.data<float>());
    return;
  }
  Tensor partial = Tensor::empty(Shape{sp.count, s.co, K}, DType::float32, x.device());
  launch_kernel(x.device(), kernel, grid, kThreads, 0, x.data<T>(), dy.data<T>(), s, sp.rows_per_split,
                partial.data<float>(), static_cast<float*>(nullptr));
  add_partials(x.device(), partial, sp.count, s.co * K, dw);
}

// Whether a GEMM of rows x columns (the block-tiled dimensions) takes 128x128 tiles.
bool large_tiles(int64_t rows, int64_t columns) {
  switch (conv3d_tiles()) {
    case Conv3dTiles::small: return false;
    case Conv3dTiles::large: return true;
    case Conv3dTiles::automatic: break;
  }
  return columns > 64 && (rows / 128) * ((columns + 127) / 128) >= kLargeTileMinBlocks;
}

}  // namespace

void conv3d_forward(const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  with_operand_type(x, "conv3d_forward (CUDA) x", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = s.ci % 4 == 0 && vector_aligned(x) && vector_aligned(w);
    if (large_tiles(s.out_voxels(), s.co)) launch_forward<T, 2, 2>(s, vec, x, w, bias, y);
    else launch_forward<T, 1, 1>(s, vec, x, w, bias, y);
  });
}

void conv3d_backward_data(const Conv3dShape& s, const Tensor& dy, const Tensor& w, const Tensor& bias, Tensor& dx) {
  with_operand_type(dy, "conv3d_backward_data (CUDA) dy", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = s.ci % 4 == 0 && s.co % 4 == 0 && vector_aligned(dy) && vector_aligned(w);
    const int64_t class_voxels = s.in_voxels() / (s.sd * s.sh * s.sw);
    if (large_tiles(class_voxels, s.ci)) launch_backward_data<T, 2, 2>(s, vec, dy, w, bias, dx);
    else launch_backward_data<T, 1, 1>(s, vec, dy, w, bias, dx);
  });
}

void conv3d_backward_weight(const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw) {
  with_operand_type(x, "conv3d_backward_weight (CUDA) x", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = s.ci % 4 == 0 && s.co % 4 == 0 && vector_aligned(x) && vector_aligned(dy);
    // The voxel splits supply the parallelism, so only the tile's own sizes matter here.
    const bool large = conv3d_tiles() == Conv3dTiles::automatic ? s.co > 64 && s.reduction() > 64
                                                                 : conv3d_tiles() == Conv3dTiles::large;
    if (large) launch_backward_weight<T, 2, 2>(s, vec, x, dy, dw);
    else launch_backward_weight<T, 1, 1>(s, vec, x, dy, dw);
  });
}

void conv3d_backward_bias(int64_t rows, int64_t channels, const Tensor& dy, Tensor& db) {
  with_operand_type(dy, "conv3d_backward_bias (CUDA) dy", [&](auto tag) {
    using T = decltype(tag);
    const int64_t channel_tiles = (channels + kBiasLanes - 1) / kBiasLanes;
    const Split sp = split_rows(rows, channel_tiles, kBiasRows, 32 * kBiasRows);
    const dim3 grid(grid_dim_checked(sp.count, INT32_MAX, "row splits"),
                    grid_dim_checked(channel_tiles, 65535, "channels"));
    if (sp.count == 1) {
      launch_kernel(dy.device(), bias_partial_kernel<T>, grid, kBiasLanes * kBiasRows, 0, dy.data<T>(), rows,
                    channels, sp.rows_per_split, static_cast<float*>(nullptr), db.data<float>());
      return;
    }
    Tensor partial = Tensor::empty(Shape{sp.count, channels}, DType::float32, dy.device());
    launch_kernel(dy.device(), bias_partial_kernel<T>, grid, kBiasLanes * kBiasRows, 0, dy.data<T>(), rows, channels,
                  sp.rows_per_split, partial.data<float>(), static_cast<float*>(nullptr));
    add_partials(dy.device(), partial, sp.count, channels, db);
  });
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
