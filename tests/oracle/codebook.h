// Test oracles of kernels/codebook.h's float32 statistics, written independently of the CPU path
// in kernels/cpu from the order the header documents, so that every path can be checked bit for
// bit: codebook_sums (per-code sums of the assigned latent rows [rows, channels]) and
// codebook_ema_embeddings (the EMA normalisation with its 256-lane total and optional restart
// candidates below the threshold).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ctsr::test::oracle {

// The order of kernels/codebook.h, written out: each code's rows ascending, runs of 64 summed
// from 0, then the run sums from 0, in float.
inline std::vector<float> codebook_sums(const std::vector<float>& latents, const std::vector<int64_t>& indices,
                                        int64_t codes, int64_t channels) {
  std::vector<float> sums(size_t(codes * channels), 0.0f);
  for (int64_t k = 0; k < codes; ++k) {
    std::vector<int64_t> rows;
    for (size_t r = 0; r < indices.size(); ++r)
      if (indices[r] == k) rows.push_back(int64_t(r));
    for (int64_t c = 0; c < channels; ++c) {
      float total = 0.0f;
      for (size_t run = 0; run < rows.size(); run += 64) {
        float partial = 0.0f;
        for (size_t m = run; m < std::min(rows.size(), run + 64); ++m)
          partial += latents[size_t(rows[m] * channels + c)];
        total += partial;
      }
      sums[size_t(k * channels + c)] = total;
    }
  }
  return sums;
}

// kernels/codebook.h's formula and order, written out in float.
inline std::vector<float> codebook_ema_embeddings(const std::vector<float>& counts, const std::vector<float>& sums,
                                                  int64_t channels, float smoothing, float threshold,
                                                  const std::vector<float>* candidates) {
  const int64_t codes = int64_t(counts.size());
  std::vector<float> lanes(256, 0.0f);
  for (int64_t k = 0; k < codes; ++k) lanes[size_t(k % 256)] += counts[size_t(k)];
  for (int half = 128; half >= 1; half /= 2)
    for (int j = 0; j < half; ++j) lanes[size_t(j)] += lanes[size_t(j + half)];
  const float n = lanes[0], denominator = n + float(double(codes) * double(smoothing));
  std::vector<float> e(sums.size());
  for (int64_t k = 0; k < codes; ++k) {
    const float weight = (counts[size_t(k)] + smoothing) / denominator * n;
    for (int64_t c = 0; c < channels; ++c) {
      const size_t i = size_t(k * channels + c);
      e[i] = candidates && !(counts[size_t(k)] >= threshold) ? (*candidates)[i] : sums[i] / weight;
    }
  }
  return e;
}

}  // namespace ctsr::test::oracle
