#include "train/trainer.h"
#include "runtime/allocator.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <sstream>

#include "kernels/activation.h"
#include "kernels/binary.h"
#include "kernels/conv3d.h"
#include "kernels/copy.h"
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "kernels/optimizer.h"
#include "kernels/random.h"
#include "kernels/resample.h"
#include "runtime/error.h"
#include "runtime/formats/volume.h"
#include "runtime/philox.h"
#include "train/data/cache_entry.h"
#include "train/baselines.h"
#include "train/data_parallel.h"
#include "train/data/latent_cache.h"
#include "train/data/latent_data.h"
#include "train/panels.h"
#include "train/png.h"
#include "train/run_support.h"
#include "train/tensorboard.h"

namespace ctsr::train {

namespace {

// Philox purposes of the training draws (runtime/philox.h stream_offset).
constexpr uint32_t kTimestepPurpose = 0x5453;     // "TS"
constexpr uint32_t kNoisePurpose = 0x4e4f;        // "NO"
constexpr uint32_t kCropPurpose = 0x4c43;         // "LC": training.latent_crop's windows
constexpr uint32_t kLightTimestepPurpose = 0x4c54;  // "LT": fixed timesteps of the light tier
constexpr uint32_t kLightNoisePurpose = 0x4c4e;     // "LN": its fixed noise
// Seed of the full tier's sampler, apart from the training seed (model/diffusion.h asks for one).
uint64_t sampling_seed(uint64_t seed) { return seed ^ 0x53414d504c455253ull; }  // "SAMPLERS"

Tensor scalar_tensor(double value, DType dtype, Device device) {
  if (dtype == DType::float64) return Tensor::from_vector(std::vector<double>{value}, {1}, device);
  return Tensor::from_vector(std::vector<float>{static_cast<float>(value)}, {1}, device);
}

double host_scalar(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  return h.dtype() == DType::float64 ? h.to_vector<double>()[0] : double(h.to_vector<float>()[0]);
}

// Fills sample i of a batch with standard normals from (seed, offset_of(i)).
template <class OffsetOf>
Tensor per_sample_normal(const Shape& shape, DType dtype, Device device, uint64_t seed, OffsetOf offset_of) {
  Tensor noise = Tensor::empty(shape, dtype, device);
  for (int64_t i = 0; i < shape[0]; ++i) {
    Tensor row = noise.select(i);
    fill_normal(row, seed, offset_of(i));
  }
  return noise;
}

}  // namespace

// ---- data and outputs ----------------------------------------------------------------------------

struct Trainer::Data {
  std::unique_ptr<LatentDataset> train, val;
  std::unique_ptr<SampleOrder> order;
  std::unique_ptr<Prefetcher> prefetch;
  bool warned_target = false;
  // The Gaussian's sigma of the comparison panels (chosen once, on training pairs); NaN when
  // their volumes cannot be read (the panels then show the decoded LD, SR and HD only).
  std::optional<double> panel_sigma;
};

namespace {

// A cache entry's volume at `path` (its ld_path or hd_path), windowed as the cache was; nothing
// when the entry names none or the file is not readable from here.
std::optional<io::Volume> cache_volume(const CacheEntryInfo& entry, const std::string& path) {
  if (path.empty() || !std::filesystem::exists(path)) return std::nullopt;  // a file, or a DICOM series folder
  return io::read_volume_unit(path, entry.window);
}

}  // namespace

double Trainer::panel_sigma() {
  if (data_->panel_sigma) return *data_->panel_sigma;
  double sigma = std::numeric_limits<double>::quiet_NaN();
  const int64_t count = std::min<int64_t>(4, data_->train->size());
  std::vector<VolumePair> pairs;
  for (int64_t i = 0; i < count; ++i) {
    const CacheEntryInfo entry = data_->train->info(i);
    auto ld = cache_volume(entry, entry.ld_path), hd = cache_volume(entry, entry.hd_path);
    if (!ld || !hd || ld->data.shape() != hd->data.shape()) break;
    pairs.push_back({ld->data, hd->data});
  }
  if (count > 0 && int64_t(pairs.size()) == count) {
    sigma = select_gaussian_sigma(count, [&](int64_t i) { return pairs[size_t(i)]; }).chosen;
    log_line("panels: the Gaussian baseline's sigma " + format_tick(sigma) + ", chosen by mean PSNR on " +
             std::to_string(count) + " training pairs");
  }
  data_->panel_sigma = sigma;
  return sigma;
}

Trainer::~Trainer() = default;

Trainer::Trainer(const DiffusionTrainConfig& config, const TrainerOptions& options)
    : config_(config), options_(options), out_dir_(config.output.dir), schedule_(config.diffusion),
      data_(std::make_unique<Data>()) {
  validate(config_);
  const DiffusionTrainConfig& c = config_;
  const Device device = options_.device;
  run_ = std::make_unique<Run>(static_cast<Task&>(*this), out_dir_, schedule_of(c),
                               RunOptions{options_.progress, options_.log, options_.after_step, options_.comm});
  comm_ = &run_->comm();
  const int64_t ranks = comm_->size(), accumulation = c.training.gradient_accumulation_steps;
  CTSR_CHECK(c.training.batch_size % (ranks * accumulation) == 0, "training.batch_size ", c.training.batch_size,
             " is not divisible by ", ranks, " ranks x training.gradient_accumulation_steps ", accumulation,
             " (every rank's micro-batches must have one size)");
  per_rank_ = c.training.batch_size / ranks;
  micro_ = per_rank_ / accumulation;

  // The data, checked before anything is built or written.
  if (std::filesystem::is_directory(c.data.cache_dir) && !cache_is_complete(c.data.cache_dir)) {
    const std::string what = "data.cache_dir " + c.data.cache_dir + " is incomplete: it has no " +
                             kCacheCompleteMarker + ", which ctsr_vqae cache writes once every pair is encoded (that run "
                             "was interrupted, failed, or is still going)";
    CTSR_CHECK(options_.allow_incomplete_cache, what,
               "; run the same ctsr_vqae cache command again to finish it (a cache made before the marker existed "
               "keeps its finished entries and gets the marker), or pass --allow-incomplete-cache to train on the entries "
               "there");
    log_line("warning: " + what + "; training on the entries there (--allow-incomplete-cache)");
  }
  data_->train = std::make_unique<LatentDataset>(c.data.cache_dir, "train");
  const Shape& latent = data_->train->latent_shape();
  CTSR_CHECK(latent[0] == c.model.out_channels, "model.out_channels is ", c.model.out_channels, " but the latents of ",
             data_->train->folder().string(), " have ", latent[0], " channels (model.in_channels must be twice that)");
  const bool validating = c.validation.light_every > 0 || c.validation.full_every > 0;
  if (validating) {
    CTSR_CHECK(std::filesystem::is_directory(std::filesystem::path(c.data.cache_dir) / "val"), "validation is on (",
               "validation.light_every ", c.validation.light_every, ", validation.full_every ", c.validation.full_every,
               ") but the cache ", c.data.cache_dir, " has no val/ split (ctsr_vqae cache --val-fraction)");
    data_->val = std::make_unique<LatentDataset>(c.data.cache_dir, "val");
    CTSR_CHECK(data_->val->latent_shape() == latent, data_->val->folder().string(), ": latents ",
               data_->val->latent_shape().str(), " differ from the train split's ", latent.str());
  }
  for (int a = 1; a <= 3; ++a)
    CTSR_CHECK(c.training.latent_crop <= latent[a], "training.latent_crop is ", c.training.latent_crop,
               " but the latents of ", data_->train->folder().string(), " are ", latent.str(),
               " ([C, d, h, w]); expected at most their smallest spatial size, or 0 for whole latents");
  const CacheEntryInfo first_entry = data_->train->info(0);
  cache_info_ = TrainedCacheInfo::to_extras(first_entry, latent);
  if (c.validation.full_every > 0) {
    CTSR_CHECK(std::filesystem::is_regular_file(c.data.vqae_weights), "data.vqae_weights: ", c.data.vqae_weights,
               ": no such file (the VQ-AE decodes samples for the full validation tier)");
    std::optional<int64_t> groups;
    if (c.data.vqae_num_groups > 0) groups = c.data.vqae_num_groups;
    std::string warning;
    vqae_ = Vqae::load(c.data.vqae_weights, groups, device, &warning);
    if (!warning.empty()) log_line("warning: " + warning);
    CTSR_CHECK(vqae_->config().embedding_dim == latent[0], "data.vqae_weights: ", c.data.vqae_weights, " has ",
               vqae_->config().embedding_dim, " latent channels but the cache's latents have ", latent[0]);
    // The cache's normalisation must be this VQ-AE's, or decoding would use other bounds.
    check_codebook_bounds(*vqae_, first_entry.latent_min, first_entry.latent_max,
                          "data.vqae_weights: " + c.data.vqae_weights, "the cache was normalised with",
                          "the cache was made with other weights (" + first_entry.weights + ")");
  }

  const std::optional<std::filesystem::path> resume_from = run_->resume_point(options_.resume);

  set_conv_engine(parse_conv_engine(c.kernels.conv));
  LayerOptions layer;
  layer.device = device;
  layer.seed = c.seed;
  layer.compute = c.training.precision == "bf16" ? DType::bfloat16 : DType::float32;
  {
    // Value, gradient, AdamW's two moments and the EMA's copy: checked as the model is made.
    ParameterMemoryLimit limit(device_memory_capacity(device), 3, "model " + c.model.str());
    model_ = std::make_unique<UNet3D>(c.model, layer);
  }
  ema_ = std::make_unique<UNet3D>(c.model, layer);
  ema_->train(false);
  ema_->set_checkpointing(false);
  for (Parameter* p : ema_->parameters()) p->grad = Tensor();  // never trained: no gradient memory
  dp_ = std::make_unique<DataParallel>(*comm_, trained(), c.distributed.zero1,
                                       static_cast<int64_t>(c.distributed.bucket_mb * 1024 * 1024));
  model_->set_gradients_ready([this](const std::vector<Parameter*>& params) { dp_->gradients_ready(params); });
  if (!resume_from) {
    // The same start on every rank, whatever each computed.
    for (UNet3D* net : {model_.get(), ema_.get()})
      for (Parameter* p : net->parameters()) comm_->broadcast(p->value, 0);
  }
  run_->start(resume_from);  // loads the checkpoint (read_checkpoint), opens the outputs

  // Training order and the reader thread, from the first micro-batch still to do.
  data_->order = std::make_unique<SampleOrder>(data_->train->size(), c.seed);
  // Micro-batch m of this rank: step m / accumulation, samples first_sample(j) .. + micro.
  data_->prefetch = std::make_unique<Prefetcher>(
      *data_->train,
      [this, accumulation](int64_t m) {
        std::vector<int64_t> indices;
        const int64_t step = m / accumulation, first = first_sample(m % accumulation);
        for (int64_t i = 0; i < micro_; ++i)
          indices.push_back(data_->order->at(step * config_.training.batch_size + first + i));
        return indices;
      },
      state_.step * accumulation, c.data.prefetch_batches);
}

// ---- one optimiser step --------------------------------------------------------------------------

std::array<int64_t, 3> latent_crop_origin(uint64_t seed, int64_t step, int64_t sample, const Shape& latent, int64_t crop) {
  CTSR_CHECK(latent.ndim() == 4 && crop > 0 && crop <= latent[1] && crop <= latent[2] && crop <= latent[3],
             "latent_crop_origin: a crop of ", crop, " in latents ", latent.str());
  const philox::Words w =
      philox::philox4x32_10(uint64_t(sample), philox::stream_offset(kCropPurpose, uint64_t(step)), seed);
  std::array<int64_t, 3> origin{};
  for (size_t a = 0; a < 3; ++a)
    origin[a] = int64_t((uint64_t(w.v[1 + a]) * uint64_t(latent[int64_t(a) + 1] - crop + 1)) >> 32);
  return origin;
}

Tensor crop_latents(const Tensor& batch, const std::vector<std::array<int64_t, 3>>& origins, int64_t crop) {
  CTSR_CHECK(batch.ndim() == 5 && batch.dtype() == DType::float32 && batch.device().kind == DeviceKind::cpu &&
                 int64_t(origins.size()) == batch.dim(0),
             "crop_latents: a batch ", batch.shape().str(), " with ", origins.size(), " windows");
  const int64_t B = batch.dim(0), D = batch.dim(1), H = batch.dim(2), W = batch.dim(3), C = batch.dim(4);
  Tensor out = Tensor::empty({B, crop, crop, crop, C});
  for (int64_t b = 0; b < B; ++b) {
    const auto& o = origins[size_t(b)];
    CTSR_CHECK(o[0] >= 0 && o[1] >= 0 && o[2] >= 0 && o[0] + crop <= D && o[1] + crop <= H && o[2] + crop <= W,
               "crop_latents: window ", b, " at (", o[0], ", ", o[1], ", ", o[2], ") of ", crop, "^3 leaves ",
               batch.shape().str());
    for (int64_t d = 0; d < crop; ++d)
      for (int64_t h = 0; h < crop; ++h)
        std::memcpy(out.data<float>() + (((b * crop + d) * crop + h) * crop) * C,
                    batch.data<float>() + (((b * D + o[0] + d) * H + o[1] + h) * W + o[2]) * C,
                    size_t(crop * C) * sizeof(float));
  }
  return out;
}

double Trainer::step() {
  const DiffusionTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t s = state_.step, batch = c.training.batch_size;
  const int64_t accumulation = c.training.gradient_accumulation_steps, ranks = comm_->size();
  const int64_t T = schedule_.timesteps();
  model_->train(true);
  model_->zero_grad();
  double loss_sum = 0;
  for (int64_t j = 0; j < accumulation; ++j) {
    LatentBatch host = data_->prefetch->next();
    const int64_t first = first_sample(j);  // the micro-batch's first sample in the global batch
    if (c.training.latent_crop > 0) {
      std::vector<std::array<int64_t, 3>> origins;
      for (int64_t i = 0; i < micro_; ++i)
        origins.push_back(latent_crop_origin(c.seed, s, first + i, data_->train->latent_shape(), c.training.latent_crop));
      host.hd = crop_latents(host.hd, origins, c.training.latent_crop);
      host.ld = crop_latents(host.ld, origins, c.training.latent_crop);
    }
    Tensor hd = host.hd.to(device), ld = host.ld.to(device);
    std::vector<int64_t> t(static_cast<size_t>(micro_));
    for (int64_t i = 0; i < micro_; ++i) {
      const double u =
          philox::uniform_at(c.seed, philox::stream_offset(kTimestepPurpose, uint64_t(s)), uint64_t(first + i));
      t[size_t(i)] = std::min<int64_t>(T - 1, static_cast<int64_t>(u * double(T)));
    }
    Tensor noise = per_sample_normal(hd.shape(), hd.dtype(), device, c.seed, [&](int64_t i) {
      return philox::stream_offset(kNoisePurpose, uint64_t(s * batch + first + i));
    });
    Tensor x_t = q_sample(schedule_, hd, noise, t);
    Tensor target = training_target(schedule_, c.diffusion.prediction_type, hd, noise, t);
    model_->set_dropout_rng(c.seed, uint64_t(s), first);
    Tensor prediction = model_->forward(concat_channels(x_t, ld), Tensor::from_vector(t, {micro_}, device));
    Tensor loss = mse_loss(prediction, target);
    loss_sum += host_scalar(loss);
    // Each micro-batch's mean scaled by 1 / (accumulation x ranks): the reduced sum is the mean
    // gradient of the global batch. The last backward reduces buckets as they finish.
    Tensor dloss = scalar_tensor(1.0 / double(accumulation * ranks), prediction.dtype(), device);
    if (j == accumulation - 1) dp_->arm();
    model_->backward(mse_loss_backward(prediction, target, dloss).dpred, /*input_grad=*/false);
  }
  dp_->finish();
  std::vector<double> losses{loss_sum};
  comm_->all_reduce_sum(losses);
  const double loss = losses[0] / double(accumulation * ranks);
  const double norm = dp_->grad_norm();
  last_grad_norm_ = norm;
  std::vector<double> bad{(!std::isfinite(loss) || !std::isfinite(norm)) ? 1.0 : 0.0};
  comm_->all_reduce_max(bad);  // one decision for every rank
  ++state_.step;
  if (bad[0] != 0.0) return run_->skip_step(loss, norm, c.training.max_consecutive_skips);
  state_.consecutive_skips = 0;

  // torch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  if (c.training.max_grad_norm > 0) {
    const double coefficient = kernels::clip_coefficient(norm, c.training.max_grad_norm);
    if (float(coefficient) < 1.0f) dp_->scale_gradients(coefficient);
  }
  AdamWConfig adam;
  adam.lr = learning_rate_at(c, s);
  adam.beta1 = c.optimizer.beta1;
  adam.beta2 = c.optimizer.beta2;
  adam.eps = c.optimizer.eps;
  adam.weight_decay = c.optimizer.weight_decay;
  dp_->adamw(adam, ++state_.optimizer_updates);

  // The EMA, with the warm-up of ema.warmup over the updates it has seen.
  const double n = double(state_.ema_updates);
  const double decay = c.ema.warmup ? std::min(c.ema.decay, (1.0 + n) / (10.0 + n)) : c.ema.decay;
  std::vector<Tensor*> ema_values;
  std::vector<const Tensor*> model_values;
  for (Parameter* p : ema_->parameters()) ema_values.push_back(&p->value);
  for (Parameter* p : trained()) model_values.push_back(&p->value);
  ema_update(ema_values, model_values, decay);
  ++state_.ema_updates;
  last_loss_ = loss;
  return loss;
}

// ---- validation ----------------------------------------------------------------------------------

UNet3D& Trainer::eval_model() {
  UNet3D& net = config_.validation.use_ema ? *ema_ : *model_;
  net.train(false);
  return net;
}

Tensor Trainer::eval_denoise(UNet3D& net, const Tensor& x_t, const Tensor& ld, const std::vector<int64_t>& t) {
  return net.forward(concat_channels(x_t, ld), Tensor::from_vector(t, {int64_t(t.size())}, x_t.device()));
}

double Trainer::validate_light() {
  CTSR_CHECK(data_->val, "validate_light: the cache has no val/ split");
  const DiffusionTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t T = schedule_.timesteps();
  const int64_t count = std::min(c.validation.light_samples, data_->val->size());
  const auto [begin, end] = rank_share(count, comm_->rank(), comm_->size());  // this rank's samples
  UNet3D& net = eval_model();
  NoGradGuard no_grad;
  std::vector<double> sum{0.0};
  for (int64_t first = begin; first < end; first += c.validation.batch_size) {
    std::vector<int64_t> indices;
    for (int64_t i = first; i < std::min(end, first + c.validation.batch_size); ++i) indices.push_back(i);
    LatentBatch host = data_->val->load(indices);
    Tensor hd = host.hd.to(device), ld = host.ld.to(device);
    std::vector<int64_t> t;
    for (int64_t i : indices) {
      const double u = philox::uniform_at(c.seed, philox::stream_offset(kLightTimestepPurpose, 0), uint64_t(i));
      t.push_back(std::min<int64_t>(T - 1, static_cast<int64_t>(u * double(T))));
    }
    Tensor noise = per_sample_normal(hd.shape(), hd.dtype(), device, c.seed, [&](int64_t k) {
      return philox::stream_offset(kLightNoisePurpose, uint64_t(indices[size_t(k)]));
    });
    Tensor prediction = eval_denoise(net, q_sample(schedule_, hd, noise, t), ld, t);
    Tensor target = training_target(schedule_, c.diffusion.prediction_type, hd, noise, t);
    sum[0] += host_scalar(mse_loss(prediction, target)) * double(indices.size());
  }
  comm_->all_reduce_sum(sum);
  return sum[0] / double(count);
}

FullValidation Trainer::validate_full() {
  CTSR_CHECK(data_->val, "validate_full: the cache has no val/ split");
  CTSR_CHECK(vqae_, "validate_full: no VQ-AE (data.vqae_weights)");
  const DiffusionTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t count = std::min(c.validation.num_samples, data_->val->size());
  const auto [begin, end] = rank_share(count, comm_->rank(), comm_->size());  // this rank's samples
  UNet3D& net = eval_model();
  NoGradGuard no_grad;
  // Sums over this rank's samples: ssim, psnr (SR), ssim, psnr of the decoded LD latent (the
  // input's round trip), samples, and whether any sample
  // lacked its HD volume.
  std::vector<double> sums(6, 0.0);
  std::map<int64_t, SamplePanels> panels;  // the panel samples this rank scored
  for (int64_t first = begin; first < end; first += c.validation.batch_size) {
    std::vector<int64_t> indices;
    std::vector<uint64_t> keys;
    for (int64_t i = first; i < std::min(end, first + c.validation.batch_size); ++i) {
      indices.push_back(i);
      keys.push_back(uint64_t(i));
    }
    const int64_t n = static_cast<int64_t>(indices.size());
    LatentBatch host = data_->val->load(indices);
    Tensor ld = host.ld.to(device), hd = host.hd.to(device);
    Denoiser denoiser = [&](const Tensor& x_t, int64_t t) {
      return eval_denoise(net, x_t, ld, std::vector<int64_t>(size_t(n), t));
    };
    Tensor z = sample(schedule_, c.diffusion, ld.shape(), ld.dtype(), device, denoiser, sampling_seed(c.seed), keys);
    auto decode = [&](const Tensor& latent) {
      Tensor volume = clamp(vqae_->decode(vqae_->denormalize_latent(latent)), -1.0, 1.0);
      return volume.reshape({volume.dim(0), volume.dim(1), volume.dim(2), volume.dim(3)});
    };
    Tensor sr = decode(z), ld_volume = decode(ld);
    // The target: the HD volumes the cache was made from, windowed as the cache was; the decoded
    // HD latents when those files are gone.
    Tensor target = Tensor::empty(sr.shape(), sr.dtype(), Device::cpu());
    bool from_volumes = true;
    std::vector<std::array<double, 3>> spacing(size_t(n), {1, 1, 1});
    for (int64_t k = 0; k < n; ++k) {
      const CacheEntryInfo entry = data_->val->info(indices[size_t(k)]);
      if (const auto& xyz = entry.spacing_xyz) spacing[size_t(k)] = {(*xyz)[2], (*xyz)[1], (*xyz)[0]};
      std::optional<io::Volume> v = from_volumes ? cache_volume(entry, entry.hd_path) : std::nullopt;
      if (!v || v->data.numel() != sr.numel() / n) {
        from_volumes = false;
        continue;
      }
      std::memcpy(static_cast<char*>(target.raw_data()) + size_t(k) * v->data.nbytes(), v->data.raw_data(),
                  v->data.nbytes());
    }
    Tensor target_device = from_volumes ? target.to(device) : decode(hd);
    if (!from_volumes) sums[5] = 1.0;
    auto values = [](const Tensor& t) { return t.to(Device::cpu()).to_vector<float>(); };
    const auto s_sr = values(ssim(sr, target_device, c.validation.data_range).per_sample);
    const auto s_ld = values(ssim(ld_volume, target_device, c.validation.data_range).per_sample);
    const auto p_sr = values(psnr(sr, target_device, c.validation.data_range).psnr);
    const auto p_ld = values(psnr(ld_volume, target_device, c.validation.data_range).psnr);
    for (int64_t k = 0; k < n; ++k) {
      sums[0] += s_sr[size_t(k)];
      sums[1] += p_sr[size_t(k)];
      sums[2] += s_ld[size_t(k)];
      sums[3] += p_ld[size_t(k)];
    }
    sums[4] += double(n);

    // Pictures of the first samples, drawn where they were scored.
    const Tensor sr_host = sr.to(Device::cpu()), ld_host = ld_volume.to(Device::cpu());
    const Tensor hd_host = target_device.to(Device::cpu());
    for (int64_t k = 0; k < n && indices[size_t(k)] < c.validation.panels; ++k) {
      PanelOptions options;
      options.spacing = spacing[size_t(k)];
      const Tensor a = ld_host.select(k), b = sr_host.select(k), h = hd_host.select(k);
      // The comparison panel (the evaluation's) when the cache's LD volume is readable: LD, the
      // Gaussian, the round trip of HD, SR, HD and the errors; else decoded LD, SR and HD.
      const CacheEntryInfo entry = data_->val->info(indices[size_t(k)]);
      std::optional<io::Volume> raw_ld = from_volumes ? cache_volume(entry, entry.ld_path) : std::nullopt;
      const double sigma = raw_ld && raw_ld->data.shape() == h.shape() ? panel_sigma() : std::nan("");
      RgbImage slices;
      if (std::isfinite(sigma)) {
        ComparisonVolumes v;
        v.id = data_->val->id(indices[size_t(k)]);
        v.window = entry.window;
        v.spacing = spacing[size_t(k)];
        v.ld = raw_ld->data;
        v.hd = h;
        v.sr = b;
        v.baseline_name = "gaussian";
        v.baseline = gaussian_filter(raw_ld->data, sigma);
        v.roundtrip = decode(hd.slice(k, k + 1)).to(Device::cpu()).select(0);
        slices = render_comparison_panel(v);
      } else {
        slices = render_slices_panel(a, b, h, options);
      }
      panels[indices[size_t(k)]] = {slices, render_orthogonal_panel(a, b, h, options), render_mip_panel(a, b, h, options)};
    }
  }
  std::vector<double> flags{sums[5]};
  sums.pop_back();
  comm_->all_reduce_sum(sums);
  comm_->all_reduce_max(flags);
  FullValidation result;
  result.samples = static_cast<int64_t>(sums[4]);
  result.ssim = sums[0] / sums[4];
  result.psnr = sums[1] / sums[4];
  result.ssim_input_roundtrip = sums[2] / sums[4];
  result.psnr_input_roundtrip = sums[3] / sums[4];
  result.target_is_volume = flags[0] == 0.0;
  if (!result.target_is_volume && !data_->warned_target) {
    log_line("warning: the HD volumes named in the cache's metadata are not readable from here; the full "
             "validation tier scores against the decoded HD latents instead");
    data_->warned_target = true;
  }

  // Rank 0 writes every picture: the rank that drew a sample's panels sends them.
  write_validation_panels(*comm_, count, c.validation.panels, state_.step, panels,
                          [&](int64_t i) { return data_->val->id(i); }, out_dir_, run_->tensorboard());
  return result;
}

// ---- checkpoints ---------------------------------------------------------------------------------

std::filesystem::path Trainer::save_checkpoint_now() { return run_->save_checkpoint(); }

void Trainer::write_checkpoint(const std::filesystem::path& path, const TrainingState& state) {
  // Collective: with ZeRO-1 the moments are gathered from every rank; rank 0 writes.
  std::vector<Tensor> m = dp_->gather_moments(false), v = dp_->gather_moments(true);
  if (!is_root()) return;
  std::vector<Tensor*> pm, pv;
  for (size_t i = 0; i < m.size(); ++i) pm.push_back(&m[i]), pv.push_back(&v[i]);
  CheckpointInfo info;
  info.state = state;
  info.seed = config_.seed;
  info.config_yaml = to_yaml(config_);
  info.extra = cache_info_;
  save_checkpoint(path, {trained(), ema_->parameters(), pm, pv}, info);
}

CheckpointInfo Trainer::read_checkpoint(const std::filesystem::path& path) {
  std::vector<Tensor> m, v;
  std::vector<Tensor*> pm, pv;
  for (Parameter* p : trained()) {
    m.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), options_.device));
    v.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), options_.device));
  }
  for (size_t i = 0; i < m.size(); ++i) pm.push_back(&m[i]), pv.push_back(&v[i]);
  CheckpointInfo info = load_checkpoint(path, {trained(), ema_->parameters(), pm, pv});
  dp_->load_moments(m, v);
  return info;
}

// ---- the run -------------------------------------------------------------------------------------

TierScores Trainer::light_validation() {
  const double loss = validate_light();
  TierScores scores;
  scores.fields = {{"loss", loss}};
  scores.scalars = {{"val/light_loss", loss}};
  return scores;
}

TierScores Trainer::full_validation() {
  const FullValidation r = validate_full();
  TierScores scores;
  scores.fields = {{"ssim_sr", r.ssim},
                   {"psnr_sr", r.psnr},
                   {"ssim_input_roundtrip", r.ssim_input_roundtrip},
                   {"psnr_input_roundtrip", r.psnr_input_roundtrip},
                   {"samples", r.samples},
                   {"target", r.target_is_volume ? "volume" : "decoded_latent"}};
  scores.scalars = {{"val/ssim_sr", r.ssim},
                    {"val/psnr_sr", r.psnr},
                    {"val/ssim_input_roundtrip", r.ssim_input_roundtrip},
                    {"val/psnr_input_roundtrip", r.psnr_input_roundtrip}};
  char text[200];
  std::snprintf(text, sizeof text,
                "validation at step %lld: ssim_sr %.4f (input round trip %.4f), psnr_sr %.2f dB (input round trip %.2f dB)",
                static_cast<long long>(state_.step), r.ssim, r.ssim_input_roundtrip, r.psnr, r.psnr_input_roundtrip);
  scores.message = text;
  scores.ssim = r.ssim;
  return scores;
}

std::string Trainer::progress_text(double loss) const {
  char quantities[96];
  std::snprintf(quantities, sizeof quantities, "loss %.5f  lr %.3g", loss, learning_rate_at(config_, state_.step - 1));
  return quantities;
}

std::string Trainer::describe() const {
  const DiffusionTrainConfig& c = config_;
  std::ostringstream text;
  text << "training " << c.model.str() << " (" << model_->parameter_count() << " parameters) on "
       << options_.device.str() << "; " << data_->train->size() << " training pairs, batch " << c.training.batch_size;
  if (comm_->size() > 1)
    text << " over " << comm_->size() << " ranks (" << comm_->backend() << (c.distributed.zero1 ? ", ZeRO-1" : "")
         << ")";
  text << " = " << comm_->size() << " x " << c.training.gradient_accumulation_steps << " x " << micro_ << ", steps "
       << state_.step << " -> " << c.training.max_steps;
  return text.str();
}

RunSummary Trainer::run() {
  RunSummary summary = run_->run();
  if (summary.interrupted) return summary;
  // Did it learn? The mean loss of this run's first and last 20 steps (skipped steps left out).
  if (summary.losses.size() >= 40) {
    auto mean = [](auto first, auto last) {
      double sum = 0;
      int64_t n = 0;
      for (auto it = first; it != last; ++it)
        if (std::isfinite(*it)) sum += *it, ++n;
      return n ? sum / double(n) : std::numeric_limits<double>::quiet_NaN();
    };
    char text[160];
    std::snprintf(text, sizeof text, "mean training loss: first 20 steps %.5f, last 20 steps %.5f",
                  mean(summary.losses.begin(), summary.losses.begin() + 20),
                  mean(summary.losses.end() - 20, summary.losses.end()));
    log_line(text);
  }
  return summary;
}

}  // namespace ctsr::train
