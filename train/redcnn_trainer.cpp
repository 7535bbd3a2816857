#include "train/redcnn_trainer.h"
#include "runtime/allocator.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "kernels/activation.h"
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "kernels/conv3d.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "train/config.h"
#include "train/panels.h"
#include "train/png.h"
#include "train/data/prefetch.h"
#include "train/tensorboard.h"
#include "train/data/volume_patches.h"

namespace ctsr::train {

namespace {

// Philox purposes (runtime/philox.h stream_offset) of the patch draws.
constexpr uint32_t kPatchPurpose = 0x5250;       // "RP": the training patches of step s
constexpr uint32_t kLightPatchPurpose = 0x524c;  // "RL": the light tier's fixed patches

int64_t below(uint32_t word, int64_t n) { return int64_t((uint64_t(word) * uint64_t(n)) >> 32); }

// The pair's id: its full-dose volume's id without list_training_volumes' "_hd".
std::string pair_id(const TrainingVolume& hd) { return hd.id.substr(0, hd.id.size() - 3); }

std::map<std::string, std::string> weights_metadata(const RedCnnTrainConfig& c, int64_t step) {
  std::map<std::string, std::string> meta{
      {"source", "ctsr_train_redcnn"}, {"step", std::to_string(step)}, {"seed", std::to_string(c.seed)}};
  if (!c.training.init_weights.empty()) meta["init_weights"] = c.training.init_weights;
  return meta;
}

// Copies the P x P patch of slice `slice` at (row, col) of `volume` ([D, H, W]) to out, through
// the transform: out[i][j] = patch[a][b] where (a, b) = (i, j), transposed when bit 0, a flipped
// when bit 1, b flipped when bit 2.
void copy_slice_patch(const Tensor& volume, const SlicePatch& s, int64_t P, float* out) {
  const int64_t H = volume.dim(1), W = volume.dim(2);
  const float* v = volume.data<float>() + (s.slice * H + s.row) * W + s.col;
  for (int64_t i = 0; i < P; ++i)
    for (int64_t j = 0; j < P; ++j) {
      int64_t a = (s.transform & 1) ? j : i, b = (s.transform & 1) ? i : j;
      if (s.transform & 2) a = P - 1 - a;
      if (s.transform & 4) b = P - 1 - b;
      out[i * P + j] = v[a * W + b];
    }
}

}  // namespace

struct RedCnnTrainer::Data {
  std::unique_ptr<VolumeSet> volumes;  // pair k: HD at 2k, LD at 2k + 1
  std::unique_ptr<VolumeSet> guides;   // model.in_channels 2: pair k's guide at k
  std::vector<int64_t> train, val;     // pair indices
  std::vector<SlicePatch> light_patches;
  std::unique_ptr<OrderedPrefetcher<std::pair<Tensor, Tensor>>> prefetch;  // last: stopped first
};

RedCnnTrainer::~RedCnnTrainer() = default;

RedCnnTrainer::RedCnnTrainer(const RedCnnTrainConfig& config, const RedCnnTrainerOptions& options)
    : config_(config), options_(options), out_dir_(config.output_dir), data_(std::make_unique<Data>()) {
  validate(config_);
  const RedCnnTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t P = c.training.patch_size;
  run_ = std::make_unique<Run>(static_cast<Task&>(*this), out_dir_, schedule_of(c),
                               RunOptions{options_.progress, options_.log, options_.after_step, nullptr});
  const std::optional<std::filesystem::path> resume_from = run_->resume_point(options_.resume, kRedCnnCheckpoint);

  // The pairs: HD then LD of each (list_training_volumes' order), read once.
  VqaeTrainConfig::Data listing;
  listing.pairs = c.data.pairs;
  listing.folder = "";
  listing.volumes = "both";
  listing.val_fraction = c.data.val_fraction;
  listing.split_seed = c.data.split_seed;
  data_->volumes = std::make_unique<VolumeSet>(list_training_volumes(listing), c.data.hu_window, /*patch=*/1,
                                               c.data.memory_limit_mb * 1024 * 1024);
  const VolumeSet& v = *data_->volumes;
  for (int64_t k = 0; 2 * k + 1 < v.size(); ++k) {
    const TrainingVolume &hd = v.entry(2 * k), &ld = v.entry(2 * k + 1);
    CTSR_CHECK(v.shape(2 * k) == v.shape(2 * k + 1), "data.pairs ", c.data.pairs, ": ", ld.path.string(), " is [",
               v.shape(2 * k + 1)[0], ", ", v.shape(2 * k + 1)[1], ", ", v.shape(2 * k + 1)[2], "] but its full-dose ",
               hd.path.string(), " is [", v.shape(2 * k)[0], ", ", v.shape(2 * k)[1], ", ", v.shape(2 * k)[2],
               "]; expected one shape per pair");
    CTSR_CHECK(v.shape(2 * k)[1] >= P && v.shape(2 * k)[2] >= P, "data.pairs ", c.data.pairs, ": ",
               hd.path.string(), " has slices of ", v.shape(2 * k)[1], " x ", v.shape(2 * k)[2],
               ", smaller than training.patch_size ", P, "; choose a smaller patch or leave the pair out");
    (hd.held_out ? data_->val : data_->train).push_back(k);
  }
  if (c.model.in_channels == 2) {
    std::vector<TrainingVolume> guides;
    for (int64_t k = 0; 2 * k + 1 < v.size(); ++k) {
      const TrainingVolume& hd = v.entry(2 * k);
      const std::string id = pair_id(hd);
      const std::filesystem::path path = std::filesystem::path(c.data.guide_dir) / (id + ".nii.gz");
      CTSR_CHECK(std::filesystem::is_regular_file(path), "data.guide_dir ", c.data.guide_dir, ": no guide ",
                 path.string(), " for pair ", id, "; expected one <id>.nii.gz per pair (e.g. ctsr_infer's output ",
                 "for its low-dose volume)");
      guides.push_back({id + "_guide", path, hd.held_out});
    }
    data_->guides = std::make_unique<VolumeSet>(std::move(guides), c.data.hu_window, /*patch=*/1,
                                                c.data.memory_limit_mb * 1024 * 1024);
    for (int64_t k = 0; k < data_->guides->size(); ++k)
      CTSR_CHECK(data_->guides->shape(k) == v.shape(2 * k + 1), "data.guide_dir ", c.data.guide_dir, ": ",
                 data_->guides->entry(k).path.string(), " is [", data_->guides->shape(k)[0], ", ",
                 data_->guides->shape(k)[1], ", ", data_->guides->shape(k)[2], "]; expected its pair's shape [",
                 v.shape(2 * k + 1)[0], ", ", v.shape(2 * k + 1)[1], ", ", v.shape(2 * k + 1)[2], "]");
  }
  CTSR_CHECK(!data_->train.empty(), "data.pairs ", c.data.pairs, ": every pair is held out for validation; expected ",
             "training pairs (lower data.val_fraction, or mark fewer pairs split=val)");
  const bool validating = c.validation.light_every > 0 || c.validation.full_every > 0;
  CTSR_CHECK(!validating || !data_->val.empty(), "validation is on (validation.light_every ", c.validation.light_every,
             ", validation.full_every ", c.validation.full_every, ") but data.pairs ", c.data.pairs,
             " holds out no pair (data.val_fraction ", c.data.val_fraction, "); raise data.val_fraction, or set both to 0");

  set_conv_engine(parse_conv_engine(c.conv_engine));
  LayerOptions layer;
  layer.device = device;
  layer.seed = c.seed;
  {
    ParameterMemoryLimit limit(device_memory_capacity(device), 2, "RED-CNN " + c.model.str());
    model_ = std::make_unique<RedCnn>(c.model, layer);
  }
  if (!c.training.init_weights.empty() && !resume_from) {
    LoadedRedCnn start = load_redcnn_weights(c.training.init_weights);
    CTSR_CHECK(start.window.lo == c.data.hu_window.lo && start.window.hi == c.data.hu_window.hi,
               "training.init_weights ", c.training.init_weights, ": trained in the HU window ", start.window.lo, ",",
               start.window.hi, "; expected data.hu_window ", c.data.hu_window.lo, ",", c.data.hu_window.hi);
    init_redcnn_from(*model_, *start.net, "training.init_weights " + c.training.init_weights);
  }
  adam_ = std::make_unique<AdamMoments>(model_->parameters(), device);
  for (int64_t j = 0; j < c.validation.light_patches && !data_->val.empty(); ++j) {
    SlicePatch p = training_patch(-1, j);
    p.transform = 0;
    data_->light_patches.push_back(p);
  }
  run_->start(resume_from);

  data_->prefetch = std::make_unique<OrderedPrefetcher<std::pair<Tensor, Tensor>>>(
      [this](int64_t m) {
        std::vector<SlicePatch> patches;
        for (int64_t g = 0; g < config_.training.batch_size; ++g) patches.push_back(training_patch(m, g));
        return cut(patches);
      },
      state_.step, c.data.prefetch_batches);
}

int64_t RedCnnTrainer::train_pairs() const { return int64_t(data_->train.size()); }
int64_t RedCnnTrainer::held_out_pairs() const { return int64_t(data_->val.size()); }

// s >= 0: a training patch from the training pairs; s = -1: a light-tier patch from the held-out ones.
SlicePatch RedCnnTrainer::training_patch(int64_t s, int64_t g) const {
  const bool light = s < 0;
  const std::vector<int64_t>& pool = light ? data_->val : data_->train;
  CTSR_CHECK(!pool.empty(), "training_patch: no pairs to draw from");
  const uint64_t offset = light ? philox::stream_offset(kLightPatchPurpose, 0) : philox::stream_offset(kPatchPurpose, uint64_t(s));
  const philox::Words w = philox::philox4x32_10(uint64_t(g), offset, config_.seed);
  const int64_t P = config_.training.patch_size;
  SlicePatch p;
  p.pair = pool[size_t(below(w.v[0], int64_t(pool.size())))];
  const auto& shape = data_->volumes->shape(2 * p.pair);
  p.slice = below(w.v[1], shape[0]);
  p.row = below(w.v[2], shape[1] - P + 1);
  p.col = below(w.v[3], shape[2] - P + 1);
  p.transform = config_.training.augment ? int(w.v[0] & 7u) : 0;
  return p;
}

std::pair<Tensor, Tensor> RedCnnTrainer::cut(const std::vector<SlicePatch>& patches) const {
  const int64_t B = int64_t(patches.size()), P = config_.training.patch_size, C = config_.model.in_channels;
  Tensor ld = Tensor::empty({B, 1, P, P, C}, DType::float32, Device::cpu());
  Tensor hd = Tensor::empty({B, 1, P, P, 1}, DType::float32, Device::cpu());
  std::map<int64_t, Tensor> read;  // each volume read once per batch
  auto volume = [&](int64_t index) -> const Tensor& {
    auto it = read.find(index);
    if (it == read.end()) it = read.emplace(index, data_->volumes->read(index)).first;
    return it->second;
  };
  std::map<int64_t, Tensor> guides;
  std::vector<float> plane(size_t(P * P));
  for (int64_t b = 0; b < B; ++b) {
    const SlicePatch& p = patches[size_t(b)];
    copy_slice_patch(volume(2 * p.pair), p, P, hd.data<float>() + b * P * P);
    if (C == 1) {
      copy_slice_patch(volume(2 * p.pair + 1), p, P, ld.data<float>() + b * P * P);
      continue;
    }
    // Channels last: LD at channel 0, the guide at channel 1 of every pixel.
    auto it = guides.find(p.pair);
    if (it == guides.end()) it = guides.emplace(p.pair, data_->guides->read(p.pair)).first;
    float* x = ld.data<float>() + b * P * P * C;
    for (int64_t c = 0; c < C; ++c) {
      copy_slice_patch(c == 0 ? volume(2 * p.pair + 1) : it->second, p, P, plane.data());
      for (int64_t j = 0; j < P * P; ++j) x[j * C + c] = plane[size_t(j)];
    }
  }
  return {ld, hd};
}

double RedCnnTrainer::step() {
  const RedCnnTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t s = state_.step;
  auto [ld_host, hd_host] = data_->prefetch->next();
  const Tensor x = ld_host.to(device), target = hd_host.to(device);
  model_->zero_grad();
  const Tensor y = model_->forward(x);
  last_loss_ = host_value(mse_loss(y, target));
  model_->backward(mse_loss_backward_pred(y, target, scalar_on(1.0, device)));
  const std::vector<Parameter*> params = model_->parameters();
  const double norm = AdamMoments::gradient_norm(params);
  last_grad_norm_ = norm;
  ++state_.step;
  if (!std::isfinite(last_loss_) || !std::isfinite(norm))
    return run_->skip_step(last_loss_, norm, c.training.max_consecutive_skips);
  state_.consecutive_skips = 0;
  AdamWConfig adam;
  adam.lr = learning_rate(s);
  adam.beta1 = c.optimizer.beta1;
  adam.beta2 = c.optimizer.beta2;
  adam.eps = c.optimizer.eps;
  adam.weight_decay = 0.0;
  adam_->update(params, norm, c.training.max_grad_norm, adam, ++state_.optimizer_updates);
  return last_loss_;
}

// ---- validation ----------------------------------------------------------------------------------

double RedCnnTrainer::validate_light() {
  CTSR_CHECK(!data_->light_patches.empty(), "validate_light: no held-out pairs");
  NoGradGuard no_grad;
  const auto& patches = data_->light_patches;
  const size_t B = size_t(config_.training.batch_size);
  double sum = 0;
  for (size_t first = 0; first < patches.size(); first += B) {
    const std::vector<SlicePatch> part(patches.begin() + std::ptrdiff_t(first),
                                       patches.begin() + std::ptrdiff_t(std::min(patches.size(), first + B)));
    const auto [ld, hd] = cut(part);
    const Tensor y = model_->forward(ld.to(options_.device));
    sum += host_value(mse_loss(y, hd.to(options_.device))) * double(part.size());
  }
  return sum / double(patches.size());
}

RedCnnFullValidation RedCnnTrainer::validate_full() {
  CTSR_CHECK(!data_->val.empty(), "validate_full: no held-out pairs");
  const RedCnnTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t count = std::min<int64_t>(c.validation.num_volumes, int64_t(data_->val.size()));
  auto scores = [&](const Tensor& pred, const Tensor& target, double& ssim_sum, double& psnr_sum) {
    const int64_t D = pred.dim(0), H = pred.dim(1), W = pred.dim(2);
    const Tensor a = pred.reshape({1, D, H, W}), b = target.reshape({1, D, H, W});
    ssim_sum += double(ssim(a, b, c.validation.data_range).per_sample.to(Device::cpu()).to_vector<float>()[0]);
    psnr_sum += double(psnr(a, b, c.validation.data_range).psnr.to(Device::cpu()).to_vector<float>()[0]);
  };
  RedCnnFullValidation r;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t pair = data_->val[size_t(k)];
    const Tensor hd = data_->volumes->read(2 * pair).to(device), ld = data_->volumes->read(2 * pair + 1).to(device);
    const Tensor restored =
        clamp(data_->guides ? restore_volume(*model_, ld, data_->guides->read(pair).to(device)) : restore_volume(*model_, ld),
              -1.0, 1.0);
    scores(restored, hd, r.ssim, r.psnr);
    scores(ld, hd, r.ssim_input, r.psnr_input);
    ++r.volumes;
    if (k < c.validation.panels) {
      PanelOptions options;
      options.spacing = data_->volumes->spacing(2 * pair);
      options.titles = data_->guides ? std::array<std::string, 4>{"LD", "REFINED", "HD", "|REFINED-HD|"}
                                     : std::array<std::string, 4>{"LD", "RED-CNN", "HD", "|RED-CNN-HD|"};
      options.caption = "WINDOW " + format_tick(c.data.hu_window.lo) + " TO " + format_tick(c.data.hu_window.hi) + " HU";
      const RgbImage image = render_slices_panel(ld.to(Device::cpu()), restored.to(Device::cpu()), hd.to(Device::cpu()), options);
      char name[64];
      std::snprintf(name, sizeof name, "step_%08lld_", static_cast<long long>(state_.step));
      const std::string id = pair_id(data_->volumes->entry(2 * pair));
      std::filesystem::create_directories(out_dir_ / "images");
      write_png(out_dir_ / "images" / (name + id + "_slices.png"), image);
      run_->tensorboard()->add_image("val/" + id + "/slices", image, state_.step);
    }
  }
  for (double* x : {&r.ssim, &r.psnr, &r.ssim_input, &r.psnr_input}) *x /= double(r.volumes);
  return r;
}

TierScores RedCnnTrainer::light_validation() {
  const double mse = validate_light();
  const double range = config_.validation.data_range;
  const double psnr_value = 10.0 * std::log10(range * range / mse);
  TierScores scores;
  scores.fields = {{"loss", mse}, {"psnr_redcnn", psnr_value}};
  scores.scalars = {{"val/light_loss", mse}, {"val/light_psnr_redcnn", psnr_value}};
  return scores;
}

TierScores RedCnnTrainer::full_validation() {
  const RedCnnFullValidation r = validate_full();
  TierScores scores;
  scores.fields = {{"ssim_redcnn", r.ssim},       {"psnr_redcnn", r.psnr}, {"ssim_input", r.ssim_input},
                   {"psnr_input", r.psnr_input}, {"volumes", r.volumes}};
  scores.scalars = {{"val/ssim_redcnn", r.ssim}, {"val/psnr_redcnn", r.psnr}, {"val/ssim_input", r.ssim_input},
                    {"val/psnr_input", r.psnr_input}};
  char text[200];
  std::snprintf(text, sizeof text, "validation at step %lld: ssim_redcnn %.4f, psnr_redcnn %.2f dB over %lld volumes (input %.4f, %.2f dB)",
                static_cast<long long>(state_.step), r.ssim, r.psnr, static_cast<long long>(r.volumes), r.ssim_input,
                r.psnr_input);
  scores.message = text;
  scores.ssim = r.ssim;
  return scores;
}

// ---- checkpoints ---------------------------------------------------------------------------------

std::filesystem::path RedCnnTrainer::save_checkpoint_now() { return run_->save_checkpoint(); }

void RedCnnTrainer::write_checkpoint(const std::filesystem::path& path, const TrainingState& state) {
  CheckpointInfo info;
  info.kind = kRedCnnCheckpoint;
  info.state = state;
  info.seed = config_.seed;
  info.config_yaml = to_yaml(config_);
  save_checkpoint(path, {model_->parameters(), {}, adam_->m(), adam_->v()}, info);
  write_redcnn_weights(out_dir_ / "redcnn.safetensors", *model_, config_.data.hu_window,
                       weights_metadata(config_, state.step));
}

CheckpointInfo RedCnnTrainer::read_checkpoint(const std::filesystem::path& path) {
  return load_checkpoint(path, {model_->parameters(), {}, adam_->m(), adam_->v()}, kRedCnnCheckpoint);
}

void export_redcnn_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& out) {
  const CheckpointInfo info = read_checkpoint_info(checkpoint, kRedCnnCheckpoint);
  const RedCnnTrainConfig config = redcnn_train_config_from_yaml(info.config_yaml, checkpoint.string());
  RedCnn model(config.model);
  load_weights(checkpoint, "model", model.parameters(), kRedCnnCheckpoint);
  write_redcnn_weights(out, model, config.data.hu_window, weights_metadata(config, info.state.step));
}

// ---- the run -------------------------------------------------------------------------------------

double RedCnnTrainer::learning_rate(int64_t step) const {
  const RedCnnTrainConfig& c = config_;
  return scheduled_learning_rate(c.training.learning_rate, c.training.lr_scheduler, c.warmup_steps(),
                                 c.training.max_steps, step);
}

std::string RedCnnTrainer::progress_text(double loss) const {
  char text[96];
  std::snprintf(text, sizeof text, "mse %.6f  lr %.2e", loss, learning_rate(state_.step > 0 ? state_.step - 1 : 0));
  return text;
}

std::string RedCnnTrainer::describe() const {
  const RedCnnTrainConfig& c = config_;
  const VolumeSet& v = *data_->volumes;
  std::ostringstream text;
  text << "training " << c.model.str() << " (" << model_->parameter_count() << " parameters) on "
       << options_.device.str() << "; " << data_->train.size() << " training pairs, " << data_->val.size()
       << " held out, " << (v.total_bytes() + (1 << 20) - 1) / (1 << 20) << " MiB "
       << (v.in_memory() ? "kept in memory" : "read again for every batch") << "; batch " << c.training.batch_size
       << " x " << c.training.patch_size << "^2 slice patches" << (c.training.augment ? " (flips and transposes)" : "")
       << ", steps " << state_.step << " -> " << c.training.max_steps;
  return text.str();
}

RunSummary RedCnnTrainer::run() { return run_->run(); }

}  // namespace ctsr::train
