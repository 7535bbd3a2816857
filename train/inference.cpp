#include "train/inference.h"
#include "runtime/allocator.h"

#include <algorithm>
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
  if (cache.latent_shape) trained_latent_ = {(*cache.latent_shape)[1], (*cache.latent_shape)[2], (*cache.latent_shape)[3]};
  for (const auto& [name, value] : {std::pair<const char*, const std::optional<int64_t>&>{"--tile", options.tile},
                                    {"--decode-tile", options.decode_tile}})
    CTSR_CHECK(!value || *value > 0, name, " ", *value, ": expected a positive number of latent voxels");
  for (const auto& [name, value] : {std::pair<const char*, const std::optional<int64_t>&>{"--overlap", options.overlap},
                                    {"--decode-overlap", options.decode_overlap},
                                    {"--encode-overlap", options.encode_overlap}})
    CTSR_CHECK(!value || *value >= 0, name, " ", *value, ": expected 0 or more latent voxels");
  CTSR_CHECK(std::isfinite(options.max_memory) && options.max_memory >= 0, "--max-memory ", options.max_memory,
             ": expected a positive size");
  CTSR_CHECK(options.max_batch >= 0, "the tile batch ", options.max_batch, ": expected 0 (automatic) or more");

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
  // Slabs of about 16 slices of 64 x 64 pixels per forward (16 slices at the training size, one
  // of 512 x 512): the refiner's activations stay flat as the slices grow.
  const int64_t slab = std::max<int64_t>(1, 16 * 64 * 64 / std::max<int64_t>(1, volume.dim(1) * volume.dim(2)));
  return clamp(restore_volume(*refiner_, volume.to(device), decoded.to(device), slab), -1.0, 1.0).to(Device::cpu());
}

namespace {

// tile / divisor rounded, at least 1, at most tile - 1 (0 for a tile of 1).
int64_t default_overlap(int64_t tile, int64_t divisor) {
  return std::clamp<int64_t>((tile + divisor / 2) / divisor, std::min<int64_t>(1, tile - 1), std::max<int64_t>(0, tile - 1));
}

std::array<int64_t, 3> cube(int64_t n) { return {n, n, n}; }

}  // namespace

size_t InferencePlan::estimated_peak() const {
  return fixed_bytes + std::max({size_t(encode_batch) * encode_tile_bytes, size_t(sample_batch) * sample_tile_bytes,
                                 size_t(decode_batch) * decode_tile_bytes});
}

std::string InferencePlan::str() const {
  auto tile_mem = [](size_t bytes) { return bytes ? ", " + format_bytes(bytes) + " per tile" : std::string(); };
  std::string s = "encode: " + encode.str() + " (latent voxels), " + std::to_string(encode_batch) + " per batch" +
                  tile_mem(encode_tile_bytes) + "\nsample: " + sample.str() + ", " + std::to_string(sample_batch) +
                  " per batch" + tile_mem(sample_tile_bytes) + "\ndecode: " + decode.str() + ", " +
                  std::to_string(decode_batch) + " per batch" + tile_mem(decode_tile_bytes);
  if (budget > 0)
    s += "\nmemory: " + format_bytes(fixed_bytes) + " held throughout, estimated peak " +
         format_bytes(estimated_peak()) + " of the budget " + format_bytes(budget);
  return s;
}

void SuperResolver::report(const std::string& stage, double fraction) const {
  if (options_.progress) options_.progress(stage, fraction);
}

InferencePlan SuperResolver::plan(const std::array<int64_t, 3>& volume, const std::array<int64_t, 3>* latent) {
  InferencePlan p;
  p.volume = volume;
  const int64_t f = vqae_->config().downsample();
  p.downsample = f;
  p.budget = size_t(options_.max_memory);
  // Encode tiles: the cache's patch; a whole-volume cache encoded the training volume at once.
  std::array<int64_t, 3> enc_tile = cube(patch_size_ / f), enc_overlap = cube(options_.encode_overlap.value_or(0));
  if (patch_size_ == 0) {
    enc_tile = trained_latent_[0] > 0 ? trained_latent_ : cube(8);
    for (size_t a = 0; a < 3; ++a) enc_overlap[a] = options_.encode_overlap.value_or(default_overlap(enc_tile[a], 4));
  }
  // The latent: the volume over f, rounded up, and at least one encode tile (the encoder sees
  // what it trained on; the reflected part is cropped away after decoding).
  for (size_t a = 0; a < 3; ++a) {
    CTSR_CHECK(volume[a] > 0, "a volume of ", volume[a], " voxels along an axis");
    p.latent[a] = latent ? (*latent)[a] : std::max((volume[a] + f - 1) / f, enc_tile[a]);
    enc_tile[a] = std::min(enc_tile[a], p.latent[a]);
    enc_overlap[a] = std::min(enc_overlap[a], enc_tile[a] - 1);
  }
  p.encode = TileGrid::make(p.latent, enc_tile, enc_overlap);
  const std::array<int64_t, 3> trained = trained_latent_[0] > 0 ? trained_latent_ : cube(8);
  std::array<int64_t, 3> tile = options_.tile ? cube(*options_.tile) : trained, overlap{};
  std::array<int64_t, 3> dtile = options_.decode_tile ? cube(*options_.decode_tile) : trained, doverlap{};
  for (size_t a = 0; a < 3; ++a) {
    tile[a] = std::min(tile[a], p.latent[a]);
    dtile[a] = std::min(dtile[a], p.latent[a]);
    overlap[a] = std::min(options_.overlap.value_or(default_overlap(tile[a], 4)), std::max<int64_t>(0, tile[a] - 1));
    doverlap[a] = std::min(options_.decode_overlap.value_or(default_overlap(dtile[a], 4)), std::max<int64_t>(0, dtile[a] - 1));
  }
  p.sample = TileGrid::make(p.latent, tile, overlap);
  p.decode = TileGrid::make(p.latent, dtile, doverlap);

  const Device device = options_.device;
  const bool gpu = device.kind == DeviceKind::cuda;
  const int64_t cap = options_.max_batch > 0 ? options_.max_batch : (gpu ? 8 : 1);
  if (!gpu && p.budget == 0) {  // one tile at a time, nothing to choose
    p.encode_batch = p.sample_batch = p.decode_batch = 1;
    last_plan_ = p;
    return p;
  }
  if (p.budget == 0) p.budget = device_memory_capacity(device) / 10 * 9;
  // What stays allocated: the weights (and on host memory what is already there, the input
  // volume); on the cpu also the output volume and the latents (the sampler keeps about eight
  // latent-sized tensors at once: x_t, the condition, the noise, the model's output, x0, eps).
  const int64_t E = vqae_->config().embedding_dim;
  const size_t voxels = size_t(volume[0] * volume[1] * volume[2]);
  const size_t latent_bytes = size_t(p.latent[0] * p.latent[1] * p.latent[2] * E) * sizeof(float);
  p.fixed_bytes = allocator_stats(device).allocated;
  if (device.is_host_memory()) p.fixed_bytes += voxels * sizeof(float) + 8 * latent_bytes;

  // One tile of each network on zeros, its peak beyond what was allocated before.
  NoGradGuard no_grad;
  auto probe = [&](const std::string& stage, const std::array<int64_t, 3>& t, int64_t in_scale, int64_t channels,
                   const std::function<void(const Tensor&)>& run) {
    const std::string key = stage + " " + std::to_string(t[0]) + "x" + std::to_string(t[1]) + "x" + std::to_string(t[2]);
    if (auto it = probed_.find(key); it != probed_.end()) return it->second;
    const size_t before = allocator_stats(device).allocated;
    reset_peak_memory(device);
    try {
      Tensor box = Tensor::zeros({1, t[0] * in_scale, t[1] * in_scale, t[2] * in_scale, channels}, DType::float32, device);
      run(box);
    } catch (const Error& e) {
      CTSR_FAIL("one ", stage, " tile of ", t[0] * in_scale, " x ", t[1] * in_scale, " x ", t[2] * in_scale,
                " does not fit on ", device.str(), ": ", e.what(), "; use a smaller tile");
    }
    const size_t bytes = allocator_stats(device).peak_allocated - std::min(before, allocator_stats(device).peak_allocated);
    probed_[key] = bytes;
    return bytes;
  };
  p.encode_tile_bytes = probe("encode", p.encode.tile(), f, 1, [&](const Tensor& x) { vqae_->encode(x); });
  const int64_t C = config_.model.out_channels;
  p.sample_tile_bytes = probe("sample", p.sample.tile(), 1, 2 * C, [&](const Tensor& x) {
    net_->forward(x, Tensor::from_vector(std::vector<int64_t>{0}, {1}, device));
  });
  p.decode_tile_bytes = probe("decode", p.decode.tile(), 1, E, [&](const Tensor& z) { vqae_->decode(z); });
  // 5% of the budget is kept back for what the estimate does not see (the allocator's size
  // classes, small tensors of the sampler and the blending).
  const size_t usable = p.budget - p.budget / 20;
  auto choose = [&](const char* stage, const TileGrid& grid, size_t per_tile, int64_t scale, const char* flag) {
    const std::array<int64_t, 3> t = grid.tile();
    CTSR_CHECK(p.fixed_bytes + per_tile <= usable, "--max-memory ", format_bytes(p.budget), " is too small for one ",
               stage, " tile of ", t[0] * scale, " x ", t[1] * scale, " x ", t[2] * scale, ": the weights",
               device.is_host_memory() ? ", the volumes and the latents take " : " take ", format_bytes(p.fixed_bytes),
               " and one tile ", format_bytes(per_tile), "; expected a budget of at least ",
               format_bytes((p.fixed_bytes + per_tile) / 19 * 20), " or a smaller ", flag);
    return std::clamp<int64_t>(int64_t((usable - p.fixed_bytes) / std::max<size_t>(per_tile, 1)), 1,
                               std::min(cap, grid.count()));
  };
  p.encode_batch = choose("encode", p.encode, p.encode_tile_bytes, f, "--patch-size");
  p.sample_batch = choose("sampling", p.sample, p.sample_tile_bytes, 1, "--tile");
  p.decode_batch = choose("decode", p.decode, p.decode_tile_bytes, f, "--decode-tile");
  last_plan_ = p;
  return p;
}

InferencePlan SuperResolver::plan_for_latent(const Tensor& latent) {
  const int64_t f = vqae_->config().downsample();
  const std::array<int64_t, 3> dims{latent.dim(1), latent.dim(2), latent.dim(3)};
  return plan({dims[0] * f, dims[1] * f, dims[2] * f}, &dims);
}

Tensor SuperResolver::encode(const Tensor& volume, const std::string& source, const InferencePlan& p) {
  CTSR_CHECK(volume.ndim() == 3, source, ": volume ", volume.shape().str(), " is not [D, H, W]");
  const Tensor x = volume.to(Device::cpu()).reshape({1, volume.dim(0), volume.dim(1), volume.dim(2), 1});
  const Device device = options_.device;
  Tensor z = Tensor::empty({1, p.latent[0], p.latent[1], p.latent[2], vqae_->config().embedding_dim});
  try {
    blend_tiles(p.encode, {{&x, p.downsample}}, 1, z, p.encode_batch,
                [&](const std::vector<Tensor>& boxes) { return vqae_->encode(boxes[0].to(device)); },
                [&](int64_t done, int64_t total) { report("encode", double(done) / double(total)); });
  } catch (const Error& e) {
    CTSR_FAIL(source, ": ", e.what());
  }
  return z;
}

Tensor SuperResolver::decode(const Tensor& latent, const InferencePlan& p) {
  const Device device = options_.device;
  const Tensor z = latent.to(Device::cpu());
  Tensor y = Tensor::empty({1, p.volume[0], p.volume[1], p.volume[2], 1});
  blend_tiles(p.decode, {{&z, 1}}, p.downsample, y, p.decode_batch,
              [&](const std::vector<Tensor>& boxes) { return clamp(vqae_->decode(boxes[0].to(device)), -1.0, 1.0); },
              [&](int64_t done, int64_t total) { report("decode", double(done) / double(total)); });
  return y.reshape({p.volume[0], p.volume[1], p.volume[2]});
}

Tensor SuperResolver::super_resolve(const Tensor& volume, const std::string& source, uint64_t sample_key) {
  NoGradGuard no_grad;
  CTSR_CHECK(volume.ndim() == 3, source, ": volume ", volume.shape().str(), " is not [D, H, W]");
  const InferencePlan p = plan({volume.dim(0), volume.dim(1), volume.dim(2)});
  const Tensor ld = vqae_->normalize_latent(encode(volume, source, p));
  return decode(vqae_->denormalize_latent(sample_latent(ld, p, sample_key)), p);
}

Tensor SuperResolver::decode_normalized(const Tensor& latent) {
  NoGradGuard no_grad;
  const Tensor z = vqae_->denormalize_latent(latent.to(Device::cpu()));
  return decode(z, plan_for_latent(z));
}

Tensor SuperResolver::sample_latent(const Tensor& ld, const InferencePlan& p, uint64_t sample_key) {
  const Device device = options_.device;
  return sample_in_tiles(
      *schedule_, diffusion_, ld, p.sample, p.sample_batch,
      [&](const Tensor& x_t, const Tensor& condition, int64_t t) {
        const int64_t b = x_t.dim(0);
        return net_->forward(concat_channels(x_t.to(device), condition.to(device)),
                             Tensor::from_vector(std::vector<int64_t>(size_t(b), t), {b}, device));
      },
      options_.seed, sample_key, [&](double fraction) { report("sample", fraction); });
}

Tensor SuperResolver::super_resolve_latent(const Tensor& ld_latent, uint64_t sample_key) {
  NoGradGuard no_grad;
  CTSR_CHECK(ld_latent.ndim() == 5 && ld_latent.dim(0) == 1 && ld_latent.dim(4) == config_.model.out_channels,
             "super_resolve_latent: the latent is ", ld_latent.shape().str(), ", expected [1, d, h, w, ",
             config_.model.out_channels, "]");
  const Tensor ld = ld_latent.to(Device::cpu());
  const InferencePlan p = plan_for_latent(ld);
  return decode(vqae_->denormalize_latent(sample_latent(ld, p, sample_key)), p);
}

Tensor SuperResolver::round_trip(const Tensor& volume, const std::string& source) {
  NoGradGuard no_grad;
  CTSR_CHECK(volume.ndim() == 3, source, ": volume ", volume.shape().str(), " is not [D, H, W]");
  const InferencePlan p = plan({volume.dim(0), volume.dim(1), volume.dim(2)});
  return decode(encode(volume, source, p), p);
}

}  // namespace ctsr::train
