// One element's dtype conversion, the rule every path of cast (kernels/copy.h) follows, so the
// reference and the CUDA kernels agree bit for bit.
//
//   floating -> floating   round to nearest, ties to even, ONCE: float64 -> bfloat16/float16 goes
//                          through float rounded to odd, which then rounds to the 16-bit type exactly
//                          as if from the double (plain double -> float -> bf16 rounds twice and gets
//                          1 + 2^-8 + 2^-30 wrong). 16-bit -> wider is exact. NaN stays NaN (sign
//                          and top payload bits kept, quieted); overflow gives inf.
//   floating -> integer    truncation toward zero like static_cast for values in range; out of range
//                          saturates to the type's min / max and NaN gives 0 (static_cast would be
//                          undefined there; the GPU's cvt.rzi saturates the same way).
//   integer  -> floating   static_cast (round to nearest even); to bfloat16/float16 through double,
//                          which is exact for |v| <= 2^53.
//   integer  -> integer    static_cast: modular for narrowing (int32 300 -> uint8 44).
// On the GPU (nvcc device code) the 16-bit conversions use CUDA's __float2bfloat16_rn and
// __float2half_rn on the same bit layout; NaN takes the portable path so that its bits match.
#pragma once

#include <cstdint>
#include <type_traits>

#include "runtime/half.h"
#include "runtime/host_device.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace ctsr::cast_rules {

template <class T>
inline constexpr bool is_16bit_float = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;
template <class T>
inline constexpr bool is_float_or_double = std::is_same_v<T, float> || std::is_same_v<T, double>;

// double -> float rounded to odd: truncate toward zero, then set the last bit if anything was
// lost. A value rounded to odd with at least two bits to spare rounds to nearest-even in the
// narrower type exactly as the original would (float has 24 significant bits; bf16 8, half 11).
CTSR_HD inline float round_to_odd_float(double d) {
  const float nearest = static_cast<float>(d);
  const double back = static_cast<double>(nearest);
  if (back == d || d != d) return nearest;  // exact, or NaN
  uint32_t bits = float_bits(nearest);
  const bool rounded_away = d > 0 ? back > d : back < d;
  if (rounded_away) bits -= 1;  // one unit toward zero on the magnitude (inf -> max finite)
  return bits_float(bits | 1u);
}

CTSR_HD inline float widen(bfloat16 v) { return bits_float(static_cast<uint32_t>(v.bits) << 16); }

CTSR_HD inline float widen(float16 v) {
#if defined(__CUDA_ARCH__)
  const bool nan = (v.bits & 0x7c00u) == 0x7c00u && (v.bits & 0x3ffu) != 0;
  if (!nan) return __half2float(__ushort_as_half(v.bits));
#endif
  return float16::to_float(v.bits);
}

template <class To>
CTSR_HD inline To narrow(float f) {
  static_assert(is_16bit_float<To>);
#if defined(__CUDA_ARCH__)
  if (f == f) {
    if constexpr (std::is_same_v<To, bfloat16>) return bfloat16::from_bits(__bfloat16_as_ushort(__float2bfloat16_rn(f)));
    else return float16::from_bits(__half_as_ushort(__float2half_rn(f)));
  }
#endif
  return To(f);
}

// Truncation toward zero with saturation; [lo, hi) is the range that truncates into the type.
template <class I>
CTSR_HD inline I truncate_saturating(double v) {
  static_assert(std::is_same_v<I, int32_t> || std::is_same_v<I, int64_t> || std::is_same_v<I, uint8_t>);
  double lo, hi;
  I lowest, highest;
  if constexpr (std::is_same_v<I, int32_t>) {
    lo = -2147483648.0, hi = 2147483648.0, lowest = INT32_MIN, highest = INT32_MAX;
  } else if constexpr (std::is_same_v<I, int64_t>) {
    lo = -9223372036854775808.0, hi = 9223372036854775808.0, lowest = INT64_MIN, highest = INT64_MAX;
  } else {
    lo = 0.0, hi = 256.0, lowest = 0, highest = 255;
  }
  if (v != v) return I(0);
  if (v <= lo) return lowest;
  if (v >= hi) return highest;
  return static_cast<I>(v);
}

template <class To, class From>
CTSR_HD inline To cast_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_16bit_float<From>) {
    return cast_value<To>(widen(v));  // exact
  } else if constexpr (is_16bit_float<To>) {
    if constexpr (std::is_same_v<From, float>) return narrow<To>(v);
    else return narrow<To>(round_to_odd_float(static_cast<double>(v)));
  } else if constexpr (is_float_or_double<To>) {
    return static_cast<To>(v);
  } else if constexpr (is_float_or_double<From>) {
    return truncate_saturating<To>(static_cast<double>(v));
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace ctsr::cast_rules
