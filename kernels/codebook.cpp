// Dispatch of the codebook ops to the reference, CUDA or CUDA-on-CPU path.
#include "kernels/codebook.h"

#include "kernels/copy.h"
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

CodebookStatistics codebook_statistics(const Tensor& latents, const Tensor& indices, int64_t codes) {
  const char* op = "codebook_statistics";
  latents.check_defined("codebook_statistics latents");
  indices.check_defined("codebook_statistics indices");
  indices.check_dtype(DType::int64, "codebook_statistics indices");
  check_same_device(op, {{"latents", &latents}, {"indices", &indices}});
  CTSR_CHECK(codes > 0, op, ": ", codes, " codes; the codebook needs at least one");
  CTSR_CHECK(latents.ndim() >= 2 && latents.dim(-1) > 0, op, ": latents ", latents.shape().str(),
             " are not [..., channels]");
  const int64_t channels = latents.dim(-1), rows = latents.numel() / channels;
  CTSR_CHECK(indices.numel() == rows, op, ": indices ", indices.shape().str(), " hold ", indices.numel(),
             " entries for the ", rows, " latent rows of ", latents.shape().str());
  // The CUDA path indexes rows, positions and per-tile counts in 32 bits.
  CTSR_CHECK(rows < (int64_t(1) << 31) && codes < (int64_t(1) << 31), op, ": ", rows, " rows and ", codes,
             " codes; at most 2^31 - 1 of each");
  CodebookStatistics s;
  s.counts = Tensor::empty(Shape{codes}, latents.dtype(), latents.device());
  s.sums = Tensor::empty(Shape{codes, channels}, latents.dtype(), latents.device());
  if (rows == 0) {
    fill(s.counts, 0.0);
    fill(s.sums, 0.0);
    return s;
  }
  if (latents.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, latents, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::codebook_statistics<T>(latents.data<T>(), indices.data<int64_t>(), rows, codes, channels,
                                           s.counts.data<T>(), s.sums.data<T>());
    });
  } else {
    CTSR_LAUNCH(latents.device(), codebook_statistics, latents, indices, s.counts, s.sums);
  }
  return s;
}

Tensor codebook_ema_embeddings(const Tensor& ema_counts, const Tensor& ema_sums, double smoothing, double threshold,
                               const Tensor& candidates) {
  const char* op = "codebook_ema_embeddings";
  ema_counts.check_defined("codebook_ema_embeddings ema_counts");
  ema_sums.check_defined("codebook_ema_embeddings ema_sums");
  CTSR_CHECK(ema_sums.ndim() == 2 && ema_sums.dim(0) > 0 && ema_sums.dim(1) > 0, op, ": ema_sums ",
             ema_sums.shape().str(), " are not [codes, channels]");
  const int64_t codes = ema_sums.dim(0), channels = ema_sums.dim(1);
  ema_counts.check_shape(Shape{codes}, "codebook_ema_embeddings ema_counts");
  check_same_device(op, {{"ema_counts", &ema_counts}, {"ema_sums", &ema_sums}, {"candidates", &candidates}});
  check_same_dtype(op, {{"ema_counts", &ema_counts}, {"ema_sums", &ema_sums}, {"candidates", &candidates}});
  if (candidates.defined()) candidates.check_shape(ema_sums.shape(), "codebook_ema_embeddings candidates");
  CTSR_CHECK(smoothing >= 0.0, op, ": smoothing must be >= 0, got ", smoothing);
  Tensor embeddings = Tensor::empty(ema_sums.shape(), ema_sums.dtype(), ema_sums.device());
  const double smoothing_total = double(codes) * smoothing;
  if (ema_sums.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, ema_sums, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::codebook_ema_embeddings<T>(ema_counts.data<T>(), ema_sums.data<T>(), codes, channels,
                                               T(smoothing), T(smoothing_total), T(threshold),
                                               candidates.defined() ? candidates.data<T>() : nullptr,
                                               embeddings.data<T>());
    });
  } else {
    CTSR_LAUNCH(ema_sums.device(), codebook_ema_embeddings, ema_counts, ema_sums, float(smoothing),
                float(smoothing_total), float(threshold), candidates, embeddings);
  }
  return embeddings;
}

}  // namespace ctsr
