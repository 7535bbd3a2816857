// The few CUDA runtime services the host-side runtime needs (memory, copies, devices,
// synchronisation), behind plain C++ declarations so that most of ctsr compiles without CUDA
// headers. Built without CUDA, every function throws a clear error, except the queries
// (device count 0).
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace ctsr::bridge {

bool built_with_cuda();
int device_count();                          // 0 on any error (no driver, no device)
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
