#include "model/module.h"

#include <cmath>

#include "kernels/copy.h"
#include "runtime/allocator.h"
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

namespace {
thread_local ParameterMemoryLimit* memory_limit = nullptr;
}  // namespace

ParameterMemoryLimit::ParameterMemoryLimit(uint64_t limit_bytes, int extra_copies, std::string what)
    : limit_(limit_bytes), copies_(2 + extra_copies), what_(std::move(what)), previous_(memory_limit) {
  memory_limit = this;
}

ParameterMemoryLimit::~ParameterMemoryLimit() { memory_limit = previous_; }

void ParameterMemoryLimit::add(const Shape& shape, size_t element_size) {
  const uint64_t bytes = checked_bytes(shape.numel(), element_size * size_t(copies_), "a parameter of shape " + shape.str());
  uint64_t total = 0;
  const bool fits = !__builtin_add_overflow(estimate_, bytes, &total) && total <= limit_;
  CTSR_CHECK(fits, what_, ": the model's parameters need more than ",
             format_bytes(size_t(std::min<uint64_t>(total ? total : UINT64_MAX, SIZE_MAX))), " (", copies_,
             " copies of ", element_size, " bytes for each of more than ", parameters_ + shape.numel(),
             " parameters; refused at one of shape ", shape.str(), " before allocating it), more than the ",
             format_bytes(size_t(limit_)), " this device has; choose a smaller model");
  estimate_ = total;
  parameters_ += shape.numel();
}

Parameter Module::make_parameter(const std::string& name, const Shape& shape, DType dtype, Device device) {
  CTSR_CHECK(dtype == DType::float32 || dtype == DType::float64, "parameter ", name, ": dtype ", dtype_name(dtype),
             " (float32 or float64 expected)");
  if (memory_limit != nullptr) memory_limit->add(shape, dtype_size(dtype));
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
