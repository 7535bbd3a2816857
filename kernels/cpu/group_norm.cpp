// Reference group normalisation (kernels/group_norm.h): plain loops over [N, S, C], float and
// double. Statistics are accumulated in double with two passes (mean, then the mean of squared
// deviations), so the reference carries no cancellation of its own.
#include <cmath>
#include <vector>

#include "kernels/group_norm.h"

namespace ctsr::kernels::cpu {

namespace {
double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
}  // namespace

template <class T>
void group_norm_forward(const GroupNormShape& shape, const T* x, const T* gamma, const T* beta, double eps, bool silu,
                        T* y, T* mean, T* rstd) {
  const int64_t N = shape.n, S = shape.s, C = shape.c, G = shape.groups, Cg = shape.channels_per_group();
  const double count = double(S * Cg);
#pragma omp parallel for collapse(2) if (N * S * C > 65536)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const T* xn = x + n * S * C;
      T* yn = y + n * S * C;
      double sum = 0;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) sum += double(xn[s * C + c]);
      const double mu = sum / count;
      double sq = 0;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const double d = double(xn[s * C + c]) - mu;
          sq += d * d;
        }
      const double r = 1.0 / std::sqrt(sq / count + eps);
      mean[n * G + g] = T(mu);
      rstd[n * G + g] = T(r);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const double z = (double(xn[s * C + c]) - mu) * r * double(gamma[c]) + double(beta[c]);
          yn[s * C + c] = T(silu ? z * sigmoid(z) : z);
        }
    }
  }
}

// With dz the gradient at the pre-activation (dy, or dy * silu'(z) for the fused op), and per
// channel A[c] = sum_s dz, B[c] = sum_s dz (x - mean), M = S * C/G:
//   dx     = rstd gamma dz - rstd/M sum_c' gamma A - (x - mean) rstd^3/M sum_c' gamma B
//   dgamma = sum_n rstd B,  dbeta = sum_n A
template <class T>
void group_norm_backward(const GroupNormShape& shape, const T* x, const T* gamma, const T* beta, const T* mean,
                         const T* rstd, const T* dy, bool silu, T* dx, T* dgamma, T* dbeta) {
  const int64_t N = shape.n, S = shape.s, C = shape.c, G = shape.groups, Cg = shape.channels_per_group();
  const double count = double(S * Cg);
  std::vector<double> A(size_t(N * C), 0.0), B(size_t(N * C), 0.0);
  auto grad_z = [&](int64_t n, int64_t s, int64_t c) {
    const int64_t i = (n * S + s) * C + c;
    const double d = double(dy[i]);
    if (!silu) return d;
    const double z = (double(x[i]) - double(mean[n * G + c / Cg])) * double(rstd[n * G + c / Cg]) * double(gamma[c]) +
                     double(beta[c]);
    const double sg = sigmoid(z);
    return d * sg * (1.0 + z * (1.0 - sg));
  };
#pragma omp parallel for collapse(2) if (N * S * C > 65536)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const double mu = double(mean[n * G + g]), r = double(rstd[n * G + g]);
      double sum_ga = 0, sum_gb = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        double a = 0, b = 0;
        for (int64_t s = 0; s < S; ++s) {
          const double dz = grad_z(n, s, c);
          a += dz;
          b += dz * (double(x[(n * S + s) * C + c]) - mu);
        }
        A[size_t(n * C + c)] = a;
        B[size_t(n * C + c)] = b;
        sum_ga += double(gamma[c]) * a;
        sum_gb += double(gamma[c]) * b;
      }
      const double u = -r / count * sum_ga;
      const double w = -r * r * r / count * sum_gb;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const int64_t i = (n * S + s) * C + c;
          dx[i] = T(r * double(gamma[c]) * grad_z(n, s, c) + (double(x[i]) - mu) * w + u);
        }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double dg = 0, db = 0;
    for (int64_t n = 0; n < N; ++n) {
      dg += double(rstd[n * G + c / Cg]) * B[size_t(n * C + c)];
      db += A[size_t(n * C + c)];
    }
    dgamma[c] = T(double(dgamma[c]) + dg);
    dbeta[c] = T(double(dbeta[c]) + db);
  }
}

#define CTSR_INSTANTIATE(T)                                                                                        \
  template void group_norm_forward<T>(const GroupNormShape&, const T*, const T*, const T*, double, bool, T*, T*, \
                                      T*);                                                                       \
  template void group_norm_backward<T>(const GroupNormShape&, const T*, const T*, const T*, const T*, const T*,   \
                                       const T*, bool, T*, T*, T*);
CTSR_INSTANTIATE(float)
CTSR_INSTANTIATE(double)
#undef CTSR_INSTANTIATE

}  // namespace ctsr::kernels::cpu
