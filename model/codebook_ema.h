// The trainable VQ-AE's codebook: exponential-moving-average updates with restarts of dead
// codes, as the original 3D-MedDiffusion Codebook does them (AutoEncoder/model/codebook.py),
// and its commitment loss. The codes get no gradient; the encoder's gradient passes the
// quantisation straight through (the decoder's input gradient goes to z_e unchanged), plus the
// commitment loss's.
//
// State (the original's buffers; state-dict names codebook.embeddings, codebook.N, codebook.z_avg):
//   embeddings [K, C]   the codes
//   ema_counts [K]      N: the EMA of how many latents chose each code
//   ema_sums   [K, C]   z_avg: the EMA of the sum of those latents
//
// initialize_from(latents, seed): the original's first training step: embeddings and ema_sums
//   become K latents of the batch chosen as by a restart (below, with all codes dead), ema_counts
//   ones. update() refuses to run before this (or set_state).
//
// update(latents, indices, seed, step), with indices = codebook_nearest(latents, embeddings()),
// after the caller has looked up its quantised latents (update replaces embeddings()):
//   counts, sums = codebook_statistics(latents, indices)           (kernels/codebook.h)
//   N     = decay N     + (1 - decay) counts                       (kernels/optimizer.h ema_update)
//   z_avg = decay z_avg + (1 - decay) sums
//   n = sum N,  w_k = (N_k + smoothing) / (n + K smoothing) * n,  e_k = z_avg_k / w_k
//   e_k = candidate_k for every k with !(N_k >= restart_threshold)  (unless restarts are off)
// N and z_avg are not reset for a restarted code (as in the original): its next update
// normalises its old z_avg again, and it restarts again while its N stays below the threshold.
//
// Restart candidates (restart_candidates(latents, seed, step)): with R latent rows, the
// original tiles the batch to M = R * ceil(K / R) rows when R < K (adding N(0, (0.01/sqrt(C))^2)
// noise to every tiled row), and candidate k is row k of a uniformly random permutation of the M
// (or R) rows: K distinct rows, without replacement. Here the permutation's first K entries come
// from a partial Fisher-Yates shuffle on the host, draw i = 64 bits of
// Philox(seed, stream_offset(kCodebookRestartPurpose, step)) counter i / 2, words 2 (i % 2) and
// 2 (i % 2) + 1, mapped to [0, M - i) by a 64x64 -> 128-bit multiply (bias below M / 2^64);
// entry m is row m mod R. The noise (R < K only) is fill_normal of a [K, C] tensor under
// (seed, stream_offset(kCodebookNoisePurpose, step)) times 0.01/sqrt(C), added to the rows.
// So a candidate set is a pure function of (latents, seed, step): reproducible, the same on
// every path, and a resumed run continues the same stream. initialize_from uses step
// kCodebookInitStep of the same purposes (update steps are training steps, below 2^48 - 1).
//
// Data parallel (update_across_ranks, below): each rank holds its share of the batch, in rank
// order. The counts and sums are additive over the ranks: all-reduced (summed) before apply().
// The restart candidates are drawn on every rank alike from the whole batch's latents, all-gathered
// in rank order, so N ranks choose exactly the rows one process chooses from the whole batch (the
// original instead broadcasts rank 0's candidates, drawn from rank 0's latents alone, which makes
// the result depend on the number of ranks). initialize_from takes the gathered batch the same way
// (gather_batch).
//
// Every path gives the same bits: the statistics, the EMA, the normalisation and the candidates
// are each bitwise equal on cpu, cuda and cuda_on_cpu (float32; float64 on cpu).
//
// commitment_loss(z_e, z_q, beta) = beta * mean((z_e - z_q)^2), a [1] tensor; the original uses
// beta = 0.25. commitment_loss_backward gives d/dz_e = beta * 2 (z_e - z_q) / n * dloss only:
// z_q is a constant (the original detaches it).
#pragma once

#include <cstdint>

#include "kernels/codebook.h"
#include "runtime/communicator.h"
#include "runtime/tensor.h"

namespace ctsr {

struct CodebookEmaConfig {
  double decay = 0.99;
  double smoothing = 1e-7;         // Laplace-style smoothing of the counts, >= 0
  double restart_threshold = 1.0;  // codes with N below it restart (the original's restart_thres)
  bool restart_dead_codes = true;  // the original's !no_random_restart
};

// Philox purposes (runtime/philox.h stream_offset) of the restart draws.
constexpr uint32_t kCodebookRestartPurpose = 0x4352;  // "CR"
constexpr uint32_t kCodebookNoisePurpose = 0x434e;    // "CN"
constexpr uint64_t kCodebookInitStep = 0xffffffffffffull;

class CodebookEma {
 public:
  // An uninitialised codebook of `codes` x `channels` (zeros) on `device`; dtype float32, or
  // float64 on the cpu.
  CodebookEma(int64_t codes, int64_t channels, Device device, DType dtype = DType::float32,
              CodebookEmaConfig config = {});

  void initialize_from(const Tensor& latents, uint64_t seed);
  // Loads the three buffers (copied; shapes [K, C], [K], [K, C], any device, this dtype).
  void set_state(const Tensor& embeddings, const Tensor& ema_counts, const Tensor& ema_sums);
  bool initialized() const { return initialized_; }

  // Returns the batch's statistics (for logging, e.g. codebook_perplexity).
  CodebookStatistics update(const Tensor& latents, const Tensor& indices, uint64_t seed, uint64_t step);
  // update() over the ranks of `comm` (collective), each passing its share of the batch (every
  // rank as many rows, in rank order): the statistics summed over the ranks, the candidates from
  // the gathered batch; returns the summed statistics. Every rank's codebook stays identical. On
  // one rank, exactly update().
  CodebookStatistics update_across_ranks(Communicator& comm, const Tensor& latents, const Tensor& indices,
                                         uint64_t seed, uint64_t step);
  // The candidates [K, C] of a restart (see above), on this codebook's device.
  Tensor restart_candidates(const Tensor& latents, uint64_t seed, uint64_t step) const;
  // The EMA step from given statistics; candidates [K, C] or undefined (no restart this step).
  void apply(const CodebookStatistics& statistics, const Tensor& candidates);

  const Tensor& embeddings() const { return embeddings_; }
  const Tensor& ema_counts() const { return ema_counts_; }
  const Tensor& ema_sums() const { return ema_sums_; }
  int64_t codes() const { return codes_; }
  int64_t channels() const { return channels_; }
  const CodebookEmaConfig& config() const { return config_; }

 private:
  void check_latents(const char* op, const Tensor& latents) const;

  int64_t codes_, channels_;
  Device device_;
  DType dtype_;
  CodebookEmaConfig config_;
  Tensor embeddings_, ema_counts_, ema_sums_;
  bool initialized_ = false;
};

// The first K entries of a uniformly random permutation of [0, population), population >= K,
// as drawn by restart_candidates (exposed for tests).
std::vector<int64_t> codebook_restart_choice(int64_t population, int64_t codes, uint64_t seed, uint64_t step);

// The ranks' shards [n, ...] (float32, the same shape on every rank) concatenated in rank order,
// [size n, ...], on every rank (collective; on one rank, `shard` itself).
Tensor gather_batch(Communicator& comm, const Tensor& shard);

// exp(-sum_k p_k log(p_k + 1e-7)) with p = counts / sum(counts), in double (the original's
// perplexity; reads the counts back to the host).
double codebook_perplexity(const Tensor& counts);

Tensor commitment_loss(const Tensor& z_e, const Tensor& z_q, double beta = 0.25);
Tensor commitment_loss_backward(const Tensor& z_e, const Tensor& z_q, const Tensor& dloss, double beta = 0.25);

}  // namespace ctsr
