// Calling an implementation with the C++ type of a tensor's dtype: a reference (kernels/cpu/), or
// a CUDA launcher whose kernels take float32 or bfloat16.
#pragma once

#include "runtime/tensor.h"

namespace ctsr::kernels {

// Calls f(T{}) with T = float or double for the dtype of `t`; other dtypes fail naming `op`.
template <class F>
decltype(auto) with_float_type(const char* op, const Tensor& t, F&& f) {
  switch (t.dtype()) {
    case DType::float32: return f(float{});
    case DType::float64: return f(double{});
    default: CTSR_FAIL(op, ": reference path takes float32 or float64, got ", dtype_name(t.dtype()));
  }
}

// Calls f(T{}) with T = float or bfloat16 for the dtype of `t` (a CUDA launcher's operand or
// output type); other dtypes fail naming `what`.
template <class F>
void with_operand_type(const Tensor& t, const char* what, F&& f) {
  if (t.dtype() == DType::bfloat16) f(bfloat16{});
  else t.check_dtype(DType::float32, what), f(float{});
}

}  // namespace ctsr::kernels
