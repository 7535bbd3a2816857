// Reference vector quantisation (a plain scan over all codes per row), codebook statistics (a
// stable counting sort of the rows by code, then the runs of kernels/codebook.h summed in order)
// and the EMA normalisation, float and double.
#include "kernels/codebook.h"

#include <algorithm>
#include <vector>

#include "runtime/error.h"

namespace ctsr::kernels::cpu {

template <class T>
void codebook_nearest(const T* latent, const T* embeddings, int64_t* indices, int64_t rows, int64_t codes,
                      int64_t channels) {
#pragma omp parallel for if (rows * codes > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const T* v = latent + r * channels;
    int64_t best = 0;
    T best_distance = T(0);
    for (int64_t k = 0; k < codes; ++k) {
      const T* e = embeddings + k * channels;
      T distance = T(0);
      for (int64_t c = 0; c < channels; ++c) {
        const T d = v[c] - e[c];
        distance = distance + d * d;  // ISO mode: two roundings, as rounded::add(rounded::mul) on the GPU
      }
      if (k == 0 || distance < best_distance) best = k, best_distance = distance;  // strict: first on ties
    }
    indices[r] = best;
  }
}

template <class T>
void codebook_lookup(const int64_t* indices, const T* embeddings, T* out, int64_t rows, int64_t codes,
                     int64_t channels) {
  for (int64_t r = 0; r < rows; ++r)
    CTSR_CHECK(indices[r] >= 0 && indices[r] < codes, "codebook_lookup: index ", indices[r], " at position ", r,
               " is outside the codebook [0, ", codes, ")");
#pragma omp parallel for if (rows * channels > 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) out[r * channels + c] = embeddings[indices[r] * channels + c];
}

template <class T>
void codebook_statistics(const T* latents, const int64_t* indices, int64_t rows, int64_t codes, int64_t channels,
                         T* counts, T* sums) {
  // Stable counting sort: offsets[k] is where code k's rows start in `order`, ascending rows.
  std::vector<int64_t> offsets(size_t(codes) + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = indices[r];
    CTSR_CHECK(k >= 0 && k < codes, "codebook_statistics: index ", k, " at row ", r, " is outside the codebook [0, ",
               codes, ")");
    ++offsets[size_t(k) + 1];
  }
  for (int64_t k = 0; k < codes; ++k) offsets[size_t(k) + 1] += offsets[size_t(k)];
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t r = 0; r < rows; ++r) order[size_t(cursor[size_t(indices[r])]++)] = r;

#pragma omp parallel if (rows * channels > 65536)
  {
    // Per channel the additions happen in the documented order; the channels of a row are
    // merely interleaved.
    std::vector<T> total(static_cast<size_t>(channels)), partial(static_cast<size_t>(channels));
#pragma omp for
    for (int64_t k = 0; k < codes; ++k) {
      const int64_t begin = offsets[size_t(k)], end = offsets[size_t(k) + 1];
      counts[k] = T(end - begin);
      std::fill(total.begin(), total.end(), T(0));
      for (int64_t run = begin; run < end; run += kCodebookStatisticsRun) {
        const int64_t run_end = std::min(run + kCodebookStatisticsRun, end);
        std::fill(partial.begin(), partial.end(), T(0));
        for (int64_t m = run; m < run_end; ++m) {
          const T* v = latents + order[size_t(m)] * channels;
          for (int64_t c = 0; c < channels; ++c) partial[size_t(c)] = partial[size_t(c)] + v[c];
        }
        for (int64_t c = 0; c < channels; ++c) total[size_t(c)] = total[size_t(c)] + partial[size_t(c)];
      }
      for (int64_t c = 0; c < channels; ++c) sums[k * channels + c] = total[size_t(c)];
    }
  }
}

template <class T>
void codebook_ema_embeddings(const T* ema_counts, const T* ema_sums, int64_t codes, int64_t channels, T smoothing,
                             T smoothing_total, T threshold, const T* candidates, T* embeddings) {
  // The fixed order of kernels/codebook.h: strided lanes, then a pairwise tree.
  T lane[kCodebookTotalLanes];
  for (int j = 0; j < kCodebookTotalLanes; ++j) {
    T s = T(0);
    for (int64_t k = j; k < codes; k += kCodebookTotalLanes) s = s + ema_counts[k];
    lane[j] = s;
  }
  for (int half = kCodebookTotalLanes / 2; half >= 1; half /= 2)
    for (int j = 0; j < half; ++j) lane[j] = lane[j] + lane[j + half];
  const T n = lane[0];
  const T denominator = n + smoothing_total;
  for (int64_t k = 0; k < codes; ++k) {
    const bool restart = candidates && !(ema_counts[k] >= threshold);
    const T weight = (ema_counts[k] + smoothing) / denominator * n;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = k * channels + c;
      embeddings[i] = restart ? candidates[i] : ema_sums[i] / weight;
    }
  }
}

template void codebook_nearest<float>(const float*, const float*, int64_t*, int64_t, int64_t, int64_t);
template void codebook_nearest<double>(const double*, const double*, int64_t*, int64_t, int64_t, int64_t);
template void codebook_lookup<float>(const int64_t*, const float*, float*, int64_t, int64_t, int64_t);
template void codebook_lookup<double>(const int64_t*, const double*, double*, int64_t, int64_t, int64_t);

template void codebook_statistics<float>(const float*, const int64_t*, int64_t, int64_t, int64_t, float*, float*);
template void codebook_statistics<double>(const double*, const int64_t*, int64_t, int64_t, int64_t, double*,
                                          double*);
template void codebook_ema_embeddings<float>(const float*, const float*, int64_t, int64_t, float, float, float,
                                             const float*, float*);
template void codebook_ema_embeddings<double>(const double*, const double*, int64_t, int64_t, double, double, double,
                                              const double*, double*);

}  // namespace ctsr::kernels::cpu
