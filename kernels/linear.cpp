// Dispatch of the fully connected layer (kernels/linear.h): the GEMMs go to ctsr::gemm on the
// tensors' device, the bias add and bias-gradient sums to the reference or a CUDA path. Every
// argument is checked before anything is written, so a rejected call leaves the gradient
// accumulators untouched.
#include "kernels/linear.h"

#include <optional>
#include <string>

#include "kernels/conv3d.h"
#include "kernels/reference_dispatch.h"
#include "runtime/gemm.h"

namespace ctsr {

namespace {

struct LinearDims {
  int64_t rows = 0, in = 0, out = 0;
};

std::string name_of(const char* op, const char* tensor) { return std::string(op) + " " + tensor; }

LinearDims linear_dims(const char* op, const Tensor& x, const Tensor& weight) {
  x.check_defined(name_of(op, "x").c_str());
  weight.check_defined(name_of(op, "weight").c_str());
  CTSR_CHECK(weight.ndim() == 2, op, ": weight must be [out, in], got shape ", weight.shape().str());
  CTSR_CHECK(weight.dim(0) > 0 && weight.dim(1) > 0, op, ": weight of shape ", weight.shape().str(),
             " has no input or no output features");
  CTSR_CHECK(x.ndim() >= 1 && x.dim(-1) == weight.dim(1), op, ": x of shape ", x.shape().str(), " has ",
             x.ndim() >= 1 ? x.dim(-1) : 0, " features in its last dimension, expected ", weight.dim(1),
             " (weight ", weight.shape().str(), ")");
  check_same_device(op, {{"x", &x}, {"weight", &weight}});
  check_same_dtype(op, {{"x", &x}, {"weight", &weight}});
  if (x.dtype() == DType::bfloat16) {
    // conv3d's pointwise ops (bf16_as_conv below) on every path.
  } else if (x.device().kind == DeviceKind::cpu) {
    CTSR_CHECK(x.dtype() == DType::float32 || x.dtype() == DType::float64, op, ": x is ", dtype_name(x.dtype()),
               ", expected float32 or float64");
  } else {
    x.check_dtype(DType::float32, name_of(op, "x (CUDA paths)").c_str());
  }
  LinearDims d;
  d.in = weight.dim(1);
  d.out = weight.dim(0);
  d.rows = x.numel() / d.in;
  return d;
}

Shape with_last_dim(const Shape& s, int64_t last) {
  std::vector<int64_t> dims = s.vec();
  dims.back() = last;
  return Shape(dims);
}

// t must have `shape`, x's device and `dtype` (x's own when none is given).
void check_like(const char* op, const char* name, const Tensor& t, const Shape& shape, const Tensor& x,
                std::optional<DType> dtype = std::nullopt) {
  const std::string what = name_of(op, name);
  t.check_shape(shape, what.c_str());
  t.check_dtype(dtype.value_or(x.dtype()), what.c_str());
  t.check_device(x.device(), what.c_str());
}

// An undefined gradient buffer becomes zeros; a defined one must fit, since it is added to.
// Parameter gradients are float32 for bf16 operands (master_dtype).
void prepare_accumulator(const char* op, const char* name, Tensor& t, const Shape& shape, const Tensor& x) {
  if (!t.defined()) {
    t = Tensor::zeros(shape, master_dtype(x.dtype()), x.device());
    return;
  }
  check_like(op, name, t, shape, x, master_dtype(x.dtype()));
}

// The linear layer as conv3d's pointwise convolution over `rows` voxels (the bf16 path).
constexpr int64_t kUnit = 1;
Shape as_voxels(int64_t rows, int64_t channels) { return Shape{kUnit, rows, kUnit, kUnit, channels}; }
Shape as_pointwise_weight(const Tensor& weight) { return Shape{weight.dim(0), kUnit, kUnit, kUnit, weight.dim(1)}; }

GemmArgs gemm_args(DType dtype) {
  GemmArgs g;
  g.dtype = dtype;
  return g;
}

}  // namespace

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear_forward";
  const LinearDims d = linear_dims(op, x, weight);
  if (bias.defined()) check_like(op, "bias", bias, Shape{d.out}, x, master_dtype(x.dtype()));
  if (x.dtype() == DType::bfloat16) {
    if (d.rows == 0) return Tensor::empty(with_last_dim(x.shape(), d.out), x.dtype(), x.device());
    const Tensor y = conv3d_forward(x.reshape(as_voxels(d.rows, d.in)), weight.reshape(as_pointwise_weight(weight)),
                                    bias, Conv3dParams::cubic(1));
    return y.reshape(with_last_dim(x.shape(), d.out));
  }
  Tensor y = Tensor::empty(with_last_dim(x.shape(), d.out), x.dtype(), x.device());
  if (d.rows == 0) return y;

  // y [rows, out] = x [rows, in] * W^T
  GemmArgs g = gemm_args(x.dtype());
  g.trans_b = true;
  g.m = d.rows, g.n = d.out, g.k = d.in;
  g.a = x.raw_data(), g.lda = d.in;
  g.b = weight.raw_data(), g.ldb = d.in;
  g.c = y.raw_data(), g.ldc = d.out;
  gemm(x.device(), g);

  if (bias.defined()) {
    if (x.device().kind == DeviceKind::cpu) {
      kernels::with_float_type(op, x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::linear_bias_add<T>(bias.data<T>(), d.rows, d.out, y.data<T>());
      });
    } else {
      CTSR_LAUNCH(x.device(), linear_bias_add, bias, d.rows, y);
    }
  }
  return y;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor& dweight, Tensor* dbias) {
  const char* op = "linear_backward";
  const LinearDims d = linear_dims(op, x, weight);
  check_like(op, "dy", dy, with_last_dim(x.shape(), d.out), x);
  prepare_accumulator(op, "dweight", dweight, weight.shape(), x);
  if (dbias) prepare_accumulator(op, "dbias", *dbias, Shape{d.out}, x);
  if (x.dtype() == DType::bfloat16) {
    if (d.rows == 0) return Tensor::empty(x.shape(), x.dtype(), x.device());
    const Conv3dParams p = Conv3dParams::cubic(1);
    const Tensor x5 = x.reshape(as_voxels(d.rows, d.in)), dy5 = dy.reshape(as_voxels(d.rows, d.out));
    Tensor dw5 = dweight.reshape(as_pointwise_weight(weight));  // a view: accumulates into dweight
    conv3d_backward_weight(x5, dy5, p, dw5);
    if (dbias) conv3d_backward_bias(dy5, *dbias);
    return conv3d_backward_data(dy5, weight.reshape(as_pointwise_weight(weight)), x5.shape(), p).reshape(x.shape());
  }
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (d.rows == 0) return dx;

  // dx [rows, in] = dy [rows, out] * W [out, in]
  GemmArgs g = gemm_args(x.dtype());
  g.m = d.rows, g.n = d.in, g.k = d.out;
  g.a = dy.raw_data(), g.lda = d.out;
  g.b = weight.raw_data(), g.ldb = d.in;
  g.c = dx.raw_data(), g.ldc = d.in;
  gemm(x.device(), g);

  // dW [out, in] += dy^T [out, rows] * x [rows, in]
  GemmArgs w = gemm_args(x.dtype());
  w.trans_a = true;
  w.m = d.out, w.n = d.in, w.k = d.rows;
  w.beta = 1.0;
  w.a = dy.raw_data(), w.lda = d.out;
  w.b = x.raw_data(), w.ldb = d.in;
  w.c = dweight.raw_data(), w.ldc = d.in;
  gemm(x.device(), w);

  if (dbias) {
    if (x.device().kind == DeviceKind::cpu) {
      kernels::with_float_type(op, x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::linear_bias_grad_accumulate<T>(dy.data<T>(), d.rows, d.out, dbias->data<T>());
      });
    } else {
      CTSR_LAUNCH(x.device(), linear_bias_grad_accumulate, dy, d.rows, *dbias);
    }
  }
  return dx;
}

}  // namespace ctsr
