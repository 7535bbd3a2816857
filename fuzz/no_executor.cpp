// Only in the libFuzzer build (fuzz/CMakeLists.txt), which leaves out the CUDA-on-CPU executor
// (runtime/cuda_on_cpu/executor.cpp: fibers, OpenMP, its own kernels). The readers make CPU tensors
// only, but runtime/cuda_on_cpu/device_memory.cpp, linked through runtime/tensor.cpp, asks the
// executor's check level; here it is the executor's default.
#include "runtime/cuda_on_cpu/executor.h"

namespace ctsr::cuda_on_cpu {

Checks checks() { return Checks::fast; }

}  // namespace ctsr::cuda_on_cpu
