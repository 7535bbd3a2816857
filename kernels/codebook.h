// Vector quantisation against a codebook (the VQ-AE's bottleneck).
//   codebook_nearest(latent [..., C], embeddings [K, C]) -> int64 [...]: for every row v of the
//     latent (channels-last, C contiguous), the index of the code e minimising sum_c (v_c - e_c)^2,
//     the first such index on exact ties.
//   codebook_lookup(indices [...], embeddings [K, C]) -> [..., C]: the codes' vectors.
//   codebook_quantize = lookup(nearest(...)).
// The distance is summed over c in order, each step rounded on its own (runtime/rounded.h, no
// fused multiply-add), so every path computes the same bits and picks the same index. PyTorch's
// Codebook expands |v|^2 - 2 v.e + |e|^2 instead, which rounds differently: the two can disagree
// only where two codes are within rounding of equally near.
// No backward: the imported VQ-AE is frozen (a trainable one needs straight-through gradients
// and a scatter-add into the codes; that is the VQ-AE training issue's work).
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (float32, C <= 64).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {
Tensor codebook_nearest(const Tensor& latent, const Tensor& embeddings);
Tensor codebook_lookup(const Tensor& indices, const Tensor& embeddings);
Tensor codebook_quantize(const Tensor& latent, const Tensor& embeddings);
}  // namespace ctsr

CTSR_DECLARE_LAUNCHERS(
  void codebook_nearest(const Tensor& latent, const Tensor& embeddings, Tensor& indices);
  void codebook_lookup(const Tensor& indices, const Tensor& embeddings, Tensor& out);
)

namespace ctsr::kernels::cpu {
template <class T> void codebook_nearest(const T* latent, const T* embeddings, int64_t* indices, int64_t rows,
                                         int64_t codes, int64_t channels);
template <class T> void codebook_lookup(const int64_t* indices, const T* embeddings, T* out, int64_t rows,
                                        int64_t codes, int64_t channels);
}  // namespace ctsr::kernels::cpu
