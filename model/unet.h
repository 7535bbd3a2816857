// The conditional 3-D diffusion UNet of the second stage (../shared/specs/unet3d-diffusion.md),
// channels-last, with a hand-written backward through the whole graph.
//
//   forward(x [N, D, H, W, in_channels], t [N] integer steps) -> [N, D, H, W, out_channels]
//   backward(dy) -> dx, accumulating every parameter's gradient (model/module.h)
//
// x is the noisy HD latent concatenated with the LD latent (the caller concatenates). Each layer
// saves what its backward needs during forward and releases it in backward, so after a backward
// nothing of the step is left. With checkpoint_res_blocks a ResBlock keeps only its input during
// forward and recomputes its activations in backward (activation checkpointing): less memory,
// one more forward of every ResBlock per step. Dropout masks are regenerated from Philox
// (set_dropout_rng), so the recomputation sees the same masks and the result is bitwise the same.
//
// Parameter names (safetensors keys of checkpoints):
//   time_embed.0, time_embed.2                 Linear(model_channels, T), Linear(T, T)
//   conv_in                                    Conv3d k3 in_channels -> ch_0
//   down.<l>.block.<b>.{norm1,conv1,time_proj,norm2,conv2,skip}, down.<l>.attn.<b>.{norm,qkv,proj_out}
//   down.<l>.downsample.conv                   (levels l < L-1)
//   mid.block1, mid.attn, mid.block2
//   up.<l>.block.<b>, up.<l>.attn.<b>, up.<l>.upsample.conv   (b <= num_blocks; upsample for l > 0)
//   out_norm, conv_out
// Conv weights are [out, kD, kH, kW, in] (DESIGN.md), Linear weights [out, in].
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/layers.h"

namespace ctsr {

struct UNetConfig {
  int64_t in_channels = 16;
  int64_t out_channels = 8;
  int64_t model_channels = 128;
  std::vector<int64_t> channel_mult{1, 2, 4, 8};
  int64_t num_blocks = 3;
  std::vector<bool> attention_levels{false, false, true, true};
  int64_t head_channels = 64;
  int64_t time_embed_dim = 512;
  double dropout = 0.1;
  int64_t norm_groups = 32;
  double norm_eps = 1e-5;
  bool checkpoint_res_blocks = false;

  int64_t levels() const { return static_cast<int64_t>(channel_mult.size()); }
  int64_t width(int64_t level) const { return model_channels * channel_mult[static_cast<size_t>(level)]; }
  // Throws naming the key and the value: sizes must be positive, norm_groups must divide every
  // width the network has (also the concatenations of the up path), head_channels every width
  // with attention, model_channels must be even (the sinusoid), dropout in [0, 1).
  void validate() const;
  std::string str() const;
};

// Spatial size after one Down (Conv3d k3 s2 p1): ceil(n / 2).
inline int64_t unet_downsampled(int64_t n) { return (n + 1) / 2; }

// ResBlock(ci, co): h = conv1(silu(gn1(x))) + time_proj(silu(temb)) broadcast over voxels;
// h = conv2(dropout(silu(gn2(h)))); y = skip(x) + h, skip a 1x1x1 conv when ci != co.
class UNetResBlock : public Module {
 public:
  UNetResBlock(int64_t in, int64_t out, const UNetConfig& config, const LayerOptions& options);
  // temb_act = silu(temb) [N, time_embed_dim], shared by every block.
  Tensor forward(const Tensor& x, const Tensor& temb_act);
  // Returns dx; adds this block's contribution to d(temb_act) into dtemb_act (undefined: set).
  Tensor backward(const Tensor& dy, Tensor& dtemb_act);
  void clear_saved() override;
  void set_checkpointing(bool on) { checkpoint_ = on; }
  // The dropout stream of the next forward; sample n of the batch is sample first_sample + n of
  // the global batch, and draws that sample's part of the stream.
  void set_dropout_rng(uint64_t seed, uint64_t offset, int64_t first_sample);

  GroupNorm norm1;  // fused with the SiLU that follows
  Conv3d conv1;
  Linear time_proj;
  GroupNorm norm2;  // fused with the SiLU that follows
  Dropout dropout;
  Conv3d conv2;     // zero-initialised
  std::unique_ptr<Conv3d> skip;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  Tensor run_forward(const Tensor& x, const Tensor& temb_act);
  bool checkpoint_ = false;
  int64_t out_channels_;
  uint64_t dropout_seed_ = 0, dropout_offset_ = 0;
  int64_t dropout_first_sample_ = 0;
  Tensor saved_x_, saved_temb_act_;  // checkpointing: the block's inputs
  Shape time_shape_;                 // [N, 1, 1, 1, co]
};

class UNet3D : public Module {
 public:
  explicit UNet3D(const UNetConfig& config, const LayerOptions& options = {});
  ~UNet3D() override;

  // t: [N] int64 (or floating) on the model's device.
  Tensor forward(const Tensor& x, const Tensor& t);
  // input_grad false skips d(x) (training needs none); the result is then undefined.
  Tensor backward(const Tensor& dy, bool input_grad = true);
  void clear_saved() override;

  // Dropout on (training) or off (validation, sampling).
  void train(bool on);
  // Dropout masks for the next forward: block k draws from Philox(seed, stream_offset(purpose_k,
  // step)), element i of the batch from element (first_sample * per-sample size + i), so a
  // sample's masks depend on its index in the global batch, not on how the batch is split.
  void set_dropout_rng(uint64_t seed, uint64_t step, int64_t first_sample = 0);
  void set_checkpointing(bool on);
  // Called during backward with each layer group's parameters once their gradients are final
  // for this backward (every parameter exactly once, in backward order); empty: none.
  void set_gradients_ready(GradientsReady hook) { gradients_ready_ = std::move(hook); }
  const UNetConfig& config() const { return config_; }

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  struct Level;
  UNetConfig config_;
  std::unique_ptr<Linear> time_embed_0_, time_embed_2_;
  std::unique_ptr<Conv3d> conv_in_;
  std::vector<std::unique_ptr<Level>> down_, up_;
  std::unique_ptr<UNetResBlock> mid_block1_, mid_block2_;
  std::unique_ptr<AttentionBlock> mid_attn_;
  std::unique_ptr<GroupNorm> out_norm_;  // fused with SiLU
  std::unique_ptr<Conv3d> conv_out_;     // zero-initialised
  std::vector<UNetResBlock*> blocks_;    // every ResBlock, in forward order (dropout streams)
  GradientsReady gradients_ready_;
  std::unordered_map<const Module*, std::vector<Parameter*>> piece_parameters_;
  // Saved by forward for backward.
  Tensor temb_, temb_hidden_;                 // Linear outputs of the time embedding MLP
  std::vector<std::vector<int64_t>> concat_channels_;  // per up level and block: channels of h before the concat
};

}  // namespace ctsr
