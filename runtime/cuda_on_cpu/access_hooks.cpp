// The receiving end of the memory-access instrumentation of ctsr_tests_checked's executor
// kernels. Those kernel objects are compiled with the compiler's ThreadSanitizer
// instrumentation (CMake: ctsr_access_instrumentation), which calls __tsan_readN / __tsan_writeN
// before each load and store and __tsan_atomicN_* for each atomic operation. ThreadSanitizer's
// own runtime is not linked: these definitions forward each access to the executor's checks
// (cuda_on_cpu::check_access) and perform the atomics. Linked only into ctsr_tests_checked.
#include <cstddef>
#include <cstdint>

#include "runtime/cuda_on_cpu/executor.h"

namespace {

using ctsr::cuda_on_cpu::Access;

// Each hook passes its return address: the instruction of the kernel that made the access.
#define on_access(p, size, kind, maybe_unaligned) \
  ::ctsr::cuda_on_cpu::check_access(p, size, kind, maybe_unaligned, __builtin_return_address(0))

// The instrumentation passes C++ memory orders as 0..5 (relaxed .. seq_cst), as __ATOMIC_*.
constexpr int order(int mo) { return mo; }

// Tells the executor, at start-up, that this binary's kernels report their accesses.
const bool g_registered = (ctsr::cuda_on_cpu::set_access_checks_available(), true);

}  // namespace

extern "C" {

void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}

#define CTSR_ACCESS_HOOKS(n)                                                                    \
  __attribute__((noinline)) void __tsan_read##n(void* p) { on_access(p, n, Access::read, false); }   \
  __attribute__((noinline)) void __tsan_write##n(void* p) { on_access(p, n, Access::write, false); } \
  __attribute__((noinline)) void __tsan_unaligned_read##n(void* p) { on_access(p, n, Access::read, true); } \
  __attribute__((noinline)) void __tsan_unaligned_write##n(void* p) { on_access(p, n, Access::write, true); }
CTSR_ACCESS_HOOKS(1)
CTSR_ACCESS_HOOKS(2)
CTSR_ACCESS_HOOKS(4)
CTSR_ACCESS_HOOKS(8)
CTSR_ACCESS_HOOKS(16)
#undef CTSR_ACCESS_HOOKS

void __tsan_read_range(void* p, size_t n) { on_access(p, static_cast<unsigned>(n), Access::read, true); }
void __tsan_write_range(void* p, size_t n) { on_access(p, static_cast<unsigned>(n), Access::write, true); }
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}

void __tsan_atomic_thread_fence(int mo) { __atomic_thread_fence(order(mo)); }
void __tsan_atomic_signal_fence(int mo) { __atomic_signal_fence(order(mo)); }

// Atomics of 1, 2, 4 and 8 bytes: checked as atomic accesses, then performed.
#define CTSR_ATOMIC_HOOKS(bits, T)                                                                      \
  T __tsan_atomic##bits##_load(const volatile T* a, int mo) {                                           \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_load_n(a, order(mo));                                                               \
  }                                                                                                     \
  void __tsan_atomic##bits##_store(volatile T* a, T v, int mo) {                                        \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    __atomic_store_n(a, v, order(mo));                                                                  \
  }                                                                                                     \
  T __tsan_atomic##bits##_exchange(volatile T* a, T v, int mo) {                                        \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_exchange_n(a, v, order(mo));                                                        \
  }                                                                                                     \
  T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int mo) {                                       \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_fetch_add(a, v, order(mo));                                                         \
  }                                                                                                     \
  T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int mo) {                                       \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_fetch_sub(a, v, order(mo));                                                         \
  }                                                                                                     \
  T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int mo) {                                       \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_fetch_and(a, v, order(mo));                                                         \
  }                                                                                                     \
  T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int mo) {                                        \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_fetch_or(a, v, order(mo));                                                          \
  }                                                                                                     \
  T __tsan_atomic##bits##_fetch_xor(volatile T* a, T v, int mo) {                                       \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_fetch_xor(a, v, order(mo));                                                         \
  }                                                                                                     \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* c, T v, int mo, int fmo) {        \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_compare_exchange_n(a, c, v, false, order(mo), order(fmo));                          \
  }                                                                                                     \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* c, T v, int mo, int fmo) {          \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    return __atomic_compare_exchange_n(a, c, v, true, order(mo), order(fmo));                           \
  }                                                                                                     \
  T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int mo, int fmo) {              \
    on_access(const_cast<const T*>(a), sizeof(T), Access::atomic, false);                               \
    __atomic_compare_exchange_n(a, &c, v, false, order(mo), order(fmo));                                \
    return c;                                                                                           \
  }
CTSR_ATOMIC_HOOKS(8, uint8_t)
CTSR_ATOMIC_HOOKS(16, uint16_t)
CTSR_ATOMIC_HOOKS(32, uint32_t)
CTSR_ATOMIC_HOOKS(64, uint64_t)
#undef CTSR_ATOMIC_HOOKS

}  // extern "C"
