// Arithmetic rounded once per operation and never contracted into a fused multiply-add, on
// the GPU through CUDA's __*_rn intrinsics, on the host because ctsr compiles in ISO mode
// (no contraction). Code that must give the same bits on the CPU, the CUDA-on-CPU executor and
// the GPU (the RNG's transforms, the optimizer's update) is written with these.
#pragma once

#include "runtime/host_device.h"

namespace ctsr {

namespace rounded {
CTSR_HD inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CTSR_HD inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
CTSR_HD inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
CTSR_HD inline float sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}
CTSR_HD inline double mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
CTSR_HD inline double add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
CTSR_HD inline double div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
CTSR_HD inline double sqrt(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return __builtin_sqrt(a);
#endif
}
}  // namespace rounded

}  // namespace ctsr
