// Test oracle of multi-head attention (kernels/attention.h), forward and backward in float64,
// written independently of the CPU path in kernels/cpu: it materialises the whole N x N score
// matrix per (batch, head) and uses the textbook backward. qkv [B, N, 3 * heads * head_dim]
// (q, k, v blocks per token) and d_o [B, N, heads * head_dim] as flat row-major vectors; the
// result holds o, lse [B, heads, N] and d_qkv.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ctsr::test::oracle {

// Attention in double with the whole N x N matrix, written independently of the
// reference: P = softmax(scale q k^T), o = P v; backward in the textbook form dP = dO v^T,
// dS = P (dP - rowsum(P dP)) (not the dO . o of the reference), dq = scale dS k,
// dk = scale dS^T q, dv = P^T dO.
struct AttentionResult {
  std::vector<double> o, lse, d_qkv;
};

inline AttentionResult attention(int64_t batch, int64_t tokens, int64_t heads, int64_t head_dim,
                                 const std::vector<double>& qkv, const std::vector<double>& d_o) {
  const int64_t B = batch, N = tokens, H = heads, D = head_dim, C = H * D;
  const double scale = 1.0 / std::sqrt(double(D));
  AttentionResult r;
  r.o.assign(size_t(B * N * C), 0.0);
  r.lse.assign(size_t(B * H * N), 0.0);
  r.d_qkv.assign(size_t(B * N * 3 * C), 0.0);
  auto at = [&](int64_t b, int64_t n, int64_t part, int64_t h, int64_t d) {
    return size_t((b * N + n) * 3 * C + part * C + h * D + d);
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> P(size_t(N * N)), dP(size_t(N * N)), dS(size_t(N * N));
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += qkv[at(b, i, 0, h, d)] * qkv[at(b, j, 1, h, d)];
          P[size_t(i * N + j)] = scale * s;
        }
        double m = -INFINITY, l = 0;
        for (int64_t j = 0; j < N; ++j) m = std::max(m, P[size_t(i * N + j)]);
        for (int64_t j = 0; j < N; ++j) l += std::exp(P[size_t(i * N + j)] - m);
        for (int64_t j = 0; j < N; ++j) P[size_t(i * N + j)] = std::exp(P[size_t(i * N + j)] - m) / l;
        r.lse[size_t((b * H + h) * N + i)] = m + std::log(l);
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += P[size_t(i * N + j)] * qkv[at(b, j, 2, h, d)];
          r.o[size_t((b * N + i) * C + h * D + d)] = s;
        }
      for (int64_t i = 0; i < N; ++i) {
        double row = 0;
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += d_o[size_t((b * N + i) * C + h * D + d)] * qkv[at(b, j, 2, h, d)];
          dP[size_t(i * N + j)] = s;
          row += P[size_t(i * N + j)] * s;
        }
        for (int64_t j = 0; j < N; ++j) dS[size_t(i * N + j)] = P[size_t(i * N + j)] * (dP[size_t(i * N + j)] - row);
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          double dq = 0, dk = 0, dv = 0;
          for (int64_t j = 0; j < N; ++j) {
            dq += dS[size_t(i * N + j)] * qkv[at(b, j, 1, h, d)];
            dk += dS[size_t(j * N + i)] * qkv[at(b, j, 0, h, d)];
            dv += P[size_t(j * N + i)] * d_o[size_t((b * N + j) * C + h * D + d)];
          }
          r.d_qkv[at(b, i, 0, h, d)] = scale * dq;
          r.d_qkv[at(b, i, 1, h, d)] = scale * dk;
          r.d_qkv[at(b, i, 2, h, d)] = dv;
        }
    }
  }
  return r;
}

}  // namespace ctsr::test::oracle
