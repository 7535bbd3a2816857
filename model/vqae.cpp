// The VQ-AE network (model/vqae.h): its blocks, encode / decode of whole tensors and the training
// passes. Reading a checkpoint is in vqae_load.cpp, patch-wise encoding and slab decoding in
// vqae_tiling.cpp.
#include "model/vqae.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "kernels/binary.h"
#include "kernels/codebook.h"
#include "kernels/copy.h"
#include "model/pytorch_import.h"
#include "runtime/error.h"
#include "runtime/formats/safetensors.h"

namespace ctsr {

namespace {
LayerOptions stream_of(LayerOptions o, uint64_t& counter) {
  o.stream = counter++;
  return o;
}
}  // namespace

// ---- configuration -------------------------------------------------------------------------------

std::vector<int64_t> VqaeConfig::widths() const {
  std::vector<int64_t> w;
  for (int64_t i = 0; i < levels; ++i) w.push_back(n_hiddens << i);
  w.push_back(w.empty() ? n_hiddens : w.back());
  return w;
}

std::string VqaeConfig::str() const {
  std::ostringstream s;
  s << "n_hiddens " << n_hiddens << ", levels " << levels << " (" << downsample() << "x), widths [";
  const auto w = widths();
  for (size_t i = 0; i < w.size(); ++i) s << (i ? ", " : "") << w[i];
  s << "], image_channels " << image_channels << ", embedding_dim " << embedding_dim << ", n_codes " << n_codes
    << ", num_groups " << num_groups << ", attention " << attention_heads << " x " << attention_head_dim;
  return s.str();
}

std::string VqaeConfig::num_groups_problem() const {
  const auto w = widths();
  for (int64_t width : w) {
    if (num_groups > 0 && width % num_groups == 0) continue;
    std::ostringstream s;
    s << "num_groups " << num_groups << " does not divide the width " << width << " of this model (n_hiddens "
      << n_hiddens << ", widths [";
    for (size_t i = 0; i < w.size(); ++i) s << (i ? ", " : "") << w[i];
    s << "])";
    return s.str();
  }
  return "";
}

// ---- ResBlock ------------------------------------------------------------------------------------

VqaeResBlock::VqaeResBlock(int64_t in, int64_t out, const VqaeConfig& c, const LayerOptions& o)
    : norm1(in, c.num_groups, c.eps, /*fused_silu=*/true, o),
      conv1(in, out, 3, 1, 1, true, [&] { auto x = o; x.stream = 2 * o.stream; return x; }()),
      norm2(out, c.num_groups, c.eps, /*fused_silu=*/true, o),
      conv2(out, out, 3, 1, 1, true, [&] { auto x = o; x.stream = 2 * o.stream + 1; return x; }()) {
  if (in != out) {
    LayerOptions r = o;
    r.stream = (uint64_t(1) << 32) + o.stream;
    res_conv = std::make_unique<Conv3d>(in, out, 1, 1, 0, true, r);
  }
}

Tensor VqaeResBlock::forward(const Tensor& x) {
  Tensor h = conv2.forward(norm2.forward(conv1.forward(norm1.forward(x))));
  return add(res_conv ? res_conv->forward(x) : x, h);
}

Tensor VqaeResBlock::backward(const Tensor& dy) {
  Tensor dx = norm1.backward(conv1.backward(norm2.backward(conv2.backward(dy))));
  // The skip: dy itself, or through resConv (which read the same x as norm1).
  return add(dx, res_conv ? res_conv->backward(dy) : dy);
}

void VqaeResBlock::clear_saved() {
  norm1.clear_saved();
  conv1.clear_saved();
  norm2.clear_saved();
  conv2.clear_saved();
  if (res_conv) res_conv->clear_saved();
}

void VqaeResBlock::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(norm1, prefix, "norm1", out);
  collect_child(conv1, prefix, "conv1", out);
  collect_child(norm2, prefix, "norm2", out);
  collect_child(conv2, prefix, "conv2", out);
  if (res_conv) collect_child(*res_conv, prefix, "resConv", out);
}

// ---- Encoder -------------------------------------------------------------------------------------

struct VqaeEncoder::Level {
  std::unique_ptr<VqaeResBlock> res1, res2;
  std::unique_ptr<Conv3d> down;  // null on the last level (identity)
};
VqaeEncoder::~VqaeEncoder() = default;

namespace {
AttentionOptions attention_options(const VqaeConfig& c) {
  AttentionOptions a;
  a.heads = c.attention_heads;
  a.head_dim = c.attention_head_dim;
  a.groups = c.num_groups;
  a.eps = c.eps;
  a.qkv_bias = false;
  return a;
}
}  // namespace

VqaeEncoder::VqaeEncoder(const VqaeConfig& c, const LayerOptions& o) {
  uint64_t s = o.stream * 1000 + 1;
  const auto w = c.widths();
  conv_first_ = std::make_unique<Conv3d>(c.image_channels, w[0], 3, 1, 1, true, stream_of(o, s));
  for (size_t i = 0; i < w.size(); ++i) {
    auto level = std::make_unique<Level>();
    const int64_t in = i == 0 ? w[0] : w[i - 1];
    level->res1 = std::make_unique<VqaeResBlock>(in, w[i], c, stream_of(o, s));
    level->res2 = std::make_unique<VqaeResBlock>(w[i], w[i], c, stream_of(o, s));
    if (i + 1 < w.size()) level->down = std::make_unique<Conv3d>(w[i], w[i], 4, 2, 1, true, stream_of(o, s));
    levels_.push_back(std::move(level));
  }
  mid_res1_ = std::make_unique<VqaeResBlock>(w.back(), w.back(), c, stream_of(o, s));
  mid_attn_ = std::make_unique<AttentionBlock>(w.back(), attention_options(c), stream_of(o, s));
  mid_res2_ = std::make_unique<VqaeResBlock>(w.back(), w.back(), c, stream_of(o, s));
  final_norm_ = std::make_unique<GroupNorm>(w.back(), c.num_groups, c.eps, true, o);
  final_conv_ = std::make_unique<Conv3d>(w.back(), c.embedding_dim, 3, 1, 1, true, stream_of(o, s));
}

Tensor VqaeEncoder::forward(const Tensor& x) {
  Tensor h = conv_first_->forward(x);
  for (auto& level : levels_) {
    h = level->res2->forward(level->res1->forward(h));
    if (level->down) h = level->down->forward(h);
  }
  h = mid_res2_->forward(mid_attn_->forward(mid_res1_->forward(h)));
  return final_conv_->forward(final_norm_->forward(h));
}

Tensor VqaeEncoder::backward(const Tensor& dy, bool input_grad) {
  Tensor dh = final_norm_->backward(final_conv_->backward(dy));
  dh = mid_res1_->backward(mid_attn_->backward(mid_res2_->backward(dh)));
  for (auto level = levels_.rbegin(); level != levels_.rend(); ++level) {
    if ((*level)->down) dh = (*level)->down->backward(dh);
    dh = (*level)->res1->backward((*level)->res2->backward(dh));
  }
  return conv_first_->backward(dh, input_grad);
}

void VqaeEncoder::clear_saved() {
  conv_first_->clear_saved();
  for (auto& level : levels_) {
    level->res1->clear_saved();
    level->res2->clear_saved();
    if (level->down) level->down->clear_saved();
  }
  mid_res1_->clear_saved();
  mid_attn_->clear_saved();
  mid_res2_->clear_saved();
  final_norm_->clear_saved();
  final_conv_->clear_saved();
}

void VqaeEncoder::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(*conv_first_, prefix, "conv_first", out);
  for (size_t i = 0; i < levels_.size(); ++i) {
    const std::string p = "conv_blocks." + std::to_string(i) + ".";
    collect_child(*levels_[i]->res1, prefix, p + "res1", out);
    collect_child(*levels_[i]->res2, prefix, p + "res2", out);
    if (levels_[i]->down) collect_child(*levels_[i]->down, prefix, p + "down", out);
  }
  collect_child(*mid_res1_, prefix, "mid_block.res1", out);
  collect_child(*mid_attn_, prefix, "mid_block.attn", out);
  collect_child(*mid_res2_, prefix, "mid_block.res2", out);
  collect_child(*final_norm_, prefix, "final_block.0", out);
  collect_child(*final_conv_, prefix, "final_block.2", out);
}

// ---- Decoder -------------------------------------------------------------------------------------

struct VqaeDecoder::Level {
  std::unique_ptr<VqaeResBlock> res1, res2;
  std::unique_ptr<ConvTranspose3d> up;  // null on the last level
};
VqaeDecoder::~VqaeDecoder() = default;

VqaeDecoder::VqaeDecoder(const VqaeConfig& c, const LayerOptions& o) {
  uint64_t s = o.stream * 1000 + 500;
  auto w = c.widths();
  std::reverse(w.begin(), w.end());
  conv_first_ = std::make_unique<Conv3d>(c.embedding_dim, w[0], 3, 1, 1, true, stream_of(o, s));
  mid_res1_ = std::make_unique<VqaeResBlock>(w[0], w[0], c, stream_of(o, s));
  mid_attn_ = std::make_unique<AttentionBlock>(w[0], attention_options(c), stream_of(o, s));
  mid_res2_ = std::make_unique<VqaeResBlock>(w[0], w[0], c, stream_of(o, s));
  for (size_t i = 0; i < w.size(); ++i) {
    auto level = std::make_unique<Level>();
    const int64_t in = i == 0 ? w[0] : w[i - 1];
    level->res1 = std::make_unique<VqaeResBlock>(in, w[i], c, stream_of(o, s));
    level->res2 = std::make_unique<VqaeResBlock>(w[i], w[i], c, stream_of(o, s));
    if (i + 1 < w.size()) level->up = std::make_unique<ConvTranspose3d>(w[i], w[i], 4, 2, 1, true, stream_of(o, s));
    levels_.push_back(std::move(level));
  }
  final_norm_ = std::make_unique<GroupNorm>(w.back(), c.num_groups, c.eps, true, o);
  final_conv_ = std::make_unique<Conv3d>(w.back(), c.image_channels, 3, 1, 1, true, stream_of(o, s));
}

Tensor VqaeDecoder::forward_mid(const Tensor& z) {
  return mid_res2_->forward(mid_attn_->forward(mid_res1_->forward(conv_first_->forward(z))));
}

Tensor VqaeDecoder::forward_levels(const Tensor& x) {
  Tensor h = x;
  for (auto& level : levels_) {
    h = level->res2->forward(level->res1->forward(h));
    if (level->up) h = level->up->forward(h);
  }
  return final_conv_->forward(final_norm_->forward(h));
}

Tensor VqaeDecoder::backward(const Tensor& dy) {
  Tensor dh = final_norm_->backward(final_conv_->backward(dy));
  for (auto level = levels_.rbegin(); level != levels_.rend(); ++level) {
    if ((*level)->up) dh = (*level)->up->backward(dh);
    dh = (*level)->res1->backward((*level)->res2->backward(dh));
  }
  dh = mid_res1_->backward(mid_attn_->backward(mid_res2_->backward(dh)));
  return conv_first_->backward(dh);
}

void VqaeDecoder::clear_saved() {
  conv_first_->clear_saved();
  mid_res1_->clear_saved();
  mid_attn_->clear_saved();
  mid_res2_->clear_saved();
  for (auto& level : levels_) {
    level->res1->clear_saved();
    level->res2->clear_saved();
    if (level->up) level->up->clear_saved();
  }
  final_norm_->clear_saved();
  final_conv_->clear_saved();
}

void VqaeDecoder::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(*conv_first_, prefix, "conv_first", out);
  collect_child(*mid_res1_, prefix, "mid_block.res1", out);
  collect_child(*mid_attn_, prefix, "mid_block.attn", out);
  collect_child(*mid_res2_, prefix, "mid_block.res2", out);
  for (size_t i = 0; i < levels_.size(); ++i) {
    const std::string p = "conv_blocks." + std::to_string(i) + ".";
    collect_child(*levels_[i]->res1, prefix, p + "res1", out);
    collect_child(*levels_[i]->res2, prefix, p + "res2", out);
    if (levels_[i]->up) collect_child(*levels_[i]->up, prefix, p + "up.conv_trans", out);
  }
  collect_child(*final_norm_, prefix, "final_block.0", out);
  collect_child(*final_conv_, prefix, "final_block.2", out);
}

// ---- the VQ-AE -----------------------------------------------------------------------------------

namespace {
LayerOptions with_seed_stream(LayerOptions o, uint64_t stream) {
  o.stream = stream;
  return o;
}
}  // namespace

Vqae::Vqae(const VqaeConfig& c, const LayerOptions& o)
    : encoder(c, with_seed_stream(o, 1)),
      decoder(c, with_seed_stream(o, 2)),
      pre_vq_conv(c.embedding_dim, c.embedding_dim, 1, 1, 0, true, with_seed_stream(o, 3)),
      post_vq_conv(c.embedding_dim, c.embedding_dim, 1, 1, 0, true, with_seed_stream(o, 4)),
      config_(c),
      device_(o.device) {
  CTSR_CHECK(o.dtype == DType::float32 || (o.dtype == DType::float64 && o.device.kind == DeviceKind::cpu),
             "Vqae: float32, or float64 on the cpu (gradient checks); got ", dtype_name(o.dtype), " on ", o.device.str());
  codebook_ = Tensor::zeros({c.n_codes, c.embedding_dim}, o.dtype, o.device);
  codebook_n_ = Tensor::zeros({c.n_codes}, o.dtype, o.device);
  codebook_z_avg_ = Tensor::zeros({c.n_codes, c.embedding_dim}, o.dtype, o.device);
}

void Vqae::collect(const std::string& prefix, std::vector<Parameter*>& out) {
  collect_child(encoder, prefix, "encoder", out);
  collect_child(decoder, prefix, "decoder", out);
  collect_child(pre_vq_conv, prefix, "pre_vq_conv", out);
  collect_child(post_vq_conv, prefix, "post_vq_conv", out);
}

std::vector<std::string> Vqae::checkpoint_keys() {
  std::vector<std::string> keys;
  for (Parameter* p : parameters()) keys.push_back(vqae_checkpoint_key(p->name));
  keys.push_back("codebook.embeddings");
  return keys;
}

void Vqae::set_code_range(const char* what) {
  const std::vector<float> v = cast(codebook_, DType::float32).to(Device::cpu()).to_vector<float>();
  code_min_ = *std::min_element(v.begin(), v.end());
  code_max_ = *std::max_element(v.begin(), v.end());
  CTSR_CHECK(code_max_ > code_min_, what, ": 'codebook.embeddings' has every element equal to ", code_min_,
             "; the latent normalisation needs a spread");
}

void Vqae::set_codebook(const Tensor& embeddings) {
  embeddings.check_defined("set_codebook");
  CTSR_CHECK(embeddings.shape() == codebook_.shape() && embeddings.dtype() == codebook_.dtype(),
             "set_codebook: embeddings ", embeddings.shape().str(), " ", dtype_name(embeddings.dtype()),
             ", expected ", codebook_.shape().str(), " ", dtype_name(codebook_.dtype()));
  codebook_.copy_from(embeddings);
  set_code_range("set_codebook");
}

void Vqae::set_codebook_ema(const Tensor& n, const Tensor& z_avg) {
  n.check_defined("set_codebook_ema N");
  z_avg.check_defined("set_codebook_ema z_avg");
  const char* dtype = dtype_name(codebook_.dtype());
  CTSR_CHECK(n.shape() == codebook_n_.shape() && n.dtype() == codebook_n_.dtype(), "set_codebook_ema: N ",
             n.shape().str(), " ", dtype_name(n.dtype()), ", expected ", codebook_n_.shape().str(), " ", dtype);
  CTSR_CHECK(z_avg.shape() == codebook_z_avg_.shape() && z_avg.dtype() == codebook_z_avg_.dtype(),
             "set_codebook_ema: z_avg ", z_avg.shape().str(), " ", dtype_name(z_avg.dtype()), ", expected ",
             codebook_z_avg_.shape().str(), " ", dtype);
  codebook_n_.copy_from(n);
  codebook_z_avg_.copy_from(z_avg);
}

void Vqae::check_volume(const Tensor& x, int64_t multiple, const char* what) const {
  x.check_defined(what);
  CTSR_CHECK(x.ndim() == 5 && x.dim(4) == config_.image_channels, what, ": volume ", x.shape().str(),
             " is not [N, D, H, W, ", config_.image_channels, "]");
  const char* axes[] = {"D", "H", "W"};
  for (int a = 0; a < 3; ++a)
    CTSR_CHECK(x.dim(1 + a) % multiple == 0 && x.dim(1 + a) > 0, what, ": volume ", x.shape().str(), " has ", axes[a],
               " = ", x.dim(1 + a), ", not a multiple of ", multiple);
}

void Vqae::check_latent(const Tensor& z, const char* what) const {
  z.check_defined(what);
  CTSR_CHECK(z.ndim() == 5, what, ": latent ", z.shape().str(), " is not [N, d, h, w, ", config_.embedding_dim, "]");
  CTSR_CHECK(z.dim(4) == config_.embedding_dim, what, ": latent has ", z.dim(4), " channels, the VQ-AE expects ",
             config_.embedding_dim);
  z.check_dtype(codebook_.dtype(), what);
}

Tensor Vqae::encode(const Tensor& x) {
  check_volume(x, config_.downsample(), "encode");
  NoGradGuard no_grad;
  return pre_vq_conv.forward(encoder.forward(x.device() == device_ ? x : x.to(device_)));
}

// ---- training ------------------------------------------------------------------------------------

VqaeTrainForward Vqae::forward_train(const Tensor& x) {
  check_volume(x, config_.downsample(), "forward_train");
  VqaeTrainForward out;
  out.z_e = pre_vq_conv.forward(encoder.forward(x.device() == device_ ? x : x.to(device_)));
  out.indices = codebook_nearest(out.z_e, codebook_);
  out.z_q = codebook_lookup(out.indices, codebook_);
  // The straight-through z_st: its value is z_q (so the decoder is fed exactly what decode feeds
  // it), its gradient is z_e's, which backward_train routes around the quantiser.
  out.recon = decoder.forward(post_vq_conv.forward(out.z_q));
  train_saved_ = grad_enabled();
  recon_shape_ = out.recon.shape();
  latent_shape_ = out.z_e.shape();
  return out;
}

Tensor Vqae::backward_train(const Tensor& d_recon, const Tensor& d_z_e, bool input_grad) {
  CTSR_CHECK(train_saved_, "Vqae.backward_train called without forward_train (or twice after one, or after a "
                           "forward_train under NoGradGuard)");
  d_recon.check_defined("backward_train d_recon");
  CTSR_CHECK(d_recon.shape() == recon_shape_, "backward_train: d_recon ", d_recon.shape().str(),
             ", expected recon's shape ", recon_shape_.str());
  CTSR_CHECK(!d_z_e.defined() || d_z_e.shape() == latent_shape_, "backward_train: d_z_e ",
             d_z_e.defined() ? d_z_e.shape().str() : "", ", expected z_e's shape ", latent_shape_.str());
  train_saved_ = false;
  Tensor d_z = post_vq_conv.backward(decoder.backward(d_recon.device() == device_ ? d_recon : d_recon.to(device_)));
  if (d_z_e.defined()) d_z = add(d_z, d_z_e.device() == device_ ? d_z_e : d_z_e.to(device_));
  return encoder.backward(pre_vq_conv.backward(d_z), input_grad);
}

void Vqae::clear_saved() {
  encoder.clear_saved();
  decoder.clear_saved();
  pre_vq_conv.clear_saved();
  post_vq_conv.clear_saved();
  train_saved_ = false;
}

Tensor Vqae::normalize_latent(const Tensor& z) const {
  // z_n = (z - e_min) / (e_max - e_min) * 2 - 1, computed in double per element.
  std::vector<float> v = z.to(Device::cpu()).to_vector<float>();
  const double lo = code_min_, span = double(code_max_) - double(code_min_);
  for (float& e : v) e = static_cast<float>((double(e) - lo) / span * 2.0 - 1.0);
  return Tensor::from_vector<float>(v, z.shape(), z.device());
}

Tensor Vqae::denormalize_latent(const Tensor& z) const {
  std::vector<float> v = z.to(Device::cpu()).to_vector<float>();
  const double lo = code_min_, span = double(code_max_) - double(code_min_);
  for (float& e : v) e = static_cast<float>((double(e) + 1.0) / 2.0 * span + lo);
  return Tensor::from_vector<float>(v, z.shape(), z.device());
}

}  // namespace ctsr
