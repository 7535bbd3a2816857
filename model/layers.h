// The layers the networks are built from. Each owns its parameters (PyTorch's names: weight,
// bias), saves in forward what its backward needs and releases it in backward, and
// accumulates parameter gradients (model/module.h). Activations are channels-last
// [N, D, H, W, C]; Linear acts on the last dimension of any tensor.
//
// Initialisation follows PyTorch's defaults for conv and linear layers (uniform in
// +-1/sqrt(fan_in) for weight and bias), drawn from Philox(seed, stream) so a model is the
// same on every device; zero_init() gives the zero-initialised layers of the UNet spec.
#pragma once

#include <array>
#include <cstdint>

#include "model/module.h"

namespace ctsr {

struct LayerOptions {
  DType dtype = DType::float32;
  Device device = Device::cpu();
  uint64_t seed = 0;    // initialisation seed
  uint64_t stream = 0;  // distinguishes layers sharing a seed
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

// GroupNorm over the channels of [N, ..., C], optionally followed by SiLU in the same kernels.
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
  Tensor x_, mean_, rstd_;
};

// Dropout with a Philox mask keyed by (seed, offset), regenerated in backward. The owner sets
// the stream before each forward (set_rng) so resumed runs draw the same masks; in eval mode
// (train(false)) it is the identity.
class Dropout : public Module {
 public:
  explicit Dropout(double p) : p_(p) {}
  void train(bool on) { training_ = on; }
  bool training() const { return training_; }
  void set_rng(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);

 protected:
  void collect(const std::string&, std::vector<Parameter*>&) override {}

 private:
  double p_;
  bool training_ = true;
  bool applied_ = false;
  uint64_t seed_ = 0, offset_ = 0;
};

}  // namespace ctsr
