// Dispatch of the losses to the reference, CUDA or CUDA-on-CPU path, with the argument checks
// shared by all paths.
#include "kernels/loss.h"

#include <string>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

using kernels::PairLoss;

void check_pair(const std::string& op, const Tensor& pred, const Tensor& target) {
  pred.check_defined((op + " pred").c_str());
  target.check_defined((op + " target").c_str());
  CTSR_CHECK(target.shape() == pred.shape(), op, ": target has shape ", target.shape().str(),
             ", expected the shape of pred ", pred.shape().str());
  check_same_device(op.c_str(), {{"pred", &pred}, {"target", &target}});
  check_same_dtype(op.c_str(), {{"pred", &pred}, {"target", &target}});
  CTSR_CHECK(pred.numel() > 0, op, ": pred of shape ", pred.shape().str(),
             " has no elements; the mean of nothing is undefined");
}

const char* loss_name(PairLoss kind) { return kind == PairLoss::mse ? "mse_loss" : "l1_loss"; }

Tensor pair_loss(PairLoss kind, const Tensor& pred, const Tensor& target) {
  const std::string op = loss_name(kind);
  check_pair(op, pred, target);
  Tensor loss = Tensor::empty(Shape{1}, pred.dtype(), pred.device());
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op.c_str(), pred, [&](auto tag) {
      using T = decltype(tag);
      loss.data<T>()[0] = kernels::cpu::pair_loss_forward<T>(kind, pred.data<T>(), target.data<T>(), pred.numel());
    });
  } else {
    CTSR_LAUNCH(pred.device(), pair_loss_forward, kind, pred, target, loss);
  }
  return loss;
}

PairLossGradients pair_loss_backward(PairLoss kind, const Tensor& pred, const Tensor& target, const Tensor& dloss,
                                     bool want_dtarget) {
  const std::string op = std::string(loss_name(kind)) + (want_dtarget ? "_backward" : "_backward_pred");
  check_pair(op, pred, target);
  dloss.check_shape(Shape{1}, (op + " dloss").c_str());
  dloss.check_dtype(pred.dtype(), (op + " dloss").c_str());
  dloss.check_device(pred.device(), (op + " dloss").c_str());
  PairLossGradients g;
  g.dpred = Tensor::empty(pred.shape(), pred.dtype(), pred.device());
  if (want_dtarget) g.dtarget = Tensor::empty(pred.shape(), pred.dtype(), pred.device());
  if (pred.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op.c_str(), pred, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::pair_loss_backward<T>(kind, pred.data<T>(), target.data<T>(), dloss.data<T>()[0], pred.numel(),
                                          g.dpred.data<T>(), want_dtarget ? g.dtarget.data<T>() : nullptr);
    });
  } else {
    CTSR_LAUNCH(pred.device(), pair_loss_backward, kind, pred, target, dloss, g.dpred, g.dtarget);
  }
  return g;
}

}  // namespace

Tensor mse_loss(const Tensor& pred, const Tensor& target) { return pair_loss(PairLoss::mse, pred, target); }

PairLossGradients mse_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss) {
  return pair_loss_backward(PairLoss::mse, pred, target, dloss, true);
}

Tensor mse_loss_backward_pred(const Tensor& pred, const Tensor& target, const Tensor& dloss) {
  return pair_loss_backward(PairLoss::mse, pred, target, dloss, false).dpred;
}

Tensor l1_loss(const Tensor& pred, const Tensor& target) { return pair_loss(PairLoss::l1, pred, target); }

PairLossGradients l1_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss) {
  return pair_loss_backward(PairLoss::l1, pred, target, dloss, true);
}

Tensor l1_loss_backward_pred(const Tensor& pred, const Tensor& target, const Tensor& dloss) {
  return pair_loss_backward(PairLoss::l1, pred, target, dloss, false).dpred;
}

}  // namespace ctsr
