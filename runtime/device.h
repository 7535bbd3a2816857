// Where a tensor's memory lives and which implementation runs on it.
//   cpu          host memory; ops run the reference implementation (kernels/cpu/).
//   cuda:N       GPU N; ops run the CUDA kernels, cuBLAS and cuDNN.
//   cuda_on_cpu  host memory that plays the part of device memory; ops run the *same* CUDA kernel
//                sources, compiled for the host and run by the CUDA-on-CPU executor. It goes
//                through the caching allocator like a GPU, so the allocator is tested without one.
#pragma once

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

// Number of usable CUDA devices; 0 when ctsr was built without CUDA, when there is no driver
// or when no GPU is present. Never throws.
int cuda_device_count();
bool cuda_available();
// The CUDA device the calling thread works on, and setting it (cudaSetDevice).
void set_cuda_device(int index);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", or a sentence saying why there is none.
std::string cuda_device_description(int index = 0);

}  // namespace ctsr
