// The VQ-AE over volumes larger than one pass should hold (model/vqae.h): encoding in cubic
// patches, decoding in axial slabs with a halo.
#include "model/vqae.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "kernels/codebook.h"
#include "runtime/error.h"

namespace ctsr {

namespace {
// Copies the box [o0, o0+n0) x [o1, o1+n1) x [o2, o2+n2) of sample `s` of a host [N, A, B, C, K]
// tensor to/from box index `b` of a host [P, n0, n1, n2, K] tensor.
void copy_box(const Tensor& big, int64_t s, std::array<int64_t, 3> origin, const Tensor& boxes, int64_t b,
              bool to_boxes) {
  const size_t es = dtype_size(big.dtype());
  const int64_t A = big.dim(1), B = big.dim(2), C = big.dim(3), K = big.dim(4);
  const int64_t n0 = boxes.dim(1), n1 = boxes.dim(2), n2 = boxes.dim(3);
  auto* pb = static_cast<unsigned char*>(big.raw_data());
  auto* px = static_cast<unsigned char*>(boxes.raw_data());
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j) {
      const int64_t big_row = (((s * A + origin[0] + i) * B + origin[1] + j) * C + origin[2]) * K;
      const int64_t box_row = ((b * n0 + i) * n1 + j) * n2 * K;
      const size_t bytes = static_cast<size_t>(n2 * K) * es;
      if (to_boxes) std::memcpy(px + box_row * es, pb + big_row * es, bytes);
      else std::memcpy(pb + big_row * es, px + box_row * es, bytes);
    }
}
}  // namespace

Tensor Vqae::patch_encode(const Tensor& x, int64_t patch, int64_t patches_per_batch) {
  const int64_t f = config_.downsample();
  CTSR_CHECK(patch > 0 && patch % f == 0, "patch_encode: patch size ", patch, " is not a positive multiple of ", f);
  check_volume(x, patch, "patch_encode");
  CTSR_CHECK(patches_per_batch > 0, "patch_encode: patches_per_batch ", patches_per_batch);
  Tensor host = x.to(Device::cpu());
  const int64_t N = x.dim(0), pd = x.dim(1) / patch, ph = x.dim(2) / patch, pw = x.dim(3) / patch;
  const int64_t lp = patch / f, E = config_.embedding_dim;
  Tensor out = Tensor::empty({N, pd * lp, ph * lp, pw * lp, E}, DType::float32, Device::cpu());
  const int64_t total = N * pd * ph * pw;
  auto origin_of = [&](int64_t index, int64_t scale) {
    const int64_t k = index % pw, j = (index / pw) % ph, i = (index / (pw * ph)) % pd;
    return std::array<int64_t, 3>{i * scale, j * scale, k * scale};
  };
  for (int64_t first = 0; first < total; first += patches_per_batch) {
    const int64_t count = std::min(patches_per_batch, total - first);
    Tensor boxes = Tensor::empty({count, patch, patch, patch, x.dim(4)}, x.dtype(), Device::cpu());
    for (int64_t b = 0; b < count; ++b)
      copy_box(host, (first + b) / (pd * ph * pw), origin_of(first + b, patch), boxes, b, true);
    Tensor latents = encode(boxes).to(Device::cpu());
    for (int64_t b = 0; b < count; ++b)
      copy_box(out, (first + b) / (pd * ph * pw), origin_of(first + b, lp), latents, b, false);
  }
  return out.to(device_);
}

Tensor Vqae::decode(const Tensor& z) {
  check_latent(z, "decode");
  NoGradGuard no_grad;
  Tensor q = codebook_quantize(z.device() == device_ ? z : z.to(device_), codebook_);
  return decoder.forward(post_vq_conv.forward(q));
}

Tensor Vqae::decode_sliding(const Tensor& z, int64_t slab, int64_t halo) {
  check_latent(z, "decode_sliding");
  CTSR_CHECK(slab > 0 && halo >= 0, "decode_sliding: slab ", slab, " and halo ", halo,
             " (slab > 0 and halo >= 0 expected)");
  NoGradGuard no_grad;
  const int64_t N = z.dim(0), d = z.dim(1), h = z.dim(2), w = z.dim(3), f = config_.downsample();
  Tensor out = Tensor::empty({N, d * f, h * f, w * f, config_.image_channels}, codebook_.dtype(), Device::cpu());
  const int64_t out_row = h * f * w * f * config_.image_channels;  // elements per output slice
  Tensor zd = z.device() == device_ ? z : z.to(device_);
  for (int64_t n = 0; n < N; ++n) {
    Tensor q = codebook_quantize(zd.slice(n, n + 1), codebook_);
    // The latent-resolution part (with its global attention) runs on the whole latent; only the
    // upsampling levels, where the memory is, go slab by slab.
    Tensor mid = decoder.forward_mid(post_vq_conv.forward(q));
    const int64_t C = mid.dim(4);
    Tensor rows = mid.reshape({d, h, w, C});
    for (int64_t a = 0; a < d; a += slab) {
      const int64_t b = std::min(d, a + slab), a0 = std::max<int64_t>(0, a - halo), b0 = std::min(d, b + halo);
      Tensor part = rows.slice(a0, b0).reshape({1, b0 - a0, h, w, C});
      Tensor y = decoder.forward_levels(part).reshape({(b0 - a0) * f, out_row});
      Tensor keep = y.slice((a - a0) * f, (b - a0) * f);
      out.reshape({N * d * f, out_row}).slice(n * d * f + a * f, n * d * f + b * f).copy_from(keep);
    }
  }
  return out;
}

}  // namespace ctsr
