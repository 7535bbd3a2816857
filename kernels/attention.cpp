// Dispatch of multi-head attention to the reference, CUDA or CUDA-on-CPU path, with the
// argument checks shared by all paths.
#include "kernels/attention.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/copy.h"
#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace kernels {
double AttentionShape::scale() const { return 1.0 / std::sqrt(double(head_dim)); }
}  // namespace kernels

namespace {

using kernels::AttentionShape;

AttentionShape attention_shape(const char* op, const Tensor& qkv, int64_t heads) {
  qkv.check_defined((std::string(op) + " qkv").c_str());
  CTSR_CHECK(qkv.ndim() == 3, op, ": qkv must be [B, N, 3 * heads * head_dim] (the fused q, k, v projection), got shape ",
             qkv.shape().str());
  CTSR_CHECK(heads > 0, op, ": heads must be positive, got ", heads);
  const int64_t columns = qkv.dim(2);
  CTSR_CHECK(columns > 0 && columns % (3 * heads) == 0, op, ": qkv ", qkv.shape().str(), " has ", columns,
             " columns, which do not split into q, k and v of ", heads, " heads each (need a positive multiple of 3 * ",
             heads, " = ", 3 * heads, ")");
  AttentionShape shape;
  shape.batch = qkv.dim(0);
  shape.tokens = qkv.dim(1);
  shape.heads = heads;
  shape.head_dim = columns / (3 * heads);
  return shape;
}

// Checks a tensor that must be on qkv's device, of shape `expected` and of dtype `dtype`.
void check_companion(const char* op, const char* name, const Tensor& t, const Tensor& qkv, const Shape& expected,
                     DType dtype) {
  const std::string what = std::string(op) + " " + name;
  t.check_defined(what.c_str());
  t.check_shape(expected, what.c_str());
  t.check_dtype(dtype, what.c_str());
  t.check_device(qkv.device(), what.c_str());
}

// The reference on bf16 tensors: widened to float32 (exactly); results are rounded back by cast.
Tensor widened(const Tensor& t) { return t.dtype() == DType::bfloat16 ? cast(t, DType::float32) : t; }

}  // namespace

AttentionOutput attention_forward(const Tensor& qkv, int64_t heads) {
  const char* op = "attention_forward";
  const AttentionShape shape = attention_shape(op, qkv, heads);
  AttentionOutput out;
  out.o = Tensor::empty(Shape{shape.batch, shape.tokens, shape.channels()}, qkv.dtype(), qkv.device());
  out.lse = Tensor::empty(Shape{shape.batch, heads, shape.tokens}, master_dtype(qkv.dtype()), qkv.device());
  if (qkv.device().kind == DeviceKind::cpu && qkv.dtype() == DType::bfloat16) {
    AttentionOutput f = attention_forward(widened(qkv), heads);
    return {cast(f.o, DType::bfloat16), f.lse};
  }
  if (qkv.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, qkv, [&](auto tag) {
      using T = decltype(tag);
      if (shape.batch * shape.tokens == 0) return;
      // Long sequences in float32 through sgemm (where the loops cost seconds: the VQ-AE's middle
      // block over 4096 tokens); the rest through the reference loops, exact sums.
      if constexpr (std::is_same_v<T, float>) {
        if (shape.tokens >= kernels::cpu::kAttentionGemmTokens) {
          kernels::cpu::attention_forward_gemm(shape, qkv.data<float>(), out.o.data<float>(), out.lse.data<float>());
          return;
        }
      }
      kernels::cpu::attention_forward<T>(shape, qkv.data<T>(), out.o.data<T>(), out.lse.data<T>());
    });
  } else {
    CTSR_LAUNCH(qkv.device(), attention_forward, shape, qkv, out.o, out.lse);
  }
  return out;
}

Tensor attention_backward(const Tensor& qkv, const Tensor& o, const Tensor& lse, const Tensor& d_o, int64_t heads) {
  const char* op = "attention_backward";
  const AttentionShape shape = attention_shape(op, qkv, heads);
  const Shape rows{shape.batch, shape.tokens, shape.channels()};
  check_companion(op, "o", o, qkv, rows, qkv.dtype());
  check_companion(op, "lse", lse, qkv, Shape{shape.batch, heads, shape.tokens}, master_dtype(qkv.dtype()));
  check_companion(op, "d_o", d_o, qkv, rows, qkv.dtype());
  if (qkv.device().kind == DeviceKind::cpu && qkv.dtype() == DType::bfloat16) {
    return cast(attention_backward(widened(qkv), widened(o), lse, widened(d_o), heads), DType::bfloat16);
  }
  Tensor d_qkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (qkv.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, qkv, [&](auto tag) {
      using T = decltype(tag);
      if (shape.batch * shape.tokens > 0)
        kernels::cpu::attention_backward<T>(shape, qkv.data<T>(), o.data<T>(), lse.data<T>(), d_o.data<T>(),
                                            d_qkv.data<T>());
    });
  } else {
    CTSR_LAUNCH(qkv.device(), attention_backward, shape, qkv, o, lse, d_o, d_qkv);
  }
  return d_qkv;
}

}  // namespace ctsr
