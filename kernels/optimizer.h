// The optimiser's tensor operations: AdamW over a list of parameter tensors, the global norm of
// a list of gradients, clipping by that norm, and the exponential moving average of weights.
// (The optimiser object that owns the state and the step counter lives in train/; these are its
// kernels.)
//
// adamw_step follows torch.optim.AdamW (amsgrad=False, maximize=False), one step for every
// tensor i of the lists, with t = step (1-based, the step being taken):
//   p = p * (1 - lr * wd)                                   decoupled weight decay, first
//   m = m * beta1 + (1 - beta1) * g
//   v = v * beta2 + ((1 - beta2) * g) * g
//   p = p + (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// i.e. p -= lr * m_hat / (sqrt(v_hat) + eps) with the bias-corrected moments, in torch's order
// of operations (its mul_, add_(alpha), addcmul_, sqrt, div, add_(eps), addcdiv_). Scalars are
// formed in double on the host and rounded to the tensors' dtype once, as torch does with its
// Python floats. Every operation is a separately rounded IEEE operation (no fused multiply-add:
// explicit _rn intrinsics on the GPU, ISO mode on the host, see runtime/philox.h), so the
// reference, the CUDA-on-CPU executor and the GPU produce bit-identical results. (torch's own
// vectorised CPU kernels use FMA in add_(alpha), so against torch the results agree to about
// an ulp, not bitwise.)
//
// global_grad_norm = sqrt(sum over all tensors and elements of g^2), accumulated in double in a
// fixed order (deterministic), rounded to the gradients' dtype (so float32 for float32
// gradients, like torch's float32 total_norm) and returned as a double.
//
// clip_grad_norm follows torch.nn.utils.clip_grad_norm_ (norm_type 2): with norm the value
// above and coef = max_norm / (norm + 1e-6), computed in double and rounded to the gradients'
// dtype, every gradient is multiplied by coef when coef < 1 (torch's clamp(coef, max=1)), and
// left untouched otherwise. Returns norm. A non-finite norm clips nothing (NaN) or scales by 0
// (inf); the caller should check the returned norm and skip such a step.
//
// ema_update, for every tensor i of the lists and every element:
//   ema = decay * ema + (1 - decay) * p
// with decay and 1 - decay formed in double on the host and rounded to the dtype once, and the
// two products and the sum each rounded (no fused multiply-add), so every path gives the same
// bits. decay 0 copies p and decay 1 keeps ema, exactly (for finite values).
//
// Paths: cpu reference (float32, float64), CUDA and CUDA-on-CPU (float32). The CUDA kernels are
// multi-tensor: one launch covers up to 32 tensors (their chunks of 4096 elements are the blocks
// of one grid, see kernels/optimizer.cu), so a model of a few hundred parameter tensors takes a
// few launches, not one per tensor. All tensors of one call must share a device and a dtype.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/launchers.h"
#include "runtime/host_device.h"
#include "runtime/rounded.h"
#include "runtime/tensor.h"

namespace ctsr {

struct AdamWConfig {
  double lr = 2e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// Updates params, exp_avg and exp_avg_sq in place (all lists the same length; tensor i of each
// list the same shape, dtype and device). exp_avg and exp_avg_sq start as zeros at step 1.
void adamw_step(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                const std::vector<Tensor*>& exp_avg, const std::vector<Tensor*>& exp_avg_sq,
                const AdamWConfig& config, int64_t step);

double global_grad_norm(const std::vector<const Tensor*>& grads);
double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm);
// The pieces, for sharded gradients (data parallelism): the sum of squares of every element, in
// double and unrounded (ranks add theirs), and multiplying every element by factor.
double sum_of_squares(const std::vector<const Tensor*>& tensors);
void scale_in_place(const std::vector<Tensor*>& tensors, double factor);

// Updates every ema[i] in place from params[i] (equally long lists; tensor i of both the same
// shape; one dtype and one device for all). decay must lie in [0, 1].
void ema_update(const std::vector<Tensor*>& ema, const std::vector<const Tensor*>& params, double decay);

}  // namespace ctsr

namespace ctsr::kernels {

// The per-step scalars of AdamW, rounded to T.
template <class T>
struct AdamWScalars {
  T decay;              // 1 - lr * wd
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  T neg_step_size;          // -lr / (1 - beta1^t)
  T eps;
};

template <class T>
AdamWScalars<T> adamw_scalars(const AdamWConfig& c, int64_t step) {
  const double t = double(step);
  return {T(1.0 - c.lr * c.weight_decay),
          T(c.beta1),
          T(1.0 - c.beta1),
          T(c.beta2),
          T(1.0 - c.beta2),
          T(std::sqrt(1.0 - std::pow(c.beta2, t))),
          T(-(c.lr / (1.0 - std::pow(c.beta1, t)))),
          T(c.eps)};
}


// One element of AdamW, shared by the reference and the CUDA kernel (the op order above).
template <class T>
CTSR_HD inline void adamw_update(T& p, T& m, T& v, T g, const AdamWScalars<T>& s) {
  using namespace rounded;
  p = mul(p, s.decay);
  m = add(mul(m, s.beta1), mul(s.one_minus_beta1, g));
  v = add(mul(v, s.beta2), mul(mul(s.one_minus_beta2, g), g));
  const T denominator = add(div(sqrt(v), s.bias_correction2_sqrt), s.eps);
  p = add(p, div(mul(s.neg_step_size, m), denominator));
}

// The scalars of ema_update, rounded to T, and its element update (reference and kernel).
template <class T>
struct EmaScalars {
  T decay, one_minus_decay;
};

template <class T>
EmaScalars<T> ema_scalars(double decay) {
  return {T(decay), T(1.0 - decay)};
}

template <class T>
CTSR_HD inline T ema_value(T ema, T param, const EmaScalars<T>& s) {
  using namespace rounded;
  return add(mul(s.decay, ema), mul(s.one_minus_decay, param));
}

// The clipping coefficient of clip_grad_norm, in double; clipping happens when it is < 1.
inline double clip_coefficient(double norm, double max_norm) { return max_norm / (norm + 1e-6); }

// A list of float32 tensors for the multi-tensor launchers (host pointers into device memory).
struct TensorList {
  std::vector<float*> data;
  std::vector<int64_t> numel;
};

}  // namespace ctsr::kernels

// CUDA launchers (float32). Lists are non-empty, equally long, and checked by the dispatch.
CTSR_DECLARE_LAUNCHERS(
  void adamw_step(const TensorList& params, const TensorList& grads, const TensorList& exp_avg,
                  const TensorList& exp_avg_sq, const AdamWScalars<float>& scalars, Device device);
  // sum = the sum of squares of every element, in double (waits for the device).
  void sum_of_squares(const TensorList& tensors, Device device, double& sum);
  void scale(const TensorList& tensors, float factor, Device device);
  void ema_update(const TensorList& ema, const TensorList& params, const EmaScalars<float>& scalars, Device device);
)

namespace ctsr::kernels::cpu {
template <class T>
void adamw_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamWScalars<T>& scalars);
template <class T>
double sum_of_squares(const T* x, int64_t n);
template <class T>
void scale(T* x, int64_t n, T factor);
template <class T>
void ema_update(T* ema, const T* param, int64_t n, const EmaScalars<T>& scalars);
}  // namespace ctsr::kernels::cpu
