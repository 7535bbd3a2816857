// Dispatch of group normalisation (and its fused SiLU form) to the reference, CUDA or
// CUDA-on-CPU path, with the argument checks shared by all paths.
#include "kernels/group_norm.h"

#include <cmath>

#include "kernels/copy.h"
#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

using kernels::GroupNormShape;

GroupNormShape group_norm_shape(const char* op, const Tensor& x, int64_t groups) {
  x.check_defined(op);
  CTSR_CHECK(x.ndim() >= 2, op, ": x must be [N, ..., C] (channels last), got shape ", x.shape().str());
  GroupNormShape shape;
  shape.n = x.dim(0);
  shape.c = x.dim(-1);
  shape.s = 1;
  for (int i = 1; i < x.ndim() - 1; ++i) shape.s *= x.dim(i);
  CTSR_CHECK(shape.c > 0 && shape.s > 0, op, ": x of shape ", x.shape().str(),
             " has no channels or no voxels to take statistics over");
  CTSR_CHECK(groups > 0 && shape.c % groups == 0, op, ": ", shape.c, " channels (x ", x.shape().str(),
             ") do not split into ", groups, " groups");
  shape.groups = groups;
  return shape;
}

void check_channel_vector(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  std::string what = std::string(op) + " " + name;
  t.check_defined(what.c_str());
  t.check_shape(Shape{x.dim(-1)}, what.c_str());
  t.check_dtype(x.dtype(), what.c_str());
  t.check_device(x.device(), what.c_str());
}

// An undefined gradient buffer becomes zeros; a defined one must fit, since it is added to.
void prepare_accumulator(const char* op, const char* name, Tensor& t, const Tensor& x) {
  if (!t.defined()) {
    t = Tensor::zeros(Shape{x.dim(-1)}, x.dtype(), x.device());
    return;
  }
  check_channel_vector(op, name, t, x);
}

GroupNormOutput forward(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                        double eps, bool silu, std::optional<DType> y_dtype) {
  const GroupNormShape shape = group_norm_shape(op, x, groups);
  check_channel_vector(op, "gamma", gamma, x);
  check_channel_vector(op, "beta", beta, x);
  CTSR_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  const DType y_type = y_dtype.value_or(x.dtype());
  CTSR_CHECK(y_type == x.dtype() || (x.dtype() == DType::float32 && y_type == DType::bfloat16), op,
             ": y_dtype ", dtype_name(y_type), " for x of dtype ", dtype_name(x.dtype()),
             "; expected x's dtype, or bfloat16 for a float32 x");
  GroupNormOutput out;
  out.y = Tensor::empty(x.shape(), y_type, x.device());
  out.mean = Tensor::empty(Shape{shape.n, groups}, x.dtype(), x.device());
  out.rstd = Tensor::empty(Shape{shape.n, groups}, x.dtype(), x.device());
  if (shape.n == 0) return out;
  if (x.device().kind == DeviceKind::cpu) {
    // A bf16 y: the float32 result, rounded by cast's rule (as the CUDA kernels store it).
    Tensor y = y_type == x.dtype() ? out.y : Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::with_float_type(op, x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::group_norm_forward<T>(shape, x.data<T>(), gamma.data<T>(), beta.data<T>(), eps, silu,
                                          y.data<T>(), out.mean.data<T>(), out.rstd.data<T>());
    });
    if (y_type != x.dtype()) out.y = cast(y, y_type);
  } else {
    CTSR_LAUNCH(x.device(), group_norm_forward, shape, x, gamma, beta, float(eps), silu, out.y, out.mean, out.rstd);
  }
  return out;
}

Tensor backward(const char* op, const Tensor& x, const Tensor& gamma, const Tensor* beta, const Tensor& mean,
                const Tensor& rstd, const Tensor& dy, int64_t groups, Tensor& dgamma, Tensor& dbeta) {
  const GroupNormShape shape = group_norm_shape(op, x, groups);
  check_channel_vector(op, "gamma", gamma, x);
  if (beta) check_channel_vector(op, "beta", *beta, x);
  const std::string op_s(op);
  for (auto [name, t] : {std::pair{"mean", &mean}, std::pair{"rstd", &rstd}}) {
    const std::string what = op_s + " " + name;
    t->check_defined(what.c_str());
    t->check_shape(Shape{shape.n, groups}, what.c_str());
    t->check_dtype(x.dtype(), what.c_str());
    t->check_device(x.device(), what.c_str());
  }
  dy.check_defined((op_s + " dy").c_str());
  dy.check_shape(x.shape(), (op_s + " dy").c_str());
  check_same_device(op, {{"x", &x}, {"dy", &dy}});
  check_same_dtype(op, {{"x", &x}, {"dy", &dy}});
  prepare_accumulator(op, "dgamma", dgamma, x);
  prepare_accumulator(op, "dbeta", dbeta, x);
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (shape.n == 0) return dx;
  const bool silu = beta != nullptr;
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::group_norm_backward<T>(shape, x.data<T>(), gamma.data<T>(), silu ? beta->data<T>() : nullptr,
                                           mean.data<T>(), rstd.data<T>(), dy.data<T>(), silu, dx.data<T>(),
                                           dgamma.data<T>(), dbeta.data<T>());
    });
  } else {
    const Tensor no_beta;
    CTSR_LAUNCH(x.device(), group_norm_backward, shape, x, gamma, silu ? *beta : no_beta, mean, rstd, dy, silu, dx,
                dgamma, dbeta);
  }
  return dx;
}

}  // namespace

GroupNormOutput group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                                   double eps, std::optional<DType> y_dtype) {
  return forward("group_norm_forward", x, gamma, beta, groups, eps, false, y_dtype);
}

GroupNormOutput group_norm_silu_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                                        double eps, std::optional<DType> y_dtype) {
  return forward("group_norm_silu_forward", x, gamma, beta, groups, eps, true, y_dtype);
}

Tensor group_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                           const Tensor& dy, int64_t groups, Tensor& dgamma, Tensor& dbeta) {
  return backward("group_norm_backward", x, gamma, nullptr, mean, rstd, dy, groups, dgamma, dbeta);
}

Tensor group_norm_silu_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                const Tensor& rstd, const Tensor& dy, int64_t groups, Tensor& dgamma, Tensor& dbeta) {
  return backward("group_norm_silu_backward", x, gamma, &beta, mean, rstd, dy, groups, dgamma, dbeta);
}

}  // namespace ctsr
