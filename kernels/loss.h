// Losses. Mean squared error over every element of two tensors of the same shape (any shape):
//   mse_loss(pred, target) = sum_i (pred_i - target_i)^2 / n          -> a [1] tensor
//   d/dpred_i = 2 (pred_i - target_i) / n * dloss,   d/dtarget_i = -d/dpred_i
// Backward recomputes the differences from pred and target (the caller keeps both), so the
// forward saves nothing. dloss is the [1] gradient of the loss, read where it lives (device
// memory on the CUDA paths, so backward needs no host round trip).
// Paths: cpu reference (float32, float64; sum in double), CUDA and CUDA-on-CPU (float32). The
// CUDA forward is a deterministic two-pass reduction: a fixed number of per-block partial sums
// (a function of n only), then one block combines them in a fixed order; no float atomics.
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct MseLossGradients {
  Tensor dpred;    // shape of pred
  Tensor dtarget;  // shape of target (= -dpred)
};

Tensor mse_loss(const Tensor& pred, const Tensor& target);
MseLossGradients mse_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss);

}  // namespace ctsr

// Outputs are allocated by the caller: loss [1], dpred and dtarget like pred.
CTSR_DECLARE_LAUNCHERS(
  void mse_loss_forward(const Tensor& pred, const Tensor& target, Tensor& loss);
  void mse_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& dloss, Tensor& dpred,
                         Tensor& dtarget);
)

namespace ctsr::kernels::cpu {
template <class T> T mse_loss_forward(const T* pred, const T* target, int64_t n);
template <class T>
void mse_loss_backward(const T* pred, const T* target, T dloss, int64_t n, T* dpred, T* dtarget);
}  // namespace ctsr::kernels::cpu
