// Calling a reference implementation (kernels/cpu/) with the C++ type of a tensor's dtype.
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

}  // namespace ctsr::kernels
