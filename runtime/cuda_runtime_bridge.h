// The few CUDA runtime services the host-side runtime needs (memory, copies, devices,
// synchronisation), behind plain C++ declarations so that most of ctsr compiles without CUDA
// headers. Built without CUDA, every function throws a clear error, except the queries
// (device count 0, no problem).
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "runtime/device.h"

namespace ctsr::bridge {

// The cudaError_t values that decide how a failed cudaGetDeviceCount is read (checked against
// cuda_runtime_api.h where CUDA is built in).
inline constexpr int kCudaSuccess = 0;
inline constexpr int kCudaErrorInsufficientDriver = 35;
inline constexpr int kCudaErrorNoDevice = 100;

// What cudaGetDeviceCount answered, with what it takes to judge a failure.
struct DeviceCountAnswer {
  int status = kCudaSuccess;  // cudaError_t
  int count = 0;              // the count it wrote
  int driver_version = 0;     // cudaDriverGetVersion: 1000 * major + 10 * minor, 0 when no driver is installed
  int runtime_version = 0;    // the CUDA runtime ctsr was built with, same encoding
  std::string error_name, error_text;  // cudaGetErrorName and cudaGetErrorString of status
};

// The GPUs CUDA can use. No GPU (cudaErrorNoDevice) and no NVIDIA driver at all
// (cudaErrorInsufficientDriver with driver version 0) are 0 devices and no problem; any other
// failure, a driver older than the runtime included, is 0 devices and a problem that names CUDA's
// error and says what to do.
CudaDeviceCount classify_device_count(const DeviceCountAnswer& answer);

bool built_with_cuda();
CudaDeviceCount device_count();              // asks CUDA each time; never throws
std::string device_description(int index);   // name, compute capability, memory; or why none
void set_device(int index);
void* cuda_malloc(int device, size_t bytes);  // nullptr when out of memory
void cuda_free(int device, void* ptr);
std::pair<size_t, size_t> cuda_mem_info(int device);  // (free, total)
enum class CopyKind { host_to_device, device_to_host, device_to_device };
// Ordered on the device's current stream; copies to the host wait for completion.
void copy(void* dst, const void* src, size_t bytes, CopyKind kind, int device);
void synchronize(int device);

}  // namespace ctsr::bridge
