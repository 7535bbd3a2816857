// Dispatch of the losses to the reference, CUDA or CUDA-on-CPU path, with the argument checks
// shared by all paths.
#include "kernels/loss.h"

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

void check_pair(const char* op, const Tensor& pred, const Tensor& target) {
  const std::string op_s(op);
  pred.check_defined((op_s + " pred").c_str());
  target.check_defined((op_s + " target").c_str());
  CTSR_CHECK(target.shape() == pred.shape(), op, ": target has shape ", target.shape().str(),
             ", expected the shape of pred ", pred.shape().str());
  check_same_device(op, {{"pred", &pred}, {"target", &target}});
  check_same_dtype(op, {{"pred", &pred}, {"target", &target}});
  CTSR_CHECK(pred.numel() > 0, op, ": pred of shape ", pred.shape().str(),
             " has no elements; the mean of nothing is undefined");
}

}  // namespace

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_pair("mse_loss", pred, target);
  Tensor loss = Tensor::empty(Shape{1}, pred.dtype(), pred.device());
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("mse_loss", pred, [&](auto tag) {
      using T = decltype(tag);
      loss.data<T>()[0] = kernels::cpu::mse_loss_forward<T>(pred.data<T>(), target.data<T>(), pred.numel());
    });
  } else {
    CTSR_LAUNCH(pred.device(), mse_loss_forward, pred, target, loss);
  }
  return loss;
}

MseLossGradients mse_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss) {
  check_pair("mse_loss_backward", pred, target);
  dloss.check_shape(Shape{1}, "mse_loss_backward dloss");
  dloss.check_dtype(pred.dtype(), "mse_loss_backward dloss");
  dloss.check_device(pred.device(), "mse_loss_backward dloss");
  MseLossGradients g;
  g.dpred = Tensor::empty(pred.shape(), pred.dtype(), pred.device());
  g.dtarget = Tensor::empty(pred.shape(), pred.dtype(), pred.device());
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type("mse_loss_backward", pred, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::mse_loss_backward<T>(pred.data<T>(), target.data<T>(), dloss.data<T>()[0], pred.numel(),
                                         g.dpred.data<T>(), g.dtarget.data<T>());
    });
  } else {
    CTSR_LAUNCH(pred.device(), mse_loss_backward, pred, target, dloss, g.dpred, g.dtarget);
  }
  return g;
}

}  // namespace ctsr
