// The caching allocator, on a host-memory backend standing in for a GPU: size classes, reuse
// from the free lists, statistics, out-of-memory messages, and the cuda_on_cpu device's use
// of it through Tensor.
#include "runtime/allocator.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

TEST(CachingAllocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(4096), 4096u);
  EXPECT_EQ(CachingAllocator::size_class(4097), 5120u);   // 4096 + 4096/4
  EXPECT_EQ(CachingAllocator::size_class(1 << 20), size_t(1) << 20);
  EXPECT_EQ(CachingAllocator::size_class((1 << 20) + 1), (size_t(1) << 20) + (size_t(1) << 18));
  for (size_t b : {size_t(7), size_t(5000), size_t(123456789)}) {
    size_t c = CachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_LE(double(c), 1.25 * double(b) + 512) << b;  // at most 25% waste above 4 KiB
  }
}

TEST(CachingAllocator, ReusesFreedBlocksOfTheSameClass) {
  CachingAllocator a(host_raw_memory("test", [] { return size_t(0); }));
  void* p = a.allocate(1000);
  a.deallocate(p);
  void* q = a.allocate(900);  // same 1024-byte class
  EXPECT_EQ(p, q);
  AllocatorStats s = a.stats();
  EXPECT_EQ(s.backend_allocations, 1u);
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.allocated, 1024u);
  EXPECT_EQ(s.reserved, 1024u);
  void* r = a.allocate(3000);  // other class: a new block
  EXPECT_NE(r, q);
  EXPECT_EQ(a.stats().backend_allocations, 2u);
  a.deallocate(q);
  a.deallocate(r);
  s = a.stats();
  EXPECT_EQ(s.allocated, 0u);
  EXPECT_EQ(s.reserved, 1024u + 3072u);  // cached, not returned
  EXPECT_EQ(s.peak_allocated, 1024u + 3072u);
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_allocated, 0u);
  a.empty_cache();
  EXPECT_EQ(a.stats().reserved, 0u);
}

TEST(CachingAllocator, OutOfMemoryFreesCacheThenReportsRequestAndFreeBytes) {
  CachingAllocator a(host_raw_memory("fake-gpu", [] { return size_t(1) << 20; }));  // a 1 MiB "device"
  void* big = a.allocate(600 * 1024);
  a.deallocate(big);  // cached: 640 KiB of the MiB reserved
  // Another class that only fits once the cached block is given back.
  void* other = a.allocate(700 * 1024);
  EXPECT_NE(other, nullptr);
  EXPECT_EQ(a.stats().reserved, CachingAllocator::size_class(700 * 1024));
  try {
    a.allocate(512 * 1024);
    FAIL() << "expected out of memory";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("fake-gpu out of memory"), std::string::npos) << m;
    EXPECT_NE(m.find("tried to allocate 512.00 KiB"), std::string::npos) << m;
    EXPECT_NE(m.find("free of 1.00 MiB"), std::string::npos) << m;
    EXPECT_NE(m.find("ctsr holds 768.00 KiB in tensors"), std::string::npos) << m;
  }
  a.deallocate(other);
}

TEST(CachingAllocator, RejectsForeignPointers) {
  CachingAllocator a(host_raw_memory("test", [] { return size_t(0); }));
  int x = 0;
  EXPECT_THROW(a.deallocate(&x), Error);
}

// Turns the cuda_on_cpu cache on for one test (it is off in sanitizer builds).
struct CachingOn {
  bool before = cuda_on_cpu_caching();
  CachingOn() { set_cuda_on_cpu_caching(true); }
  ~CachingOn() { set_cuda_on_cpu_caching(before); }
};

TEST(CachingAllocator, TensorsOnCudaOnCpuGoThroughTheCache) {
  CachingOn caching;
  const Device d = Device::cuda_on_cpu();
  empty_cache(d);
  const AllocatorStats before = allocator_stats(d);
  {
    Tensor t = Tensor::empty({1000, 3}, DType::float32, d);
    EXPECT_EQ(allocator_stats(d).allocated, before.allocated + CachingAllocator::size_class(12000));
  }
  const AllocatorStats freed = allocator_stats(d);
  EXPECT_EQ(freed.allocated, before.allocated);
  EXPECT_GT(freed.reserved, before.reserved);  // kept in the cache
  Tensor again = Tensor::empty({3000}, DType::float32, d);
  EXPECT_EQ(allocator_stats(d).backend_allocations, freed.backend_allocations);  // served from cache
  EXPECT_EQ(reinterpret_cast<uintptr_t>(again.raw_data()) % 256, 0u);  // cudaMalloc-like alignment
}

TEST(CachingAllocator, CudaOnCpuCapacityGivesOutOfMemoryError) {
  CachingOn caching;
  const Device d = Device::cuda_on_cpu();
  set_cuda_on_cpu_capacity(size_t(64) << 20);
  try {
    Tensor t = Tensor::empty({int64_t(32) << 20}, DType::float32, d);  // 128 MiB
    set_cuda_on_cpu_capacity(0);
    FAIL() << "expected out of memory";
  } catch (const Error& e) {
    set_cuda_on_cpu_capacity(0);
    EXPECT_NE(std::string(e.what()).find("cuda_on_cpu out of memory: tried to allocate 128.00 MiB"),
              std::string::npos)
        << e.what();
  }
  Tensor ok = Tensor::empty({int64_t(32) << 20}, DType::float32, d);  // capacity lifted
  EXPECT_EQ(ok.numel(), int64_t(32) << 20);
}

TEST(CachingAllocator, UncachedCudaOnCpuCountsExactBytes) {
  const bool before = cuda_on_cpu_caching();
  set_cuda_on_cpu_caching(false);
  const Device d = Device::cuda_on_cpu();
  const size_t base = allocator_stats(d).allocated;
  {
    Tensor t = Tensor::empty({1001}, DType::float32, d);
    EXPECT_EQ(allocator_stats(d).allocated, base + 4004);
  }
  EXPECT_EQ(allocator_stats(d).allocated, base);
  set_cuda_on_cpu_caching(before);
}

}  // namespace
}  // namespace ctsr::test
