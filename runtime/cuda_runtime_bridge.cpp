#include "runtime/cuda_runtime_bridge.h"

#include "runtime/error.h"

#if CTSR_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "runtime/cuda_check.h"
#include "runtime/stream.h"
#endif

namespace ctsr::detail {
#if CTSR_HAVE_CUDA
[[noreturn]] void throw_cuda_call_error(const char* file, int line, const char* call, const std::string& what) {
  throw_error(file, line, std::string("CUDA call failed: ") + call + " -> " + what);
}
#endif
}  // namespace ctsr::detail

namespace ctsr::bridge {

namespace {
// 13020 -> "13.2"
std::string cuda_version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }
}  // namespace

CudaDeviceCount classify_device_count(const DeviceCountAnswer& a) {
  if (a.status == kCudaSuccess) return {a.count, ""};
  if (a.status == kCudaErrorNoDevice) return {0, ""};
  // The runtime reports a missing driver as an insufficient one; cudaDriverGetVersion tells them
  // apart (0: no driver installed).
  if (a.status == kCudaErrorInsufficientDriver && a.driver_version == 0) return {0, ""};
  std::string problem = "CUDA cannot count the GPUs: cudaGetDeviceCount failed with " + a.error_name + " (" +
                        std::to_string(a.status) + "): " + a.error_text + "; ";
  if (a.status == kCudaErrorInsufficientDriver && a.driver_version > 0) {
    problem += "the NVIDIA driver supports CUDA up to " + cuda_version_text(a.driver_version) +
               ", older than the CUDA runtime " + cuda_version_text(a.runtime_version) +
               " ctsr was built with: update the driver, or build ctsr with a CUDA toolkit the driver supports";
  } else {
    problem += "check that nvidia-smi lists the GPU, CUDA_VISIBLE_DEVICES and that no CUDA stub library is on "
               "LD_LIBRARY_PATH";
  }
  return {0, problem};
}

#if CTSR_HAVE_CUDA

static_assert(kCudaSuccess == cudaSuccess && kCudaErrorInsufficientDriver == cudaErrorInsufficientDriver &&
              kCudaErrorNoDevice == cudaErrorNoDevice);

bool built_with_cuda() { return true; }

CudaDeviceCount device_count() {
  DeviceCountAnswer a;
  const cudaError_t s = cudaGetDeviceCount(&a.count);
  if (s == cudaSuccess) return classify_device_count(a);
  cudaGetLastError();  // clear the error so that later queries start clean
  a.status = s;
  a.error_name = cudaGetErrorName(s);
  a.error_text = cudaGetErrorString(s);
  if (cudaDriverGetVersion(&a.driver_version) != cudaSuccess) {
    cudaGetLastError();
    a.driver_version = -1;  // unknown: not "no driver"
  }
  a.runtime_version = CUDART_VERSION;
  return classify_device_count(a);
}

std::string device_description(int index) {
  const int n = device_count().count;  // a problem is described by the caller (cuda_device_description)
  if (n == 0) return "no CUDA device is visible (no GPU, or no driver)";
  if (index < 0 || index >= n) return "device index " + std::to_string(index) + " out of range [0, " + std::to_string(n) + ")";
  cudaDeviceProp p{};
  CTSR_CUDA_CALL(cudaGetDeviceProperties(&p, index));
  char buf[512];
  snprintf(buf, sizeof buf, "%.256s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor, p.totalGlobalMem / double(1u << 30));
  return buf;
}

void set_device(int index) { CTSR_CUDA_CALL(cudaSetDevice(index)); }

void* cuda_malloc(int device, size_t bytes) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  void* p = nullptr;
  cudaError_t s = cudaMalloc(&p, bytes);
  if (s == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  CTSR_CUDA_CALL(s);
  return p;
}

void cuda_free(int device, void* ptr) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  CTSR_CUDA_CALL(cudaFree(ptr));
}

std::pair<size_t, size_t> cuda_mem_info(int device) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  size_t free_b = 0, total_b = 0;
  CTSR_CUDA_CALL(cudaMemGetInfo(&free_b, &total_b));
  return {free_b, total_b};
}

void copy(void* dst, const void* src, size_t bytes, CopyKind kind, int device) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  auto stream = static_cast<cudaStream_t>(Stream::current(Device::cuda(device)).handle());
  cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                        : cudaMemcpyDeviceToDevice;
  CTSR_CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, k, stream));
  // A host buffer may be pageable and is read or reused by the caller right after: wait.
  if (kind != CopyKind::device_to_device) CTSR_CUDA_CALL(cudaStreamSynchronize(stream));
}

void synchronize(int device) {
  CTSR_CUDA_CALL(cudaSetDevice(device));
  CTSR_CUDA_CALL(cudaDeviceSynchronize());
}

#else

namespace {
[[noreturn]] void no_cuda(const char* what) {
  CTSR_FAIL(what, ": ctsr was built without CUDA (configure with -DCTSR_CUDA=ON on a machine with the CUDA toolkit)");
}
}  // namespace

bool built_with_cuda() { return false; }
CudaDeviceCount device_count() { return {}; }
std::string device_description(int) { return "ctsr was built without CUDA"; }
void set_device(int) { no_cuda("set_device"); }
void* cuda_malloc(int, size_t) { no_cuda("cuda_malloc"); }
void cuda_free(int, void*) { no_cuda("cuda_free"); }
std::pair<size_t, size_t> cuda_mem_info(int) { no_cuda("cuda_mem_info"); }
void copy(void*, const void*, size_t, CopyKind, int) { no_cuda("copy to or from a CUDA device"); }
void synchronize(int) { no_cuda("synchronize"); }

#endif

}  // namespace ctsr::bridge
