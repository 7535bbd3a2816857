// Reference vector quantisation: a plain scan over all codes per row, float and double.
#include "kernels/codebook.h"

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

template void codebook_nearest<float>(const float*, const float*, int64_t*, int64_t, int64_t, int64_t);
template void codebook_nearest<double>(const double*, const double*, int64_t*, int64_t, int64_t, int64_t);
template void codebook_lookup<float>(const int64_t*, const float*, float*, int64_t, int64_t, int64_t);
template void codebook_lookup<double>(const int64_t*, const double*, double*, int64_t, int64_t, int64_t);

}  // namespace ctsr::kernels::cpu
