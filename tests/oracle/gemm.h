// Test oracle of ctsr::gemm (runtime/gemm.h) in float64, written independently of the CPU path
// (OpenBLAS) as a plain triple loop per batch: C = alpha op(A) op(B) + beta C over row-major
// stored buffers with leading dimensions lda, ldb, ldc and batch strides stride_a, stride_b,
// stride_c (stride_b may be 0: one B for every batch). Elements outside the m x n results
// (padding) keep what c held; beta = 0 ignores c's values (BLAS semantics, NaN included).
#pragma once

#include <cstdint>
#include <vector>

namespace ctsr::test::oracle {

inline std::vector<double> gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                                const std::vector<double>& a, int64_t lda, int64_t stride_a,
                                const std::vector<double>& b, int64_t ldb, int64_t stride_b, double beta,
                                std::vector<double> c, int64_t ldc, int64_t stride_c, int64_t batch) {
  for (int64_t bi = 0; bi < batch; ++bi) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0;
        for (int64_t l = 0; l < k; ++l) {
          const double av = trans_a ? a[bi * stride_a + l * lda + i] : a[bi * stride_a + i * lda + l];
          const double bv = trans_b ? b[bi * stride_b + j * ldb + l] : b[bi * stride_b + l * ldb + j];
          sum += av * bv;
        }
        double& cv = c[bi * stride_c + i * ldc + j];
        cv = alpha * sum + (beta == 0.0 ? 0.0 : beta * cv);
      }
    }
  }
  return c;
}

}  // namespace ctsr::test::oracle
