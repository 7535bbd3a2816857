// One checking macro for every CUDA runtime, cuBLAS and cuDNN call:
//   CTSR_CUDA_CALL(cudaMemcpy(...));  CTSR_CUDA_CALL(cublasSgemm(...));
// On failure it throws ctsr::Error naming file:line, the call's text and the library's error
// string. Include only from translation units compiled against the CUDA toolkit.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#if __has_include(<cudnn.h>)
#include <cudnn.h>
#define CTSR_HAVE_CUDNN_HEADER 1
#endif

namespace ctsr::detail {

[[noreturn]] void throw_cuda_call_error(const char* file, int line, const char* call, const std::string& what);

inline void check_cuda_status(cudaError_t s, const char* file, int line, const char* call) {
  if (s != cudaSuccess) {
    throw_cuda_call_error(file, line, call, std::string(cudaGetErrorName(s)) + ": " + cudaGetErrorString(s));
  }
}

inline void check_cuda_status(cublasStatus_t s, const char* file, int line, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw_cuda_call_error(file, line, call, std::string(cublasGetStatusName(s)) + ": " + cublasGetStatusString(s));
  }
}

#ifdef CTSR_HAVE_CUDNN_HEADER
inline void check_cuda_status(cudnnStatus_t s, const char* file, int line, const char* call) {
  if (s != CUDNN_STATUS_SUCCESS) throw_cuda_call_error(file, line, call, cudnnGetErrorString(s));
}
#endif

}  // namespace ctsr::detail

#define CTSR_CUDA_CALL(call) ::ctsr::detail::check_cuda_status((call), __FILE__, __LINE__, #call)
