#include "model/unet.h"

#include <sstream>

#include "kernels/activation.h"
#include "kernels/binary.h"
#include "kernels/copy.h"
#include "kernels/reduce.h"
#include "kernels/resample.h"
#include "kernels/timestep_embedding.h"
#include "runtime/philox.h"

namespace ctsr {

// ---- configuration -------------------------------------------------------------------------------

void UNetConfig::validate() const {
  auto positive = [](const char* key, int64_t v) {
    CTSR_CHECK(v > 0, "model.", key, " is ", v, "; expected a positive integer");
  };
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("model_channels", model_channels);
  positive("num_blocks", num_blocks);
  positive("head_channels", head_channels);
  positive("time_embed_dim", time_embed_dim);
  positive("norm_groups", norm_groups);
  CTSR_CHECK(model_channels % 2 == 0, "model.model_channels is ", model_channels,
             "; expected an even number (the sinusoidal time embedding has cos and sin halves)");
  CTSR_CHECK(!channel_mult.empty(), "model.channel_mult is empty; expected at least one level");
  for (int64_t m : channel_mult) CTSR_CHECK(m > 0, "model.channel_mult holds ", m, "; expected positive multipliers");
  CTSR_CHECK(attention_levels.size() == channel_mult.size(), "model.attention_levels has ", attention_levels.size(),
             " entries but model.channel_mult has ", channel_mult.size(), "; expected one flag per level");
  CTSR_CHECK(dropout >= 0.0 && dropout < 1.0, "model.dropout is ", dropout, "; expected a value in [0, 1)");
  CTSR_CHECK(norm_eps > 0.0, "model.norm_eps is ", norm_eps, "; expected a positive value");
  auto divisible = [&](int64_t channels, const char* where) {
    CTSR_CHECK(channels % norm_groups == 0, "model.norm_groups ", norm_groups, " does not divide the ", channels,
               " channels of ", where, " (model_channels ", model_channels, ", channel_mult entries scale it)");
  };
  for (int64_t l = 0; l < levels(); ++l) {
    divisible(width(l), "a level");
    if (attention_levels[size_t(l)])
      CTSR_CHECK(width(l) % head_channels == 0, "model.head_channels ", head_channels, " does not divide the ",
                 width(l), " channels of level ", l, ", which has attention");
    // The up path concatenates h with the skips of its level and of the level below.
    const int64_t below = l + 1 < levels() ? width(l + 1) : width(l);
    divisible(below + width(l), "an up-path concatenation");
    divisible(width(l) + width(l), "an up-path concatenation");
    if (l > 0) divisible(width(l) + width(l - 1), "an up-path concatenation");
  }
}

std::string UNetConfig::str() const {
  std::ostringstream s;
  s << "in " << in_channels << ", out " << out_channels << ", widths [";
  for (int64_t l = 0; l < levels(); ++l) s << (l ? ", " : "") << width(l) << (attention_levels[size_t(l)] ? "+attn" : "");
  s << "], " << num_blocks << " blocks, head_channels " << head_channels << ", time_embed_dim " << time_embed_dim
    << ", dropout " << dropout << ", norm_groups " << norm_groups;
  return s.str();
}

namespace {

LayerOptions next_stream(const LayerOptions& o, uint64_t& counter) {
  LayerOptions r = o;
  r.stream = counter++;
  return r;
}

AttentionOptions attention_options(const UNetConfig& c, int64_t channels) {
  AttentionOptions a;
  a.head_dim = c.head_channels;
  a.heads = channels / c.head_channels;
  a.groups = c.norm_groups;
  a.eps = c.norm_eps;
  a.qkv_bias = true;
  return a;
}

Tensor accumulate(const Tensor& total, const Tensor& part) { return total.defined() ? add(total, part) : part; }

// Philox purpose of ResBlock k's dropout: "DR" in the high byte pair, the block in the low ones.
constexpr uint32_t kDropoutPurpose = 0x44520000u;

}  // namespace

// ---- ResBlock ------------------------------------------------------------------------------------

UNetResBlock::UNetResBlock(int64_t in, int64_t out, const UNetConfig& c, const LayerOptions& o)
    : norm1(in, c.norm_groups, c.norm_eps, /*fused_silu=*/true, o),
      conv1(in, out, 3, 1, 1, true, [&] { auto x = o; x.stream = 4 * o.stream; return x; }()),
      time_proj(c.time_embed_dim, out, true, [&] { auto x = o; x.stream = 4 * o.stream + 1; return x; }()),
      norm2(out, c.norm_groups, c.norm_eps, /*fused_silu=*/true, o),
      dropout(c.dropout),
      conv2(out, out, 3, 1, 1, true, [&] { auto x = o; x.stream = 4 * o.stream + 2; return x; }()),
      out_channels_(out) {
  conv2.zero_init();
  if (in != out) {
    LayerOptions s = o;
    s.stream = 4 * o.stream + 3;
    skip = std::make_unique<Conv3d>(in, out, 1, 1, 0, true, s);
  }
}

void UNetResBlock::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(norm1, prefix, "norm1", out);
  collect_child(conv1, prefix, "conv1", out);
  collect_child(time_proj, prefix, "time_proj", out);
  collect_child(norm2, prefix, "norm2", out);
  collect_child(conv2, prefix, "conv2", out);
  if (skip) collect_child(*skip, prefix, "skip", out);
}

void UNetResBlock::clear_saved() {
  norm1.clear_saved();
  conv1.clear_saved();
  time_proj.clear_saved();
  norm2.clear_saved();
  conv2.clear_saved();
  if (skip) skip->clear_saved();
  saved_x_ = saved_temb_act_ = Tensor();
}

Tensor UNetResBlock::run_forward(const Tensor& x, const Tensor& temb_act) {
  CTSR_CHECK(x.ndim() == 5, "UNet ResBlock: input ", x.shape().str(), " is not [N, D, H, W, C]");
  const int64_t n = x.dim(0);
  time_shape_ = Shape{n, 1, 1, 1, out_channels_};
  // In bf16 compute the norms write bf16 (the convolutions' operands) and the convolutions
  // return bf16; h comes back to x's dtype for the additions.
  Tensor h = as_dtype(conv1.forward(norm1.forward(x)), x.dtype());
  h = add(h, time_proj.forward(temb_act).reshape(time_shape_));
  h = norm2.forward(h);
  dropout.set_rng(dropout_seed_, dropout_offset_, uint64_t(dropout_first_sample_) * uint64_t(h.numel() / n));
  h = as_dtype(conv2.forward(dropout.forward(h)), x.dtype());
  return add(skip ? skip->forward(x) : x, h);
}

void UNetResBlock::set_dropout_rng(uint64_t seed, uint64_t offset, int64_t first_sample) {
  CTSR_CHECK(first_sample >= 0, "UNet ResBlock: first_sample ", first_sample, " is negative");
  dropout_seed_ = seed, dropout_offset_ = offset, dropout_first_sample_ = first_sample;
}

Tensor UNetResBlock::forward(const Tensor& x, const Tensor& temb_act) {
  if (!checkpoint_ || !grad_enabled()) return run_forward(x, temb_act);
  // Keep the inputs only; backward runs the forward again with saving on.
  saved_x_ = x;
  saved_temb_act_ = temb_act;
  NoGradGuard no_grad;
  return run_forward(x, temb_act);
}

Tensor UNetResBlock::backward(const Tensor& dy, Tensor& dtemb_act) {
  if (checkpoint_) {
    CTSR_CHECK(saved_x_.defined(), "UNet ResBlock.backward called without a forward (checkpointing)");
    Tensor x = saved_x_, temb_act = saved_temb_act_;
    saved_x_ = saved_temb_act_ = Tensor();
    run_forward(x, temb_act);  // saves the activations this time; the output is the same
  }
  Tensor dh = norm2.backward(dropout.backward(conv2.backward(dy)));
  // The time projection was broadcast over every voxel: its gradient sums over them.
  Tensor dtime = sum_to_shape(dh, time_shape_).reshape({time_shape_[0], out_channels_});
  dtemb_act = accumulate(dtemb_act, time_proj.backward(dtime));
  Tensor dx = norm1.backward(conv1.backward(dh));
  return add(dx, skip ? skip->backward(dy) : dy);
}

// ---- UNet ----------------------------------------------------------------------------------------

struct UNet3D::Level {
  std::vector<std::unique_ptr<UNetResBlock>> blocks;
  std::vector<std::unique_ptr<AttentionBlock>> attn;  // empty when the level has no attention
  std::unique_ptr<Downsample> downsample;             // down path, l < L-1
  std::unique_ptr<Upsample> upsample;                 // up path, l > 0
};

UNet3D::~UNet3D() = default;

UNet3D::UNet3D(const UNetConfig& c, const LayerOptions& o) : config_(c) {
  c.validate();
  uint64_t s = o.stream * 10000 + 1;
  const int64_t levels = c.levels();
  time_embed_0_ = std::make_unique<Linear>(c.model_channels, c.time_embed_dim, true, next_stream(o, s));
  time_embed_2_ = std::make_unique<Linear>(c.time_embed_dim, c.time_embed_dim, true, next_stream(o, s));
  conv_in_ = std::make_unique<Conv3d>(c.in_channels, c.width(0), 3, 1, 1, true, next_stream(o, s));

  // Channels of every skip, in push order, to size the up path's concatenations.
  std::vector<int64_t> skip_channels{c.width(0)};
  int64_t ch = c.width(0);
  for (int64_t l = 0; l < levels; ++l) {
    auto level = std::make_unique<Level>();
    for (int64_t b = 0; b < c.num_blocks; ++b) {
      level->blocks.push_back(std::make_unique<UNetResBlock>(ch, c.width(l), c, next_stream(o, s)));
      ch = c.width(l);
      if (c.attention_levels[size_t(l)]) {
        level->attn.push_back(std::make_unique<AttentionBlock>(ch, attention_options(c, ch), next_stream(o, s)));
        level->attn.back()->proj_out.zero_init();
      }
      skip_channels.push_back(ch);
    }
    if (l + 1 < levels) {
      level->downsample = std::make_unique<Downsample>(ch, next_stream(o, s));
      skip_channels.push_back(ch);
    }
    down_.push_back(std::move(level));
  }
  mid_block1_ = std::make_unique<UNetResBlock>(ch, ch, c, next_stream(o, s));
  mid_attn_ = std::make_unique<AttentionBlock>(ch, attention_options(c, ch), next_stream(o, s));
  mid_attn_->proj_out.zero_init();
  mid_block2_ = std::make_unique<UNetResBlock>(ch, ch, c, next_stream(o, s));

  // up_[l] is level l (built from the deepest level up, stored by level index).
  up_.resize(size_t(levels));
  for (int64_t l = levels - 1; l >= 0; --l) {
    auto level = std::make_unique<Level>();
    for (int64_t b = 0; b <= c.num_blocks; ++b) {
      const int64_t in = ch + skip_channels.back();
      skip_channels.pop_back();
      level->blocks.push_back(std::make_unique<UNetResBlock>(in, c.width(l), c, next_stream(o, s)));
      ch = c.width(l);
      if (c.attention_levels[size_t(l)]) {
        level->attn.push_back(std::make_unique<AttentionBlock>(ch, attention_options(c, ch), next_stream(o, s)));
        level->attn.back()->proj_out.zero_init();
      }
    }
    if (l > 0) level->upsample = std::make_unique<Upsample>(ch, next_stream(o, s));
    up_[size_t(l)] = std::move(level);
  }
  out_norm_ = std::make_unique<GroupNorm>(ch, c.norm_groups, c.norm_eps, /*fused_silu=*/true, o);
  conv_out_ = std::make_unique<Conv3d>(ch, c.out_channels, 3, 1, 1, true, next_stream(o, s));
  conv_out_->zero_init();

  for (auto& level : down_)
    for (auto& b : level->blocks) blocks_.push_back(b.get());
  blocks_.push_back(mid_block1_.get());
  blocks_.push_back(mid_block2_.get());
  for (int64_t l = levels - 1; l >= 0; --l)
    for (auto& b : up_[size_t(l)]->blocks) blocks_.push_back(b.get());
  set_checkpointing(c.checkpoint_res_blocks);

  // The parameters of every piece backward announces (set_gradients_ready). Listing a child
  // names its parameters from the child down, so the whole model is listed again after.
  std::vector<Module*> pieces{time_embed_0_.get(), time_embed_2_.get(), conv_in_.get(), mid_block1_.get(),
                              mid_attn_.get(),     mid_block2_.get(),   out_norm_.get(), conv_out_.get()};
  for (auto* levels : {&down_, &up_})
    for (auto& level : *levels) {
      for (auto& b : level->blocks) pieces.push_back(b.get());
      for (auto& a : level->attn) pieces.push_back(a.get());
      if (level->downsample) pieces.push_back(level->downsample.get());
      if (level->upsample) pieces.push_back(level->upsample.get());
    }
  for (Module* piece : pieces) piece_parameters_[piece] = piece->parameters();
  parameters();
}

void UNet3D::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(*time_embed_0_, prefix, "time_embed.0", out);
  collect_child(*time_embed_2_, prefix, "time_embed.2", out);
  collect_child(*conv_in_, prefix, "conv_in", out);
  auto collect_level = [&](Level& level, const std::string& p) {
    for (size_t b = 0; b < level.blocks.size(); ++b) {
      collect_child(*level.blocks[b], prefix, p + "block." + std::to_string(b), out);
      if (!level.attn.empty()) collect_child(*level.attn[b], prefix, p + "attn." + std::to_string(b), out);
    }
    if (level.downsample) collect_child(*level.downsample, prefix, p + "downsample", out);
    if (level.upsample) collect_child(*level.upsample, prefix, p + "upsample", out);
  };
  for (size_t l = 0; l < down_.size(); ++l) collect_level(*down_[l], "down." + std::to_string(l) + ".");
  collect_child(*mid_block1_, prefix, "mid.block1", out);
  collect_child(*mid_attn_, prefix, "mid.attn", out);
  collect_child(*mid_block2_, prefix, "mid.block2", out);
  for (size_t l = up_.size(); l-- > 0;) collect_level(*up_[l], "up." + std::to_string(l) + ".");
  collect_child(*out_norm_, prefix, "out_norm", out);
  collect_child(*conv_out_, prefix, "conv_out", out);
}

void UNet3D::train(bool on) {
  for (UNetResBlock* b : blocks_) b->dropout.train(on);
}

void UNet3D::set_checkpointing(bool on) {
  config_.checkpoint_res_blocks = on;
  for (UNetResBlock* b : blocks_) b->set_checkpointing(on);
}

void UNet3D::set_dropout_rng(uint64_t seed, uint64_t step, int64_t first_sample) {
  for (size_t k = 0; k < blocks_.size(); ++k)
    blocks_[k]->set_dropout_rng(seed, philox::stream_offset(kDropoutPurpose + uint32_t(k), step), first_sample);
}

void UNet3D::clear_saved() {
  time_embed_0_->clear_saved();
  time_embed_2_->clear_saved();
  conv_in_->clear_saved();
  for (auto* levels : {&down_, &up_})
    for (auto& level : *levels) {
      for (auto& b : level->blocks) b->clear_saved();
      for (auto& a : level->attn) a->clear_saved();
      if (level->downsample) level->downsample->clear_saved();
      if (level->upsample) level->upsample->clear_saved();
    }
  mid_block1_->clear_saved();
  mid_attn_->clear_saved();
  mid_block2_->clear_saved();
  out_norm_->clear_saved();
  conv_out_->clear_saved();
  temb_ = temb_hidden_ = Tensor();
  concat_channels_.clear();
}

Tensor UNet3D::forward(const Tensor& x, const Tensor& t) {
  const UNetConfig& c = config_;
  CTSR_CHECK(x.ndim() == 5 && x.dim(4) == c.in_channels, "UNet: input ", x.shape().str(), " is not [N, D, H, W, ",
             c.in_channels, "] (model.in_channels: the noisy latent and the condition, concatenated)");
  CTSR_CHECK(t.ndim() == 1 && t.dim(0) == x.dim(0), "UNet: timesteps ", t.shape().str(), " do not match the batch of ",
             x.dim(0));
  const bool saving = grad_enabled();

  // Time embedding MLP; silu(temb) feeds every ResBlock.
  Tensor emb = timestep_embedding(t, c.model_channels);
  if (emb.dtype() != x.dtype()) emb = cast(emb, x.dtype());  // integer t gives float32
  Tensor hidden = time_embed_0_->forward(emb);
  Tensor temb = time_embed_2_->forward(silu_forward(hidden));
  Tensor temb_act = silu_forward(temb);
  if (saving) temb_hidden_ = hidden, temb_ = temb;

  std::vector<Tensor> skips;
  Tensor h = conv_in_->forward(x);
  skips.push_back(h);
  for (auto& level : down_) {
    for (size_t b = 0; b < level->blocks.size(); ++b) {
      h = level->blocks[b]->forward(h, temb_act);
      if (!level->attn.empty()) h = level->attn[b]->forward(h);
      skips.push_back(h);
    }
    if (level->downsample) {
      h = level->downsample->forward(h);
      skips.push_back(h);
    }
  }
  h = mid_block2_->forward(mid_attn_->forward(mid_block1_->forward(h, temb_act)), temb_act);

  concat_channels_.assign(up_.size(), {});
  for (size_t l = up_.size(); l-- > 0;) {
    Level& level = *up_[l];
    for (size_t b = 0; b < level.blocks.size(); ++b) {
      concat_channels_[l].push_back(h.dim(4));
      h = concat_channels(h, skips.back());
      skips.pop_back();
      h = level.blocks[b]->forward(h, temb_act);
      if (!level.attn.empty()) h = level.attn[b]->forward(h);
    }
    if (level.upsample) {
      const Tensor& target = skips.back();
      h = level.upsample->forward(h, {target.dim(1), target.dim(2), target.dim(3)});
    }
  }
  return as_dtype(conv_out_->forward(out_norm_->forward(h)), h.dtype());
}

Tensor UNet3D::backward(const Tensor& dy, bool input_grad) {
  CTSR_CHECK(temb_.defined(), "UNet.backward called without a forward (or twice after one forward)");
  // Announces each piece's gradients as soon as its backward is done (data parallelism).
  auto done = [this](Module& piece) {
    if (gradients_ready_) gradients_ready_(piece_parameters_.at(&piece));
  };
  Tensor dtemb_act;
  Tensor dh = conv_out_->backward(dy);
  done(*conv_out_);
  dh = out_norm_->backward(dh);
  done(*out_norm_);

  // Up path, in reverse: each block's input gradient splits into h's part and its skip's part.
  // The up path popped the skips last-pushed first; walking it backwards meets them in push
  // order, so dskips[k] is the gradient of the k-th skip pushed.
  std::vector<Tensor> dskips;
  for (size_t l = 0; l < up_.size(); ++l) {
    Level& level = *up_[l];
    if (l > 0) {
      dh = level.upsample->backward(dh);
      done(*level.upsample);
    }
    for (size_t b = level.blocks.size(); b-- > 0;) {
      if (!level.attn.empty()) {
        dh = level.attn[b]->backward(dh);
        done(*level.attn[b]);
      }
      dh = level.blocks[b]->backward(dh, dtemb_act);
      done(*level.blocks[b]);
      auto [d_h, d_skip] = split_channels(dh, concat_channels_[l][b]);
      dskips.push_back(d_skip);
      dh = d_h;
    }
  }
  concat_channels_.clear();

  dh = mid_block2_->backward(dh, dtemb_act);
  done(*mid_block2_);
  dh = mid_attn_->backward(dh);
  done(*mid_attn_);
  dh = mid_block1_->backward(dh, dtemb_act);
  done(*mid_block1_);

  // Down path, in reverse: the gradient of every skip joins where it was pushed, last first.
  size_t next = dskips.size();
  auto take_skip = [&] {
    CTSR_CHECK(next > 0, "UNet.backward: more skips pushed than popped");
    return dskips[--next];
  };
  for (size_t l = down_.size(); l-- > 0;) {
    Level& level = *down_[l];
    if (level.downsample) {
      dh = level.downsample->backward(add(dh, take_skip()));
      done(*level.downsample);
    }
    for (size_t b = level.blocks.size(); b-- > 0;) {
      dh = add(dh, take_skip());
      if (!level.attn.empty()) {
        dh = level.attn[b]->backward(dh);
        done(*level.attn[b]);
      }
      dh = level.blocks[b]->backward(dh, dtemb_act);
      done(*level.blocks[b]);
    }
  }
  dh = add(dh, take_skip());
  CTSR_CHECK(next == 0, "UNet.backward: ", next, " skip gradients were not used");
  Tensor dx = conv_in_->backward(dh, input_grad);
  done(*conv_in_);

  // Time embedding MLP.
  Tensor temb = temb_, hidden = temb_hidden_;
  temb_ = temb_hidden_ = Tensor();
  Tensor dtemb = silu_backward(temb, dtemb_act);
  Tensor dhidden = silu_backward(hidden, time_embed_2_->backward(dtemb));
  done(*time_embed_2_);
  time_embed_0_->backward(dhidden);  // d(emb) is not needed: t is an integer step
  done(*time_embed_0_);
  return dx;
}

}  // namespace ctsr
