// GEMM on every device: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] for b < batch, with
// row-major matrices, leading dimensions and batch strides in elements.
//   cpu          OpenBLAS, row-major calls (an independent route, the reference).
//   cuda_on_cpu  OpenBLAS, called with exactly the column-major arguments cuBLAS gets, so the
//                row-major -> column-major mapping that the GPU uses is tested without a GPU.
//   cuda         cuBLAS (cublasGemmStridedBatchedEx) on the device's current stream.
// Types: float32 and float64 everywhere; bfloat16 inputs with float32 output on the GPU.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/device.h"
#include "runtime/dtype.h"

namespace ctsr {

struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;    // op(A) is m x k, op(B) is k x n, C is m x n
  double alpha = 1.0, beta = 0.0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  DType dtype = DType::float32;   // of A, B and C
};

void gemm(Device device, const GemmArgs& args);

// OpenBLAS picks its kernels from the CPU's model at load time and falls back to generic SSE3
// ones (core "Prescott") on models newer than it knows: Debian 12's 0.3.21 on Sapphire and Emerald
// Rapids, where its AVX-512 kernels made CPU training 1.7x faster (bench/RESULTS.md). Given the core
// OpenBLAS chose and what the CPU supports, the core to ask for with OPENBLAS_CORETYPE ("SkylakeX"
// with AVX-512, "Haswell" with AVX2 and FMA), or "" when its choice is fine. The first host GEMM
// prints this advice once to stderr when OPENBLAS_CORETYPE is unset; scripts/blas_env.sh sets the
// variable by the same rule before the scripts start any program.
std::string blas_core_advice(std::string_view chosen_core, bool cpu_has_avx512, bool cpu_has_avx2_fma);

// TF32 tensor-core math for float32 GEMMs on the GPU (off by default, like PyTorch's matmul).
void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace ctsr
