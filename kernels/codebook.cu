// CUDA kernels for vector quantisation (kernels/codebook.h), float32.
// nearest: one thread per latent row, its C values in registers (the kernel is instantiated for
// C <= 8, 16, 32, 64 so the row array is indexed by constants only); the block walks the codebook
// in shared-memory tiles that every thread reads at the same address (a broadcast, no bank
// conflicts). Distances use rounded:: arithmetic so the argmin is bit-identical to the reference.
// lookup: a gather, one thread per output element.
#include "runtime/kernel_prelude.h"

#include "kernels/codebook.h"
#include "runtime/rounded.h"

namespace ctsr::kernels::CTSR_KERNEL_NS {

namespace {

constexpr int kRowsPerBlock = 64;
constexpr int kCodesPerTile = 128;

template <int MaxC>
__global__ void codebook_nearest_kernel(const float* __restrict__ latent, const float* __restrict__ embeddings,
                                        int64_t* __restrict__ indices, int64_t rows, int64_t codes, int channels) {
  __shared__ float tile[kCodesPerTile * MaxC];
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  const bool active = row < rows;
  float v[MaxC];
CTSR_UNROLL
  for (int c = 0; c < MaxC; ++c) v[c] = (active && c < channels) ? latent[row * channels + c] : 0.0f;

  int64_t best = 0;
  float best_distance = 0.0f;
  for (int64_t k0 = 0; k0 < codes; k0 += kCodesPerTile) {
    const int64_t tile_codes = codes - k0 < kCodesPerTile ? codes - k0 : kCodesPerTile;
    __syncthreads();  // the previous tile is no longer read
    for (int64_t i = threadIdx.x; i < tile_codes * channels; i += blockDim.x) tile[i] = embeddings[k0 * channels + i];
    __syncthreads();
    for (int64_t j = 0; j < tile_codes; ++j) {
      const float* e = tile + j * channels;
      float distance = 0.0f;
CTSR_UNROLL
      for (int c = 0; c < MaxC; ++c) {
        if (c < channels) {
          const float d = rounded::add(v[c], -e[c]);
          distance = rounded::add(distance, rounded::mul(d, d));
        }
      }
      const int64_t k = k0 + j;
      if (k == 0 || distance < best_distance) best = k, best_distance = distance;
    }
  }
  if (active) indices[row] = best;
}

// An index outside the codebook cannot throw from the device: its row is filled with NaN so it
// cannot pass unnoticed (the reference path reports it as an error).
__global__ void codebook_lookup_kernel(const int64_t* __restrict__ indices, const float* __restrict__ embeddings,
                                       float* __restrict__ out, int64_t total, int64_t codes, int64_t channels) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = indices[i / channels];
    out[i] = (k >= 0 && k < codes) ? embeddings[k * channels + i % channels] : __int_as_float(0x7fc00000);
  }
}

}  // namespace

void codebook_nearest(const Tensor& latent, const Tensor& embeddings, Tensor& indices) {
  latent.check_dtype(DType::float32, "codebook_nearest (CUDA) latent");
  const int64_t rows = indices.numel(), codes = embeddings.dim(0);
  const int channels = static_cast<int>(embeddings.dim(1));
  CTSR_CHECK(channels <= 64, "codebook_nearest (CUDA): ", channels, " channels; the CUDA path takes at most 64");
  if (rows == 0) return;
  const unsigned grid = blocks_for(rows, kRowsPerBlock);
  auto go = [&](auto kernel) {
    launch_kernel(latent.device(), kernel, grid, kRowsPerBlock, 0, latent.data<float>(), embeddings.data<float>(),
                  indices.data<int64_t>(), rows, codes, channels);
  };
  if (channels <= 8) go(codebook_nearest_kernel<8>);
  else if (channels <= 16) go(codebook_nearest_kernel<16>);
  else if (channels <= 32) go(codebook_nearest_kernel<32>);
  else go(codebook_nearest_kernel<64>);
}

void codebook_lookup(const Tensor& indices, const Tensor& embeddings, Tensor& out) {
  embeddings.check_dtype(DType::float32, "codebook_lookup (CUDA) embeddings");
  const int64_t total = out.numel();
  if (total == 0) return;
  constexpr unsigned threads = 256;
  const unsigned grid = std::min<unsigned>(4096, blocks_for(total, threads));
  launch_kernel(out.device(), codebook_lookup_kernel, grid, threads, 0, indices.data<int64_t>(),
                embeddings.data<float>(), out.data<float>(), total, embeddings.dim(0), embeddings.dim(1));
}

}  // namespace ctsr::kernels::CTSR_KERNEL_NS
