// The PatchVolume VQ-AE of 3D-MedDiffusion (../shared/specs/patchvolume-vqae.md), channels-last.
// Inference (under NoGradGuard, nothing saved):
//   encode(x)            [N, D, H, W, 1] -> [N, D/8, H/8, W/8, 8]   pre_vq_conv(encoder(x)), unquantised
//   patch_encode(x, p)   the same with every p^3 patch encoded on its own, latents put back in place
//   decode(z)            [N, d, h, w, 8] -> [N, 8d, 8h, 8w, 1]      decoder(post_vq_conv(quantise(z)))
//   decode_sliding(z, s) decode in axial slabs of s latent slices (plus a halo): bounded memory
//   normalize_latent / denormalize_latent   z_n = (z - e_min) / (e_max - e_min) * 2 - 1, e_min/e_max
//                                           the extremes of the codebook (their latent script's rule)
// Training (stage 1 of the original: L1 reconstruction, commitment loss, EMA codebook):
//   forward_train(x)     z_e = pre_vq_conv(encoder(x)); indices = nearest codes; z_q = their vectors;
//                        recon = decoder(post_vq_conv(z_st)) with the straight-through z_st: the value
//                        of z_q, the gradient of z_e (z_st = z_e + stopgrad(z_q - z_e))
//   backward_train(d_recon, d_z_e)  -> dx, accumulating every parameter's gradient; the gradient that
//                        reaches z_st passes to z_e unchanged and d_z_e (the commitment term's) adds to it
//   The codebook gets no gradient: an EMA updater replaces it (set_codebook) and keeps the original's
//   buffers N and z_avg (codebook_n, codebook_z_avg, set_codebook_ema).
// Every block (VqaeResBlock, VqaeEncoder, VqaeDecoder) has backward(dy) -> dx after a forward with
// gradients on, and clear_saved().
// Module and parameter names follow the checkpoint's keys (encoder.conv_blocks.1.res1.norm1.weight,
// ...) except where our layers use their own (attention: qkv -> to_qkv, proj_out -> to_out);
// vqae_checkpoint_key() maps one to the other.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/layers.h"
#include "runtime/formats/tensor_source.h"

namespace ctsr {

struct VqaeConfig {
  int64_t n_hiddens = 48;
  int64_t levels = 3;  // halvings per axis: downsample 2^levels
  int64_t image_channels = 1;
  int64_t embedding_dim = 8;
  int64_t n_codes = 8192;
  int64_t num_groups = 24;  // not in PyTorch's weights (our safetensors record it): settings or --num-groups
  double eps = 1e-6;
  int64_t attention_heads = 4, attention_head_dim = 32;

  // Widths of the encoder's levels: n_hiddens * 2^i for i < levels, then the last again.
  std::vector<int64_t> widths() const;
  int64_t downsample() const { return int64_t(1) << levels; }
  std::string str() const;  // "n_hiddens 48, levels 3 (8x), ..."
  // Empty when num_groups divides every width (GroupNorm needs it), else what is wrong:
  // "num_groups 3 does not divide the width 8 of this model (n_hiddens 8, widths [...])".
  std::string num_groups_problem() const;
};

// Reads the architecture off the tensor shapes of a checkpoint (or our safetensors copy);
// num_groups comes from the caller. Throws naming the file when a defining tensor is missing.
VqaeConfig vqae_config_from(const io::TensorSource& source, int64_t num_groups);

// The num_groups a weight file records: our safetensors files (ctsr_vqae convert and init) carry
// it as the metadata entry "num_groups"; PyTorch checkpoints do not (nullopt). A recorded value
// that is not a positive integer is an error naming the file.
std::optional<int64_t> recorded_num_groups(const io::TensorSource& source);

// The num_groups to build the model of `source` with: `requested` when given (an explicit choice:
// --num-groups, a settings file's value), else the file's record, else `fallback`. When a request
// overrides a different recorded value, *warning (if given) gets a one-line note saying so.
int64_t choose_num_groups(const io::TensorSource& source, std::optional<int64_t> requested, int64_t fallback,
                          std::string* warning = nullptr);

// Our parameter name -> the checkpoint's key.
std::string vqae_checkpoint_key(const std::string& name);

// ResBlockX (ci == co) and ResBlockXY (ci != co, with a 1x1x1 resConv):
//   skip(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))
class VqaeResBlock : public Module {
 public:
  VqaeResBlock(int64_t in, int64_t out, const VqaeConfig& config, const LayerOptions& options);
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void clear_saved() override;
  GroupNorm norm1;  // fused with the SiLU that follows
  Conv3d conv1;
  GroupNorm norm2;
  Conv3d conv2;
  std::unique_ptr<Conv3d> res_conv;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;
};

class VqaeEncoder : public Module {
 public:
  VqaeEncoder(const VqaeConfig& config, const LayerOptions& options);
  ~VqaeEncoder() override;
  Tensor forward(const Tensor& x);
  // input_grad false: only the parameter gradients (the image needs none); returns undefined.
  Tensor backward(const Tensor& dy, bool input_grad = true);
  void clear_saved() override;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  struct Level;
  std::unique_ptr<Conv3d> conv_first_;
  std::vector<std::unique_ptr<Level>> levels_;
  std::unique_ptr<VqaeResBlock> mid_res1_, mid_res2_;
  std::unique_ptr<AttentionBlock> mid_attn_;
  std::unique_ptr<GroupNorm> final_norm_;
  std::unique_ptr<Conv3d> final_conv_;
};

class VqaeDecoder : public Module {
 public:
  VqaeDecoder(const VqaeConfig& config, const LayerOptions& options);
  ~VqaeDecoder() override;
  Tensor forward(const Tensor& z) { return forward_levels(forward_mid(z)); }
  // conv_first and the middle block, at latent resolution (global attention)...
  Tensor forward_mid(const Tensor& z);
  // ...then the levels that upsample, and the final block.
  Tensor forward_levels(const Tensor& h);
  // The gradient through forward() (or one forward_mid then one forward_levels): each layer keeps
  // only its last forward, so after decode_sliding's several forward_levels it would be wrong
  // (decode_sliding runs under NoGradGuard and saves nothing).
  Tensor backward(const Tensor& dy);
  void clear_saved() override;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  struct Level;
  std::unique_ptr<Conv3d> conv_first_;
  std::unique_ptr<VqaeResBlock> mid_res1_, mid_res2_;
  std::unique_ptr<AttentionBlock> mid_attn_;
  std::vector<std::unique_ptr<Level>> levels_;
  std::unique_ptr<GroupNorm> final_norm_;
  std::unique_ptr<Conv3d> final_conv_;
};

// What forward_train returns (all on the model's device).
struct VqaeTrainForward {
  Tensor recon;    // [N, D, H, W, image_channels], the decoder's output
  Tensor z_e;      // [N, D/8, H/8, W/8, E], pre_vq_conv(encoder(x)), for the commitment loss
  Tensor z_q;      // the same shape: the nearest codes' vectors, the value the decoder saw
  Tensor indices;  // int64 [N, D/8, H/8, W/8], the codes' indices (for the EMA update and usage)
};

class Vqae : public Module {
 public:
  // float32 (every path), or float64 on the cpu for gradient checks (normalize_latent and
  // denormalize_latent take float32 only).
  Vqae(const VqaeConfig& config, const LayerOptions& options = {});
  // Opens a .ckpt (torch.save) or our .safetensors, reads the architecture, builds and loads.
  // num_groups as choose_num_groups picks it, with the released model's 24 as the fallback.
  static std::unique_ptr<Vqae> load(const std::string& path, std::optional<int64_t> num_groups, Device device,
                                    std::string* warning = nullptr);
  // The same from an open file, with num_groups decided.
  static std::unique_ptr<Vqae> load(const io::TensorSource& source, int64_t num_groups, Device device);
  // Loads every parameter and the codebook from `source` (shapes must match this config).
  void load_from(const io::TensorSource& source);

  const VqaeConfig& config() const { return config_; }
  Device device() const { return device_; }
  const Tensor& codebook() const { return codebook_; }  // [n_codes, embedding_dim], the model's dtype
  // The EMA state of the original's Codebook, on the model's device: N [n_codes] (the
  // running count of latents per code) and z_avg [n_codes, embedding_dim] (their running sum).
  // load_from reads codebook.N and codebook.z_avg when the file has them; otherwise N = 1 and
  // z_avg = the codebook, the state the original's data initialisation leaves (z_avg / N is the
  // codebook), so an EMA step from it moves each used code from where it was (N = 0 would divide
  // the code by its first count). A model built without a file has N = 0 and z_avg = the (zero)
  // codebook, as the original's constructor.
  const Tensor& codebook_n() const { return codebook_n_; }
  const Tensor& codebook_z_avg() const { return codebook_z_avg_; }
  // Replace the codebook ([n_codes, embedding_dim] in the model's dtype, any device; copied),
  // code_min/code_max following it, and the EMA buffers (shapes as above).
  void set_codebook(const Tensor& embeddings);
  void set_codebook_ema(const Tensor& n, const Tensor& z_avg);
  float code_min() const { return code_min_; }
  float code_max() const { return code_max_; }
  // The checkpoint keys this model uses, in our parameter order plus the codebook.
  std::vector<std::string> checkpoint_keys();

  Tensor encode(const Tensor& x);
  Tensor patch_encode(const Tensor& x, int64_t patch, int64_t patches_per_batch = 8);
  Tensor decode(const Tensor& z);
  Tensor decode_sliding(const Tensor& z, int64_t slab, int64_t halo = 2);
  Tensor normalize_latent(const Tensor& z) const;
  Tensor denormalize_latent(const Tensor& z) const;

  // Training forward with gradients on (x [N, D, H, W, image_channels], every size a multiple of
  // downsample(); moved to the model's device). Under a NoGradGuard it computes the same and saves
  // nothing (a validation loss). recon is bit for bit decode(z_e) (the decoder sees z_q exactly;
  // PyTorch's z_e + (z_q - z_e) can differ from z_q by an ulp).
  VqaeTrainForward forward_train(const Tensor& x);
  // d_recon: dLoss/d recon (recon's shape); d_z_e: an extra dLoss/d z_e (the commitment term),
  // undefined for none. Accumulates every parameter's gradient (the codebook gets none) and
  // returns dx, or undefined when input_grad is false (the image needs no gradient: the first
  // conv's data gradient is skipped).
  Tensor backward_train(const Tensor& d_recon, const Tensor& d_z_e, bool input_grad = true);
  void clear_saved() override;

  VqaeEncoder encoder;
  VqaeDecoder decoder;
  Conv3d pre_vq_conv, post_vq_conv;

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  void check_volume(const Tensor& x, int64_t multiple, const char* what) const;
  void check_latent(const Tensor& z, const char* what) const;
  void set_code_range(const char* what);  // code_min_/code_max_ from codebook_
  VqaeConfig config_;
  Device device_;
  Tensor codebook_, codebook_n_, codebook_z_avg_;
  float code_min_ = -1.0f, code_max_ = 1.0f;
  // What backward_train checks against: the shapes forward_train produced, while it has saved.
  bool train_saved_ = false;
  Shape recon_shape_, latent_shape_;
};

}  // namespace ctsr
