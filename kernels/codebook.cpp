// Dispatch of the codebook ops to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/codebook.h"

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {
Shape rows_shape(const Tensor& latent) {
  std::vector<int64_t> dims;
  for (int i = 0; i + 1 < latent.ndim(); ++i) dims.push_back(latent.dim(i));
  return Shape(dims);
}

void check_codebook(const char* op, const Tensor& embeddings) {
  embeddings.check_defined(op);
  CTSR_CHECK(embeddings.ndim() == 2 && embeddings.dim(0) > 0 && embeddings.dim(1) > 0, op, ": embeddings ",
             embeddings.shape().str(), " are not [codes, channels]");
}
}  // namespace

Tensor codebook_nearest(const Tensor& latent, const Tensor& embeddings) {
  check_codebook("codebook_nearest", embeddings);
  latent.check_defined("codebook_nearest latent");
  CTSR_CHECK(latent.ndim() >= 2 && latent.dim(-1) == embeddings.dim(1), "codebook_nearest: latent ",
             latent.shape().str(), " has ", latent.dim(-1), " channels in its last dimension, the codebook ",
             embeddings.dim(1));
  check_same_device("codebook_nearest", {{"latent", &latent}, {"embeddings", &embeddings}});
  check_same_dtype("codebook_nearest", {{"latent", &latent}, {"embeddings", &embeddings}});
  Tensor indices = Tensor::empty(rows_shape(latent), DType::int64, latent.device());
  const int64_t rows = indices.numel(), codes = embeddings.dim(0), channels = embeddings.dim(1);
  if (latent.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("codebook_nearest", latent, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::codebook_nearest<T>(latent.data<T>(), embeddings.data<T>(), indices.data<int64_t>(), rows,
                                        codes, channels);
    });
  } else {
    CTSR_LAUNCH(latent.device(), codebook_nearest, latent, embeddings, indices);
  }
  return indices;
}

Tensor codebook_lookup(const Tensor& indices, const Tensor& embeddings) {
  check_codebook("codebook_lookup", embeddings);
  indices.check_dtype(DType::int64, "codebook_lookup indices");
  check_same_device("codebook_lookup", {{"indices", &indices}, {"embeddings", &embeddings}});
  std::vector<int64_t> dims;
  for (int i = 0; i < indices.ndim(); ++i) dims.push_back(indices.dim(i));
  dims.push_back(embeddings.dim(1));
  Tensor out = Tensor::empty(Shape(dims), embeddings.dtype(), embeddings.device());
  const int64_t rows = indices.numel(), codes = embeddings.dim(0), channels = embeddings.dim(1);
  if (indices.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("codebook_lookup", embeddings, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::codebook_lookup<T>(indices.data<int64_t>(), embeddings.data<T>(), out.data<T>(), rows, codes,
                                       channels);
    });
  } else {
    CTSR_LAUNCH(indices.device(), codebook_lookup, indices, embeddings, out);
  }
  return out;
}

Tensor codebook_quantize(const Tensor& latent, const Tensor& embeddings) {
  return codebook_lookup(codebook_nearest(latent, embeddings), embeddings);
}

}  // namespace ctsr
