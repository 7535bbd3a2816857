// Group normalisation (PyTorch GroupNorm semantics), alone and fused with SiLU.
//
// Layout: channels-last x [N, ..., C] (the model's [N, D, H, W, C]), seen as [N, S, C] with S the
// product of the middle dims. The C channels form `groups` groups of C/groups consecutive
// channels; group (n, g) is normalised with the mean and biased variance of its S * C/groups
// values:
//   xhat = (x - mean[n,g]) * rstd[n,g],  rstd = 1 / sqrt(var + eps)
//   y    = gamma[c] * xhat + beta[c]                 (group_norm)
//   y    = silu(gamma[c] * xhat + beta[c])           (group_norm_silu)
// Forward saves mean and rstd ([N, groups], the dtype of x); backward recomputes xhat (and for
// the fused op the pre-activation gamma * xhat + beta) from x, mean and rstd, so nothing of the
// size of x is stored beyond x itself. Backward returns dx and ACCUMULATES into dgamma and dbeta
// ([C]; created as zeros when undefined), the layer contract of model/module.h.
//
// y_dtype (forward): x's dtype (the default), or bfloat16 for a float32 x, the operand of a
// bf16 convolution or linear layer next (training.precision bf16): the same float32 arithmetic,
// and y rounded once (nearest, ties to even) as it is stored. That fuses the cast the layer
// after would run: y costs 2 bytes written per element instead of 4 written + 4 read + 2
// written. Statistics and everything backward stay in x's dtype.
//
// Paths: cpu reference (float32, float64; statistics in double), CUDA and CUDA-on-CPU (float32;
// y float32 or bfloat16). The CUDA path is deterministic: every reduction has a fixed order, no
// float atomics.
#pragma once

#include <optional>

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

struct GroupNormOutput {
  Tensor y;     // shape of x
  Tensor mean;  // [N, groups]
  Tensor rstd;  // [N, groups]
};

GroupNormOutput group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                                   double eps, std::optional<DType> y_dtype = std::nullopt);
Tensor group_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                           const Tensor& dy, int64_t groups, Tensor& dgamma, Tensor& dbeta);

// Fused: y = silu(group_norm(x)). Backward needs beta as well, to rebuild the pre-activation.
GroupNormOutput group_norm_silu_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                                        double eps, std::optional<DType> y_dtype = std::nullopt);
Tensor group_norm_silu_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                const Tensor& rstd, const Tensor& dy, int64_t groups, Tensor& dgamma, Tensor& dbeta);

}  // namespace ctsr

namespace ctsr::kernels {
// The [N, S, C] view of a group-norm input.
struct GroupNormShape {
  int64_t n = 0, s = 0, c = 0, groups = 0;
  int64_t channels_per_group() const { return c / groups; }
};
}  // namespace ctsr::kernels

// CUDA launchers: outputs are allocated by the caller (dispatch); y is float32 or bfloat16; beta
// may be undefined when silu is false in backward. dgamma and dbeta are accumulated into.
CTSR_DECLARE_LAUNCHERS(
  void group_norm_forward(const GroupNormShape& shape, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          float eps, bool silu, Tensor& y, Tensor& mean, Tensor& rstd);
  void group_norm_backward(const GroupNormShape& shape, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& mean, const Tensor& rstd, const Tensor& dy, bool silu, Tensor& dx,
                           Tensor& dgamma, Tensor& dbeta);
)

namespace ctsr::kernels::cpu {
template <class T>
void group_norm_forward(const GroupNormShape& shape, const T* x, const T* gamma, const T* beta, double eps, bool silu,
                        T* y, T* mean, T* rstd);
// beta is read only when silu is true.
template <class T>
void group_norm_backward(const GroupNormShape& shape, const T* x, const T* gamma, const T* beta, const T* mean,
                         const T* rstd, const T* dy, bool silu, T* dx, T* dgamma, T* dbeta);
}  // namespace ctsr::kernels::cpu
