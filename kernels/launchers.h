// Declaring and calling the CUDA launchers of an op family.
//
// A kernel file (kernels/<family>.cu) defines its launchers in ctsr::kernels::CTSR_KERNEL_NS,
// once per build: `cuda` (nvcc, for the GPU) and `cuda_on_cpu` (host compiler, for the
// executor). Its header declares them in both namespaces with CTSR_DECLARE_LAUNCHERS, and the
// op's dispatch code picks one with CTSR_LAUNCH by the tensors' device. A path that was not
// built (no CUDA toolkit, or CTSR_CUDA_ON_CPU=OFF) fails with a message, and its symbols are
// never referenced, so the program still links.
#pragma once

#include <string>

#include "runtime/device.h"
#include "runtime/error.h"

#define CTSR_DECLARE_LAUNCHERS(...)             \
  namespace ctsr::kernels::cuda {               \
  __VA_ARGS__                                   \
  }                                             \
  namespace ctsr::kernels::cuda_on_cpu {        \
  __VA_ARGS__                                   \
  }

namespace ctsr::kernels {
[[noreturn]] inline void path_not_built(const char* path, const char* call) {
  CTSR_FAIL(call, ": ctsr was built without ", path,
            std::string(path) == "CUDA" ? " (configure with -DCTSR_CUDA=ON on a machine with the CUDA toolkit)"
                                        : " (configure with -DCTSR_CUDA_ON_CPU=ON)");
}
}  // namespace ctsr::kernels

#if CTSR_HAVE_CUDA
#define CTSR_IF_GPU_BUILT(call) call
#else
#define CTSR_IF_GPU_BUILT(call) ::ctsr::kernels::path_not_built("CUDA", #call)
#endif
#if CTSR_HAVE_CUDA_ON_CPU
#define CTSR_IF_EXECUTOR_BUILT(call) call
#else
#define CTSR_IF_EXECUTOR_BUILT(call) ::ctsr::kernels::path_not_built("the CUDA-on-CPU executor", #call)
#endif

// Calls launcher `name` of the CUDA path that matches `device` (cuda or cuda_on_cpu).
#define CTSR_LAUNCH(device, name, ...)                                                        \
  do {                                                                                        \
    const ::ctsr::Device ctsr_launch_device_ = (device);                                      \
    if (ctsr_launch_device_.kind == ::ctsr::DeviceKind::cuda) {                               \
      CTSR_IF_GPU_BUILT(::ctsr::kernels::cuda::name(__VA_ARGS__));                            \
    } else if (ctsr_launch_device_.kind == ::ctsr::DeviceKind::cuda_on_cpu) {                 \
      CTSR_IF_EXECUTOR_BUILT(::ctsr::kernels::cuda_on_cpu::name(__VA_ARGS__));                \
    } else {                                                                                  \
      CTSR_FAIL(#name ": no CUDA launcher runs on ", ctsr_launch_device_.str());              \
    }                                                                                         \
  } while (0)
