#include "model/layers.h"

#include <cmath>
#include <limits>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/binary.h"
#include "kernels/conv_transpose3d.h"
#include "kernels/copy.h"
#include "kernels/dropout.h"
#include "kernels/group_norm.h"
#include "kernels/linear.h"
#include "kernels/resample.h"

namespace ctsr {

Tensor as_dtype(const Tensor& t, DType d) { return t.dtype() == d ? t : cast(t, d); }

namespace {

// The layer's operand dtype for an input of dtype `given`: bfloat16 in mixed precision, else the
// input's own (so a dtype that does not match the parameters still meets the op's error).
Tensor operand(const Tensor& t, bool bf16) { return bf16 ? as_dtype(t, DType::bfloat16) : t; }
Tensor returned(const Tensor& t, bool bf16, DType given) { return bf16 ? as_dtype(t, given) : t; }

bool checked_bf16(const LayerOptions& o) {
  CTSR_CHECK(o.compute == DType::float32 || o.compute == DType::bfloat16, "layer compute dtype ",
             dtype_name(o.compute), ": expected float32 or bfloat16");
  CTSR_CHECK(o.compute == DType::float32 || o.dtype == DType::float32, "bfloat16 compute needs float32 parameters, ",
             "not ", dtype_name(o.dtype));
  return o.compute == DType::bfloat16;
}

Tensor take(Tensor& saved, const char* layer) {
  CTSR_CHECK(saved.defined(), layer, ".backward called without a forward (or twice after one forward)");
  Tensor t = saved;
  saved = Tensor();
  return t;
}

// Keeps `value` for backward unless gradients are off (NoGradGuard).
void save(Tensor& slot, const Tensor& value) {
  if (grad_enabled()) slot = value;
}
}  // namespace

// ---- SiLU ----------------------------------------------------------------------------------------

Tensor SiLU::forward(const Tensor& x) {
  save(x_, x);
  return silu_forward(x);
}

Tensor SiLU::backward(const Tensor& dy) { return silu_backward(take(x_, "SiLU"), dy); }

// ---- ReLU ----------------------------------------------------------------------------------------

constexpr double kReluUpper = std::numeric_limits<double>::infinity();

Tensor ReLU::forward(const Tensor& x) {
  save(x_, x);
  return clamp(x, 0.0, kReluUpper);
}

Tensor ReLU::backward(const Tensor& dy) { return clamp_backward(take(x_, "ReLU"), dy, 0.0, kReluUpper); }

// ---- GroupNorm -----------------------------------------------------------------------------------

GroupNorm::GroupNorm(int64_t channels, int64_t groups, double eps, bool fused_silu, const LayerOptions& o)
    : weight(make_parameter("weight", {channels}, o.dtype, o.device)),
      bias(make_parameter("bias", {channels}, o.dtype, o.device)),
      channels_(channels),
      groups_(groups),
      eps_(eps),
      fused_silu_(fused_silu),
      bf16_(checked_bf16(o)) {
  CTSR_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: ", channels, " channels do not split into ", groups,
             " groups");
  init_constant(weight, 1.0);
}

void GroupNorm::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  weight.name = prefix + "weight";
  bias.name = prefix + "bias";
  out.push_back(&weight);
  out.push_back(&bias);
}

Tensor GroupNorm::forward(const Tensor& x) {
  CTSR_CHECK(x.ndim() >= 2 && x.dim(-1) == channels_, "GroupNorm(", channels_, "): input ", x.shape().str(),
             " has ", x.ndim() >= 1 ? x.dim(-1) : 0, " channels in its last dimension");
  const std::optional<DType> y_dtype = bf16_ ? std::optional(DType::bfloat16) : std::nullopt;
  GroupNormOutput out = fused_silu_ ? group_norm_silu_forward(x, weight.value, bias.value, groups_, eps_, y_dtype)
                                    : group_norm_forward(x, weight.value, bias.value, groups_, eps_, y_dtype);
  save(x_, x);
  save(mean_, out.mean);
  save(rstd_, out.rstd);
  return out.y;
}

Tensor GroupNorm::backward(const Tensor& dy) {
  Tensor x = take(x_, "GroupNorm"), mean = take(mean_, "GroupNorm"), rstd = take(rstd_, "GroupNorm");
  return fused_silu_ ? group_norm_silu_backward(x, weight.value, bias.value, mean, rstd, dy, groups_, weight.grad,
                                                bias.grad)
                     : group_norm_backward(x, weight.value, mean, rstd, dy, groups_, weight.grad, bias.grad);
}

// ---- Dropout -------------------------------------------------------------------------------------

Tensor Dropout::forward(const Tensor& x) {
  applied_ = training_ && p_ > 0.0;
  return applied_ ? dropout_forward(x, p_, seed_, offset_, element_base_) : x;
}

Tensor Dropout::backward(const Tensor& dy) {
  return applied_ ? dropout_backward(dy, p_, seed_, offset_, element_base_) : dy;
}

namespace {
void collect_weight_bias(const std::string& prefix, Parameter& weight, Parameter& bias, std::vector<Parameter*>& out) {
  weight.name = prefix + "weight";
  out.push_back(&weight);
  if (bias.value.defined()) {
    bias.name = prefix + "bias";
    out.push_back(&bias);
  }
}

// PyTorch's default initialisation of conv and linear layers: U(+-1/sqrt(fan_in)).
void init_default(Parameter& weight, Parameter& bias, int64_t fan_in, const LayerOptions& o) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  init_uniform(weight, bound, o.seed, 2 * o.stream);
  if (bias.value.defined()) init_uniform(bias, bound, o.seed, 2 * o.stream + 1);
}

Parameter optional_bias(bool with_bias, int64_t n, const LayerOptions& o) {
  if (with_bias) return Module::make_parameter("bias", {n}, o.dtype, o.device);
  return Parameter{"bias", Tensor(), Tensor()};
}
}  // namespace

// ---- Linear --------------------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool with_bias, const LayerOptions& o)
    : weight(make_parameter("weight", {out, in}, o.dtype, o.device)),
      bias(optional_bias(with_bias, out, o)),
      bf16_(checked_bf16(o)) {
  init_default(weight, bias, in, o);
}

void Linear::zero_init() {
  init_constant(weight, 0.0);
  if (bias.value.defined()) init_constant(bias, 0.0);
}

void Linear::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_weight_bias(prefix, weight, bias, out);
}

Tensor Linear::forward(const Tensor& x) {
  const Tensor xc = operand(x, bf16_);
  save(x_, xc);
  return returned(linear_forward(xc, operand(weight.value, bf16_), bias.value), bf16_, x.dtype());
}

Tensor Linear::backward(const Tensor& dy) {
  Tensor x = take(x_, "Linear");
  const Tensor dx = linear_backward(x, operand(weight.value, bf16_), operand(dy, bf16_), weight.grad,
                                    bias.value.defined() ? &bias.grad : nullptr);
  return returned(dx, bf16_, dy.dtype());
}

// ---- Conv3d --------------------------------------------------------------------------------------

Conv3d::Conv3d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool with_bias,
               const LayerOptions& o)
    : Conv3d(in, out, Conv3dParams::cubic(kernel, stride, padding), with_bias, o) {}

Conv3d::Conv3d(int64_t in, int64_t out, const Conv3dParams& params, bool with_bias, const LayerOptions& o)
    : weight(make_parameter("weight", {out, params.kernel[0], params.kernel[1], params.kernel[2], in}, o.dtype,
                            o.device)),
      bias(optional_bias(with_bias, out, o)),
      params_(params),
      bf16_(checked_bf16(o)) {
  init_default(weight, bias, in * params.kernel[0] * params.kernel[1] * params.kernel[2], o);
}

void Conv3d::zero_init() {
  init_constant(weight, 0.0);
  if (bias.value.defined()) init_constant(bias, 0.0);
}

void Conv3d::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_weight_bias(prefix, weight, bias, out);
}

Tensor Conv3d::forward(const Tensor& x) {
  const Tensor xc = operand(x, bf16_);
  save(x_, xc);
  return returned(conv3d_forward(xc, operand(weight.value, bf16_), bias.value, params_), bf16_, x.dtype());
}

Tensor Conv3d::backward(const Tensor& dy, bool input_grad) {
  Tensor x = take(x_, "Conv3d");
  const Tensor dyc = operand(dy, bf16_);
  conv3d_backward_weight(x, dyc, params_, weight.grad);
  if (bias.value.defined()) conv3d_backward_bias(dy, bias.grad);  // from the gradient as given
  if (!input_grad) return Tensor();
  return returned(conv3d_backward_data(dyc, operand(weight.value, bf16_), x.shape(), params_), bf16_, dy.dtype());
}

// ---- ConvTranspose3d -----------------------------------------------------------------------------

ConvTranspose3d::ConvTranspose3d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                                 bool with_bias, const LayerOptions& o)
    : ConvTranspose3d(in, out, Conv3dParams::cubic(kernel, stride, padding), with_bias, o) {}

ConvTranspose3d::ConvTranspose3d(int64_t in, int64_t out, const Conv3dParams& params, bool with_bias,
                                 const LayerOptions& o)
    : weight(make_parameter("weight", {in, params.kernel[0], params.kernel[1], params.kernel[2], out}, o.dtype,
                            o.device)),
      bias(optional_bias(with_bias, out, o)),
      params_(params) {
  // PyTorch computes fan_in of a transposed conv from weight.size(1) * prod(k) = out * prod(k).
  init_default(weight, bias, out * params.kernel[0] * params.kernel[1] * params.kernel[2], o);
}

void ConvTranspose3d::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_weight_bias(prefix, weight, bias, out);
}

Tensor ConvTranspose3d::forward(const Tensor& x) {
  save(x_, x);
  return conv_transpose3d_forward(x, weight.value, bias.value, params_);
}

Tensor ConvTranspose3d::backward(const Tensor& dy) {
  Tensor x = take(x_, "ConvTranspose3d");
  conv_transpose3d_backward_weight(x, dy, params_, weight.grad);
  if (bias.value.defined()) conv_transpose3d_backward_bias(dy, bias.grad);
  return conv_transpose3d_backward_data(dy, weight.value, x.shape(), params_);
}

// ---- Downsample, Upsample ------------------------------------------------------------------------

Downsample::Downsample(int64_t channels, const LayerOptions& o) : conv(channels, channels, 3, 2, 1, true, o) {}

void Downsample::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(conv, prefix, "conv", out);
}

Upsample::Upsample(int64_t channels, const LayerOptions& o) : conv(channels, channels, 3, 1, 1, true, o) {}

void Upsample::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(conv, prefix, "conv", out);
}

Tensor Upsample::forward(const Tensor& x, const std::array<int64_t, 3>& size) {
  CTSR_CHECK(x.ndim() == 5, "Upsample: input ", x.shape().str(), " is not [N, D, H, W, C]");
  in_size_ = {x.dim(1), x.dim(2), x.dim(3)};
  return conv.forward(resample_nearest_forward(x, size));
}

Tensor Upsample::backward(const Tensor& dy) { return resample_nearest_backward(conv.backward(dy), in_size_); }

// ---- AttentionBlock ------------------------------------------------------------------------------

namespace {
LayerOptions with_stream(LayerOptions o, uint64_t k) {
  o.stream = o.stream * 8 + k;
  return o;
}
}  // namespace

AttentionBlock::AttentionBlock(int64_t channels, const AttentionOptions& a, const LayerOptions& o)
    : norm(channels, a.groups, a.eps, false, o),
      qkv(channels, 3 * a.heads * a.head_dim, a.qkv_bias, with_stream(o, 1)),
      proj_out(a.heads * a.head_dim, channels, true, with_stream(o, 2)),
      channels_(channels),
      heads_(a.heads),
      bf16_(checked_bf16(o)) {}

void AttentionBlock::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(norm, prefix, "norm", out);
  collect_child(qkv, prefix, "qkv", out);
  collect_child(proj_out, prefix, "proj_out", out);
}

void AttentionBlock::clear_saved() {
  norm.clear_saved();
  qkv.clear_saved();
  proj_out.clear_saved();
  qkv_out_ = o_ = lse_ = Tensor();
}

Tensor AttentionBlock::forward(const Tensor& x) {
  CTSR_CHECK(x.ndim() >= 3 && x.dim(-1) == channels_, "AttentionBlock(", channels_, "): input ", x.shape().str(),
             " is not [N, ..., ", channels_, "]");
  x_shape_ = x.shape();
  const int64_t batch = x.dim(0), tokens = x.numel() / (batch * channels_);
  // In bf16 compute the projections get bf16 in, so they give bf16 out and attention runs on
  // its tensor-core kernels; the block's output returns to x's dtype for the residual add.
  Tensor h = operand(norm.forward(x).reshape({batch, tokens, channels_}), bf16_);
  Tensor qkv_out = qkv.forward(h);
  AttentionOutput a = attention_forward(qkv_out, heads_);
  save(qkv_out_, qkv_out);
  save(o_, a.o);
  save(lse_, a.lse);
  return add(x, returned(proj_out.forward(a.o), bf16_, x.dtype()).reshape(x_shape_));
}

Tensor AttentionBlock::backward(const Tensor& dy) {
  Tensor qkv_out = take(qkv_out_, "AttentionBlock"), o = take(o_, "AttentionBlock"), lse = take(lse_, "AttentionBlock");
  const int64_t batch = x_shape_[0], tokens = dy.numel() / (batch * channels_);
  Tensor d_o = proj_out.backward(operand(dy.reshape({batch, tokens, channels_}), bf16_));
  Tensor d_qkv = attention_backward(qkv_out, o, lse, d_o, heads_);
  Tensor dh = returned(qkv.backward(d_qkv), bf16_, dy.dtype()).reshape(x_shape_);
  return add(norm.backward(dh), dy);  // the residual passes dy straight through
}

}  // namespace ctsr
