// Reference multi-head attention (kernels/attention.h): plain loops, float and double, any
// head_dim. Each (b, h) is worked a row of queries at a time, so the extra memory is O(N) per
// host thread (one row of scores), never N x N. All sums are taken in double: the float
// instantiation differs from the double one only by the rounding of its inputs and outputs.
//
// Backward follows the row-wise recipe the CUDA kernels tile: P is rebuilt from q, k and the
// saved lse; dk and dv are accumulated over query rows in a fixed order (deterministic).
//
// attention_forward_gemm: the forward of Device::cpu in float32 (kernels/attention.cpp), the same
// sums in float through sgemm, a block of query rows at a time. The loops above take about half
// of a 4x VQ-AE's encode of a 64^3 volume (its middle block attends over 4096 tokens).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "runtime/gemm.h"

namespace ctsr::kernels::cpu {

namespace {

// Pointers to the rows of one (b, h) in the fused layout: row i of q is q + i * stride.
template <class T>
struct HeadView {
  const T* q;
  const T* k;
  const T* v;
  int64_t stride;  // 3C
};

template <class T>
HeadView<T> head_view(const AttentionShape& shape, const T* qkv, int64_t b, int64_t h) {
  const int64_t C = shape.channels();
  const T* base = qkv + b * shape.tokens * 3 * C + h * shape.head_dim;
  return {base, base + C, base + 2 * C, 3 * C};
}

template <class T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += double(a[d]) * double(b[d]);
  return s;
}

}  // namespace

template <class T>
void attention_forward(const AttentionShape& shape, const T* qkv, T* o, T* lse) {
  const int64_t B = shape.batch, N = shape.tokens, H = shape.heads, D = shape.head_dim, C = shape.channels();
  const double scale = shape.scale();
#pragma omp parallel if (B * H * N * N * D > (1 << 20))
  {
    std::vector<double> scores(static_cast<size_t>(N)), out(static_cast<size_t>(D));
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < N; ++i) {
          const HeadView<T> view = head_view(shape, qkv, b, h);
          const T* qi = view.q + i * view.stride;
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < N; ++j) {
            scores[size_t(j)] = scale * dot(qi, view.k + j * view.stride, D);
            m = std::max(m, scores[size_t(j)]);
          }
          double l = 0;
          for (int64_t j = 0; j < N; ++j) {
            scores[size_t(j)] = std::exp(scores[size_t(j)] - m);
            l += scores[size_t(j)];
          }
          std::fill(out.begin(), out.end(), 0.0);
          for (int64_t j = 0; j < N; ++j) {
            const T* vj = view.v + j * view.stride;
            const double p = scores[size_t(j)] / l;
            for (int64_t d = 0; d < D; ++d) out[size_t(d)] += p * double(vj[d]);
          }
          T* oi = o + (b * N + i) * C + h * D;
          for (int64_t d = 0; d < D; ++d) oi[d] = T(out[size_t(d)]);
          lse[(b * H + h) * N + i] = T(m + std::log(l));
        }
      }
    }
  }
}

template <class T>
void attention_backward(const AttentionShape& shape, const T* qkv, const T* o, const T* lse, const T* d_o,
                        T* d_qkv) {
  const int64_t B = shape.batch, N = shape.tokens, H = shape.heads, D = shape.head_dim, C = shape.channels();
  const double scale = shape.scale();
  // Parallel over (b, h) only: within a head, dk and dv gather from every query row, and a
  // fixed row order keeps the sums reproducible.
#pragma omp parallel if (B * H > 1 && B * H * N * N * D > (1 << 18))
  {
    std::vector<double> dk(static_cast<size_t>(N * D)), dv(static_cast<size_t>(N * D)), dq(static_cast<size_t>(D));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const HeadView<T> view = head_view(shape, qkv, b, h);
        std::fill(dk.begin(), dk.end(), 0.0);
        std::fill(dv.begin(), dv.end(), 0.0);
        for (int64_t i = 0; i < N; ++i) {
          const T* qi = view.q + i * view.stride;
          const T* doi = d_o + (b * N + i) * C + h * D;
          const double Di = dot(doi, o + (b * N + i) * C + h * D, D);
          const double lse_i = double(lse[(b * H + h) * N + i]);
          std::fill(dq.begin(), dq.end(), 0.0);
          for (int64_t j = 0; j < N; ++j) {
            const T* kj = view.k + j * view.stride;
            const T* vj = view.v + j * view.stride;
            const double p = std::exp(scale * dot(qi, kj, D) - lse_i);
            const double ds = p * (dot(doi, vj, D) - Di);
            for (int64_t d = 0; d < D; ++d) {
              dq[size_t(d)] += ds * double(kj[d]);
              dk[size_t(j * D + d)] += ds * double(qi[d]);
              dv[size_t(j * D + d)] += p * double(doi[d]);
            }
          }
          T* dqi = d_qkv + (b * N + i) * 3 * C + h * D;
          for (int64_t d = 0; d < D; ++d) dqi[d] = T(scale * dq[size_t(d)]);
        }
        for (int64_t j = 0; j < N; ++j) {
          T* dkj = d_qkv + (b * N + j) * 3 * C + C + h * D;
          T* dvj = dkj + C;
          for (int64_t d = 0; d < D; ++d) {
            dkj[d] = T(scale * dk[size_t(j * D + d)]);
            dvj[d] = T(dv[size_t(j * D + d)]);
          }
        }
      }
    }
  }
}

void attention_forward_gemm(const AttentionShape& shape, const float* qkv, float* o, float* lse) {
  const int64_t B = shape.batch, N = shape.tokens, H = shape.heads, D = shape.head_dim, C = shape.channels();
  constexpr int64_t kBlock = 64;  // query rows per task: kBlock x N scores per thread
  const int64_t blocks = (N + kBlock - 1) / kBlock, tasks = B * H * blocks;
  // One task per (b, h, block of rows); the GEMMs inside a parallel region run on one thread.
#pragma omp parallel if (tasks > 1 && B * H * N * N * D > (1 << 20))
  {
    std::vector<float> scores(static_cast<size_t>(std::min(kBlock, N) * N));
    std::vector<float> inverse(static_cast<size_t>(kBlock));  // 1 / (the row's sum)
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (H * blocks), h = (task / blocks) % H, i0 = (task % blocks) * kBlock;
      const int64_t rows = std::min(kBlock, N - i0);
      const float* k = qkv + b * N * 3 * C + C + h * D;
      const float* v = k + C;
      float* out = o + (b * N + i0) * C + h * D;
      GemmArgs s;  // S = scale Q K^T: rows x N
      s.trans_b = true;
      s.m = rows, s.n = N, s.k = D;
      s.alpha = shape.scale();
      s.a = qkv + (b * N + i0) * 3 * C + h * D, s.lda = 3 * C;
      s.b = k, s.ldb = 3 * C;
      s.c = scores.data(), s.ldc = N;
      gemm(Device::cpu(), s);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = scores.data() + r * N;
        const float m = *std::max_element(row, row + N);
        double l = 0;
        for (int64_t j = 0; j < N; ++j) {
          row[j] = std::exp(row[j] - m);
          l += double(row[j]);
        }
        inverse[size_t(r)] = float(1.0 / l);
        lse[(b * H + h) * N + i0 + r] = float(double(m) + std::log(l));
      }
      GemmArgs pv;  // O = P V: rows x D
      pv.m = rows, pv.n = D, pv.k = N;
      pv.a = scores.data(), pv.lda = N;
      pv.b = v, pv.ldb = 3 * C;
      pv.c = out, pv.ldc = C;
      gemm(Device::cpu(), pv);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < D; ++d) out[r * C + d] *= inverse[size_t(r)];
    }
  }
}

#define CTSR_INSTANTIATE(T)                                                                \
  template void attention_forward<T>(const AttentionShape&, const T*, T*, T*);             \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*, \
                                      const T*, T*);
CTSR_INSTANTIATE(float)
CTSR_INSTANTIATE(double)
#undef CTSR_INSTANTIATE

}  // namespace ctsr::kernels::cpu
