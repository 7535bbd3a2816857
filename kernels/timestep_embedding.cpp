// Dispatch of the sinusoidal timestep embedding (kernels/timestep_embedding.h) to the reference,
// CUDA or CUDA-on-CPU path, with the argument checks shared by all paths.
#include "kernels/timestep_embedding.h"

#include <string>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

void check_t_and_dim(const char* op, const Tensor& t, int64_t dim) {
  t.check_defined((std::string(op) + " t").c_str());
  CTSR_CHECK(t.ndim() == 1, op, ": t must be [N] (one step per sample), got shape ", t.shape().str());
  CTSR_CHECK(dim > 0 && dim % 2 == 0, op, ": dim = ", dim,
             " must be even and positive (cos and sin halves of dim / 2 frequencies each)");
}

}  // namespace

Tensor timestep_embedding(const Tensor& t, int64_t dim) {
  const char* op = "timestep_embedding";
  check_t_and_dim(op, t, dim);
  const DType t_type = t.dtype();
  CTSR_CHECK(t_type == DType::float32 || t_type == DType::float64 || t_type == DType::int32 ||
                 t_type == DType::int64,
             op, ": t is ", dtype_name(t_type), ", expected float32, float64, int32 or int64");
  const DType out_type = t_type == DType::float64 ? DType::float64 : DType::float32;
  Tensor emb = Tensor::empty(Shape{t.dim(0), dim}, out_type, t.device());
  if (t.numel() == 0) return emb;
  if (t.device().kind == DeviceKind::cpu) {
    visit_dtype(t_type, [&](auto in_tag) {
      using TIn = decltype(in_tag);
      if constexpr (std::is_same_v<TIn, float> || std::is_same_v<TIn, double> || std::is_same_v<TIn, int32_t> ||
                    std::is_same_v<TIn, int64_t>) {
        kernels::with_float_type(op, emb, [&](auto out_tag) {
          using T = decltype(out_tag);
          kernels::cpu::timestep_embedding_forward<TIn, T>(t.data<TIn>(), t.numel(), dim, emb.data<T>());
        });
      }
    });
  } else {
    CTSR_CHECK(t_type != DType::float64, op, " (CUDA paths): t is float64, expected float32, int32 or int64");
    CTSR_LAUNCH(t.device(), timestep_embedding_forward, t, dim, emb);
  }
  return emb;
}

Tensor timestep_embedding_backward(const Tensor& t, int64_t dim, const Tensor& demb) {
  const char* op = "timestep_embedding_backward";
  check_t_and_dim(op, t, dim);
  CTSR_CHECK(t.dtype() == DType::float32 || t.dtype() == DType::float64, op,
             ": t is ", dtype_name(t.dtype()), ", expected float32 or float64 (a gradient needs floating t)");
  demb.check_shape(Shape{t.dim(0), dim}, "timestep_embedding_backward demb");
  check_same_device(op, {{"t", &t}, {"demb", &demb}});
  check_same_dtype(op, {{"t", &t}, {"demb", &demb}});
  Tensor dt = Tensor::empty(t.shape(), t.dtype(), t.device());
  if (t.numel() == 0) return dt;
  if (t.device().kind == DeviceKind::cpu) {
    kernels::with_float_type(op, t, [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::timestep_embedding_backward<T>(t.data<T>(), t.numel(), dim, demb.data<T>(), dt.data<T>());
    });
  } else {
    t.check_dtype(DType::float32, "timestep_embedding_backward (CUDA paths) t");
    CTSR_LAUNCH(t.device(), timestep_embedding_backward, t, dim, demb, dt);
  }
  return dt;
}

}  // namespace ctsr
