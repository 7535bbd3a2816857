// Dispatch of AdamW, the global gradient norm, clipping and the weight EMA to the reference, CUDA
// or CUDA-on-CPU path, with the argument checks shared by all paths: list lengths, per-tensor
// shapes, one dtype and one device for everything, the hyper-parameters' ranges.
#include "kernels/optimizer.h"

#include <cmath>
#include <string>

#include "kernels/reference_dispatch.h"

namespace ctsr {

namespace {

std::string entry(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

// The tensor must exist, be defined, and share the dtype and device of `first` (when given).
void check_entry(const char* op, const char* list, size_t i, const Tensor* t, const Tensor* first) {
  CTSR_CHECK(t != nullptr, op, ": ", entry(list, i), " is a null pointer");
  const std::string what = std::string(op) + " " + entry(list, i);
  t->check_defined(what.c_str());
  if (first == nullptr) return;
  t->check_dtype(first->dtype(), what.c_str());
  t->check_device(first->device(), what.c_str());
}

kernels::TensorList tensor_list(const std::vector<const Tensor*>& tensors) {
  kernels::TensorList list;
  for (const Tensor* t : tensors) {
    list.data.push_back(static_cast<float*>(t->raw_data()));
    list.numel.push_back(t->numel());
  }
  return list;
}

}  // namespace

void adamw_step(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                const std::vector<Tensor*>& exp_avg, const std::vector<Tensor*>& exp_avg_sq,
                const AdamWConfig& config, int64_t step) {
  const char* op = "adamw_step";
  CTSR_CHECK(grads.size() == params.size() && exp_avg.size() == params.size() &&
                 exp_avg_sq.size() == params.size(),
             op, ": ", params.size(), " params, ", grads.size(), " grads, ", exp_avg.size(), " exp_avg and ",
             exp_avg_sq.size(), " exp_avg_sq tensors; the four lists must be equally long");
  CTSR_CHECK(step >= 1, op, ": step ", step, " must be >= 1 (the 1-based number of the step being taken)");
  CTSR_CHECK(std::isfinite(config.lr) && config.lr >= 0, op, ": lr must be finite and >= 0, got ", config.lr);
  CTSR_CHECK(config.beta1 >= 0 && config.beta1 < 1, op, ": beta1 must lie in [0, 1), got ", config.beta1);
  CTSR_CHECK(config.beta2 >= 0 && config.beta2 < 1, op, ": beta2 must lie in [0, 1), got ", config.beta2);
  CTSR_CHECK(std::isfinite(config.eps) && config.eps >= 0, op, ": eps must be finite and >= 0, got ", config.eps);
  CTSR_CHECK(std::isfinite(config.weight_decay) && config.weight_decay >= 0, op,
             ": weight_decay must be finite and >= 0, got ", config.weight_decay);
  if (params.empty()) return;
  check_entry(op, "params", 0, params[0], nullptr);
  const Tensor* first = params[0];
  for (size_t i = 0; i < params.size(); ++i) {
    check_entry(op, "params", i, params[i], first);
    const Shape& shape = params[i]->shape();
    const void* param_data = params[i]->raw_data();
    for (auto [list, t] : {std::pair<const char*, const Tensor*>{"grads", grads[i]}, {"exp_avg", exp_avg[i]},
                           {"exp_avg_sq", exp_avg_sq[i]}}) {
      check_entry(op, list, i, t, first);
      CTSR_CHECK(t->shape() == shape, op, ": ", entry(list, i), " is ", t->shape().str(), " but params[", i, "] is ",
                 shape.str());
      CTSR_CHECK(shape.numel() == 0 || t->raw_data() != param_data, op, ": ", entry(list, i),
                 " is the same memory as params[", i, "]");
    }
    CTSR_CHECK(shape.numel() == 0 || exp_avg[i]->raw_data() != exp_avg_sq[i]->raw_data(), op, ": exp_avg[", i,
               "] and exp_avg_sq[", i, "] are the same memory");
  }
  const Device device = first->device();
  if (device.kind == DeviceKind::cpu) {
    kernels::with_float_type(op, *first, [&](auto tag) {
      using T = decltype(tag);
      const kernels::AdamWScalars<T> scalars = kernels::adamw_scalars<T>(config, step);
      for (size_t i = 0; i < params.size(); ++i) {
        kernels::cpu::adamw_step<T>(params[i]->data<T>(), grads[i]->data<T>(), exp_avg[i]->data<T>(),
                                    exp_avg_sq[i]->data<T>(), params[i]->numel(), scalars);
      }
    });
  } else {
    first->check_dtype(DType::float32, "adamw_step (CUDA) params[0]");
    auto as_list = [](const std::vector<Tensor*>& v) {
      return tensor_list(std::vector<const Tensor*>(v.begin(), v.end()));
    };
    const kernels::AdamWScalars<float> scalars = kernels::adamw_scalars<float>(config, step);
    CTSR_LAUNCH(device, adamw_step, as_list(params), tensor_list(grads), as_list(exp_avg), as_list(exp_avg_sq),
                scalars, device);
  }
}

namespace {
// The sum of squares; errors name the calling op and its list ("global_grad_norm grads[1]").
double checked_sum_of_squares(const char* op, const char* list, const std::vector<const Tensor*>& tensors) {
  if (tensors.empty()) return 0.0;
  check_entry(op, list, 0, tensors[0], nullptr);
  for (size_t i = 0; i < tensors.size(); ++i) check_entry(op, list, i, tensors[i], tensors[0]);
  const Device device = tensors[0]->device();
  if (device.kind == DeviceKind::cpu) {
    return kernels::with_float_type(op, *tensors[0], [&](auto tag) {
      using T = decltype(tag);
      double sum = 0.0;
      for (const Tensor* t : tensors) sum += kernels::cpu::sum_of_squares<T>(t->data<T>(), t->numel());
      return sum;
    });
  }
  tensors[0]->check_dtype(DType::float32, (std::string(op) + " (CUDA) " + list + "[0]").c_str());
  double sum = 0.0;
  CTSR_LAUNCH(device, sum_of_squares, tensor_list(tensors), device, sum);
  return sum;
}
}  // namespace

double sum_of_squares(const std::vector<const Tensor*>& tensors) {
  return checked_sum_of_squares("sum_of_squares", "tensors", tensors);
}

double global_grad_norm(const std::vector<const Tensor*>& grads) {
  if (grads.empty()) return 0.0;
  const double norm = std::sqrt(checked_sum_of_squares("global_grad_norm", "grads", grads));
  // Rounded to the gradients' dtype, like torch's total_norm.
  return grads[0]->dtype() == DType::float64 ? norm : double(float(norm));
}

void scale_in_place(const std::vector<Tensor*>& tensors, double factor) {
  const char* op = "scale_in_place";
  if (tensors.empty()) return;
  const std::vector<const Tensor*> read_only(tensors.begin(), tensors.end());
  check_entry(op, "tensors", 0, read_only[0], nullptr);
  for (size_t i = 0; i < read_only.size(); ++i) check_entry(op, "tensors", i, read_only[i], read_only[0]);
  const Device device = tensors[0]->device();
  if (device.kind == DeviceKind::cpu) {
    kernels::with_float_type(op, *tensors[0], [&](auto tag) {
      using T = decltype(tag);
      for (Tensor* t : tensors) kernels::cpu::scale<T>(t->data<T>(), t->numel(), T(factor));
    });
  } else {
    tensors[0]->check_dtype(DType::float32, "scale_in_place (CUDA) tensors[0]");
    CTSR_LAUNCH(device, scale, tensor_list(read_only), float(factor), device);
  }
}

double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm) {
  const char* op = "clip_grad_norm";
  CTSR_CHECK(std::isfinite(max_norm) && max_norm > 0, op, ": max_norm must be finite and > 0, got ", max_norm);
  const double norm = global_grad_norm(std::vector<const Tensor*>(grads.begin(), grads.end()));
  if (grads.empty()) return norm;
  const double coefficient = kernels::clip_coefficient(norm, max_norm);
  // torch's clamp(coef, max=1): a factor of 1 changes nothing. The factor is rounded to the
  // gradients' dtype before the comparison, as the kernels use it.
  const bool clips = grads[0]->dtype() == DType::float64 ? coefficient < 1.0 : float(coefficient) < 1.0f;
  if (clips) scale_in_place(grads, coefficient);
  return norm;
}

void ema_update(const std::vector<Tensor*>& ema, const std::vector<const Tensor*>& params, double decay) {
  const char* op = "ema_update";
  CTSR_CHECK(ema.size() == params.size(), op, ": ", ema.size(), " ema and ", params.size(),
             " params tensors; the two lists must be equally long");
  CTSR_CHECK(decay >= 0.0 && decay <= 1.0, op, ": decay must lie in [0, 1], got ", decay);
  if (ema.empty()) return;
  check_entry(op, "ema", 0, ema[0], nullptr);
  const Tensor* first = ema[0];
  for (size_t i = 0; i < ema.size(); ++i) {
    check_entry(op, "ema", i, ema[i], first);
    check_entry(op, "params", i, params[i], first);
    CTSR_CHECK(params[i]->shape() == ema[i]->shape(), op, ": params[", i, "] is ", params[i]->shape().str(),
               " but ema[", i, "] is ", ema[i]->shape().str());
    CTSR_CHECK(ema[i]->numel() == 0 || params[i]->raw_data() != ema[i]->raw_data(), op, ": ema[", i,
               "] is the same memory as params[", i, "]");
  }
  const Device device = first->device();
  if (device.kind == DeviceKind::cpu) {
    kernels::with_float_type(op, *first, [&](auto tag) {
      using T = decltype(tag);
      const kernels::EmaScalars<T> scalars = kernels::ema_scalars<T>(decay);
      for (size_t i = 0; i < ema.size(); ++i)
        kernels::cpu::ema_update<T>(ema[i]->data<T>(), params[i]->data<T>(), ema[i]->numel(), scalars);
    });
  } else {
    first->check_dtype(DType::float32, "ema_update (CUDA) ema[0]");
    const std::vector<const Tensor*> targets(ema.begin(), ema.end());
    CTSR_LAUNCH(device, ema_update, tensor_list(targets), tensor_list(params), kernels::ema_scalars<float>(decay),
                device);
  }
}

}  // namespace ctsr
