// Executor device memory that host code cannot read (checks() == full).
//
// On a GPU, host code that dereferences a device pointer faults; on the executor "device"
// memory is host memory, so the same bug works and goes unnoticed. In full mode the executor's
// device memory therefore comes from one reserved address range (mmap PROT_NONE, MAP_NORESERVE,
// sized from physical memory) that is readable and writable only while a DeviceMemoryAccess
// scope is open somewhere in the process: kernel launches, copies, fills, and the host stand-ins
// of vendor libraries (cuBLAS's host gemm) open one. Outside every scope the range is PROT_NONE,
// and a host access faults; a SIGSEGV handler names the address and the rule, prints a
// backtrace and aborts. Faults outside the range go to the handler that was there before.
//
// The protection is process-wide: while one thread holds a scope, another thread's stray host
// access is not caught. In fast mode nothing here runs (no range, no handler, no cost).
#pragma once

#include <cstddef>

namespace ctsr::cuda_on_cpu {

// True when executor device memory is protected from host code (checks() == full); then
// Device::is_host_memory() is false for cuda_on_cpu and host code copies as it would from a GPU.
bool device_memory_protected();

// Opens the range for host reads and writes while it lives (nesting, any thread). Cheap when
// the range does not exist (fast mode, or nothing allocated in full mode yet): one locked count.
// DeviceMemoryAccess(false) opens nothing (for code that touches executor memory only sometimes).
class DeviceMemoryAccess {
 public:
  DeviceMemoryAccess() : DeviceMemoryAccess(true) {}
  explicit DeviceMemoryAccess(bool open);
  ~DeviceMemoryAccess();
  DeviceMemoryAccess(const DeviceMemoryAccess&) = delete;
  DeviceMemoryAccess& operator=(const DeviceMemoryAccess&) = delete;

 private:
  bool open_;
};

// The reserved range, created on first use (and the SIGSEGV handler with it). allocate returns
// a 256-byte aligned block of at least `bytes`, or nullptr when the range (or `capacity`, when
// non-zero) is exhausted; release gives its pages back to the system.
void* protected_allocate(size_t bytes, size_t capacity);
void protected_release(void* ptr);
size_t protected_used_bytes();
size_t protected_range_bytes();
bool in_protected_range(const void* ptr);

}  // namespace ctsr::cuda_on_cpu
