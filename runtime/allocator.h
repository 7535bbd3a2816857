// Device memory. GPU memory (and the cuda_on_cpu stand-in for it) goes through a caching
// allocator: freed blocks return to a free list binned by size class and are reused by later
// requests of the same class, so a training step allocates from the driver only on its first
// iteration. Size classes: 512-byte granularity below 4 KiB, then four classes per power of
// two (at most 25% waste). Reuse is safe because all of ctsr's work on a device runs in one
// stream, in order: a block freed after a kernel was enqueued is only handed to work enqueued
// later on the same stream.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/device.h"

namespace ctsr {

struct AllocatorStats {
  size_t allocated = 0;       // bytes handed out to tensors now (size-class rounded)
  size_t reserved = 0;        // bytes obtained from the backend now (allocated + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset_peak()
  size_t requested = 0;       // bytes asked for now, before rounding
  size_t backend_allocations = 0;  // calls that went to the backend (cache misses)
  size_t cache_hits = 0;
};

// The memory a caching allocator sits on: cudaMalloc/cudaFree, or aligned host memory.
struct RawMemory {
  std::string name;                           // "cuda:0", "cuda_on_cpu"
  std::function<void*(size_t)> allocate;      // returns nullptr when out of memory
  std::function<void(void*)> release;
  std::function<size_t()> free_bytes;         // what the backend still has
  std::function<size_t()> total_bytes;
};

class CachingAllocator {
 public:
  explicit CachingAllocator(RawMemory raw);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes);  // throws ctsr::Error with the request and what is free
  void deallocate(void* ptr);
  void empty_cache();            // gives every cached block back to the backend
  AllocatorStats stats() const;
  void reset_peak();
  static size_t size_class(size_t bytes);

 private:
  RawMemory raw_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, std::pair<size_t, size_t>> live_;  // ptr -> (class size, requested)
  std::map<size_t, std::vector<void*>> free_;                   // class size -> cached blocks
  AllocatorStats stats_;
  void release_cached_locked();
};

// Host memory as a backend, used for cuda_on_cpu and for tests. `capacity` is read at every
// request (0 = unlimited), so a test can shrink the "device" to provoke out-of-memory.
RawMemory host_raw_memory(const std::string& name, std::function<size_t()> capacity);

// Allocation entry points used by Tensor.
void* device_allocate(Device device, size_t bytes);
void device_deallocate(Device device, void* ptr);
AllocatorStats allocator_stats(Device device);  // cpu: plain counters, no cache
void reset_peak_memory(Device device);
void empty_cache(Device device);
// Caps what the cuda_on_cpu "device" may hold (0 = unlimited); lets tests provoke OOM.
void set_cuda_on_cpu_capacity(size_t bytes);
// cuda_on_cpu memory through the caching allocator (default), or exact-size uncached blocks
// (default in AddressSanitizer builds, so a kernel's overrun or use after free is caught). Under
// the executor's full checks, cuda_on_cpu memory is always cached, from the protected range of
// runtime/cuda_on_cpu/device_memory.h (no AddressSanitizer redzones there).
void set_cuda_on_cpu_caching(bool on);
bool cuda_on_cpu_caching();

// The memory a device has in all: a GPU's total memory; for host memory (cpu, cuda_on_cpu) the
// machine's physical RAM (and a cuda_on_cpu capacity when one is set). For estimates checked
// before a large allocation (a model's parameters), not for accounting.
size_t device_memory_capacity(Device device);

std::string format_bytes(size_t bytes);

}  // namespace ctsr
