#include "train/vqae_trainer.h"
#include "runtime/allocator.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "kernels/activation.h"
#include "kernels/binary.h"
#include "kernels/codebook.h"
#include "kernels/conv3d.h"
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "kernels/optimizer.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "model/vqae_weights.h"
#include "train/config.h"
#include "train/panels.h"
#include "train/png.h"
#include "train/data/prefetch.h"
#include "train/run_support.h"
#include "train/tensorboard.h"
#include "train/data/volume_patches.h"

namespace ctsr::train {

namespace {

// Philox purposes (runtime/philox.h stream_offset) of the patch draws; the codebook's restarts
// use their own (model/codebook_ema.h).
constexpr uint32_t kPatchPurpose = 0x5650;       // "VP": the training patches of step s
constexpr uint32_t kLightPatchPurpose = 0x564c;  // "VL": the light tier's fixed patches


std::string window_text(const io::HuWindow& w) {
  std::ostringstream s;
  s << w.lo << "," << w.hi;
  return s.str();
}

// The codebook's buffers in a checkpoint, by name.
NamedTensors codebook_tensors(Tensor& embeddings, Tensor& counts, Tensor& sums) {
  return {{"codebook/embeddings", &embeddings}, {"codebook/N", &counts}, {"codebook/z_avg", &sums}};
}

void write_weights(const std::filesystem::path& path, Vqae& model, const VqaeTrainConfig& c, int64_t step) {
  VqaeWeightsOptions options;
  options.ema_buffers = true;
  options.metadata = {{"source", "ctsr_train_vqae"},
                      {"step", std::to_string(step)},
                      {"seed", std::to_string(c.seed)},
                      {"patch_size", std::to_string(c.training.patch_size)},
                      {"hu_window", window_text(c.encode.hu_window)}};
  write_vqae_weights(path, model, options);
}

// The architecture keys that must agree between model.* and a file of initial weights.
std::string architecture_of(const VqaeConfig& c) {
  std::ostringstream s;
  s << "n_hiddens " << c.n_hiddens << ", levels " << c.levels << ", embedding_dim " << c.embedding_dim
    << ", n_codes " << c.n_codes << ", image_channels " << c.image_channels << ", attention " << c.attention_heads
    << " x " << c.attention_head_dim;
  return s.str();
}

// The crop of a held-out volume that full validation scores: every axis cut down to a multiple of
// the patch (from the first voxel), as patch_encode needs.
std::array<int64_t, 3> cropped(const std::array<int64_t, 3>& shape, int64_t patch) {
  return {shape[0] / patch * patch, shape[1] / patch * patch, shape[2] / patch * patch};
}

}  // namespace

struct VqaeTrainer::Data {
  std::unique_ptr<VolumeSet> volumes;
  std::vector<int64_t> train, val;        // indices into volumes
  std::vector<PatchSpec> light_patches;   // fixed, drawn once
  std::unique_ptr<OrderedPrefetcher<Tensor>> prefetch;  // last: stopped before what it reads goes
};

VqaeTrainer::~VqaeTrainer() = default;

VqaeTrainer::VqaeTrainer(const VqaeTrainConfig& config, const VqaeTrainerOptions& options)
    : config_(config), options_(options), out_dir_(config.output_dir), data_(std::make_unique<Data>()) {
  validate(config_);
  const VqaeTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t patch = c.training.patch_size;
  run_ = std::make_unique<Run>(static_cast<Task&>(*this), out_dir_, schedule_of(c),
                               RunOptions{options_.progress, options_.log, options_.after_step, options_.comm});
  comm_ = &run_->comm();
  const int64_t ranks = comm_->size();
  CTSR_CHECK(c.training.batch_size % ranks == 0, "training.batch_size ", c.training.batch_size, " is not divisible by ",
             ranks, " ranks (every rank takes as many patches of the global batch)");
  per_rank_ = c.training.batch_size / ranks;

  // Where to start, before the (possibly slow) reading of every volume.
  const std::optional<std::filesystem::path> resume_from = run_->resume_point(options_.resume, kVqaeCheckpoint);
  const VqaeConfig architecture = c.vqae();
  std::unique_ptr<io::TensorSource> initial;
  if (!c.model.init_weights.empty() && !resume_from) {
    CTSR_CHECK(std::filesystem::is_regular_file(c.model.init_weights), "model.init_weights: ", c.model.init_weights,
               ": no such file");
    initial = io::open_tensor_source(c.model.init_weights);
    const VqaeConfig found = vqae_config_from(*initial, c.model.num_groups);
    CTSR_CHECK(architecture_of(found) == architecture_of(architecture), "model.init_weights: ", c.model.init_weights,
               " has ", architecture_of(found), " but the configuration's model is ", architecture_of(architecture),
               " (set model.* to the file's architecture)");
  }

  // The data: every volume read once, checked against the patch size.
  std::vector<TrainingVolume> listed = list_training_volumes(c.data);
  data_->volumes = std::make_unique<VolumeSet>(std::move(listed), c.encode.hu_window, patch,
                                               c.data.memory_limit_mb * 1024 * 1024);
  data_->train = data_->volumes->indices(false);
  data_->val = data_->volumes->indices(true);
  const std::string source = c.data.pairs.empty() ? "data.folder " + c.data.folder : "data.pairs " + c.data.pairs;
  CTSR_CHECK(!data_->train.empty(), source, ": every volume is held out for validation; expected training volumes ",
             "(lower data.val_fraction, or mark fewer pairs split=val)");
  const bool validating = c.validation.light_every > 0 || c.validation.full_every > 0;
  CTSR_CHECK(!validating || !data_->val.empty(), "validation is on (validation.light_every ", c.validation.light_every,
             ", validation.full_every ", c.validation.full_every, ") but ", source, " holds out no volume (data.val_fraction ",
             c.data.val_fraction, "); raise data.val_fraction, or set both to 0");
  for (int64_t j = 0; j < c.validation.light_patches && !data_->val.empty(); ++j)
    data_->light_patches.push_back(draw_patch(*data_->volumes, data_->val, patch, c.seed,
                                              philox::stream_offset(kLightPatchPurpose, 0), uint64_t(j)));

  // The model, the codebook and Adam's moments.
  set_conv_engine(parse_conv_engine(c.conv_engine));
  LayerOptions layer;
  layer.device = device;
  layer.seed = c.seed;
  {
    ParameterMemoryLimit limit(device_memory_capacity(device), 2, "the VQ-AE " + architecture.str());
    model_ = std::make_unique<Vqae>(architecture, layer);
  }
  codebook_ = std::make_unique<CodebookEma>(architecture.n_codes, architecture.embedding_dim, device, DType::float32,
                                            c.codebook.ema);
  if (initial) {
    model_->load_from(*initial);
    codebook_->set_state(model_->codebook(), model_->codebook_n(), model_->codebook_z_avg());
  }
  // One process keeps its own path (the gradients as the model left them); several ranks reduce
  // theirs through DataParallel, which also runs Adam (sharded with ZeRO-1).
  if (ranks > 1)
    dp_ = std::make_unique<DataParallel>(*comm_, model_->parameters(), c.distributed.zero1,
                                         static_cast<int64_t>(c.distributed.bucket_mb * 1024 * 1024));
  else
    adam_ = std::make_unique<AdamMoments>(model_->parameters(), device);
  run_->start(resume_from);  // loads the checkpoint (read_checkpoint), opens the outputs
  if (codebook_->initialized()) sync_codebook();

  // The batch of step m, read ahead on a background thread.
  const VolumeSet* volumes = data_->volumes.get();
  const std::vector<int64_t> pool = data_->train;
  const uint64_t seed = c.seed;
  // This rank's patches of the global batch: g = first .. first + per_rank - 1.
  const int64_t first = comm_->rank() * per_rank_, last = first + per_rank_;
  data_->prefetch = std::make_unique<OrderedPrefetcher<Tensor>>(
      [volumes, pool, seed, first, last, patch](int64_t m) {
        std::vector<PatchSpec> specs;
        for (int64_t g = first; g < last; ++g)
          specs.push_back(draw_patch(*volumes, pool, patch, seed, philox::stream_offset(kPatchPurpose, uint64_t(m)),
                                     uint64_t(g)));
        return cut_patches(*volumes, specs, patch);
      },
      state_.step, c.data.prefetch_batches);
}

std::string VqaeTrainer::data_summary() const {
  const VolumeSet& v = *data_->volumes;
  std::ostringstream s;
  s << v.size() << " volumes (" << data_->train.size() << " train, " << data_->val.size() << " held out), "
    << (v.total_bytes() + (1 << 20) - 1) / (1 << 20) << " MiB, "
    << (v.in_memory() ? "kept in memory" : "read again for every batch (more than data.memory_limit_mb)");
  return s.str();
}

void VqaeTrainer::sync_codebook() {
  model_->set_codebook(codebook_->embeddings());
  model_->set_codebook_ema(codebook_->ema_counts(), codebook_->ema_sums());
}

// ---- one optimiser step --------------------------------------------------------------------------

double VqaeTrainer::step() {
  const VqaeTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t s = state_.step;
  const int64_t ranks = comm_->size();
  Tensor x = data_->prefetch->next().to(device);
  model_->zero_grad();
  if (!codebook_->initialized()) {
    // The original initialises the codebook from the latents of its first training batch, before
    // quantising them; not from a batch whose latents are not finite (that step is skipped). With
    // several ranks, from the whole batch's latents (every rank the same codebook).
    const Tensor z = gather_batch(*comm_, model_->encode(x));
    if (!std::isfinite(sum_of_squares({&z}))) {
      ++state_.step;
      return skip_step(std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN());
    }
    codebook_->initialize_from(z, c.seed);
    sync_codebook();
  }
  const VqaeTrainForward out = model_->forward_train(x);
  const Tensor l1 = l1_loss(out.recon, x);
  const Tensor mse = mse_loss(out.recon, x);
  const Tensor commitment = commitment_loss(out.z_e, out.z_q, c.codebook.commitment);
  last_.l1 = host_value(l1);
  last_.mse = host_value(mse);
  last_.commitment = host_value(commitment);
  if (ranks > 1) {
    // The global batch's means: every rank's share is as large.
    std::vector<double> means{last_.l1, last_.mse, last_.commitment};
    comm_->all_reduce_sum(means);
    last_.l1 = means[0] / double(ranks);
    last_.mse = means[1] / double(ranks);
    last_.commitment = means[2] / double(ranks);
  }
  last_.loss = total_loss(last_);
  // Each rank's loss is its share's mean: scaled by 1/ranks, the gradients summed over the ranks
  // are those of the global batch's mean.
  const double share = 1.0 / double(ranks);
  Tensor d_recon = l1_loss_backward_pred(out.recon, x, scalar_on(c.training.l1_weight * share, device));
  if (c.training.mse_weight > 0)
    d_recon = add(d_recon, mse_loss_backward_pred(out.recon, x, scalar_on(c.training.mse_weight * share, device)));
  const Tensor d_z_e = commitment_loss_backward(out.z_e, out.z_q, scalar_on(share, device), c.codebook.commitment);
  if (dp_) dp_->arm();
  model_->backward_train(d_recon, d_z_e, /*input_grad=*/false);
  if (dp_) dp_->finish();

  const std::vector<Parameter*> params = model_->parameters();
  const double norm = dp_ ? dp_->grad_norm() : AdamMoments::gradient_norm(params);
  last_grad_norm_ = norm;
  ++state_.step;
  std::vector<double> bad{(!std::isfinite(last_.loss) || !std::isfinite(norm)) ? 1.0 : 0.0};
  comm_->all_reduce_max(bad);  // one decision for every rank
  if (bad[0] != 0.0) return skip_step(last_.loss, norm);
  state_.consecutive_skips = 0;
  AdamWConfig adam;
  adam.lr = learning_rate(s);
  adam.beta1 = c.optimizer.beta1;
  adam.beta2 = c.optimizer.beta2;
  adam.eps = c.optimizer.eps;
  adam.weight_decay = 0.0;  // Adam, as the original's torch.optim.Adam without weight decay
  if (dp_) {
    // torch's clip_grad_norm_, as AdamMoments::update does it.
    if (c.training.max_grad_norm > 0) {
      const double coefficient = kernels::clip_coefficient(norm, c.training.max_grad_norm);
      if (float(coefficient) < 1.0f) dp_->scale_gradients(coefficient);
    }
    dp_->adamw(adam, ++state_.optimizer_updates);
  } else {
    adam_->update(params, norm, c.training.max_grad_norm, adam, ++state_.optimizer_updates);
  }

  // The counts and sums of every rank's latents (on one process, CodebookEma::update).
  const CodebookStatistics statistics =
      codebook_->update_across_ranks(*comm_, out.z_e, out.indices, c.seed, uint64_t(s));
  sync_codebook();
  ++state_.ema_updates;
  last_perplexity_ = codebook_perplexity(statistics.counts);
  return last_.loss;
}

double VqaeTrainer::skip_step(double loss, double grad_norm) {
  return run_->skip_step(loss, grad_norm, config_.training.max_consecutive_skips);
}

// ---- validation ----------------------------------------------------------------------------------

VqaeLosses VqaeTrainer::validate_light() {
  CTSR_CHECK(!data_->light_patches.empty(), "validate_light: no held-out volumes");
  CTSR_CHECK(codebook_->initialized(), "validate_light: the codebook is made from the first training batch; train a step first");
  const VqaeTrainConfig& c = config_;
  NoGradGuard no_grad;
  const auto& patches = data_->light_patches;
  // This rank's patches; the sums of l1, mse and commitment over every rank's.
  const auto [begin, end] = rank_share(int64_t(patches.size()), comm_->rank(), comm_->size());
  std::vector<double> sums(3, 0.0);
  for (size_t first = size_t(begin); first < size_t(end); first += size_t(c.training.batch_size)) {
    const std::vector<PatchSpec> part(patches.begin() + std::ptrdiff_t(first),
                                      patches.begin() + std::ptrdiff_t(std::min(size_t(end), first + size_t(c.training.batch_size))));
    const Tensor x = cut_patches(*data_->volumes, part, c.training.patch_size).to(options_.device);
    const VqaeTrainForward out = model_->forward_train(x);
    sums[0] += host_value(l1_loss(out.recon, x)) * double(part.size());
    sums[1] += host_value(mse_loss(out.recon, x)) * double(part.size());
    sums[2] += host_value(commitment_loss(out.z_e, out.z_q, c.codebook.commitment)) * double(part.size());
  }
  comm_->all_reduce_sum(sums);
  VqaeLosses r;
  r.l1 = sums[0] / double(patches.size());
  r.mse = sums[1] / double(patches.size());
  r.commitment = sums[2] / double(patches.size());
  r.loss = total_loss(r);
  return r;
}

VqaeFullValidation VqaeTrainer::validate_full() {
  CTSR_CHECK(!data_->val.empty(), "validate_full: no held-out volumes");
  CTSR_CHECK(codebook_->initialized(), "validate_full: the codebook is made from the first training batch; train a step first");
  const VqaeTrainConfig& c = config_;
  const Device device = options_.device;
  const int64_t patch = c.training.patch_size, K = model_->config().n_codes;
  const int64_t count = std::min<int64_t>(c.validation.num_volumes, int64_t(data_->val.size()));
  std::vector<double> code_counts(size_t(K), 0.0);
  VqaeFullValidation r;
  const auto [begin, end] = rank_share(count, comm_->rank(), comm_->size());  // this rank's volumes
  std::map<int64_t, SamplePanels> panels;                                     // the panel volumes it scored
  for (int64_t k = begin; k < end; ++k) {
    const int64_t index = data_->val[size_t(k)];
    const Tensor whole = data_->volumes->read(index);
    const auto [D, H, W] = cropped(data_->volumes->shape(index), patch);
    Tensor input = Tensor::empty({D, H, W}, DType::float32, Device::cpu());
    for (int64_t d = 0; d < D; ++d)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(input.data<float>() + (d * H + h) * W, whole.data<float>() + (d * whole.dim(1) + h) * whole.dim(2),
                    size_t(W) * sizeof(float));
    const Tensor x = input.reshape({1, D, H, W, 1}).to(device);
    const Tensor z = model_->patch_encode(x, patch);
    const Tensor decoded = c.decode.slab > 0 ? model_->decode_sliding(z, c.decode.slab) : model_->decode(z);
    const Tensor recon = clamp(decoded.to(device), -1.0, 1.0).reshape({1, D, H, W});
    const Tensor target = x.reshape({1, D, H, W});
    r.ssim += double(ssim(recon, target, c.validation.data_range).per_sample.to(Device::cpu()).to_vector<float>()[0]);
    r.psnr += double(psnr(recon, target, c.validation.data_range).psnr.to(Device::cpu()).to_vector<float>()[0]);
    for (int64_t code : codebook_nearest(z, model_->codebook()).to(Device::cpu()).to_vector<int64_t>())
      code_counts[size_t(code)] += 1.0;
    ++r.volumes;
    if (k < c.validation.panels) {
      PanelOptions options = reconstruction_panel_options();
      options.spacing = data_->volumes->spacing(index);
      const Tensor recon_host = recon.to(Device::cpu()).reshape({D, H, W});
      panels[k] = {render_slices_panel(input, recon_host, input, options),
                   render_orthogonal_panel(input, recon_host, input, options),
                   render_mip_panel(input, recon_host, input, options)};
    }
  }
  std::vector<double> sums{r.ssim, r.psnr, double(r.volumes)};
  comm_->all_reduce_sum(sums);
  comm_->all_reduce_sum(code_counts);
  r.volumes = static_cast<int64_t>(sums[2]);
  r.ssim = sums[0] / double(r.volumes);
  r.psnr = sums[1] / double(r.volumes);

  // Rank 0 writes every picture: the rank that drew a volume's panels sends them.
  write_validation_panels(*comm_, count, c.validation.panels, state_.step, panels,
                          [&](int64_t k) { return data_->volumes->entry(data_->val[size_t(k)]).id; }, out_dir_,
                          run_->tensorboard());
  for (double n : code_counts) r.codes_used += n > 0 ? 1 : 0;
  r.perplexity = codebook_perplexity(Tensor::from_vector(code_counts, {K}, Device::cpu()));
  return r;
}

// ---- checkpoints and the exported weights --------------------------------------------------------

void VqaeTrainer::export_weights(const std::filesystem::path& path) {
  CTSR_CHECK(codebook_->initialized(), "export: the codebook is made from the first training batch; train a step first");
  write_weights(path, *model_, config_, state_.step);
}

void export_vqae_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& out) {
  const CheckpointInfo info = read_checkpoint_info(checkpoint, kVqaeCheckpoint);
  const VqaeTrainConfig config = vqae_train_config_from_yaml(info.config_yaml, checkpoint.string());
  auto initialized = info.extra.find("codebook.initialized");
  CTSR_CHECK(initialized != info.extra.end() && initialized->second == "true", checkpoint.string(),
             ": the codebook was not initialised yet (no training step); nothing to export");
  Vqae model(config.vqae());
  const int64_t K = config.model.n_codes, E = config.model.embedding_dim;
  Tensor embeddings = Tensor::zeros({K, E}), counts = Tensor::zeros({K}), sums = Tensor::zeros({K, E});
  load_checkpoint(checkpoint, {model.parameters(), {}, {}, {}}, kVqaeCheckpoint,
                  codebook_tensors(embeddings, counts, sums));
  model.set_codebook(embeddings);
  model.set_codebook_ema(counts, sums);
  write_weights(out, model, config, info.state.step);
}

std::filesystem::path VqaeTrainer::save_checkpoint_now() { return run_->save_checkpoint(); }

void VqaeTrainer::write_checkpoint(const std::filesystem::path& path, const TrainingState& state) {
  // Collective with several ranks (ZeRO-1 gathers the moments from every rank); rank 0 writes.
  std::vector<Tensor> whole_m, whole_v;
  std::vector<Tensor*> m, v;
  if (dp_) {
    whole_m = dp_->gather_moments(false), whole_v = dp_->gather_moments(true);
    for (size_t i = 0; i < whole_m.size(); ++i) m.push_back(&whole_m[i]), v.push_back(&whole_v[i]);
  } else {
    m = adam_->m(), v = adam_->v();
  }
  if (!is_root()) return;
  // The codebook's buffers are only read by the save.
  Tensor embeddings = codebook_->embeddings(), counts = codebook_->ema_counts(), sums = codebook_->ema_sums();
  CheckpointInfo info;
  info.kind = kVqaeCheckpoint;
  info.state = state;
  info.seed = config_.seed;
  info.config_yaml = to_yaml(config_);
  info.extra = {{"codebook.initialized", codebook_->initialized() ? "true" : "false"},
                {"training.patch_size", std::to_string(config_.training.patch_size)},
                {"encode.hu_window", window_text(config_.encode.hu_window)}};
  save_checkpoint(path, {model_->parameters(), {}, m, v}, info, codebook_tensors(embeddings, counts, sums));
  if (codebook_->initialized()) export_weights(out_dir_ / "vqae.safetensors");
}

CheckpointInfo VqaeTrainer::read_checkpoint(const std::filesystem::path& path) {
  const int64_t K = model_->config().n_codes, E = model_->config().embedding_dim;
  const Device device = options_.device;
  // Every rank reads the whole checkpoint; DataParallel keeps its part of the moments.
  std::vector<Tensor> whole_m, whole_v;
  std::vector<Tensor*> m, v;
  if (dp_) {
    for (Parameter* p : model_->parameters()) {
      whole_m.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
      whole_v.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), device));
    }
    for (size_t i = 0; i < whole_m.size(); ++i) m.push_back(&whole_m[i]), v.push_back(&whole_v[i]);
  } else {
    m = adam_->m(), v = adam_->v();
  }
  Tensor embeddings = Tensor::zeros({K, E}, DType::float32, device), counts = Tensor::zeros({K}, DType::float32, device);
  Tensor sums = Tensor::zeros({K, E}, DType::float32, device);
  const CheckpointInfo info =
      load_checkpoint(path, {model_->parameters(), {}, m, v}, kVqaeCheckpoint, codebook_tensors(embeddings, counts, sums));
  if (dp_) dp_->load_moments(whole_m, whole_v);
  auto initialized = info.extra.find("codebook.initialized");
  if (initialized != info.extra.end() && initialized->second == "true") codebook_->set_state(embeddings, counts, sums);
  return info;
}

// ---- the run -------------------------------------------------------------------------------------

double VqaeTrainer::learning_rate(int64_t step) const {
  const VqaeTrainConfig& c = config_;
  return scheduled_learning_rate(c.training.learning_rate, c.training.lr_scheduler, c.warmup_steps(),
                                 c.training.max_steps, step);
}

TierScores VqaeTrainer::light_validation() {
  const VqaeLosses r = validate_light();
  TierScores scores;
  scores.fields = {{"loss", r.loss}, {"l1", r.l1}, {"mse", r.mse}, {"commitment", r.commitment}};
  scores.scalars = {{"val/light_loss", r.loss}, {"val/light_l1", r.l1}};
  return scores;
}

TierScores VqaeTrainer::full_validation() {
  const VqaeFullValidation r = validate_full();
  TierScores scores;
  scores.fields = {{"ssim_roundtrip", r.ssim}, {"psnr_roundtrip", r.psnr}, {"perplexity", r.perplexity}, {"codes_used", r.codes_used},
                   {"volumes", r.volumes}};
  scores.scalars = {{"val/ssim_roundtrip", r.ssim}, {"val/psnr_roundtrip", r.psnr}, {"val/perplexity", r.perplexity},
                    {"val/codes_used", double(r.codes_used)}};
  char text[200];
  std::snprintf(text, sizeof text,
                "validation at step %lld: ssim_roundtrip %.4f, psnr_roundtrip %.2f dB over %lld volumes; %lld codes used, perplexity %.1f",
                static_cast<long long>(state_.step), r.ssim, r.psnr, static_cast<long long>(r.volumes),
                static_cast<long long>(r.codes_used), r.perplexity);
  scores.message = text;
  scores.ssim = r.ssim;
  return scores;
}

std::string VqaeTrainer::progress_text(double loss) const {
  char quantities[128];
  std::snprintf(quantities, sizeof quantities, "loss %.5f  l1 %.5f  perplexity %.1f", loss, last_.l1, last_perplexity_);
  return quantities;
}

std::string VqaeTrainer::describe() const {
  const VqaeTrainConfig& c = config_;
  std::ostringstream text;
  text << "training the VQ-AE " << model_->config().str() << " (" << model_->parameter_count() << " parameters) on "
       << options_.device.str() << "; " << data_summary() << "; batch " << c.training.batch_size << " x "
       << c.training.patch_size << "^3 patches";
  if (comm_->size() > 1)
    text << " over " << comm_->size() << " ranks (" << comm_->backend() << (c.distributed.zero1 ? ", ZeRO-1" : "")
         << "), " << per_rank_ << " each";
  text << ", steps " << state_.step << " -> " << c.training.max_steps;
  if (c.encode.patch_size != c.training.patch_size)
    text << "\nnote: encode.patch_size is " << c.encode.patch_size
         << " (what ctsr_vqae encode and cache use) but the model trains on " << c.training.patch_size
         << "^3 patches; full validation encodes at the training size";
  return text.str();
}

VqaeRunSummary VqaeTrainer::run() { return run_->run(); }

}  // namespace ctsr::train
