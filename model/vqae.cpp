#include "model/vqae.h"

#include <algorithm>
#include <charconv>
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

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
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

std::optional<int64_t> recorded_num_groups(const io::TensorSource& source) {
  const auto* file = dynamic_cast<const io::SafetensorsReader*>(&source);
  if (file == nullptr) return std::nullopt;
  const auto it = file->metadata().find("num_groups");
  if (it == file->metadata().end()) return std::nullopt;
  const std::string& text = it->second;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  CTSR_CHECK(error == std::errc() && end == text.data() + text.size() && value > 0, source.path().filename().string(),
             ": metadata 'num_groups' is '", text, "', expected a positive integer");
  return value;
}

int64_t choose_num_groups(const io::TensorSource& source, std::optional<int64_t> requested, int64_t fallback,
                          std::string* warning) {
  const std::optional<int64_t> recorded = recorded_num_groups(source);
  if (!requested) return recorded ? *recorded : fallback;
  if (recorded && *recorded != *requested && warning != nullptr) {
    std::ostringstream s;
    s << source.path().filename().string() << " records num_groups " << *recorded << "; using the requested "
      << *requested;
    *warning = s.str();
  }
  return *requested;
}

VqaeConfig vqae_config_from(const io::TensorSource& source, int64_t num_groups) {
  const std::string file = source.path().filename().string();
  auto need = [&](const std::string& key, int ndim) -> const io::TensorRecord& {
    CTSR_CHECK(source.contains(key), file, ": no tensor '", key,
               "': not a PatchVolume VQ-AE checkpoint (or not its state_dict)");
    const io::TensorRecord& r = source.record(key);
    CTSR_CHECK(static_cast<int>(r.shape.size()) == ndim, file, ": tensor '", key, "' has ", r.shape.size(),
               " dimensions, expected ", ndim);
    return r;
  };
  VqaeConfig c;
  const auto& first = need("encoder.conv_first.weight", 5);
  c.n_hiddens = first.shape[0];
  c.image_channels = first.shape[1];
  c.levels = 0;
  while (source.contains("encoder.conv_blocks." + std::to_string(c.levels) + ".down.weight")) ++c.levels;
  CTSR_CHECK(c.levels >= 1, file, ": no 'encoder.conv_blocks.0.down.weight': the encoder does not downsample");
  const auto& codes = need("codebook.embeddings", 2);
  c.n_codes = codes.shape[0];
  c.embedding_dim = codes.shape[1];
  const auto& qkv = need("encoder.mid_block.attn.to_qkv.weight", 2);
  CTSR_CHECK(qkv.shape[0] % (3 * c.attention_head_dim) == 0, file,
             ": 'encoder.mid_block.attn.to_qkv.weight' has ", qkv.shape[0], " rows, expected 3 x heads x ",
             c.attention_head_dim);
  c.attention_heads = qkv.shape[0] / (3 * c.attention_head_dim);
  c.num_groups = num_groups;
  const std::string problem = c.num_groups_problem();
  CTSR_CHECK(problem.empty(), file, ": ", problem, "; set num_groups (--num-groups) to the value it was trained with");
  return c;
}

std::string vqae_checkpoint_key(const std::string& name) {
  return replace_all(replace_all(name, ".qkv.", ".to_qkv."), ".proj_out.", ".to_out.");
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

std::unique_ptr<Vqae> Vqae::load(const std::string& path, std::optional<int64_t> num_groups, Device device,
                                 std::string* warning) {
  auto source = io::open_tensor_source(path);
  return load(*source, choose_num_groups(*source, num_groups, VqaeConfig{}.num_groups, warning), device);
}

std::unique_ptr<Vqae> Vqae::load(const io::TensorSource& source, int64_t num_groups, Device device) {
  const VqaeConfig config = vqae_config_from(source, num_groups);
  LayerOptions o;
  o.device = device;
  auto model = std::make_unique<Vqae>(config, o);
  model->load_from(source);
  return model;
}

void Vqae::load_from(const io::TensorSource& source) {
  load_parameters(source, parameters(), vqae_checkpoint_key);
  const std::string file = source.path().filename().string();
  Tensor codes = from_pytorch_layout(source.load("codebook.embeddings"), codebook_.shape(), codebook_.dtype(), file,
                                     "codebook.embeddings");
  codebook_.copy_from(codes);
  set_code_range(file.c_str());
  if (source.contains("codebook.N") && source.contains("codebook.z_avg")) {
    codebook_n_.copy_from(from_pytorch_layout(source.load("codebook.N"), codebook_n_.shape(), codebook_n_.dtype(), file,
                                              "codebook.N"));
    codebook_z_avg_.copy_from(from_pytorch_layout(source.load("codebook.z_avg"), codebook_z_avg_.shape(),
                                                  codebook_z_avg_.dtype(), file, "codebook.z_avg"));
  } else {
    // No EMA history (an inference-only file): the state in which z_avg / N is the codebook.
    fill(codebook_n_, 1.0);
    codebook_z_avg_.copy_from(codes);
  }
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

namespace {
// Copies the box [o0, o0+n0) x [o1, o1+n1) x [o2, o2+n2) of sample `s` of a host [N, A, B, C, K]
// tensor to/from box index `b` of a host [P, n0, n1, n2, K] tensor.
void copy_box(const Tensor& big, int64_t s, std::array<int64_t, 3> origin, const Tensor& boxes, int64_t b,
              bool to_boxes) {
  const size_t es = dtype_size(big.dtype());
  const int64_t A = big.dim(1), B = big.dim(2), C = big.dim(3), K = big.dim(4);
  const int64_t n0 = boxes.dim(1), n1 = boxes.dim(2), n2 = boxes.dim(3);
  auto* pb = static_cast<unsigned char*>(big.raw_data());
  auto* px = static_cast<unsigned char*>(boxes.raw_data());
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j) {
      const int64_t big_row = (((s * A + origin[0] + i) * B + origin[1] + j) * C + origin[2]) * K;
      const int64_t box_row = ((b * n0 + i) * n1 + j) * n2 * K;
      const size_t bytes = static_cast<size_t>(n2 * K) * es;
      if (to_boxes) std::memcpy(px + box_row * es, pb + big_row * es, bytes);
      else std::memcpy(pb + big_row * es, px + box_row * es, bytes);
    }
}
}  // namespace

Tensor Vqae::patch_encode(const Tensor& x, int64_t patch, int64_t patches_per_batch) {
  const int64_t f = config_.downsample();
  CTSR_CHECK(patch > 0 && patch % f == 0, "patch_encode: patch size ", patch, " is not a positive multiple of ", f);
  check_volume(x, patch, "patch_encode");
  CTSR_CHECK(patches_per_batch > 0, "patch_encode: patches_per_batch ", patches_per_batch);
  Tensor host = x.to(Device::cpu());
  const int64_t N = x.dim(0), pd = x.dim(1) / patch, ph = x.dim(2) / patch, pw = x.dim(3) / patch;
  const int64_t lp = patch / f, E = config_.embedding_dim;
  Tensor out = Tensor::empty({N, pd * lp, ph * lp, pw * lp, E}, DType::float32, Device::cpu());
  const int64_t total = N * pd * ph * pw;
  auto origin_of = [&](int64_t index, int64_t scale) {
    const int64_t k = index % pw, j = (index / pw) % ph, i = (index / (pw * ph)) % pd;
    return std::array<int64_t, 3>{i * scale, j * scale, k * scale};
  };
  for (int64_t first = 0; first < total; first += patches_per_batch) {
    const int64_t count = std::min(patches_per_batch, total - first);
    Tensor boxes = Tensor::empty({count, patch, patch, patch, x.dim(4)}, x.dtype(), Device::cpu());
    for (int64_t b = 0; b < count; ++b)
      copy_box(host, (first + b) / (pd * ph * pw), origin_of(first + b, patch), boxes, b, true);
    Tensor latents = encode(boxes).to(Device::cpu());
    for (int64_t b = 0; b < count; ++b)
      copy_box(out, (first + b) / (pd * ph * pw), origin_of(first + b, lp), latents, b, false);
  }
  return out.to(device_);
}

Tensor Vqae::decode(const Tensor& z) {
  check_latent(z, "decode");
  NoGradGuard no_grad;
  Tensor q = codebook_quantize(z.device() == device_ ? z : z.to(device_), codebook_);
  return decoder.forward(post_vq_conv.forward(q));
}

Tensor Vqae::decode_sliding(const Tensor& z, int64_t slab, int64_t halo) {
  check_latent(z, "decode_sliding");
  CTSR_CHECK(slab > 0 && halo >= 0, "decode_sliding: slab ", slab, " and halo ", halo,
             " (slab > 0 and halo >= 0 expected)");
  NoGradGuard no_grad;
  const int64_t N = z.dim(0), d = z.dim(1), h = z.dim(2), w = z.dim(3), f = config_.downsample();
  Tensor out = Tensor::empty({N, d * f, h * f, w * f, config_.image_channels}, codebook_.dtype(), Device::cpu());
  const int64_t out_row = h * f * w * f * config_.image_channels;  // elements per output slice
  Tensor zd = z.device() == device_ ? z : z.to(device_);
  for (int64_t n = 0; n < N; ++n) {
    Tensor q = codebook_quantize(zd.slice(n, n + 1), codebook_);
    // The latent-resolution part (with its global attention) runs on the whole latent; only the
    // upsampling levels, where the memory is, go slab by slab.
    Tensor mid = decoder.forward_mid(post_vq_conv.forward(q));
    const int64_t C = mid.dim(4);
    Tensor rows = mid.reshape({d, h, w, C});
    for (int64_t a = 0; a < d; a += slab) {
      const int64_t b = std::min(d, a + slab), a0 = std::max<int64_t>(0, a - halo), b0 = std::min(d, b + halo);
      Tensor part = rows.slice(a0, b0).reshape({1, b0 - a0, h, w, C});
      Tensor y = decoder.forward_levels(part).reshape({(b0 - a0) * f, out_row});
      Tensor keep = y.slice((a - a0) * f, (b - a0) * f);
      out.reshape({N * d * f, out_row}).slice(n * d * f + a * f, n * d * f + b * f).copy_from(keep);
    }
  }
  return out;
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
