// Where a tensor's memory lives and which implementation runs on it.
//   cpu          host memory; ops run the reference implementation (kernels/cpu/).
//   cuda:N       GPU N; ops run the CUDA kernels, cuBLAS and cuDNN.
//   cuda_on_cpu  host memory that plays the part of device memory; ops run the *same* CUDA kernel
//                sources, compiled for the host and run by the CUDA-on-CPU executor. It goes
//                through the caching allocator like a GPU, so the allocator is tested without one.
#pragma once

#include <optional>
#include <string>

namespace ctsr {

namespace cuda_on_cpu {
bool device_memory_protected();  // runtime/cuda_on_cpu/device_memory.h
}

enum class DeviceKind : unsigned char { cpu, cuda, cuda_on_cpu };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  static Device cuda_on_cpu() { return {DeviceKind::cuda_on_cpu, 0}; }
  // "cpu", "cuda", "cuda:1", "cuda_on_cpu"; throws naming the text otherwise.
  static Device parse(const std::string& text);

  // Whether host code may read and write this device's memory directly. cuda_on_cpu memory is
  // host memory, but with the executor's full checks it is protected from host code and this is
  // false: host code then copies, as it must for a GPU.
  bool is_host_memory() const {
    return kind == DeviceKind::cpu || (kind == DeviceKind::cuda_on_cpu && !cuda_on_cpu::device_memory_protected());
  }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

// What CUDA says about its devices: how many, or why it could not say.
struct CudaDeviceCount {
  int count = 0;
  // Empty when CUDA answered (any number of GPUs, no GPU, no NVIDIA driver at all, or ctsr built
  // without CUDA); otherwise CUDA's error name and text and what to do, e.g. for a driver older than
  // the CUDA runtime ctsr was built with.
  std::string problem;
};

// Number of usable CUDA devices; 0 when ctsr was built without CUDA, when there is no driver,
// when no GPU is present, and when CUDA failed to answer (cuda_problem() then says why). Asked
// once per process. Never throws.
int cuda_device_count();
bool cuda_available();
// Why CUDA could not count its devices, or "" (see CudaDeviceCount::problem). Never throws.
std::string cuda_problem();
// For tests: answer the queries above with `fake` instead of CUDA's answer; std::nullopt goes back
// to CUDA's. Not for use while other threads query.
void set_cuda_device_count_for_testing(std::optional<CudaDeviceCount> fake);
// The CUDA device the calling thread works on, and setting it (cudaSetDevice).
void set_cuda_device(int index);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", or a sentence saying why there is none.
std::string cuda_device_description(int index = 0);

}  // namespace ctsr
