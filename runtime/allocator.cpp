#include "runtime/allocator.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>

#include "runtime/cuda_on_cpu/device_memory.h"
#include "runtime/cuda_runtime_bridge.h"
#include "runtime/error.h"

namespace ctsr {

std::string format_bytes(size_t b) {
  char buf[64];
  if (b >= (size_t{1} << 30)) snprintf(buf, sizeof buf, "%.2f GiB", b / double(size_t{1} << 30));
  else if (b >= (size_t{1} << 20)) snprintf(buf, sizeof buf, "%.2f MiB", b / double(size_t{1} << 20));
  else if (b >= 1024) snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 511) / 512 * 512;
  // Four classes per power of two: p, 1.25p, 1.5p, 1.75p (p = largest power of two <= bytes).
  size_t p = size_t{1} << (63 - __builtin_clzll(bytes));
  size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

CachingAllocator::CachingAllocator(RawMemory raw) : raw_(std::move(raw)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
  // Live blocks at exit belong to tensors that outlive the allocator (static tensors); the
  // process is ending, so they are left to the driver.
}

void* CachingAllocator::allocate(size_t bytes) {
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = nullptr;
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    ++stats_.cache_hits;
  } else {
    ptr = raw_.allocate(cls);
    if (!ptr) {
      // Give the cached blocks back and try once more before declaring out-of-memory.
      release_cached_locked();
      ptr = raw_.allocate(cls);
    }
    if (!ptr) {
      CTSR_FAIL(raw_.name, " out of memory: tried to allocate ", format_bytes(bytes), " (size class ",
                format_bytes(cls), "); the device has ", format_bytes(raw_.free_bytes()), " free of ",
                format_bytes(raw_.total_bytes()), "; ctsr holds ", format_bytes(stats_.allocated),
                " in tensors and ", format_bytes(stats_.reserved - stats_.allocated), " cached");
    }
    stats_.reserved += cls;
    ++stats_.backend_allocations;
  }
  live_[ptr] = {cls, bytes};
  stats_.allocated += cls;
  stats_.requested += bytes;
  if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  CTSR_CHECK(it != live_.end(), raw_.name, ": free of a pointer this allocator did not hand out");
  auto [cls, req] = it->second;
  live_.erase(it);
  stats_.allocated -= cls;
  stats_.requested -= req;
  free_[cls].push_back(ptr);
}

void CachingAllocator::release_cached_locked() {
  for (auto& [cls, blocks] : free_) {
    for (void* p : blocks) {
      raw_.release(p);
      stats_.reserved -= cls;
    }
    blocks.clear();
  }
  free_.clear();
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated = stats_.allocated;
}

namespace {
constexpr size_t kHostAlignment = 256;  // like cudaMalloc, so vectorised kernels see the same alignment
}  // namespace

RawMemory host_raw_memory(const std::string& name, std::function<size_t()> capacity) {
  struct State {
    std::mutex mutex;
    size_t used = 0;
    std::unordered_map<void*, size_t> sizes;
  };
  auto state = std::make_shared<State>();
  constexpr size_t unlimited = size_t(-1) / 2;
  RawMemory raw;
  raw.name = name;
  raw.allocate = [state, capacity](size_t bytes) -> void* {
    std::lock_guard<std::mutex> lock(state->mutex);
    size_t cap = capacity();
    if (cap && state->used + bytes > cap) return nullptr;
    void* p = std::aligned_alloc(kHostAlignment, (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
    if (!p) return nullptr;
    state->used += bytes;
    state->sizes[p] = bytes;
    return p;
  };
  raw.release = [state](void* p) {
    std::lock_guard<std::mutex> lock(state->mutex);
    auto it = state->sizes.find(p);
    if (it != state->sizes.end()) {
      state->used -= it->second;
      state->sizes.erase(it);
    }
    std::free(p);
  };
  raw.free_bytes = [state, capacity]() -> size_t {
    std::lock_guard<std::mutex> lock(state->mutex);
    size_t cap = capacity();
    return cap ? cap - std::min(cap, state->used) : unlimited;
  };
  raw.total_bytes = [capacity]() -> size_t {
    size_t cap = capacity();
    return cap ? cap : unlimited;
  };
  return raw;
}

namespace {

// Plain host memory with counters and no cache: the cpu device, and cuda_on_cpu when caching
// is off. posix_memalign keeps the exact size, so AddressSanitizer sees every overrun.
class PlainHostAllocator {
 public:
  void* allocate(size_t bytes, const char* name) {
    void* p = nullptr;
    CTSR_CHECK(posix_memalign(&p, kHostAlignment, std::max<size_t>(bytes, 1)) == 0, name,
               " out of memory: tried to allocate ", format_bytes(bytes));
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = bytes;
    stats_.allocated += bytes;
    stats_.reserved += bytes;
    stats_.requested += bytes;
    ++stats_.backend_allocations;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    return p;
  }
  bool deallocate(void* p) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = sizes_.find(p);
      if (it == sizes_.end()) return false;
      stats_.allocated -= it->second;
      stats_.reserved -= it->second;
      stats_.requested -= it->second;
      sizes_.erase(it);
    }
    std::free(p);
    return true;
  }
  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_allocated = stats_.allocated;
  }

 private:
  std::mutex mutex_;
  AllocatorStats stats_;
  std::unordered_map<void*, size_t> sizes_;
};

PlainHostAllocator& cpu_allocator() {
  static PlainHostAllocator* a = new PlainHostAllocator();  // leaked: static tensors free into it at exit
  return *a;
}

PlainHostAllocator& cuda_on_cpu_uncached_allocator() {
  static PlainHostAllocator* a = new PlainHostAllocator();
  return *a;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheByDefault = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheByDefault = false;
#else
constexpr bool kCacheByDefault = true;
#endif
#else
constexpr bool kCacheByDefault = true;
#endif

std::atomic<size_t> g_cuda_on_cpu_capacity{0};
std::atomic<bool> g_cuda_on_cpu_caching{kCacheByDefault};

CachingAllocator& cuda_on_cpu_allocator() {
  // Leaked on purpose: tensors with static lifetime may free into it during exit.
  static CachingAllocator* a =
      new CachingAllocator(host_raw_memory("cuda_on_cpu", [] { return g_cuda_on_cpu_capacity.load(); }));
  return *a;
}

// Full checks: the same caching allocator on the executor's protected range (device_memory.h),
// whatever the caching switch says (the range has no AddressSanitizer redzones to keep exact).
CachingAllocator& cuda_on_cpu_protected_allocator() {
  static CachingAllocator* a = [] {  // leaked: see cuda_on_cpu_allocator
    RawMemory raw;
    raw.name = "cuda_on_cpu";
    raw.allocate = [](size_t bytes) { return cuda_on_cpu::protected_allocate(bytes, g_cuda_on_cpu_capacity.load()); };
    raw.release = [](void* p) { cuda_on_cpu::protected_release(p); };
    raw.total_bytes = [] {
      const size_t cap = g_cuda_on_cpu_capacity.load(), range = cuda_on_cpu::protected_range_bytes();
      return cap ? std::min(cap, range) : range;
    };
    raw.free_bytes = [total = raw.total_bytes] {
      const size_t t = total(), used = cuda_on_cpu::protected_used_bytes();
      return t - std::min(t, used);
    };
    return new CachingAllocator(std::move(raw));
  }();
  return *a;
}

CachingAllocator& cuda_allocator(int index) {
  static std::mutex m;
  static std::vector<CachingAllocator*> allocators;  // leaked: see cuda_on_cpu_allocator
  std::lock_guard<std::mutex> lock(m);
  int count = cuda_device_count();
  CTSR_CHECK(index >= 0 && index < count, "cuda:", index, " requested but ", count,
             " CUDA device(s) are usable: ", cuda_device_description(index));
  if (allocators.size() < static_cast<size_t>(count)) allocators.resize(count, nullptr);
  if (!allocators[index]) {
    RawMemory raw;
    raw.name = "cuda:" + std::to_string(index);
    raw.allocate = [index](size_t bytes) { return bridge::cuda_malloc(index, bytes); };
    raw.release = [index](void* p) { bridge::cuda_free(index, p); };
    raw.free_bytes = [index]() { return bridge::cuda_mem_info(index).first; };
    raw.total_bytes = [index]() { return bridge::cuda_mem_info(index).second; };
    allocators[index] = new CachingAllocator(std::move(raw));
  }
  return *allocators[index];
}

}  // namespace

void set_cuda_on_cpu_capacity(size_t bytes) {
  g_cuda_on_cpu_capacity = bytes;
  cuda_on_cpu_allocator().empty_cache();
  cuda_on_cpu_protected_allocator().empty_cache();
}

void set_cuda_on_cpu_caching(bool on) { g_cuda_on_cpu_caching = on; }
bool cuda_on_cpu_caching() { return g_cuda_on_cpu_caching.load(); }

void* device_allocate(Device d, size_t bytes) {
  switch (d.kind) {
    case DeviceKind::cpu: return cpu_allocator().allocate(bytes, "cpu");
    case DeviceKind::cuda_on_cpu:
      if (cuda_on_cpu::device_memory_protected()) return cuda_on_cpu_protected_allocator().allocate(bytes);
      if (!g_cuda_on_cpu_caching.load()) return cuda_on_cpu_uncached_allocator().allocate(bytes, "cuda_on_cpu");
      return cuda_on_cpu_allocator().allocate(bytes);
    case DeviceKind::cuda: return cuda_allocator(d.index).allocate(bytes);
  }
  return nullptr;
}

void device_deallocate(Device d, void* p) {
  if (!p) return;
  switch (d.kind) {
    case DeviceKind::cpu: cpu_allocator().deallocate(p); return;
    case DeviceKind::cuda_on_cpu:
      // A block keeps the route it was allocated by, whatever the switches say now.
      if (cuda_on_cpu::in_protected_range(p)) cuda_on_cpu_protected_allocator().deallocate(p);
      else if (!cuda_on_cpu_uncached_allocator().deallocate(p)) cuda_on_cpu_allocator().deallocate(p);
      return;
    case DeviceKind::cuda: cuda_allocator(d.index).deallocate(p); return;
  }
}

size_t device_memory_capacity(Device d) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  const size_t ram = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : SIZE_MAX;
  switch (d.kind) {
    case DeviceKind::cpu: return ram;
    case DeviceKind::cuda_on_cpu: {
      const size_t cap = g_cuda_on_cpu_capacity.load();
      return cap ? std::min(cap, ram) : ram;
    }
    case DeviceKind::cuda: return bridge::cuda_mem_info(d.index).second;
  }
  return ram;
}

AllocatorStats allocator_stats(Device d) {
  switch (d.kind) {
    case DeviceKind::cpu: return cpu_allocator().stats();
    case DeviceKind::cuda_on_cpu:
      if (cuda_on_cpu::device_memory_protected()) return cuda_on_cpu_protected_allocator().stats();
      return g_cuda_on_cpu_caching.load() ? cuda_on_cpu_allocator().stats() : cuda_on_cpu_uncached_allocator().stats();
    case DeviceKind::cuda: return cuda_allocator(d.index).stats();
  }
  return {};
}

void reset_peak_memory(Device d) {
  switch (d.kind) {
    case DeviceKind::cpu: cpu_allocator().reset_peak(); return;
    case DeviceKind::cuda_on_cpu:
      cuda_on_cpu_allocator().reset_peak();
      cuda_on_cpu_uncached_allocator().reset_peak();
      cuda_on_cpu_protected_allocator().reset_peak();
      return;
    case DeviceKind::cuda: cuda_allocator(d.index).reset_peak(); return;
  }
}

void empty_cache(Device d) {
  if (d.kind == DeviceKind::cuda_on_cpu) {
    cuda_on_cpu_allocator().empty_cache();
    cuda_on_cpu_protected_allocator().empty_cache();
  }
  if (d.kind == DeviceKind::cuda) cuda_allocator(d.index).empty_cache();
}

}  // namespace ctsr
