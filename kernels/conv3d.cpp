// Dispatch of 3D convolution to the reference, the custom CUDA kernels (GPU or CUDA-on-CPU) or
// cuDNN, with the argument checks shared by every path, and the process-wide engine setting.
#include "kernels/conv3d.h"

#include <atomic>
#include <sstream>

#include "kernels/copy.h"
#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

std::atomic<ConvEngine> g_conv_engine{ConvEngine::custom};

constexpr const char* kAxisNames[3] = {"D", "H", "W"};

std::string vec3(const std::array<int64_t, 3>& v) {
  std::ostringstream s;
  s << "[" << v[0] << ", " << v[1] << ", " << v[2] << "]";
  return s.str();
}

std::string op_name(const char* op, const char* what) { return std::string(op) + " " + what; }

}  // namespace

Conv3dParams Conv3dParams::cubic(int64_t kernel, int64_t stride, int64_t padding) {
  Conv3dParams p;
  p.kernel = {kernel, kernel, kernel};
  p.stride = {stride, stride, stride};
  p.padding = {padding, padding, padding};
  return p;
}

std::string Conv3dParams::str() const {
  return "kernel " + vec3(kernel) + " stride " + vec3(stride) + " padding " + vec3(padding);
}

std::array<int64_t, 3> conv3d_output_size(const char* op, const std::array<int64_t, 3>& in, const Conv3dParams& p) {
  std::array<int64_t, 3> out{};
  for (int a = 0; a < 3; ++a) {
    CTSR_CHECK(p.kernel[a] >= 1, op, ": kernel size ", p.kernel[a], " along ", kAxisNames[a], " must be >= 1 (",
               p.str(), ")");
    CTSR_CHECK(p.stride[a] >= 1, op, ": stride ", p.stride[a], " along ", kAxisNames[a], " must be >= 1 (", p.str(),
               ")");
    CTSR_CHECK(p.padding[a] >= 0, op, ": padding ", p.padding[a], " along ", kAxisNames[a], " must be >= 0 (",
               p.str(), ")");
    CTSR_CHECK(in[a] >= 1, op, ": input size ", in[a], " along ", kAxisNames[a], " must be >= 1");
    CTSR_CHECK(in[a] + 2 * p.padding[a] >= p.kernel[a], op, ": kernel size ", p.kernel[a], " along ", kAxisNames[a],
               " is larger than the padded input (", in[a], " + 2 * ", p.padding[a], " = ", in[a] + 2 * p.padding[a],
               ")");
    out[a] = (in[a] + 2 * p.padding[a] - p.kernel[a]) / p.stride[a] + 1;
  }
  return out;
}

void set_conv_engine(ConvEngine engine) { g_conv_engine = engine; }
ConvEngine conv_engine() { return g_conv_engine.load(); }

const char* conv_engine_name(ConvEngine engine) {
  switch (engine) {
    case ConvEngine::custom: return "custom";
    case ConvEngine::cudnn: return "cudnn";
  }
  return "?";
}

ConvEngine parse_conv_engine(const std::string& text) {
  if (text == "custom") return ConvEngine::custom;
  if (text == "cudnn") return ConvEngine::cudnn;
  CTSR_FAIL("convolution engine '", text, "' is not one of: custom, cudnn");
}

namespace kernels {

namespace {
std::atomic<Conv3dTiles> g_conv3d_tiles{Conv3dTiles::automatic};
}  // namespace

void set_conv3d_tiles(Conv3dTiles tiles) { g_conv3d_tiles = tiles; }
Conv3dTiles conv3d_tiles() { return g_conv3d_tiles.load(); }

Conv3dShape conv3d_shape(const char* op, const Shape& x_shape, const char* x_name, const Shape& w_shape,
                         const char* w_name, const Conv3dParams& params) {
  CTSR_CHECK(x_shape.ndim() == 5, op, ": ", x_name, " must be [N, D, H, W, C] (channels last), got shape ",
             x_shape.str());
  CTSR_CHECK(w_shape.ndim() == 5, op, ": ", w_name, " must be [C_out, kD, kH, kW, C_in], got shape ", w_shape.str());
  CTSR_CHECK(x_shape[4] == w_shape[4], op, ": ", x_name, " ", x_shape.str(), " has ", x_shape[4], " channels but ",
             w_name, " ", w_shape.str(), " takes ", w_shape[4], " input channels");
  CTSR_CHECK(x_shape[4] >= 1 && w_shape[0] >= 1, op, ": ", x_name, " ", x_shape.str(), " and ", w_name, " ",
             w_shape.str(), " must have at least one channel each");
  CTSR_CHECK(x_shape[0] >= 0, op, ": ", x_name, " has a negative batch size");
  for (int a = 0; a < 3; ++a) {
    CTSR_CHECK(w_shape[1 + a] == params.kernel[a], op, ": ", w_name, " ", w_shape.str(), " has kernel size ",
               w_shape[1 + a], " along ", kAxisNames[a], " but the parameters say ", params.str());
  }
  const std::array<int64_t, 3> out = conv3d_output_size(op, {x_shape[1], x_shape[2], x_shape[3]}, params);
  Conv3dShape s;
  s.n = x_shape[0], s.ci = x_shape[4], s.co = w_shape[0];
  s.d = x_shape[1], s.h = x_shape[2], s.w = x_shape[3];
  s.od = out[0], s.oh = out[1], s.ow = out[2];
  s.kd = params.kernel[0], s.kh = params.kernel[1], s.kw = params.kernel[2];
  s.sd = params.stride[0], s.sh = params.stride[1], s.sw = params.stride[2];
  s.pd = params.padding[0], s.ph = params.padding[1], s.pw = params.padding[2];
  return s;
}

namespace {

enum class Path { reference, custom, cudnn };

// The engine only chooses between implementations on a GPU; cudnn anywhere else is a mistake
// in the configuration, reported rather than silently replaced.
Path path_for(const char* op, const Tensor& t) {
  const Device device = t.device();
  if (conv_engine() == ConvEngine::cudnn) {
    CTSR_CHECK(device.kind == DeviceKind::cuda, op, ": the cudnn convolution engine runs only on a GPU, but the ",
               "tensors are on ", device.str(), " (use the custom engine there: kernels.conv: custom)");
  }
  if (device.kind == DeviceKind::cpu) return Path::reference;
  if (t.dtype() == DType::bfloat16) {
    CTSR_CHECK(conv_engine() != ConvEngine::cudnn, op, ": the cudnn engine takes float32 here; bfloat16 ",
               "convolutions run on the custom engine's tensor-core kernels (kernels.conv: custom)");
    return Path::custom;
  }
  t.check_dtype(DType::float32, op_name(op, "(CUDA paths take float32 or bfloat16)").c_str());
  return conv_engine() == ConvEngine::cudnn ? Path::cudnn : Path::custom;
}

template <class T>
const T* optional_data(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// The reference on bfloat16 operands: they are widened to float (exactly, by cast), the float
// reference runs, and a bfloat16 result is rounded to nearest (ties to even) by cast's rule.
// Other dtypes pass through.
Tensor widened(const Tensor& t) {
  return t.defined() && t.dtype() == DType::bfloat16 ? cast(t, DType::float32) : t;
}

// Runs `compute(out)` on a float stand-in for a bfloat16 `out` (its current values widened, so
// accumulating references accumulate), then rounds the result into `out`.
template <class F>
void into(Tensor& out, F&& compute) {
  if (out.dtype() != DType::bfloat16) return compute(out);
  Tensor f = widened(out);
  compute(f);
  cpu::cast_elements(f.data<float>(), out.data<bfloat16>(), out.numel());
}

}  // namespace

void conv3d_run_forward(const char* op, const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias,
                        Tensor& y) {
  if (y.numel() == 0) return;
  switch (path_for(op, x)) {
    case Path::reference:
      into(y, [&](Tensor& out) {
        const Tensor xr = widened(x), wr = widened(w);
        with_float_type(op, xr, [&](auto tag) {
          using T = decltype(tag);
          cpu::conv3d_forward<T>(s, xr.data<T>(), wr.data<T>(), optional_data<T>(bias), out.data<T>());
        });
      });
      return;
    case Path::custom: CTSR_LAUNCH(x.device(), conv3d_forward, s, x, w, bias, y); return;
    case Path::cudnn: CTSR_IF_GPU_BUILT(cudnn::conv3d_forward(s, x, w, bias, y)); return;
  }
}

void conv3d_run_backward_data(const char* op, const Conv3dShape& s, const Tensor& dy, const Tensor& w,
                              const Tensor& bias, Tensor& dx) {
  if (dx.numel() == 0) return;
  switch (path_for(op, dy)) {
    case Path::reference:
      into(dx, [&](Tensor& out) {
        const Tensor dyr = widened(dy), wr = widened(w);
        with_float_type(op, dyr, [&](auto tag) {
          using T = decltype(tag);
          cpu::conv3d_backward_data<T>(s, dyr.data<T>(), wr.data<T>(), optional_data<T>(bias), out.data<T>());
        });
      });
      return;
    case Path::custom: CTSR_LAUNCH(dy.device(), conv3d_backward_data, s, dy, w, bias, dx); return;
    case Path::cudnn: CTSR_IF_GPU_BUILT(cudnn::conv3d_backward_data(s, dy, w, bias, dx)); return;
  }
}

void conv3d_run_backward_weight(const char* op, const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw) {
  if (dy.numel() == 0 || dw.numel() == 0) return;
  switch (path_for(op, x)) {
    case Path::reference: {
      const Tensor xr = widened(x), dyr = widened(dy);
      with_float_type(op, xr, [&](auto tag) {
        using T = decltype(tag);
        cpu::conv3d_backward_weight<T>(s, xr.data<T>(), dyr.data<T>(), dw.data<T>());
      });
      return;
    }
    case Path::custom: CTSR_LAUNCH(x.device(), conv3d_backward_weight, s, x, dy, dw); return;
    case Path::cudnn: CTSR_IF_GPU_BUILT(cudnn::conv3d_backward_weight(s, x, dy, dw)); return;
  }
}

void conv3d_run_backward_bias(const char* op, const Tensor& dy, int64_t rows, int64_t channels, Tensor& db) {
  if (rows == 0 || channels == 0) return;
  switch (path_for(op, dy)) {
    case Path::reference: {
      const Tensor dyr = widened(dy);
      with_float_type(op, dyr, [&](auto tag) {
        using T = decltype(tag);
        cpu::conv3d_backward_bias<T>(rows, channels, dyr.data<T>(), db.data<T>());
      });
      return;
    }
    case Path::custom: CTSR_LAUNCH(dy.device(), conv3d_backward_bias, rows, channels, dy, db); return;
    case Path::cudnn: CTSR_IF_GPU_BUILT(cudnn::conv3d_backward_bias(rows, channels, dy, db)); return;
  }
}

}  // namespace kernels

namespace {

// An undefined gradient buffer becomes zeros; a defined one must fit, since it is added to.
// Gradients of parameters are float32 when the operands are bfloat16 (mixed precision: float
// master weights and their gradients), else of the operands' dtype.
void prepare_accumulator(const char* op, const char* name, Tensor& t, const Shape& shape, const Tensor& like) {
  const DType dtype = master_dtype(like.dtype());
  if (!t.defined()) {
    t = Tensor::zeros(shape, dtype, like.device());
    return;
  }
  const std::string what = op_name(op, name);
  t.check_shape(shape, what.c_str());
  t.check_dtype(dtype, what.c_str());
  t.check_device(like.device(), what.c_str());
}

void check_bias(const char* op, const Tensor& bias, int64_t channels, const char* owner, const Shape& owner_shape,
                DType operand_dtype) {
  if (!bias.defined()) return;
  bias.check_dtype(master_dtype(operand_dtype), op_name(op, "bias").c_str());
  CTSR_CHECK(bias.ndim() == 1 && bias.dim(0) == channels, op, ": bias ", bias.shape().str(), " must be [", channels,
             "], one value per output channel of ", owner, " ", owner_shape.str());
}

}  // namespace

Tensor conv3d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params) {
  const char* op = "conv3d_forward";
  x.check_defined("conv3d_forward x");
  weight.check_defined("conv3d_forward weight");
  check_same_device(op, {{"x", &x}, {"weight", &weight}, {"bias", &bias}});
  check_same_dtype(op, {{"x", &x}, {"weight", &weight}});
  const kernels::Conv3dShape s = kernels::conv3d_shape(op, x.shape(), "x", weight.shape(), "weight", params);
  check_bias(op, bias, s.co, "weight", weight.shape(), x.dtype());
  Tensor y = Tensor::empty(Shape{s.n, s.od, s.oh, s.ow, s.co}, x.dtype(), x.device());
  kernels::conv3d_run_forward(op, s, x, weight, bias, y);
  return y;
}

Tensor conv3d_backward_data(const Tensor& dy, const Tensor& weight, const Shape& x_shape, const Conv3dParams& params) {
  const char* op = "conv3d_backward_data";
  dy.check_defined("conv3d_backward_data dy");
  weight.check_defined("conv3d_backward_data weight");
  check_same_device(op, {{"dy", &dy}, {"weight", &weight}});
  check_same_dtype(op, {{"dy", &dy}, {"weight", &weight}});
  const kernels::Conv3dShape s = kernels::conv3d_shape(op, x_shape, "x", weight.shape(), "weight", params);
  dy.check_shape(Shape{s.n, s.od, s.oh, s.ow, s.co}, "conv3d_backward_data dy");
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  kernels::conv3d_run_backward_data(op, s, dy, weight, Tensor(), dx);
  return dx;
}

void conv3d_backward_weight(const Tensor& x, const Tensor& dy, const Conv3dParams& params, Tensor& dweight) {
  const char* op = "conv3d_backward_weight";
  x.check_defined("conv3d_backward_weight x");
  dy.check_defined("conv3d_backward_weight dy");
  check_same_device(op, {{"x", &x}, {"dy", &dy}});
  check_same_dtype(op, {{"x", &x}, {"dy", &dy}});
  CTSR_CHECK(dy.ndim() == 5, op, ": dy must be [N, Do, Ho, Wo, C_out], got shape ", dy.shape().str());
  CTSR_CHECK(x.ndim() == 5, op, ": x must be [N, D, H, W, C] (channels last), got shape ", x.shape().str());
  const Shape w_shape{dy.dim(4), params.kernel[0], params.kernel[1], params.kernel[2], x.dim(4)};
  const kernels::Conv3dShape s = kernels::conv3d_shape(op, x.shape(), "x", w_shape, "dweight", params);
  dy.check_shape(Shape{s.n, s.od, s.oh, s.ow, s.co}, "conv3d_backward_weight dy");
  prepare_accumulator(op, "dweight", dweight, w_shape, x);
  kernels::conv3d_run_backward_weight(op, s, x, dy, dweight);
}

void conv3d_backward_bias(const Tensor& dy, Tensor& dbias) {
  const char* op = "conv3d_backward_bias";
  dy.check_defined("conv3d_backward_bias dy");
  CTSR_CHECK(dy.ndim() == 5, op, ": dy must be [N, Do, Ho, Wo, C_out], got shape ", dy.shape().str());
  const int64_t channels = dy.dim(4);
  prepare_accumulator(op, "dbias", dbias, Shape{channels}, dy);
  kernels::conv3d_run_backward_bias(op, dy, channels == 0 ? 0 : dy.numel() / channels, channels, dbias);
}

}  // namespace ctsr
