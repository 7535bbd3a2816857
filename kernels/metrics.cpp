// Dispatch of SSIM and PSNR to the reference, CUDA or CUDA-on-CPU path, with the argument
// checks shared by all paths.
#include "kernels/metrics.h"

#include <cmath>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

using kernels::MetricShape;

void check_pair(const char* op, const Tensor& pred, const Tensor& target, double data_range) {
  const std::string op_s(op);
  pred.check_defined((op_s + " pred").c_str());
  target.check_defined((op_s + " target").c_str());
  CTSR_CHECK(pred.shape() == target.shape(), op, ": pred ", pred.shape().str(), " and target ",
             target.shape().str(), " differ in shape");
  check_same_device(op, {{"pred", &pred}, {"target", &target}});
  check_same_dtype(op, {{"pred", &pred}, {"target", &target}});
  CTSR_CHECK(std::isfinite(data_range) && data_range > 0, op, ": data_range must be finite and > 0, got ",
             data_range, " (2.0 for intensities on [-1, 1])");
}

}  // namespace

SsimResult ssim(const Tensor& pred, const Tensor& target, double data_range) {
  const char* op = "ssim";
  check_pair(op, pred, target, data_range);
  CTSR_CHECK(pred.ndim() == 4, op, ": pred must be [B, D, H, W] (a single-channel [B, D, H, W, 1] volume reshaped),"
             " got shape ", pred.shape().str());
  MetricShape shape{pred.dim(0), pred.dim(1), pred.dim(2), pred.dim(3)};
  CTSR_CHECK(shape.d >= 1, op, ": pred ", pred.shape().str(), " has no slices (D = 0) to average");
  CTSR_CHECK(shape.h >= kernels::kSsimTaps && shape.w >= kernels::kSsimTaps, op, ": slices of pred ",
             pred.shape().str(), " are H x W = ", shape.h, " x ", shape.w, "; the 11 x 11 Gaussian window needs H >= ",
             kernels::kSsimTaps, " and W >= ", kernels::kSsimTaps);
  const double c1 = (kernels::kSsimK1 * data_range) * (kernels::kSsimK1 * data_range);
  const double c2 = (kernels::kSsimK2 * data_range) * (kernels::kSsimK2 * data_range);
  SsimResult out;
  out.per_sample = Tensor::empty(Shape{shape.b}, pred.dtype(), pred.device());
  out.per_slice = Tensor::empty(Shape{shape.b, shape.d}, pred.dtype(), pred.device());
  if (shape.b == 0) return out;
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, pred, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::ssim<T>(shape, pred.data<T>(), target.data<T>(), c1, c2, out.per_slice.data<T>(),
                            out.per_sample.data<T>());
    });
  } else {
    CTSR_LAUNCH(pred.device(), ssim, shape, pred, target, c1, c2, out.per_slice, out.per_sample);
  }
  return out;
}

PsnrResult psnr(const Tensor& pred, const Tensor& target, double data_range) {
  const char* op = "psnr";
  check_pair(op, pred, target, data_range);
  CTSR_CHECK(pred.ndim() >= 2, op, ": pred must be [B, ...] with the batch first, got shape ", pred.shape().str());
  const int64_t samples = pred.dim(0);
  PsnrResult out;
  out.psnr = Tensor::empty(Shape{samples}, pred.dtype(), pred.device());
  out.mse = Tensor::empty(Shape{samples}, pred.dtype(), pred.device());
  if (samples == 0) return out;
  const MetricShape shape{samples, pred.numel() / samples, 1, 1};
  CTSR_CHECK(shape.d >= 1, op, ": samples of pred ", pred.shape().str(), " have no elements to average");
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, pred, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::psnr<T>(shape, pred.data<T>(), target.data<T>(), data_range, out.psnr.data<T>(),
                            out.mse.data<T>());
    });
  } else {
    CTSR_LAUNCH(pred.device(), psnr, shape, pred, target, data_range, out.psnr, out.mse);
  }
  return out;
}

}  // namespace ctsr
