// Losses over every element of two tensors of the same shape (any shape), each a [1] tensor:
//   mse_loss(pred, target) = sum_i (pred_i - target_i)^2 / n
//     d/dpred_i = 2 (pred_i - target_i) / n * dloss
//   l1_loss(pred, target)  = sum_i |pred_i - target_i| / n
//     d/dpred_i = sign(pred_i - target_i) / n * dloss, with sign(0) = 0 (and sign(NaN) = 0), as
//     torch's sign gives: an element with pred_i == target_i contributes no gradient (the
//     subgradient at the kink that torch's l1_loss picks)
//   and d/dtarget_i = -d/dpred_i for both.
// The *_backward functions return both gradients; *_backward_pred only d/dpred (a target that is
// data, e.g. the volume a reconstruction loss compares with, needs no gradient, and skipping
// it saves one tensor of writes). Backward recomputes the differences from pred and target (the
// caller keeps both), so the forward saves nothing. dloss is the [1] gradient of the loss, read
// where it lives (device memory on the CUDA paths, so backward needs no host round trip).
// Paths: cpu reference (float32, float64; sums in double), CUDA and CUDA-on-CPU (float32). The
// CUDA forward is a deterministic two-pass reduction: a fixed number of per-block partial sums
// (a function of n only), then one block combines them in a fixed order; no float atomics.
// The L1 gradient is the same bits on every path (a sign times one rounded scalar); the MSE
// gradient rounds its scale and its difference separately on the CUDA paths (within 1e-6).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct PairLossGradients {
  Tensor dpred;    // shape of pred
  Tensor dtarget;  // shape of target (= -dpred)
};
using MseLossGradients = PairLossGradients;
using L1LossGradients = PairLossGradients;

Tensor mse_loss(const Tensor& pred, const Tensor& target);
PairLossGradients mse_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss);
Tensor mse_loss_backward_pred(const Tensor& pred, const Tensor& target, const Tensor& dloss);

Tensor l1_loss(const Tensor& pred, const Tensor& target);
PairLossGradients l1_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss);
Tensor l1_loss_backward_pred(const Tensor& pred, const Tensor& target, const Tensor& dloss);

}  // namespace ctsr

namespace ctsr::kernels {
enum class PairLoss { mse, l1 };
}  // namespace ctsr::kernels

// Outputs are allocated by the caller: loss [1], dpred like pred, dtarget like pred or undefined
// (not wanted).
CTSR_DECLARE_LAUNCHERS(
  void pair_loss_forward(PairLoss kind, const Tensor& pred, const Tensor& target, Tensor& loss);
  void pair_loss_backward(PairLoss kind, const Tensor& pred, const Tensor& target, const Tensor& dloss,
                          Tensor& dpred, Tensor& dtarget);
)

namespace ctsr::kernels::cpu {
template <class T> T pair_loss_forward(PairLoss kind, const T* pred, const T* target, int64_t n);
// dtarget may be null.
template <class T>
void pair_loss_backward(PairLoss kind, const T* pred, const T* target, T dloss, int64_t n, T* dpred, T* dtarget);
}  // namespace ctsr::kernels::cpu
