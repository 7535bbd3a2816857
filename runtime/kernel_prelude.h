// The first include of every kernel file (kernels/*.cu). Each kernel file is compiled twice:
//   by nvcc for the GPU           -> its launchers live in namespace ctsr::kernels::cuda
//   by the host compiler for the  -> its launchers live in namespace ctsr::kernels::cuda_on_cpu
//   CUDA-on-CPU executor             (CTSR_CUDA_ON_CPU_BUILD, no CUDA header needed)
// Kernel files wrap their code in `namespace ctsr::kernels::CTSR_KERNEL_NS` and start kernels
// with ctsr::launch_kernel, never with <<< >>>, so the same source runs on both.
#pragma once

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "runtime/cuda_check.h"
#include "runtime/kernel_name.h"
#define CTSR_KERNEL_NS cuda
#elif defined(CTSR_CUDA_ON_CPU_BUILD)
#include "runtime/cuda_on_cpu/cuda_compat.h"
// A second executor build of a kernel file (the tests' mutants, tests/CMakeLists.txt) names its
// own namespace, so that its launchers and inline helpers never meet the real ones at link time.
#if defined(CTSR_KERNEL_NS_OVERRIDE)
#define CTSR_KERNEL_NS CTSR_KERNEL_NS_OVERRIDE
#else
#define CTSR_KERNEL_NS cuda_on_cpu
#endif
#else
#error "kernel files are compiled by nvcc or with CTSR_CUDA_ON_CPU_BUILD for the CUDA-on-CPU executor"
#endif

#include <algorithm>
#include <cstdint>
#include <utility>

#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/host_device.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

// Dynamic shared memory as a typed pointer: CTSR_DYNAMIC_SHARED(float, tile);
#if defined(__CUDACC__)
#define CTSR_DYNAMIC_SHARED(type, name)                          \
  extern __shared__ __align__(16) unsigned char ctsr_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(ctsr_dynamic_smem_)
#else
#define CTSR_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::ctsr::cuda_on_cpu::dynamic_shared_memory())
#endif

// Static shared memory: CTSR_STATIC_SHARED(tile, float[32][33]); declares `tile` as
// `__shared__ float tile[32][33]` on the GPU and as the running block's copy on the executor.
// A kernel declared with __launch_bounds__(n) starts with CTSR_LAUNCH_BOUNDS_CHECK(n); so that
// the executor refuses a larger block as the GPU does (tests/check_launch_bounds.cmake pairs
// them).
#if defined(__CUDACC__)
namespace ctsr::detail {
template <class T>
using shared_type = T;
}  // namespace ctsr::detail
#define CTSR_STATIC_SHARED(name, ...) __shared__ ::ctsr::detail::shared_type<__VA_ARGS__> name
#define CTSR_LAUNCH_BOUNDS_CHECK(n) static_assert((n) > 0 && (n) <= 1024, "launch bounds")
#else
#define CTSR_STATIC_SHARED(name, ...)                        \
  static constexpr char ctsr_static_shared_key_##name = 0; \
  auto& name = ::ctsr::cuda_on_cpu::static_shared<__VA_ARGS__>(&ctsr_static_shared_key_##name, #name)
#define CTSR_LAUNCH_BOUNDS_CHECK(n) ::ctsr::cuda_on_cpu::enforce_launch_bounds(n)
#endif

// Full unrolling of a loop with a constant trip count, in both compilers' spelling.
#if defined(__CUDACC__)
#define CTSR_UNROLL _Pragma("unroll")
#else
#define CTSR_UNROLL _Pragma("GCC unroll 64")
#endif

#if defined(__CUDACC__)
// CUDA has no float overloads of atomicCAS, atomicMax and atomicMin; the executor has them
// (cuda_compat.h), so kernels may use them in both builds. CAS compares bit patterns.
__device__ inline float atomicCAS(float* address, float compare, float value) {
  return __int_as_float(atomicCAS(reinterpret_cast<int*>(address), __float_as_int(compare), __float_as_int(value)));
}
__device__ inline float ctsr_atomic_float_update(float* address, float value, bool take_max) {
  int* bits = reinterpret_cast<int*>(address);
  int old = *bits, assumed;
  do {
    assumed = old;
    const float current = __int_as_float(assumed);
    if (take_max ? !(value > current) : !(value < current)) break;
    old = atomicCAS(bits, assumed, __float_as_int(value));
  } while (assumed != old);
  return __int_as_float(old);
}
__device__ inline float atomicMax(float* address, float value) { return ctsr_atomic_float_update(address, value, true); }
__device__ inline float atomicMin(float* address, float value) { return ctsr_atomic_float_update(address, value, false); }
#endif

namespace ctsr {

#if defined(__CUDACC__)
namespace detail {
// "kernel <name>, grid (x, y, z), block (x, y, z): <CUDA's error>", the form of the executor's reports.
[[noreturn]] inline void throw_launch_error(const void* kernel, dim3 grid, dim3 block, cudaError_t status,
                                            bool synchronous) {
  CTSR_FAIL("kernel ", kernel_name(kernel), ", grid (", grid.x, ", ", grid.y, ", ", grid.z, "), block (", block.x, ", ",
            block.y, ", ", block.z, "): ", cudaGetErrorName(status), ": ", cudaGetErrorString(status),
            synchronous ? "" : " (launches are asynchronous: the fault may be an earlier kernel's; "
                               "CTSR_SYNC_LAUNCHES=1 reports it at the launch that caused it)");
}
}  // namespace detail
#endif

// Launches `kernel` over grid x block threads with `shared_bytes` of dynamic shared memory, on
// the current stream of `device` (a GPU), or on the CUDA-on-CPU executor. Arguments convert
// to the kernel's parameter types as with <<< >>>. An empty grid launches nothing. A failed launch
// names the kernel, grid and block; with CTSR_SYNC_LAUNCHES=1 (runtime/stream.h) a GPU launch also
// waits for the kernel, so that a fault inside it is reported here.
template <class... Params, class... Args>
void launch_kernel(Device device, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                   Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: argument count differs from the kernel's");
  if (uint64_t(grid.x) * grid.y * grid.z == 0) return;
#if defined(__CUDACC__)
  CTSR_CHECK(device.kind == DeviceKind::cuda, "launch_kernel: a GPU kernel was given a tensor on ", device.str());
  int current = -1;
  CTSR_CUDA_CALL(cudaGetDevice(&current));
  if (current != device.index) CTSR_CUDA_CALL(cudaSetDevice(device.index));
  if (shared_bytes > 48 * 1024) {
    CTSR_CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)));
  }
  auto stream = static_cast<cudaStream_t>(Stream::current(device).handle());
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  cudaError_t status = cudaGetLastError();
  const bool synchronous = sync_launches();
  if (status == cudaSuccess && synchronous) {
    status = cudaStreamSynchronize(stream);
    if (status == cudaSuccess) status = cudaGetLastError();
  }
  if (status != cudaSuccess) detail::throw_launch_error(reinterpret_cast<const void*>(kernel), grid, block, status, synchronous);
#else
  CTSR_CHECK(device.kind == DeviceKind::cuda_on_cpu, "launch_kernel: a CUDA-on-CPU kernel was given a tensor on ",
             device.str());
  auto call = [&] { kernel(args...); };
  cuda_on_cpu::launch(
      reinterpret_cast<const void*>(kernel), grid, block, shared_bytes, [](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call);
#endif
}

// Blocks of `threads` needed to cover n items, one item per thread.
inline unsigned blocks_for(int64_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace ctsr
