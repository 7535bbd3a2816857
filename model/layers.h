// The layers the networks are built from. Each owns its parameters (PyTorch's names: weight,
// bias), saves in forward what its backward needs and releases it in backward, and
// accumulates parameter gradients (model/module.h). Activations are channels-last
// [N, D, H, W, C]; Linear acts on the last dimension of any tensor.
//
// Initialisation follows PyTorch's defaults for conv and linear layers (uniform in
// +-1/sqrt(fan_in) for weight and bias), drawn from Philox(seed, stream) so a model is the
// same on every device; zero_init() gives the zero-initialised layers of the UNet spec.
//
// Mixed precision (LayerOptions::compute = bfloat16): Conv3d and Linear give their convolution or
// product bf16 operands (the input and a bf16 copy of the float32 weight, made at each use) and
// accumulate in float32; they save their input in bf16 for the weight gradient, take the incoming
// gradient in bf16 for both backward products, and return their output and input gradient in the
// dtype they were given (so float32 activations stay float32). AttentionBlock feeds its
// projections bf16, so attention itself runs in bf16 (tensor cores; scores, softmax and sums in
// float) and returns to the activations' dtype for the residual. Parameters, their gradients and
// the bias terms stay float32. Everything else (GroupNorm, SiLU, the adds) computes in the
// activations' dtype.
#pragma once

#include <array>
#include <cstdint>

#include "kernels/conv3d.h"
#include "model/module.h"

namespace ctsr {

struct LayerOptions {
  DType dtype = DType::float32;  // parameters
  Device device = Device::cpu();
  uint64_t seed = 0;    // initialisation seed
  uint64_t stream = 0;  // distinguishes layers sharing a seed
  DType compute = DType::float32;  // operands of Conv3d and Linear: float32, or bfloat16 (mixed precision)
};

class SiLU : public Module {
 public:
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { x_ = Tensor(); }

 protected:
  void collect(const std::string&, std::vector<Parameter*>&) override {}

 private:
  Tensor x_;
};

// relu(x) = max(x, 0), as clamp(x, 0, +inf) (kernels/activation.h): no kernel of its own. Its
// backward passes dy where x >= 0 (clamp's convention at the bound; PyTorch's relu gives 0 at
// exactly x == 0, a set of measure zero for trained weights).
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { x_ = Tensor(); }

 protected:
  void collect(const std::string&, std::vector<Parameter*>&) override {}

 private:
  Tensor x_;
};

// t in dtype d: t itself when it already has it, else cast(t, d). In mixed precision a bf16
// Conv3d or Linear given the bf16 output of a GroupNorm returns bf16; the residual stream takes
// it back in its own dtype with this.
Tensor as_dtype(const Tensor& t, DType d);

// GroupNorm over the channels of [N, ..., C], optionally followed by SiLU in the same kernels.
// With LayerOptions::compute bfloat16 its output is the operand of a bf16 layer (the UNet's
// convolutions and attention projections), so it writes y in bfloat16 (the cast fused into the
// normalisation, kernels/group_norm.h); the statistics, the saved input and backward stay float32.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t channels, int64_t groups, double eps, bool fused_silu, const LayerOptions& options = {});
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { x_ = mean_ = rstd_ = Tensor(); }
  Parameter weight, bias;  // gamma = 1, beta = 0 at construction (PyTorch's init)
  int64_t channels() const { return channels_; }

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  int64_t channels_, groups_;
  double eps_;
  bool fused_silu_;
  bool bf16_;  // LayerOptions::compute is bfloat16: y in bfloat16
  Tensor x_, mean_, rstd_;
};

// Dropout with a Philox mask keyed by (seed, offset), regenerated in backward. The owner sets
// the stream before each forward (set_rng) so resumed runs draw the same masks; element_base
// (kernels/dropout.h) is where this input starts in the whole batch (first sample x elements per
// sample), so a micro-batch draws the mask it has within the whole batch. In eval mode
// (train(false)) it is the identity.
class Dropout : public Module {
 public:
  explicit Dropout(double p) : p_(p) {}
  void train(bool on) { training_ = on; }
  bool training() const { return training_; }
  void set_rng(uint64_t seed, uint64_t offset, uint64_t element_base = 0) {
    seed_ = seed, offset_ = offset, element_base_ = element_base;
  }
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);

 protected:
  void collect(const std::string&, std::vector<Parameter*>&) override {}

 private:
  double p_;
  bool training_ = true;
  bool applied_ = false;
  uint64_t seed_ = 0, offset_ = 0, element_base_ = 0;
};

// y = x W^T + b over the last dimension. weight [out, in], bias [out] (optional).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, const LayerOptions& options = {});
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { x_ = Tensor(); }
  void zero_init();
  Parameter weight, bias;  // bias.value undefined when built without bias

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  bool bf16_;  // LayerOptions::compute is bfloat16
  Tensor x_;
};

// 3-D convolution, channels-last; weight [out, kD, kH, kW, in], bias [out] (optional).
class Conv3d : public Module {
 public:
  Conv3d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias,
         const LayerOptions& options = {});
  // Any kernel, stride and padding per axis (e.g. RED-CNN's 1 x 5 x 5 in-slice kernels).
  Conv3d(int64_t in, int64_t out, const Conv3dParams& params, bool bias, const LayerOptions& options = {});
  Tensor forward(const Tensor& x);
  // input_grad false: only the parameter gradients (a network's first layer); returns undefined.
  Tensor backward(const Tensor& dy, bool input_grad = true);
  void clear_saved() override { x_ = Tensor(); }
  void zero_init();
  const Conv3dParams& params() const { return params_; }
  Parameter weight, bias;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  Conv3dParams params_;
  bool bf16_;  // LayerOptions::compute is bfloat16
  Tensor x_;
};

// Transposed 3-D convolution; weight [in, kD, kH, kW, out] (PyTorch's [in, out, kD, kH, kW]
// with the output channels moved last), bias [out].
class ConvTranspose3d : public Module {
 public:
  ConvTranspose3d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias,
                  const LayerOptions& options = {});
  ConvTranspose3d(int64_t in, int64_t out, const Conv3dParams& params, bool bias, const LayerOptions& options = {});
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { x_ = Tensor(); }
  Parameter weight, bias;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  Conv3dParams params_;
  Tensor x_;
};

// The UNet's Down: Conv3d k3 stride 2 pad 1 (n -> ceil(n/2)).
class Downsample : public Module {
 public:
  Downsample(int64_t channels, const LayerOptions& options = {});
  Tensor forward(const Tensor& x) { return conv.forward(x); }
  Tensor backward(const Tensor& dy) { return conv.backward(dy); }
  void clear_saved() override { conv.clear_saved(); }
  Conv3d conv;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;
};

// The UNet's Up: nearest resize to the skip's spatial size, then Conv3d k3 pad 1.
class Upsample : public Module {
 public:
  Upsample(int64_t channels, const LayerOptions& options = {});
  Tensor forward(const Tensor& x, const std::array<int64_t, 3>& size);
  Tensor backward(const Tensor& dy);
  void clear_saved() override { conv.clear_saved(); }
  Conv3d conv;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  std::array<int64_t, 3> in_size_{};
};

// Multi-head self-attention over a volume's voxels with a residual:
//   y = x + proj_out(attention(qkv(norm(x))))
// norm: GroupNorm(groups, eps); qkv: Linear(channels -> 3 * heads * head_dim); attention over
// the D*H*W tokens; proj_out: Linear(heads * head_dim -> channels, bias). The UNet uses
// heads * head_dim = channels with a qkv bias; the VQ-AE 4 heads of 32 and no qkv bias.
struct AttentionOptions {
  int64_t heads = 1, head_dim = 64, groups = 32;
  double eps = 1e-5;
  bool qkv_bias = true;
};

class AttentionBlock : public Module {
 public:
  AttentionBlock(int64_t channels, const AttentionOptions& attention, const LayerOptions& options = {});
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override;
  GroupNorm norm;
  Linear qkv, proj_out;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  int64_t channels_, heads_;
  bool bf16_;  // LayerOptions::compute is bfloat16
  Shape x_shape_;
  Tensor qkv_out_, o_, lse_;
};

}  // namespace ctsr
