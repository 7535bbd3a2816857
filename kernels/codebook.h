// Vector quantisation against a codebook (the VQ-AE's bottleneck), and the statistics and
// normalisation behind its EMA codebook updates (model/codebook_ema.h drives them).
//   codebook_nearest(latent [..., C], embeddings [K, C]) -> int64 [...]: for every row v of the
//     latent (channels-last, C contiguous), the index of the code e minimising sum_c (v_c - e_c)^2,
//     the first such index on exact ties.
//   codebook_lookup(indices [...], embeddings [K, C]) -> [..., C]: the codes' vectors.
//   codebook_quantize = lookup(nearest(...)).
//   codebook_statistics(latents [..., C], indices [...], K) -> counts [K], sums [K, C]: how many
//     rows chose each code, and the sum of those rows' latents. Each code's rows are summed in
//     ascending row order, in runs of kCodebookStatisticsRun consecutive rows (each run summed
//     in order from 0), then the run sums in order (from 0): one fixed order, a function of the
//     indices only, so every path gives the same bits (no float atomics anywhere). Counts are
//     exact in the float type up to 2^24 rows per code (float32). An index outside [0, K) is an
//     error on every path, naming the row and the value (the CUDA paths read one flag back from
//     the device for it: the op's one synchronisation).
//   codebook_ema_embeddings(ema_counts N [K], ema_sums z_avg [K, C], smoothing, threshold,
//     candidates [K, C] or undefined) -> embeddings [K, C], the original Codebook's
//     normalisation with Laplace-style smoothing and its restart of dead codes:
//       n = sum_k N_k   (256 strided partial sums, k = j, j + 256, ... in order, then a pairwise
//                        tree p_j += p_{j + h} for h = 128, 64, ..., 1: the same bits everywhere)
//       w_k = (N_k + smoothing) / (n + K smoothing) * n
//       e_k = z_avg_k / w_k, or candidates_k where !(N_k >= threshold) (a NaN count restarts too)
//     smoothing and K smoothing are rounded to the dtype once, on the host; each operation is
//     rounded separately (runtime/rounded.h), so every path gives the same bits.
// The distance of codebook_nearest is summed over c in order, each step rounded on its own
// (runtime/rounded.h, no fused multiply-add), so every path computes the same bits and picks
// the same index. PyTorch's Codebook expands |v|^2 - 2 v.e + |e|^2 instead, which rounds
// differently: the two can disagree only where two codes are within rounding of equally near.
// None of these has a backward: the codes are not trained by gradients but by the EMA, and the
// encoder's gradient passes the quantisation straight through (see model/codebook_ema.h).
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (float32; nearest C <= 64).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct CodebookStatistics {
  Tensor counts;  // [K], the latents' dtype
  Tensor sums;    // [K, C]
};

Tensor codebook_nearest(const Tensor& latent, const Tensor& embeddings);
Tensor codebook_lookup(const Tensor& indices, const Tensor& embeddings);
Tensor codebook_quantize(const Tensor& latent, const Tensor& embeddings);
CodebookStatistics codebook_statistics(const Tensor& latents, const Tensor& indices, int64_t codes);
// candidates may be undefined (no restart).
Tensor codebook_ema_embeddings(const Tensor& ema_counts, const Tensor& ema_sums, double smoothing, double threshold,
                               const Tensor& candidates);

}  // namespace ctsr

namespace ctsr::kernels {
// The summation order of codebook_statistics and of the total count (see above).
constexpr int64_t kCodebookStatisticsRun = 64;
constexpr int kCodebookTotalLanes = 256;  // a power of two
}  // namespace ctsr::kernels

CTSR_DECLARE_LAUNCHERS(
  void codebook_nearest(const Tensor& latent, const Tensor& embeddings, Tensor& indices);
  void codebook_lookup(const Tensor& indices, const Tensor& embeddings, Tensor& out);
  // counts [K] and sums [K, C] are allocated by the caller; rows > 0. Throws on an index
  // outside the codebook (after reading one flag back from the device).
  void codebook_statistics(const Tensor& latents, const Tensor& indices, Tensor& counts, Tensor& sums);
  void codebook_ema_embeddings(const Tensor& ema_counts, const Tensor& ema_sums, float smoothing,
                               float smoothing_total, float threshold, const Tensor& candidates, Tensor& embeddings);
)

namespace ctsr::kernels::cpu {
template <class T> void codebook_nearest(const T* latent, const T* embeddings, int64_t* indices, int64_t rows,
                                         int64_t codes, int64_t channels);
template <class T> void codebook_lookup(const int64_t* indices, const T* embeddings, T* out, int64_t rows,
                                        int64_t codes, int64_t channels);
template <class T> void codebook_statistics(const T* latents, const int64_t* indices, int64_t rows, int64_t codes,
                                            int64_t channels, T* counts, T* sums);
// candidates may be null. smoothing_total = K * smoothing, rounded to T.
template <class T> void codebook_ema_embeddings(const T* ema_counts, const T* ema_sums, int64_t codes,
                                                int64_t channels, T smoothing, T smoothing_total, T threshold,
                                                const T* candidates, T* embeddings);
}  // namespace ctsr::kernels::cpu
