// Reference 3D convolution (kernels/conv3d.h), float and double: im2col + GEMM.
//
// The output voxels are walked in chunks of whole (n, od) planes, sized so that a chunk's
// column matrix X_col[rows, K] stays under a budget (32 MiB); each chunk is one OpenBLAS GEMM
// (through ctsr::gemm on Device::cpu()):
//   forward          Y[rows, Co]  = X_col[rows, K] * W[Co, K]^T       (+ bias, pre-filled)
//   backward_data    dX_col       = dY[rows, Co] * W[Co, K], then col2im
//   backward_weight  dW[Co, K]   += dY[rows, Co]^T * X_col[rows, K]
// A 1x1x1 stride-1 unpadded convolution needs no im2col: X itself is X_col.
// col2im is a GATHER: each input voxel sums, in fixed tap order, the columns of the chunk's
// output voxels whose windows cover it, so the OpenMP threads write disjoint rows of dx and the
// result does not depend on the thread count. Chunk sizes depend on the shape only, so every
// result is reproducible.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "kernels/conv3d.h"
#include "runtime/gemm.h"

namespace ctsr::kernels::cpu {

namespace {

std::atomic<int64_t> g_column_budget_bytes{int64_t(32) << 20};  // set_conv3d_column_budget

// Elements below which the copies run on one thread. Kept high: an OpenMP team that has just
// finished spins on the cores that the OpenBLAS threads of the following GEMM need (with 2 cores
// that made small convolutions 5x slower), and the GEMM dominates the time anyway.
constexpr int64_t kParallelWork = int64_t(1) << 22;

struct Chunking {
  int64_t rows_per_plane = 0, planes = 0, planes_per_chunk = 0;
};

template <class T>
Chunking chunking(const Conv3dShape& s) {
  Chunking c;
  c.rows_per_plane = s.oh * s.ow;
  c.planes = s.n * s.od;
  const int64_t plane_bytes = std::max<int64_t>(1, c.rows_per_plane * s.reduction() * int64_t(sizeof(T)));
  c.planes_per_chunk =
      std::clamp<int64_t>(g_column_budget_bytes.load() / plane_bytes, 1, std::max<int64_t>(1, c.planes));
  return c;
}

// The column buffer of one call: the calling thread's own, kept between calls, so the many
// convolutions of a step neither zero nor fault in fresh pages each time (a 32 MiB buffer
// allocated per call cost about a fifth of RED-CNN's inference on the CPU). It holds at most the
// largest chunk seen (the column budget, or one plane when that is larger). Every element a call
// reads, it writes first (im2col, or the GEMM with beta 0), so what an earlier call left is never read.
template <class T>
T* column_scratch(size_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < n) {
    buffer = std::vector<T>();
    buffer.resize(n);
  }
  return buffer.data();
}

template <class T>
GemmArgs gemm_args() {
  GemmArgs g;
  g.dtype = dtype_v<T>;
  return g;
}

// col[r, (kd, kh, kw, c)] for the output rows of planes [plane0, plane1).
template <class T>
void im2col(const Conv3dShape& s, const T* x, int64_t plane0, int64_t plane1, T* col) {
  const int64_t K = s.reduction();
#pragma omp parallel for collapse(2) if ((plane1 - plane0) * s.oh * s.ow * K > kParallelWork)
  for (int64_t plane = plane0; plane < plane1; ++plane) {
    for (int64_t oh = 0; oh < s.oh; ++oh) {
      const int64_t n = plane / s.od, od = plane % s.od;
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        T* dst = col + (((plane - plane0) * s.oh + oh) * s.ow + ow) * K;
        for (int64_t kd = 0; kd < s.kd; ++kd) {
          const int64_t id = od * s.sd - s.pd + kd;
          for (int64_t kh = 0; kh < s.kh; ++kh) {
            const int64_t ih = oh * s.sh - s.ph + kh;
            for (int64_t kw = 0; kw < s.kw; ++kw, dst += s.ci) {
              const int64_t iw = ow * s.sw - s.pw + kw;
              if (id < 0 || id >= s.d || ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) {
                std::fill(dst, dst + s.ci, T(0));
              } else {
                std::memcpy(dst, x + (((n * s.d + id) * s.h + ih) * s.w + iw) * s.ci, size_t(s.ci) * sizeof(T));
              }
            }
          }
        }
      }
    }
  }
}

// dx[n, i, :] += sum over the taps whose output voxel lies in planes [plane0, plane1) of the
// matching block of dcol (the column gradient of those planes).
template <class T>
void col2im_gather(const Conv3dShape& s, const T* dcol, int64_t plane0, int64_t plane1, T* dx) {
  const int64_t K = s.reduction();
  // Planes of one chunk may span several samples; handle each sample's od range separately.
  for (int64_t n = plane0 / s.od; n * s.od < plane1; ++n) {
    const int64_t od_begin = std::max(plane0 - n * s.od, int64_t(0));
    const int64_t od_end = std::min(plane1 - n * s.od, s.od);
    // Input depths reached by those output depths.
    const int64_t id_begin = std::max<int64_t>(0, od_begin * s.sd - s.pd);
    const int64_t id_end = std::min<int64_t>(s.d, (od_end - 1) * s.sd - s.pd + s.kd);
    if (id_begin >= id_end) continue;
    const T* dcol_n = dcol + (n * s.od + od_begin - plane0) * s.oh * s.ow * K;
#pragma omp parallel for collapse(2) if ((id_end - id_begin) * s.h * s.w * s.ci * s.taps() > kParallelWork)
    for (int64_t id = id_begin; id < id_end; ++id) {
      for (int64_t ih = 0; ih < s.h; ++ih) {
        for (int64_t iw = 0; iw < s.w; ++iw) {
          T* out = dx + (((n * s.d + id) * s.h + ih) * s.w + iw) * s.ci;
          for (int64_t kd = 0; kd < s.kd; ++kd) {
            const int64_t td = id + s.pd - kd;
            if (td < 0 || td % s.sd != 0) continue;
            const int64_t od = td / s.sd;
            if (od < od_begin || od >= od_end) continue;
            for (int64_t kh = 0; kh < s.kh; ++kh) {
              const int64_t th = ih + s.ph - kh;
              if (th < 0 || th % s.sh != 0 || th / s.sh >= s.oh) continue;
              const int64_t oh = th / s.sh;
              for (int64_t kw = 0; kw < s.kw; ++kw) {
                const int64_t tw = iw + s.pw - kw;
                if (tw < 0 || tw % s.sw != 0 || tw / s.sw >= s.ow) continue;
                const int64_t ow = tw / s.sw;
                const T* src = dcol_n + (((od - od_begin) * s.oh + oh) * s.ow + ow) * K +
                               ((kd * s.kh + kh) * s.kw + kw) * s.ci;
                for (int64_t c = 0; c < s.ci; ++c) out[c] += src[c];
              }
            }
          }
        }
      }
    }
  }
}

// t[r, c] = bias[c] (or 0) for r < rows.
template <class T>
void fill_rows(T* t, int64_t rows, int64_t channels, const T* bias) {
#pragma omp parallel for if (rows * channels > kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    T* row = t + r * channels;
    if (bias) std::copy(bias, bias + channels, row);
    else std::fill(row, row + channels, T(0));
  }
}

}  // namespace

int64_t set_conv3d_column_budget(int64_t bytes) { return g_column_budget_bytes.exchange(std::max<int64_t>(1, bytes)); }

template <class T>
void conv3d_forward(const Conv3dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t K = s.reduction();
  fill_rows(y, s.out_voxels(), s.co, bias);
  GemmArgs g = gemm_args<T>();
  g.trans_b = true;  // W is [Co, K]
  g.n = s.co, g.k = K;
  g.b = w, g.ldb = K;
  g.ldc = s.co;
  g.beta = 1.0;
  if (s.pointwise()) {
    g.m = s.out_voxels();
    g.a = x, g.lda = K;
    g.c = y;
    gemm(Device::cpu(), g);
    return;
  }
  const Chunking ch = chunking<T>(s);
  T* col = column_scratch<T>(size_t(ch.planes_per_chunk * ch.rows_per_plane * K));
  for (int64_t p0 = 0; p0 < ch.planes; p0 += ch.planes_per_chunk) {
    const int64_t p1 = std::min(ch.planes, p0 + ch.planes_per_chunk);
    im2col(s, x, p0, p1, col);
    g.m = (p1 - p0) * ch.rows_per_plane;
    g.a = col, g.lda = K;
    g.c = y + p0 * ch.rows_per_plane * s.co;
    gemm(Device::cpu(), g);
  }
}

template <class T>
void conv3d_backward_data(const Conv3dShape& s, const T* dy, const T* w, const T* bias, T* dx) {
  const int64_t K = s.reduction();
  fill_rows(dx, s.in_voxels(), s.ci, bias);
  if (s.out_voxels() == 0) return;
  GemmArgs g = gemm_args<T>();
  g.n = K, g.k = s.co;
  g.lda = s.co;
  g.b = w, g.ldb = K;
  if (s.pointwise()) {  // dx (+)= dy * W
    g.m = s.out_voxels();
    g.a = dy;
    g.c = dx, g.ldc = K;
    g.beta = 1.0;
    gemm(Device::cpu(), g);
    return;
  }
  const Chunking ch = chunking<T>(s);
  T* dcol = column_scratch<T>(size_t(ch.planes_per_chunk * ch.rows_per_plane * K));
  for (int64_t p0 = 0; p0 < ch.planes; p0 += ch.planes_per_chunk) {
    const int64_t p1 = std::min(ch.planes, p0 + ch.planes_per_chunk);
    g.m = (p1 - p0) * ch.rows_per_plane;
    g.a = dy + p0 * ch.rows_per_plane * s.co;
    g.c = dcol, g.ldc = K;
    g.beta = 0.0;
    gemm(Device::cpu(), g);
    col2im_gather(s, dcol, p0, p1, dx);
  }
}

template <class T>
void conv3d_backward_weight(const Conv3dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t K = s.reduction();
  if (s.out_voxels() == 0) return;
  GemmArgs g = gemm_args<T>();
  g.trans_a = true;  // dY^T
  g.m = s.co, g.n = K;
  g.lda = s.co;
  g.ldb = K;
  g.c = dw, g.ldc = K;
  g.beta = 1.0;  // accumulate
  if (s.pointwise()) {
    g.k = s.out_voxels();
    g.a = dy;
    g.b = x;
    gemm(Device::cpu(), g);
    return;
  }
  const Chunking ch = chunking<T>(s);
  T* col = column_scratch<T>(size_t(ch.planes_per_chunk * ch.rows_per_plane * K));
  for (int64_t p0 = 0; p0 < ch.planes; p0 += ch.planes_per_chunk) {
    const int64_t p1 = std::min(ch.planes, p0 + ch.planes_per_chunk);
    im2col(s, x, p0, p1, col);
    g.k = (p1 - p0) * ch.rows_per_plane;
    g.a = dy + p0 * ch.rows_per_plane * s.co;
    g.b = col;
    gemm(Device::cpu(), g);
  }
}

// Sums in double over fixed blocks of rows, then over blocks in order: reproducible for any
// thread count, and float inputs lose nothing to the length of the sum.
template <class T>
void conv3d_backward_bias(int64_t rows, int64_t channels, const T* dy, T* db) {
  constexpr int64_t kBlockRows = 2048;
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<double> partial(size_t(blocks * channels), 0.0);
#pragma omp parallel for if (rows * channels > kParallelWork)
  for (int64_t b = 0; b < blocks; ++b) {
    double* acc = partial.data() + b * channels;
    for (int64_t r = b * kBlockRows; r < std::min(rows, (b + 1) * kBlockRows); ++r)
      for (int64_t c = 0; c < channels; ++c) acc[c] += double(dy[r * channels + c]);
  }
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0;
    for (int64_t b = 0; b < blocks; ++b) sum += partial[size_t(b * channels + c)];
    db[c] = T(double(db[c]) + sum);
  }
}

#define CTSR_CONV3D_INSTANTIATE(T)                                                                  \
  template void conv3d_forward<T>(const Conv3dShape&, const T*, const T*, const T*, T*);           \
  template void conv3d_backward_data<T>(const Conv3dShape&, const T*, const T*, const T*, T*);     \
  template void conv3d_backward_weight<T>(const Conv3dShape&, const T*, const T*, T*);             \
  template void conv3d_backward_bias<T>(int64_t, int64_t, const T*, T*);
CTSR_CONV3D_INSTANTIATE(float)
CTSR_CONV3D_INSTANTIATE(double)
#undef CTSR_CONV3D_INSTANTIATE

}  // namespace ctsr::kernels::cpu
