// runtime/gemm.h against a triple loop in double (tests/oracle/gemm.h): all four transpose combinations, padded
// leading dimensions, batched strided calls (a zero batch stride included), alpha and beta,
// beta = 0 ignoring what C held, k = 0, empty sizes, and the argument errors (sizes past int included). On cpu (OpenBLAS
// row-major), cuda_on_cpu (OpenBLAS called exactly as cuBLAS is) and the GPU when present.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "runtime/gemm.h"
#include "runtime/stream.h"
#include "tests/harness.h"
#include "tests/oracle/gemm.h"

namespace ctsr::test {
namespace {

// A GEMM problem with its buffers on the host in float64; stored A is (rows_a x lda) per batch
// plus padding, so that leading dimensions and batch strides larger than needed are exercised.
struct Problem {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t pad_ld = 0, pad_stride = 0;  // extra elements per row and per batch matrix
  bool broadcast_b = false;            // B's batch stride 0: one B for every batch
  double alpha = 1.0, beta = 0.0;

  int64_t a_rows() const { return trans_a ? k : m; }
  int64_t a_cols() const { return trans_a ? m : k; }
  int64_t b_rows() const { return trans_b ? n : k; }
  int64_t b_cols() const { return trans_b ? k : n; }
  int64_t lda() const { return std::max<int64_t>(1, a_cols() + pad_ld); }
  int64_t ldb() const { return std::max<int64_t>(1, b_cols() + pad_ld); }
  int64_t ldc() const { return std::max<int64_t>(1, n + pad_ld); }
  int64_t stride_a() const { return a_rows() * lda() + pad_stride; }
  int64_t stride_b() const { return broadcast_b ? 0 : b_rows() * ldb() + pad_stride; }
  int64_t stride_c() const { return m * ldc() + pad_stride; }
  std::string str() const {
    return std::string("op(A) ") + (trans_a ? "T" : "N") + " op(B) " + (trans_b ? "T" : "N") + " m=" +
           std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
           " batch=" + std::to_string(batch) + " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
  }
};

int64_t storage_size(int64_t batch, int64_t stride, int64_t rows, int64_t ld) {
  return std::max<int64_t>(1, (batch - 1) * stride + rows * ld);
}

// Runs `p` through ctsr::gemm on `device` in `dtype` and compares with oracle::gemm.
void check_problem(const Problem& p, Device device, DType dtype, uint64_t seed, bool nan_in_c = false) {
  SCOPED_TRACE(p.str() + " " + dtype_name(dtype) + " on " + device.str());
  const int64_t a_size = storage_size(p.batch, p.stride_a(), p.a_rows(), p.lda());
  const int64_t b_size = storage_size(p.broadcast_b ? 1 : p.batch, p.stride_b(), p.b_rows(), p.ldb());
  const int64_t c_size = storage_size(p.batch, p.stride_c(), p.m, p.ldc());
  Tensor a = random_tensor({a_size}, seed, dtype), b = random_tensor({b_size}, seed + 1, dtype);
  Tensor c = random_tensor({c_size}, seed + 2, dtype);
  if (nan_in_c) {
    // beta = 0 must ignore C entirely (BLAS semantics): empty() buffers hold anything.
    for (int64_t i = 0; i < c_size; ++i) {
      if (dtype == DType::float32) c.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
      else c.data<double>()[i] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  const std::vector<double> expected =
      oracle::gemm(p.trans_a, p.trans_b, p.m, p.n, p.k, p.alpha, to_double(a).to_vector<double>(), p.lda(),
                   p.stride_a(), to_double(b).to_vector<double>(), p.ldb(), p.stride_b(), p.beta,
                   to_double(c).to_vector<double>(), p.ldc(), p.stride_c(), p.batch);
  Tensor ad = a.to(device), bd = b.to(device), cd = c.to(device);
  GemmArgs g;
  g.trans_a = p.trans_a, g.trans_b = p.trans_b;
  g.m = p.m, g.n = p.n, g.k = p.k;
  g.alpha = p.alpha, g.beta = p.beta;
  g.a = ad.raw_data(), g.lda = p.lda(), g.stride_a = p.stride_a();
  g.b = bd.raw_data(), g.ldb = p.ldb(), g.stride_b = p.stride_b();
  g.c = cd.raw_data(), g.ldc = p.ldc(), g.stride_c = p.stride_c();
  g.batch = p.batch;
  g.dtype = dtype;
  gemm(device, g);
  Stream::current(device).synchronize();
  // float32: each output is a length-k dot product of values in [-1, 1) (plus beta C): its
  // rounding error is below k 2^-24 ~ 6e-8 k; float64 to 1e-13.
  const double atol = dtype == DType::float32 ? 1e-6 * double(std::max<int64_t>(p.k, 1) + 2) : 1e-13;
  EXPECT_TENSORS_CLOSE(cd, Tensor::from_vector(expected, {c_size}), 1e-6, atol);
}

void check_all_transposes(Device device, DType dtype) {
  uint64_t seed = 1000;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Problem p;
      p.trans_a = ta, p.trans_b = tb;
      p.m = 7, p.n = 5, p.k = 3;
      check_problem(p, device, dtype, seed += 10);
      p.pad_ld = 3, p.alpha = 0.5, p.beta = -1.5;  // padded rows, alpha and beta
      check_problem(p, device, dtype, seed += 10);
      p.m = 33, p.n = 65, p.k = 129, p.pad_ld = 0, p.alpha = 1.0, p.beta = 1.0;  // past one tile
      check_problem(p, device, dtype, seed += 10);
    }
  }
}

void check_batched(Device device, DType dtype) {
  uint64_t seed = 2000;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Problem p;
      p.trans_a = ta, p.trans_b = tb;
      p.m = 6, p.n = 4, p.k = 9, p.batch = 3;
      p.pad_ld = 2, p.pad_stride = 5, p.alpha = -0.75, p.beta = 0.25;
      check_problem(p, device, dtype, seed += 10);
      p.broadcast_b = true;  // one B for all batches (stride 0)
      check_problem(p, device, dtype, seed += 10);
    }
  }
}

void check_edge_sizes(Device device, DType dtype) {
  Problem p;
  p.m = 4, p.n = 3, p.k = 0;  // k = 0: C = beta C
  p.beta = 0.5;
  check_problem(p, device, dtype, 3000);
  p.beta = 0.0;  // and C = 0, whatever it held
  check_problem(p, device, dtype, 3010, /*nan_in_c=*/true);
  p.k = 5;  // beta = 0 with k > 0 overwrites NaN too
  check_problem(p, device, dtype, 3020, /*nan_in_c=*/true);
  p.m = 1, p.n = 1, p.k = 1, p.alpha = 2.0, p.beta = 1.0;
  check_problem(p, device, dtype, 3030);
  p.m = 0;  // nothing to do: C untouched (C has one element of storage, no rows)
  check_problem(p, device, dtype, 3040);
  p.m = 3, p.batch = 0;
  check_problem(p, device, dtype, 3050);
}

void check_bad_arguments(Device device) {
  Tensor a = random_tensor({64}, 1).to(device), b = random_tensor({64}, 2).to(device), c = random_tensor({64}, 3).to(device);
  auto args = [&] {
    GemmArgs g;
    g.m = 4, g.n = 3, g.k = 2;
    g.a = a.raw_data(), g.lda = 2;
    g.b = b.raw_data(), g.ldb = 3;
    g.c = c.raw_data(), g.ldc = 3;
    return g;
  };
  GemmArgs g = args();
  g.m = -1;
  std::string m = error_message([&] { gemm(device, g); });
  EXPECT_NE(m.find("negative size m=-1"), std::string::npos) << m;

  g = args();
  g.lda = 1;
  m = error_message([&] { gemm(device, g); });
  EXPECT_NE(m.find("lda=1"), std::string::npos) << m;
  EXPECT_NE(m.find("row length 2"), std::string::npos) << m;

  g = args();
  g.trans_b = true;  // B is then n x k = 3 x 2: ldb 3 is fine, ldb 1 is not
  g.ldb = 1;
  m = error_message([&] { gemm(device, g); });
  EXPECT_NE(m.find("ldb=1"), std::string::npos) << m;
  EXPECT_NE(m.find("row length 2"), std::string::npos) << m;

  g = args();
  g.ldc = 2;
  m = error_message([&] { gemm(device, g); });
  EXPECT_NE(m.find("ldc=2"), std::string::npos) << m;
  EXPECT_NE(m.find("row length 3"), std::string::npos) << m;

  g = args();
  g.dtype = DType::int32;
  m = error_message([&] { gemm(device, g); });
  EXPECT_NE(m.find("int32 not supported"), std::string::npos) << m;

  // Sizes past int, what BLAS and cuBLAS take, are refused on every device before a buffer is
  // read (the buffers here are far too small for them).
  const int64_t past_int = int64_t(std::numeric_limits<int>::max()) + 1;
  const std::vector<std::pair<std::string, std::function<void(GemmArgs&)>>> oversized = {
      {"m", [&](GemmArgs& o) { o.m = past_int; }},
      {"n", [&](GemmArgs& o) { o.n = o.ldb = o.ldc = past_int; }},
      {"k", [&](GemmArgs& o) { o.k = o.lda = past_int; }},
      {"lda", [&](GemmArgs& o) { o.lda = past_int; }},
      {"ldb", [&](GemmArgs& o) { o.ldb = past_int; }},
      {"ldc", [&](GemmArgs& o) { o.ldc = past_int; }},
      {"batch", [&](GemmArgs& o) { o.batch = past_int; }}};
  for (const auto& [field, oversize] : oversized) {
    g = args();
    oversize(g);
    m = error_message([&] { gemm(device, g); });
    EXPECT_NE(m.find("gemm: " + field + "=2147483648 is larger than 2147483647"), std::string::npos) << m;
  }
}

TEST(Gemm, AllTransposesMatchNaiveLoopOnCpu) {
  check_all_transposes(Device::cpu(), DType::float64);
  check_all_transposes(Device::cpu(), DType::float32);
}
TEST(Gemm, BatchedStridedOnCpu) {
  check_batched(Device::cpu(), DType::float64);
  check_batched(Device::cpu(), DType::float32);
}
TEST(Gemm, EdgeSizesOnCpu) {
  check_edge_sizes(Device::cpu(), DType::float64);
  check_edge_sizes(Device::cpu(), DType::float32);
}
TEST(Gemm, RejectsBadArgumentsOnCpu) { check_bad_arguments(Device::cpu()); }

using GemmPaths = CudaPathTest;

TEST_P(GemmPaths, AllTransposesMatchNaiveLoop) {
  check_all_transposes(device(), DType::float64);
  check_all_transposes(device(), DType::float32);
}
TEST_P(GemmPaths, BatchedStrided) {
  check_batched(device(), DType::float64);
  check_batched(device(), DType::float32);
}
TEST_P(GemmPaths, EdgeSizes) {
  check_edge_sizes(device(), DType::float64);
  check_edge_sizes(device(), DType::float32);
}
TEST_P(GemmPaths, RejectsBadArguments) { check_bad_arguments(device()); }

CTSR_INSTANTIATE_CUDA_PATHS(GemmPaths);

// The advice printed when OpenBLAS falls back to generic kernels: a better core only when its
// choice predates AVX2 and the CPU can do more; a core it chose itself is never second-guessed.
TEST(Gemm, BlasCoreAdviceOnlyForGenericKernelsOnCapableCpus) {
  EXPECT_EQ(blas_core_advice("Prescott", true, true), "SkylakeX");
  EXPECT_EQ(blas_core_advice("Prescott", false, true), "Haswell");
  EXPECT_EQ(blas_core_advice("Sandybridge", false, true), "Haswell");
  EXPECT_EQ(blas_core_advice("Prescott", false, false), "");
  EXPECT_EQ(blas_core_advice("SkylakeX", true, true), "");
  EXPECT_EQ(blas_core_advice("Haswell", true, true), "");
  EXPECT_EQ(blas_core_advice("Zen", false, true), "");
  EXPECT_EQ(blas_core_advice("", true, true), "");
}

}  // namespace
}  // namespace ctsr::test
