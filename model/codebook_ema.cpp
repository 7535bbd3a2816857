// The EMA codebook (model/codebook_ema.h): state, restart candidates drawn on the host, the
// update composed of the codebook, optimizer, copy and random kernels, and the commitment loss.
#include "model/codebook_ema.h"

#include <cmath>
#include <unordered_map>
#include <vector>

#include "kernels/binary.h"
#include "kernels/copy.h"
#include "kernels/loss.h"
#include "kernels/optimizer.h"
#include "kernels/random.h"
#include "runtime/philox.h"

namespace ctsr {

std::vector<int64_t> codebook_restart_choice(int64_t population, int64_t codes, uint64_t seed, uint64_t step) {
  CTSR_CHECK(codes > 0 && population >= codes, "codebook_restart_choice: ", codes, " distinct draws from ",
             population, " rows; expected 0 < codes <= population");
  const uint64_t offset = philox::stream_offset(kCodebookRestartPurpose, step);
  // Partial Fisher-Yates over the virtual array a = 0, 1, ..., population - 1: only the entries
  // moved so far are stored, so the cost is O(codes) whatever the population.
  std::unordered_map<int64_t, int64_t> moved;
  moved.reserve(size_t(2 * codes));
  auto entry = [&](int64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<int64_t> chosen(static_cast<size_t>(codes));
  for (int64_t i = 0; i < codes; ++i) {
    const philox::Words w = philox::philox4x32_10(uint64_t(i) / 2, offset, seed);
    const unsigned pair = unsigned(i % 2);
    const uint64_t bits = uint64_t(w.v[2 * pair]) | (uint64_t(w.v[2 * pair + 1]) << 32);
    const uint64_t remaining = uint64_t(population - i);
    const int64_t j = i + int64_t((static_cast<unsigned __int128>(bits) * remaining) >> 64);
    const int64_t a_i = entry(i), a_j = entry(j);
    chosen[size_t(i)] = a_j;
    moved[j] = a_i;  // a[i] = a[j] is never read again (later draws start past i)
  }
  return chosen;
}

CodebookEma::CodebookEma(int64_t codes, int64_t channels, Device device, DType dtype, CodebookEmaConfig config)
    : codes_(codes), channels_(channels), device_(device), dtype_(dtype), config_(config) {
  CTSR_CHECK(codes > 0 && channels > 0, "CodebookEma: ", codes, " codes of ", channels,
             " channels; both must be positive");
  CTSR_CHECK(dtype == DType::float32 || (dtype == DType::float64 && device.kind == DeviceKind::cpu),
             "CodebookEma: dtype ", dtype_name(dtype), " on ", device.str(),
             "; expected float32 (or float64 on the cpu)");
  CTSR_CHECK(config.decay >= 0.0 && config.decay <= 1.0, "CodebookEma: decay ", config.decay,
             " must lie in [0, 1]");
  CTSR_CHECK(config.smoothing >= 0.0 && std::isfinite(config.smoothing), "CodebookEma: smoothing ", config.smoothing,
             " must be finite and >= 0");
  CTSR_CHECK(std::isfinite(config.restart_threshold), "CodebookEma: restart_threshold ", config.restart_threshold,
             " must be finite");
  embeddings_ = Tensor::zeros(Shape{codes, channels}, dtype, device);
  ema_counts_ = Tensor::zeros(Shape{codes}, dtype, device);
  ema_sums_ = Tensor::zeros(Shape{codes, channels}, dtype, device);
}

void CodebookEma::check_latents(const char* op, const Tensor& latents) const {
  latents.check_defined(op);
  CTSR_CHECK(latents.ndim() >= 2 && latents.dim(-1) == channels_, op, ": latents ", latents.shape().str(),
             " have ", latents.ndim() >= 1 ? latents.dim(-1) : 0, " channels in their last dimension, the codebook ",
             channels_);
  CTSR_CHECK(latents.numel() > 0, op, ": latents ", latents.shape().str(), " hold no rows");
  latents.check_device(device_, op);
  latents.check_dtype(dtype_, op);
}

Tensor CodebookEma::restart_candidates(const Tensor& latents, uint64_t seed, uint64_t step) const {
  check_latents("CodebookEma::restart_candidates", latents);
  const int64_t rows = latents.numel() / channels_;
  const bool tiled = rows < codes_;
  const int64_t population = tiled ? rows * ((codes_ + rows - 1) / rows) : rows;
  std::vector<int64_t> chosen = codebook_restart_choice(population, codes_, seed, step);
  for (int64_t& m : chosen) m %= rows;
  Tensor candidates = codebook_lookup(Tensor::from_vector<int64_t>(chosen, Shape{codes_}, device_),
                                      latents.reshape(Shape{rows, channels_}));
  if (!tiled) return candidates;
  Tensor noise = Tensor::empty(Shape{codes_, channels_}, dtype_, device_);
  fill_normal(noise, seed, philox::stream_offset(kCodebookNoisePurpose, step), 0.0,
              0.01 / std::sqrt(double(channels_)));
  return add(candidates, noise);
}

void CodebookEma::initialize_from(const Tensor& latents, uint64_t seed) {
  Tensor candidates = restart_candidates(latents, seed, kCodebookInitStep);
  embeddings_.copy_from(candidates);
  ema_sums_.copy_from(candidates);
  fill(ema_counts_, 1.0);
  initialized_ = true;
}

void CodebookEma::set_state(const Tensor& embeddings, const Tensor& ema_counts, const Tensor& ema_sums) {
  embeddings.check_shape(embeddings_.shape(), "CodebookEma::set_state embeddings");
  ema_counts.check_shape(ema_counts_.shape(), "CodebookEma::set_state ema_counts (N)");
  ema_sums.check_shape(ema_sums_.shape(), "CodebookEma::set_state ema_sums (z_avg)");
  embeddings.check_dtype(dtype_, "CodebookEma::set_state embeddings");
  ema_counts.check_dtype(dtype_, "CodebookEma::set_state ema_counts (N)");
  ema_sums.check_dtype(dtype_, "CodebookEma::set_state ema_sums (z_avg)");
  embeddings_.copy_from(embeddings);
  ema_counts_.copy_from(ema_counts);
  ema_sums_.copy_from(ema_sums);
  initialized_ = true;
}

void CodebookEma::apply(const CodebookStatistics& statistics, const Tensor& candidates) {
  CTSR_CHECK(initialized_, "CodebookEma: the codebook has not been initialised; call initialize_from(latents, seed) ",
             "on the first batch (the original does so on its first training step) or set_state");
  statistics.counts.check_shape(ema_counts_.shape(), "CodebookEma::apply counts");
  statistics.sums.check_shape(ema_sums_.shape(), "CodebookEma::apply sums");
  ema_update({&ema_counts_, &ema_sums_}, {&statistics.counts, &statistics.sums}, config_.decay);
  embeddings_ = codebook_ema_embeddings(ema_counts_, ema_sums_, config_.smoothing, config_.restart_threshold,
                                        config_.restart_dead_codes ? candidates : Tensor());
}

CodebookStatistics CodebookEma::update(const Tensor& latents, const Tensor& indices, uint64_t seed, uint64_t step) {
  CTSR_CHECK(initialized_, "CodebookEma::update: the codebook has not been initialised; call ",
             "initialize_from(latents, seed) on the first batch (the original does so on its first training step) ",
             "or set_state");
  check_latents("CodebookEma::update latents", latents);
  CodebookStatistics statistics = codebook_statistics(latents, indices, codes_);
  apply(statistics, config_.restart_dead_codes ? restart_candidates(latents, seed, step) : Tensor());
  return statistics;
}

CodebookStatistics CodebookEma::update_across_ranks(Communicator& comm, const Tensor& latents, const Tensor& indices,
                                                    uint64_t seed, uint64_t step) {
  if (comm.size() == 1) return update(latents, indices, seed, step);
  CTSR_CHECK(initialized_, "CodebookEma::update_across_ranks: the codebook has not been initialised; call ",
             "initialize_from(gather_batch(comm, latents), seed) on the first batch or set_state");
  check_latents("CodebookEma::update_across_ranks latents", latents);
  CodebookStatistics statistics = codebook_statistics(latents, indices, codes_);
  comm.all_reduce_sum(statistics.counts);
  comm.all_reduce_sum(statistics.sums);
  Tensor candidates;
  if (config_.restart_dead_codes) candidates = restart_candidates(gather_batch(comm, latents), seed, step);
  apply(statistics, candidates);
  return statistics;
}

Tensor gather_batch(Communicator& comm, const Tensor& shard) {
  if (comm.size() == 1) return shard;
  shard.check_defined("gather_batch");
  CTSR_CHECK(shard.ndim() >= 1, "gather_batch: a shard of shape ", shard.shape().str(), "; expected rows");
  std::vector<int64_t> dims = shard.shape().vec();
  dims[0] *= comm.size();
  Tensor full = Tensor::empty(Shape(dims), shard.dtype(), shard.device());
  comm.all_gather(shard, full);
  return full;
}

double codebook_perplexity(const Tensor& counts) {
  counts.check_defined("codebook_perplexity counts");
  const std::vector<double> c = cast(counts.to(Device::cpu()), DType::float64).to_vector<double>();
  double total = 0.0;
  for (double v : c) total += v;
  CTSR_CHECK(total > 0.0, "codebook_perplexity: the counts sum to ", total, "; expected a positive total");
  double entropy = 0.0;
  for (double v : c) {
    const double p = v / total;
    entropy -= p * std::log(p + 1e-7);
  }
  return std::exp(entropy);
}

Tensor commitment_loss(const Tensor& z_e, const Tensor& z_q, double beta) {
  return scale(mse_loss(z_e, z_q), beta);
}

Tensor commitment_loss_backward(const Tensor& z_e, const Tensor& z_q, const Tensor& dloss, double beta) {
  dloss.check_defined("commitment_loss_backward dloss");
  return mse_loss_backward_pred(z_e, z_q, scale(dloss, beta));
}

}  // namespace ctsr
