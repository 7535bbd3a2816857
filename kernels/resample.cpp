// Dispatch of nearest-neighbour resampling and channel concatenation to the reference, CUDA
// or CUDA-on-CPU path, with the argument checks shared by all paths.
#include "kernels/resample.h"

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

using kernels::ResampleShape;

void check_volume(const char* op, const char* name, const Tensor& t) {
  t.check_defined((std::string(op) + " " + name).c_str());
  CTSR_CHECK(t.ndim() == 5, op, ": ", name, " must be [N, D, H, W, C] (channels last), got shape ", t.shape().str());
}

void check_size(const char* op, const char* name, const std::array<int64_t, 3>& s) {
  CTSR_CHECK(s[0] > 0 && s[1] > 0 && s[2] > 0, op, ": ", name, " {", s[0], ", ", s[1], ", ", s[2],
             "} must be positive in every axis");
}

}  // namespace

Tensor resample_nearest_forward(const Tensor& x, const std::array<int64_t, 3>& out_size) {
  const char* op = "resample_nearest_forward";
  check_volume(op, "x", x);
  check_size(op, "output size", out_size);
  ResampleShape sh;
  sh.n = x.dim(0), sh.d = x.dim(1), sh.h = x.dim(2), sh.w = x.dim(3), sh.c = x.dim(4);
  sh.od = out_size[0], sh.oh = out_size[1], sh.ow = out_size[2];
  CTSR_CHECK(sh.d > 0 && sh.h > 0 && sh.w > 0, op, ": x ", x.shape().str(), " has an empty spatial axis");
  Tensor y = Tensor::empty(Shape{sh.n, sh.od, sh.oh, sh.ow, sh.c}, x.dtype(), x.device());
  if (y.numel() == 0) return y;
  if (x.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, x, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::resample_nearest_forward<T>(sh, x.data<T>(), y.data<T>());
    });
  } else {
    CTSR_LAUNCH(x.device(), resample_nearest_forward, sh, x, y);
  }
  return y;
}

Tensor resample_nearest_backward(const Tensor& dy, const std::array<int64_t, 3>& in_size) {
  const char* op = "resample_nearest_backward";
  check_volume(op, "dy", dy);
  check_size(op, "input size", in_size);
  ResampleShape sh;
  sh.n = dy.dim(0), sh.od = dy.dim(1), sh.oh = dy.dim(2), sh.ow = dy.dim(3), sh.c = dy.dim(4);
  sh.d = in_size[0], sh.h = in_size[1], sh.w = in_size[2];
  CTSR_CHECK(sh.od > 0 && sh.oh > 0 && sh.ow > 0, op, ": dy ", dy.shape().str(), " has an empty spatial axis");
  Tensor dx = Tensor::empty(Shape{sh.n, sh.d, sh.h, sh.w, sh.c}, dy.dtype(), dy.device());
  if (dx.numel() == 0) return dx;
  if (dy.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, dy, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::resample_nearest_backward<T>(sh, dy.data<T>(), dx.data<T>());
    });
  } else {
    CTSR_LAUNCH(dy.device(), resample_nearest_backward, sh, dy, dx);
  }
  return dx;
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  const char* op = "concat_channels";
  a.check_defined("concat_channels a");
  b.check_defined("concat_channels b");
  check_same_device(op, {{"a", &a}, {"b", &b}});
  check_same_dtype(op, {{"a", &a}, {"b", &b}});
  bool same_leading = a.ndim() == b.ndim() && a.ndim() >= 1;
  for (int i = 0; same_leading && i < a.ndim() - 1; ++i) same_leading = a.dim(i) == b.dim(i);
  CTSR_CHECK(same_leading, op, ": a ", a.shape().str(), " and b ", b.shape().str(),
             " must agree in every dim but the last (channels)");
  const int64_t ca = a.dim(-1), cb = b.dim(-1);
  std::vector<int64_t> dims = a.shape().vec();
  dims.back() = ca + cb;
  Tensor out = Tensor::empty(Shape(dims), a.dtype(), a.device());
  if (out.numel() == 0) return out;
  const int64_t leading = out.numel() / (ca + cb);
  if (a.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, a, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::concat_channels<T>(leading, ca, cb, a.data<T>(), b.data<T>(), out.data<T>());
    });
  } else {
    CTSR_LAUNCH(a.device(), concat_channels, leading, ca, cb, a, b, out);
  }
  return out;
}

std::pair<Tensor, Tensor> split_channels(const Tensor& dy, int64_t channels_first) {
  const char* op = "split_channels";
  dy.check_defined("split_channels dy");
  CTSR_CHECK(dy.ndim() >= 1, op, ": dy must have a channel dim, got a scalar");
  const int64_t c = dy.dim(-1);
  CTSR_CHECK(channels_first >= 0 && channels_first <= c, op, ": cannot take ", channels_first,
             " channels first from dy ", dy.shape().str(), " (", c, " channels)");
  std::vector<int64_t> da_dims = dy.shape().vec(), db_dims = dy.shape().vec();
  da_dims.back() = channels_first;
  db_dims.back() = c - channels_first;
  Tensor da = Tensor::empty(Shape(da_dims), dy.dtype(), dy.device());
  Tensor db = Tensor::empty(Shape(db_dims), dy.dtype(), dy.device());
  if (dy.numel() == 0) return {da, db};
  const int64_t leading = dy.numel() / c;
  if (dy.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, dy, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::split_channels<T>(leading, channels_first, c - channels_first, dy.data<T>(), da.data<T>(),
                                      db.data<T>());
    });
  } else {
    CTSR_LAUNCH(dy.device(), split_channels, leading, channels_first, c - channels_first, dy, da, db);
  }
  return {da, db};
}

}  // namespace ctsr
