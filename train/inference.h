// The inference pipeline of a trained ctsr_train checkpoint, shared by ctsr_infer and
// ctsr_evaluate: a degraded volume on the [-1, 1] scale -> encode (patches, as the cache was
// made) -> normalise -> sample the HD latent conditioned on it -> denormalise -> decode
// (in slabs of the training depth when deeper) -> clip to [-1, 1]; with a refiner (options.refiner,
// model/redcnn.h with two inputs), then the refiner applied to the degraded volume and that
// decoded result, clipped: the output keeps the input's detail the VQ-AE's codes cannot hold.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "model/diffusion.h"
#include "model/redcnn.h"
#include "model/unet.h"
#include "model/vqae.h"
#include "runtime/formats/volume.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace ctsr::train {

struct InferenceOptions {
  std::string weights = "ema";              // ema | model
  std::optional<int64_t> steps;             // default: the checkpoint's diffusion.sampling_steps
  std::optional<SamplerKind> sampler;       // default: the checkpoint's
  std::optional<double> eta;                // default: the checkpoint's ddim_eta
  std::optional<int64_t> patch_size;        // default: the cache's (0: whole volume)
  std::optional<int64_t> slab;              // default: the training depth when the input is deeper
  std::optional<int64_t> vqae_num_groups;   // default: the checkpoint's data.vqae_num_groups, else the file's record
  std::optional<io::HuWindow> window;       // default: the cache's
  uint64_t seed = 0;
  Device device = Device::cpu();
  std::string refiner;                      // two-input RED-CNN weights ("": the latent path alone)
};

class SuperResolver {
 public:
  // Checks the checkpoint, the VQ-AE and their agreement (latent channels, the cache's
  // normalisation bounds) before anything runs; errors name the file.
  SuperResolver(const std::filesystem::path& checkpoint, const std::string& vqae_weights,
                const InferenceOptions& options);
  ~SuperResolver();

  // [D, H, W] on [-1, 1] (cpu) -> the super-resolved volume, same shape, on [-1, 1] (cpu).
  // `sample_key` keys the sampler's noise (one per volume for reproducible batches of files).
  Tensor super_resolve(const Tensor& volume, const std::string& source, uint64_t sample_key = 0);
  // The same two from latents already encoded and normalised as a latent cache holds them
  // (ctsr_vqae cache; LatentDataset::load's [1, d, h, w, C]), made with this VQ-AE and patch size:
  // super_resolve_latent(normalize(encode(v))) is super_resolve(v), and decode_normalized of it
  // round_trip(v), without encoding again.
  Tensor super_resolve_latent(const Tensor& ld_latent, uint64_t sample_key = 0);
  Tensor decode_normalized(const Tensor& latent);
  // With a refiner: refine(volume, super_resolve(volume, ...)) is the result. Both [D, H, W] on
  // [-1, 1] cpu; the result too.
  bool has_refiner() const { return refiner_ != nullptr; }
  Tensor refine(const Tensor& volume, const Tensor& decoded);
  // The VQ-AE alone: decode(quantise(encode(volume))), clipped; what the first stage keeps.
  Tensor round_trip(const Tensor& volume, const std::string& source);

  const io::HuWindow& window() const { return window_; }
  int64_t patch_size() const { return patch_size_; }  // the encoding patch (0: whole volumes)
  const DiffusionConfig& diffusion() const { return diffusion_; }
  const DiffusionTrainConfig& config() const { return config_; }
  int64_t last_decode_slab() const { return last_slab_; }
  std::string warning() const { return warning_; }

 private:
  Tensor encode(const Tensor& volume, const std::string& source);
  Tensor decode(const Tensor& latent);
  DiffusionTrainConfig config_;
  DiffusionConfig diffusion_;
  InferenceOptions options_;
  io::HuWindow window_;
  int64_t patch_size_ = 64, trained_depth_ = 0, last_slab_ = 0;
  std::string warning_;
  std::unique_ptr<Vqae> vqae_;
  std::unique_ptr<UNet3D> net_;
  std::unique_ptr<NoiseSchedule> schedule_;
  std::unique_ptr<RedCnn> refiner_;
};

}  // namespace ctsr::train
