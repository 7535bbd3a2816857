// Element types of tensors and the mapping between C++ types and DType tags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/half.h"

namespace ctsr {

enum class DType : uint8_t { float32, float64, bfloat16, float16, int32, int64, uint8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_name(const std::string& name);  // "float32", "f32", ... ; throws on unknown
bool dtype_is_floating(DType t);
// Mixed precision: the dtype of the parameters, gradients and accumulations that go with operands
// of dtype t (float32 for bfloat16 and float16, t itself otherwise).
inline DType master_dtype(DType t) { return t == DType::bfloat16 || t == DType::float16 ? DType::float32 : t; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::float64; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::bfloat16; };
template <> struct dtype_of<float16> { static constexpr DType value = DType::float16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::int64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::uint8; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

// Calls f(T{}) with T the C++ type of `t`; the callable picks the types it supports.
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::float32: return f(float{});
    case DType::float64: return f(double{});
    case DType::bfloat16: return f(bfloat16{});
    case DType::float16: return f(float16{});
    case DType::int32: return f(int32_t{});
    case DType::int64: return f(int64_t{});
    case DType::uint8: return f(uint8_t{});
  }
  return f(float{});
}

}  // namespace ctsr
