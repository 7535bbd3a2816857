// Annotations shared by host code, CUDA kernels and the CUDA-on-CPU executor.
// CTSR_HD marks functions that must compile for both host and device; on a host-only
// compiler it expands to nothing.
#pragma once

#if defined(__CUDACC__)
#define CTSR_HD __host__ __device__
#define CTSR_DEVICE_INLINE __device__ __forceinline__
#else
#define CTSR_HD
#define CTSR_DEVICE_INLINE inline
#endif
