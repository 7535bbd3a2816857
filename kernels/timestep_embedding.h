// Sinusoidal timestep embedding (docs: specs/unet3d-diffusion.md, "Time embedding"):
//   t [N] -> emb [N, dim],  half = dim / 2,  f_i = exp(-ln(10000) i / half)  (i < half)
//   emb[n, i] = cos(t_n f_i),  emb[n, half + i] = sin(t_n f_i)
// dim must be even and positive. t may be float32, float64, int32 or int64 (integer steps are
// converted); emb is float64 for float64 t and float32 otherwise.
// Backward, d/dt of <emb, demb> (so the op has a gradient check; the UNet's t is an integer and
// needs none):
//   dt[n] = sum_i demb[n, i] (-f_i sin(t_n f_i)) + demb[n, half + i] (f_i cos(t_n f_i))
// It takes floating t only; dt has t's dtype. Nothing is saved: backward recomputes from t.
// Paths: cpu reference (float32, float64, int t; computed in double, rounded once), CUDA and
// CUDA-on-CPU (float32 output: float32, int32 or int64 t). The CUDA kernels use expf, sinf and
// cosf (full-range argument reduction, never the __sinf intrinsics), since t f reaches ~1000 rad;
// their float32 error grows with |t| (see the parity test for the bound).
#pragma once

#include "kernels/launchers.h"
#include "runtime/tensor.h"

namespace ctsr {

Tensor timestep_embedding(const Tensor& t, int64_t dim);
Tensor timestep_embedding_backward(const Tensor& t, int64_t dim, const Tensor& demb);

}  // namespace ctsr

// emb [N, dim] and dt [N] are allocated by the caller, float32.
CTSR_DECLARE_LAUNCHERS(
  void timestep_embedding_forward(const Tensor& t, int64_t dim, Tensor& emb);
  void timestep_embedding_backward(const Tensor& t, int64_t dim, const Tensor& demb, Tensor& dt);
)

namespace ctsr::kernels::cpu {
// TIn: float, double, int32_t or int64_t; T: float or double.
template <class TIn, class T> void timestep_embedding_forward(const TIn* t, int64_t n, int64_t dim, T* emb);
template <class T> void timestep_embedding_backward(const T* t, int64_t n, int64_t dim, const T* demb, T* dt);
}  // namespace ctsr::kernels::cpu
