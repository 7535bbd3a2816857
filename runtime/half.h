// bfloat16 and IEEE half as plain 16-bit host types. Kernels on the GPU use CUDA's __nv_bfloat16
// and __half, which have the same bit layout, so buffers are shared by reinterpret_cast. The
// CUDA-on-CPU executor uses these types under CUDA's names (runtime/cuda_on_cpu/cuda_compat.h),
// so it needs no CUDA header. Conversions from float round to nearest, ties to even, like
// __float2bfloat16 and __float2half.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/host_device.h"

namespace ctsr {

CTSR_HD inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
CTSR_HD inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  CTSR_HD explicit bfloat16(float f) : bits(from_float(f)) {}
  CTSR_HD explicit bfloat16(double d) : bits(from_float(static_cast<float>(d))) {}
  CTSR_HD operator float() const { return bits_float(static_cast<uint32_t>(bits) << 16); }
  CTSR_HD static bfloat16 from_bits(uint16_t b) {
    bfloat16 r;
    r.bits = b;
    return r;
  }
  CTSR_HD static uint16_t from_float(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
  }
};

struct float16 {
  uint16_t bits = 0;
  float16() = default;
  CTSR_HD explicit float16(float f) : bits(from_float(f)) {}
  CTSR_HD explicit float16(double d) : bits(from_float(static_cast<float>(d))) {}
  CTSR_HD operator float() const { return to_float(bits); }
  CTSR_HD static float16 from_bits(uint16_t b) {
    float16 r;
    r.bits = b;
    return r;
  }
  CTSR_HD static float to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
      if (mantissa == 0) return bits_float(sign);
      // Subnormal: value = mantissa * 2^-24, exact in float.
      float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
      return sign ? -v : v;
    }
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  CTSR_HD static uint16_t from_float(float f) {
    uint32_t u = float_bits(f);
    uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (a < 0x38800000u) {
      // Result is subnormal (or zero) in half: round a * 2^24 to an integer, ties to even.
      // a < 2^-14 so the product is below 1024 and exact in float before rounding.
      float scaled = bits_float(a) * 16777216.0f;
      uint32_t q = static_cast<uint32_t>(scaled);
      float rest = scaled - static_cast<float>(q);
      if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
      return static_cast<uint16_t>(sign | q);
    }
    uint32_t rounding = 0xfffu + ((a >> 13) & 1u);
    a += rounding;
    return static_cast<uint16_t>(sign | (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu));
  }
};

}  // namespace ctsr
