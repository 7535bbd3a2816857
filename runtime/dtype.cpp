#include "runtime/dtype.h"

#include "runtime/error.h"

namespace ctsr {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::bfloat16: return 2;
    case DType::float16: return 2;
    case DType::int32: return 4;
    case DType::int64: return 8;
    case DType::uint8: return 1;
  }
  CTSR_FAIL("unknown dtype tag ", static_cast<int>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::bfloat16: return "bfloat16";
    case DType::float16: return "float16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
  }
  return "unknown";
}

DType dtype_from_name(const std::string& n) {
  if (n == "float32" || n == "f32" || n == "F32") return DType::float32;
  if (n == "float64" || n == "f64" || n == "F64") return DType::float64;
  if (n == "bfloat16" || n == "bf16" || n == "BF16") return DType::bfloat16;
  if (n == "float16" || n == "f16" || n == "F16") return DType::float16;
  if (n == "int32" || n == "i32" || n == "I32") return DType::int32;
  if (n == "int64" || n == "i64" || n == "I64") return DType::int64;
  if (n == "uint8" || n == "u8" || n == "U8") return DType::uint8;
  CTSR_FAIL("unknown dtype '", n, "': expected one of float32, float64, bfloat16, float16, int32, int64, uint8");
}

bool dtype_is_floating(DType t) {
  return t == DType::float32 || t == DType::float64 || t == DType::bfloat16 || t == DType::float16;
}

}  // namespace ctsr
