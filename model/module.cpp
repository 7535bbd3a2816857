#include "model/module.h"

#include <cmath>

#include "kernels/copy.h"
#include "runtime/philox.h"

namespace ctsr {

namespace {
thread_local bool grad_mode = true;
}  // namespace

bool grad_enabled() { return grad_mode; }
NoGradGuard::NoGradGuard() : previous_(grad_mode) { grad_mode = false; }
NoGradGuard::~NoGradGuard() { grad_mode = previous_; }

std::vector<Parameter*> Module::parameters(const std::string& prefix) {
  std::vector<Parameter*> out;
  collect(prefix, out);
  return out;
}

void Module::zero_grad() {
  // In place when the gradient exists: data parallelism makes gradients views of one flat buffer.
  for (Parameter* p : parameters()) {
    if (p->grad.defined()) fill(p->grad, 0.0);
    else p->grad = Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device());
  }
}

int64_t Module::parameter_count() {
  int64_t n = 0;
  for (Parameter* p : parameters()) n += p->value.numel();
  return n;
}

Parameter Module::make_parameter(const std::string& name, const Shape& shape, DType dtype, Device device) {
  CTSR_CHECK(dtype == DType::float32 || dtype == DType::float64, "parameter ", name, ": dtype ", dtype_name(dtype),
             " (float32 or float64 expected)");
  return Parameter{name, Tensor::zeros(shape, dtype, device), Tensor::zeros(shape, dtype, device)};
}

namespace {
// Parameters are filled once, on the host, and copied: the same values on every device.
template <class F>
void fill_host(Parameter& p, F&& value_at) {
  Tensor host = Tensor::empty(p.value.shape(), p.value.dtype(), Device::cpu());
  for (int64_t i = 0; i < host.numel(); ++i) {
    const double v = value_at(i);
    if (host.dtype() == DType::float32) host.data<float>()[i] = static_cast<float>(v);
    else host.data<double>()[i] = v;
  }
  p.value.copy_from(host);
}
}  // namespace

void init_uniform(Parameter& p, double bound, uint64_t seed, uint64_t stream) {
  fill_host(p, [&](int64_t i) {
    return -bound + 2.0 * bound * philox::uniform_at(seed, stream, static_cast<uint64_t>(i));
  });
}

void init_constant(Parameter& p, double value) {
  fill_host(p, [&](int64_t) { return value; });
}

}  // namespace ctsr
