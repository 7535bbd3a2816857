// CUDA's names for host compilation of kernel sources on the CUDA-on-CPU executor: execution
// space qualifiers, builtin indices, shared memory, barriers, warp intrinsics, atomics, math
// intrinsics, and the bfloat16/half types. Included (through runtime/kernel_prelude.h) only by
// kernel files compiled for the executor; it needs no CUDA header, so it works on machines
// without the toolkit.
//
// Shared memory: CTSR_STATIC_SHARED(x, T[N]) asks the executor for the block's copy of x (one
// per running block, poisoned at the block's start); dynamic shared memory likewise.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "runtime/cuda_on_cpu/executor.h"
#include "runtime/half.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// Static shared memory is declared with CTSR_STATIC_SHARED(name, type) (runtime/kernel_prelude.h),
// which the executor allocates per block, poisons and size-checks; a plain __shared__ would be
// one host thread_local shared by every block the thread runs, so it is refused.
#define __shared__ _Pragma("GCC error \"declare static shared memory with CTSR_STATIC_SHARED(name, type)\"")

using dim3 = ::ctsr::cuda_on_cpu::Dim3;
using uint3 = ::ctsr::cuda_on_cpu::Dim3;

#define threadIdx (::ctsr::cuda_on_cpu::thread_idx())
#define blockIdx (::ctsr::cuda_on_cpu::block_idx())
#define blockDim (::ctsr::cuda_on_cpu::block_dim())
#define gridDim (::ctsr::cuda_on_cpu::grid_dim())
static constexpr int warpSize = 32;

// ---- barriers and warp intrinsics -------------------------------------------------------
// Warp-synchronous calls pass their mask and their call site (file, line, column) to the
// executor: under CTSR_EXECUTOR_CHECKS=full a caller outside its mask, and lanes of one mask
// waiting at two different call sites, are reported (on a GPU they would not exchange values).
#define CTSR_WARP_SITE(op) \
  ::ctsr::cuda_on_cpu::WarpSite { op, site.file_name(), site.line(), site.column() }
using ctsr_call_site = std::source_location;

inline void __syncthreads() { ::ctsr::cuda_on_cpu::sync_threads(); }
inline int __syncthreads_count(int p) { return ::ctsr::cuda_on_cpu::sync_threads_count(p); }
inline int __syncthreads_and(int p) {
  // All live threads must hold p: compare the count with the number that arrived.
  int n = ::ctsr::cuda_on_cpu::sync_threads_count(1);
  return ::ctsr::cuda_on_cpu::sync_threads_count(p) == n;
}
inline int __syncthreads_or(int p) { return ::ctsr::cuda_on_cpu::sync_threads_count(p) > 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu, ctsr_call_site site = ctsr_call_site::current()) {
  ::ctsr::cuda_on_cpu::sync_warp(mask, CTSR_WARP_SITE("__syncwarp"));
}
[[noreturn]] inline void __trap() { ::ctsr::cuda_on_cpu::trap(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned __activemask() { return ::ctsr::cuda_on_cpu::warp_active_mask(); }
inline unsigned __ballot_sync(unsigned m, int p, ctsr_call_site site = ctsr_call_site::current()) {
  return ::ctsr::cuda_on_cpu::warp_ballot(p != 0, m, CTSR_WARP_SITE("__ballot_sync"));
}
inline int __any_sync(unsigned m, int p, ctsr_call_site site = ctsr_call_site::current()) {
  return ::ctsr::cuda_on_cpu::warp_ballot(p != 0, m, CTSR_WARP_SITE("__any_sync")) != 0;
}
inline int __all_sync(unsigned m, int p, ctsr_call_site site = ctsr_call_site::current()) {
  // Every participating lane that still runs must hold p.
  const unsigned voted = ::ctsr::cuda_on_cpu::warp_ballot(p != 0, m, CTSR_WARP_SITE("__all_sync"));
  const unsigned live = ::ctsr::cuda_on_cpu::warp_active_mask() & m;
  return (voted & live) == live;
}

namespace ctsr::cuda_on_cpu::detail {
template <class T>
T shuffle_from(T v, int src_lane, unsigned mask, WarpSite site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type wider than 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = ::ctsr::cuda_on_cpu::warp_exchange(bits, src_lane, mask, site);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
}  // namespace ctsr::cuda_on_cpu::detail

// Lane arithmetic follows CUDA: width splits the warp into segments; a source outside the
// caller's segment yields the caller's own value. Reading a lane that does not exist (past
// blockDim), has exited, or (full checks) is outside the mask yields all-one bits, where a GPU
// gives an undefined value.
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize, ctsr_call_site site = ctsr_call_site::current()) {
  int lane = static_cast<int>(::ctsr::cuda_on_cpu::lane_id());
  int base = lane / width * width;
  return ::ctsr::cuda_on_cpu::detail::shuffle_from(v, base + ((src % width) + width) % width, mask,
                                                   CTSR_WARP_SITE("__shfl_sync"));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                 ctsr_call_site site = ctsr_call_site::current()) {
  int lane = static_cast<int>(::ctsr::cuda_on_cpu::lane_id());
  int src = (lane % width) >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return ::ctsr::cuda_on_cpu::detail::shuffle_from(v, src, mask, CTSR_WARP_SITE("__shfl_up_sync"));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                   ctsr_call_site site = ctsr_call_site::current()) {
  int lane = static_cast<int>(::ctsr::cuda_on_cpu::lane_id());
  int src = (lane % width) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return ::ctsr::cuda_on_cpu::detail::shuffle_from(v, src, mask, CTSR_WARP_SITE("__shfl_down_sync"));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                  ctsr_call_site site = ctsr_call_site::current()) {
  int lane = static_cast<int>(::ctsr::cuda_on_cpu::lane_id());
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;
  return ::ctsr::cuda_on_cpu::detail::shuffle_from(v, src, mask, CTSR_WARP_SITE("__shfl_xor_sync"));
}

// ---- atomics: blocks run on several host threads, so these are real atomics -------------
template <class T>
T ctsr_atomic_fetch_add(T* address, T v) {
  return std::atomic_ref<T>(*address).fetch_add(v, std::memory_order_relaxed);
}
inline float atomicAdd(float* a, float v) { return ctsr_atomic_fetch_add(a, v); }
inline double atomicAdd(double* a, double v) { return ctsr_atomic_fetch_add(a, v); }
inline int atomicAdd(int* a, int v) { return ctsr_atomic_fetch_add(a, v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return ctsr_atomic_fetch_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return ctsr_atomic_fetch_add(a, v); }
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v, std::memory_order_relaxed); }
inline unsigned atomicSub(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_sub(v, std::memory_order_relaxed);
}
template <class T>
T atomicExch(T* a, T v) {
  return std::atomic_ref<T>(*a).exchange(v, std::memory_order_relaxed);
}
template <class T>
T atomicCAS(T* a, T compare, T v) {
  // CUDA compares bit patterns, so the float overload treats -0.0 and 0.0 as different.
  static_assert(std::is_integral_v<T> || std::is_floating_point_v<T>);
  if constexpr (std::is_floating_point_v<T>) {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U c, n;
    std::memcpy(&c, &compare, sizeof c);
    std::memcpy(&n, &v, sizeof n);
    std::atomic_ref<U>(*reinterpret_cast<U*>(a)).compare_exchange_strong(c, n, std::memory_order_relaxed);
    T r;
    std::memcpy(&r, &c, sizeof r);
    return r;
  } else {
    std::atomic_ref<T>(*a).compare_exchange_strong(compare, v, std::memory_order_relaxed);
    return compare;
  }
}
template <class T>
T ctsr_atomic_update(T* a, T v, bool take_max) {
  std::atomic_ref<T> ref(*a);
  T old = ref.load(std::memory_order_relaxed);
  while ((take_max ? v > old : v < old) && !ref.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
inline int atomicMax(int* a, int v) { return ctsr_atomic_update(a, v, true); }
inline unsigned atomicMax(unsigned* a, unsigned v) { return ctsr_atomic_update(a, v, true); }
inline float atomicMax(float* a, float v) { return ctsr_atomic_update(a, v, true); }
inline int atomicMin(int* a, int v) { return ctsr_atomic_update(a, v, false); }
inline unsigned atomicMin(unsigned* a, unsigned v) { return ctsr_atomic_update(a, v, false); }
inline float atomicMin(float* a, float v) { return ctsr_atomic_update(a, v, false); }

// ---- loads and math intrinsics ------------------------------------------------------------
template <class T>
inline T __ldg(const T* p) { return *p; }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline void sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline void sincos(double x, double* s, double* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// CUDA declares min/max for arithmetic types in the global namespace.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- vector types: CUDA's alignment, so that a vector access from an offset pointer is
// misaligned here as on a GPU (reported under full checks in ctsr_tests_checked). may_alias:
// kernels read float arrays through float4 pointers, which ISO C++ aliasing rules would let the
// host compiler reorder ------------------------------------------------------------------------
struct __attribute__((may_alias, aligned(8))) float2 { float x, y; };
struct __attribute__((may_alias, aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((may_alias, aligned(8))) int2 { int x, y; };
struct __attribute__((may_alias, aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((may_alias, aligned(16))) double2 { double x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// ---- 16-bit floating types under CUDA's names ---------------------------------------------
using __nv_bfloat16 = ::ctsr::bfloat16;
using __half = ::ctsr::float16;
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return static_cast<float>(b); }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return static_cast<float>(h); }
