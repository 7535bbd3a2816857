#include "train/inference.h"
#include "runtime/allocator.h"

#include <cmath>

#include "kernels/activation.h"
#include "kernels/resample.h"
#include "runtime/error.h"
#include "train/data/cache_entry.h"

namespace ctsr::train {

SuperResolver::~SuperResolver() = default;

SuperResolver::SuperResolver(const std::filesystem::path& checkpoint, const std::string& vqae_weights,
                             const InferenceOptions& options)
    : options_(options) {
  CTSR_CHECK(options.weights == "ema" || options.weights == "model", "--weights ", options.weights,
             ": expected ema or model");
  const std::string file = checkpoint.string();
  const CheckpointInfo info = read_checkpoint_info(checkpoint);
  config_ = train_config_from_yaml(info.config_yaml, file);
  diffusion_ = config_.diffusion;
  if (options.steps) diffusion_.sampling_steps = *options.steps;
  if (options.sampler) diffusion_.sampler = *options.sampler;
  if (options.eta) diffusion_.ddim_eta = *options.eta;
  validate_diffusion_config(diffusion_);
  const TrainedCacheInfo cache = TrainedCacheInfo::from_extras(info.extra, file);
  if (options.window) window_ = *options.window;
  else if (cache.window) window_ = *cache.window;
  if (options.patch_size) patch_size_ = *options.patch_size;
  else if (cache.patch_size) patch_size_ = *cache.patch_size;
  CTSR_CHECK(patch_size_ >= 0, "--patch-size ", patch_size_, ": expected 0 (whole volume) or a positive size");
  if (cache.latent_shape) trained_depth_ = (*cache.latent_shape)[1];

  std::optional<int64_t> groups = options.vqae_num_groups;
  if (!groups && config_.data.vqae_num_groups > 0) groups = config_.data.vqae_num_groups;  // what training used
  vqae_ = Vqae::load(vqae_weights, groups, options.device, &warning_);
  CTSR_CHECK(vqae_->config().embedding_dim == config_.model.out_channels, "--vqae ", vqae_weights, " has ",
             vqae_->config().embedding_dim, " latent channels but the model in ", file, " denoises ",
             config_.model.out_channels);
  if (cache.latent_min)
    check_codebook_bounds(*vqae_, *cache.latent_min, *cache.latent_max, "--vqae " + vqae_weights,
                          file + " was trained on latents normalised with",
                          "use the VQ-AE its cache was made with (" + cache.weights + ")");
  LayerOptions layer;
  layer.device = options.device;
  {
    ParameterMemoryLimit limit(device_memory_capacity(options.device), 0, file + ": model " + config_.model.str());
    net_ = std::make_unique<UNet3D>(config_.model, layer);
  }
  net_->train(false);
  load_weights(checkpoint, options.weights, net_->parameters());
  schedule_ = std::make_unique<NoiseSchedule>(diffusion_);
  if (!options.refiner.empty()) {
    LoadedRedCnn refiner = load_redcnn_weights(options.refiner, layer);
    CTSR_CHECK(refiner.net->config().in_channels == 2, "--refiner ", options.refiner, ": ", refiner.net->config().str(),
               " takes the low-dose volume alone; expected a refiner of two inputs (model.in_channels 2)");
    CTSR_CHECK(refiner.window.lo == window_.lo && refiner.window.hi == window_.hi, "--refiner ", options.refiner,
               ": trained in the HU window ", refiner.window.lo, ",", refiner.window.hi, " but ", file, " works in ",
               window_.lo, ",", window_.hi, "; expected the same window");
    refiner_ = std::move(refiner.net);
  }
}

Tensor SuperResolver::refine(const Tensor& volume, const Tensor& decoded) {
  CTSR_CHECK(refiner_, "refine: no refiner was loaded (InferenceOptions::refiner)");
  const Device device = options_.device;
  return clamp(restore_volume(*refiner_, volume.to(device), decoded.to(device)), -1.0, 1.0).to(Device::cpu());
}

Tensor SuperResolver::encode(const Tensor& volume, const std::string& source) {
  CTSR_CHECK(volume.ndim() == 3, source, ": volume ", volume.shape().str(), " is not [D, H, W]");
  const Tensor x = volume.reshape({1, volume.dim(0), volume.dim(1), volume.dim(2), 1}).to(options_.device);
  try {
    return patch_size_ > 0 ? vqae_->patch_encode(x, patch_size_) : vqae_->encode(x);
  } catch (const Error& e) {
    CTSR_FAIL(source, ": ", e.what());
  }
}

Tensor SuperResolver::decode(const Tensor& latent) {
  // Deeper than what the model trained on: decode in slabs of the training depth.
  last_slab_ = options_.slab.value_or(trained_depth_ > 0 && latent.dim(1) > trained_depth_ ? trained_depth_ : 0);
  Tensor y = last_slab_ > 0 ? vqae_->decode_sliding(latent, last_slab_) : vqae_->decode(latent);
  y = clamp(y, -1.0, 1.0);
  return y.to(Device::cpu()).reshape({y.dim(1), y.dim(2), y.dim(3)});
}

Tensor SuperResolver::super_resolve(const Tensor& volume, const std::string& source, uint64_t sample_key) {
  NoGradGuard no_grad;
  return super_resolve_latent(vqae_->normalize_latent(encode(volume, source)), sample_key);
}

Tensor SuperResolver::decode_normalized(const Tensor& latent) {
  NoGradGuard no_grad;
  return decode(vqae_->denormalize_latent(latent.to(options_.device)));
}

Tensor SuperResolver::super_resolve_latent(const Tensor& ld_latent, uint64_t sample_key) {
  NoGradGuard no_grad;
  CTSR_CHECK(ld_latent.ndim() == 5 && ld_latent.dim(4) == config_.model.out_channels, "super_resolve_latent: the latent is ",
             ld_latent.shape().str(), ", expected [N, d, h, w, ", config_.model.out_channels, "]");
  const Tensor ld = ld_latent.to(options_.device);
  const int64_t n = ld.dim(0);
  const Device device = options_.device;
  Denoiser denoiser = [&](const Tensor& x_t, int64_t t) {
    return net_->forward(concat_channels(x_t, ld), Tensor::from_vector(std::vector<int64_t>(size_t(n), t), {n}, device));
  };
  Tensor sr = sample(*schedule_, diffusion_, ld.shape(), ld.dtype(), device, denoiser, options_.seed, {sample_key});
  return decode(vqae_->denormalize_latent(sr));
}

Tensor SuperResolver::round_trip(const Tensor& volume, const std::string& source) {
  NoGradGuard no_grad;
  return decode(encode(volume, source));
}

}  // namespace ctsr::train
