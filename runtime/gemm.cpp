#include "runtime/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "runtime/cuda_on_cpu/device_memory.h"
#include "runtime/error.h"

#if CTSR_HAVE_CUDA
#include "runtime/cuda_check.h"
#include "runtime/stream.h"
#endif

namespace ctsr {

namespace {

std::atomic<bool> g_allow_tf32{false};

void check_args(const GemmArgs& g) {
  CTSR_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "gemm: negative size m=", g.m, " n=", g.n, " k=",
             g.k, " batch=", g.batch);
  const int64_t a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_cols = g.trans_b ? g.k : g.n;
  CTSR_CHECK(g.lda >= std::max<int64_t>(1, a_cols), "gemm: lda=", g.lda, " is smaller than A's row length ", a_cols);
  CTSR_CHECK(g.ldb >= std::max<int64_t>(1, b_cols), "gemm: ldb=", g.ldb, " is smaller than B's row length ", b_cols);
  CTSR_CHECK(g.ldc >= std::max<int64_t>(1, g.n), "gemm: ldc=", g.ldc, " is smaller than C's row length ", g.n);
  // cuBLAS and OpenBLAS take these as int (the batch strides are 64-bit in both routes), on every
  // device alike, so that a size the GPU would refuse is refused on the CPU too.
  const std::pair<const char*, int64_t> int_fields[] = {{"m", g.m},     {"n", g.n},     {"k", g.k},    {"lda", g.lda},
                                                        {"ldb", g.ldb}, {"ldc", g.ldc}, {"batch", g.batch}};
  for (const auto& [name, value] : int_fields)
    CTSR_CHECK(value <= std::numeric_limits<int>::max(), "gemm: ", name, "=", value, " is larger than ",
               std::numeric_limits<int>::max(), ", the largest size BLAS and cuBLAS take (int); split the GEMM");
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands and
// m with n; the transposition flags stay with their operands.
struct ColumnMajorCall {
  bool trans_first, trans_second;
  int64_t m, n, k;
  const void* first;
  int64_t ld_first, stride_first;
  const void* second;
  int64_t ld_second, stride_second;
};

ColumnMajorCall to_column_major(const GemmArgs& g) {
  return {g.trans_b, g.trans_a, g.n, g.m, g.k, g.b, g.ldb, g.stride_b, g.a, g.lda, g.stride_a};
}

template <class T>
void blas_gemm(CBLAS_ORDER order, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  auto t = [](bool x) { return x ? CblasTrans : CblasNoTrans; };
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(order, t(ta), t(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(order, t(ta), t(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// Once per process, before the first host GEMM: say so when OpenBLAS runs kernels well below what
// the CPU can do (blas_core_advice) and the user has not chosen a core.
void advise_blas_core() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
    bool avx512 = false, avx2_fma = false;
#if defined(__x86_64__)
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    const char* name = openblas_get_corename();
    const std::string chosen = name ? name : "";
    const std::string core = blas_core_advice(chosen, avx512, avx2_fma);
    if (!core.empty())
      std::fprintf(stderr,
                   "ctsr: OpenBLAS does not know this CPU and runs its generic kernels (core %s) although the CPU "
                   "has %s; start with OPENBLAS_CORETYPE=%s for its faster kernels (CPU training 1.7x faster on "
                   "Emerald Rapids: bench/RESULTS.md; scripts/main.sh and scripts/test.sh set it)\n",
                   chosen.c_str(), avx512 ? "AVX-512" : "AVX2", core.c_str());
  });
}

template <class T>
void host_gemm(const GemmArgs& g, bool column_major_route) {
  advise_blas_core();
  const T alpha = static_cast<T>(g.alpha), beta = static_cast<T>(g.beta);
  for (int64_t i = 0; i < g.batch; ++i) {
    T* c = static_cast<T*>(g.c) + i * g.stride_c;
    if (g.k == 0) {
      // BLAS leaves C untouched when k == 0 only if beta == 1; make C = beta * C explicit.
      for (int64_t r = 0; r < g.m; ++r)
        for (int64_t j = 0; j < g.n; ++j) c[r * g.ldc + j] = beta == T(0) ? T(0) : beta * c[r * g.ldc + j];
      continue;
    }
    if (column_major_route) {
      ColumnMajorCall cm = to_column_major(g);
      blas_gemm<T>(CblasColMajor, cm.trans_first, cm.trans_second, cm.m, cm.n, cm.k, alpha,
                   static_cast<const T*>(cm.first) + i * cm.stride_first, cm.ld_first,
                   static_cast<const T*>(cm.second) + i * cm.stride_second, cm.ld_second, beta, c, g.ldc);
    } else {
      blas_gemm<T>(CblasRowMajor, g.trans_a, g.trans_b, g.m, g.n, g.k, alpha,
                   static_cast<const T*>(g.a) + i * g.stride_a, g.lda, static_cast<const T*>(g.b) + i * g.stride_b,
                   g.ldb, beta, c, g.ldc);
    }
  }
}

#if CTSR_HAVE_CUDA
cublasHandle_t cublas_handle(int device) {
  thread_local std::vector<cublasHandle_t> handles;
  if (handles.size() <= static_cast<size_t>(device)) handles.resize(device + 1, nullptr);
  if (!handles[device]) {
    CTSR_CUDA_CALL(cudaSetDevice(device));
    CTSR_CUDA_CALL(cublasCreate(&handles[device]));
  }
  return handles[device];
}

void cublas_gemm(int device, const GemmArgs& g) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  cublasHandle_t h = cublas_handle(device);
  CTSR_CUDA_CALL(cublasSetStream(h, static_cast<cudaStream_t>(Stream::current(Device::cuda(device)).handle())));
  ColumnMajorCall cm = to_column_major(g);
  auto t = [](bool x) { return x ? CUBLAS_OP_T : CUBLAS_OP_N; };
  cudaDataType in_type, out_type;
  cublasComputeType_t compute;
  float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(g.beta);
  double alpha_d = g.alpha, beta_d = g.beta;
  const void *alpha = &alpha_f, *beta = &beta_f;
  switch (g.dtype) {
    case DType::float32:
      in_type = out_type = CUDA_R_32F;
      compute = allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      break;
    case DType::float64:
      in_type = out_type = CUDA_R_64F;
      compute = CUBLAS_COMPUTE_64F;
      alpha = &alpha_d;
      beta = &beta_d;
      break;
    case DType::bfloat16:
      in_type = CUDA_R_16BF;
      out_type = CUDA_R_32F;
      compute = CUBLAS_COMPUTE_32F;
      break;
    default: CTSR_FAIL("gemm on cuda: dtype ", dtype_name(g.dtype), " not supported (float32, float64, bfloat16)");
  }
  CTSR_CUDA_CALL(cublasGemmStridedBatchedEx(h, t(cm.trans_first), t(cm.trans_second), int(cm.m), int(cm.n), int(cm.k),
                                            alpha, cm.first, in_type, int(cm.ld_first), cm.stride_first, cm.second,
                                            in_type, int(cm.ld_second), cm.stride_second, beta, g.c, out_type,
                                            int(g.ldc), g.stride_c, int(g.batch), compute, CUBLAS_GEMM_DEFAULT));
}
#endif

}  // namespace

std::string blas_core_advice(std::string_view chosen_core, bool cpu_has_avx512, bool cpu_has_avx2_fma) {
  // The cores of OpenBLAS's x86_64 dynamic build whose kernels predate AVX2.
  static constexpr std::array<std::string_view, 12> pre_avx2 = {
      "Katmai", "Coppermine", "Northwood", "Prescott", "Banias",    "Atom",
      "Core2",  "Penryn",     "Dunnington", "Nehalem", "Sandybridge", "Opteron(SSE3)"};
  if (std::find(pre_avx2.begin(), pre_avx2.end(), chosen_core) == pre_avx2.end()) return "";
  if (cpu_has_avx512) return "SkylakeX";
  if (cpu_has_avx2_fma) return "Haswell";
  return "";
}

void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32.load(); }

void gemm(Device device, const GemmArgs& g) {
  check_args(g);
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (device.kind == DeviceKind::cuda) {
#if CTSR_HAVE_CUDA
    cublas_gemm(device.index, g);
    return;
#else
    CTSR_FAIL("gemm on ", device.str(), ": ctsr was built without CUDA");
#endif
  }
  const bool column_major_route = device.kind == DeviceKind::cuda_on_cpu;
  cuda_on_cpu::DeviceMemoryAccess access(column_major_route);  // cuBLAS's stand-in reads device memory
  switch (g.dtype) {
    case DType::float32: host_gemm<float>(g, column_major_route); return;
    case DType::float64: host_gemm<double>(g, column_major_route); return;
    default:
      CTSR_FAIL("gemm on ", device.str(), ": dtype ", dtype_name(g.dtype), " not supported (float32, float64)");
  }
}

}  // namespace ctsr
