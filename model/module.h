// Layers with explicit forward and backward.
//
// A Module owns its parameters (value and gradient), saves in forward what its backward needs,
// and frees it in backward. backward(dy) returns dx and ACCUMULATES into the parameters'
// gradients, so gradient accumulation over micro-batches is just several backward calls
// between two zero_grad() calls. A module's forward and backward alternate: one saved state.
// Parameters are created on a device in a dtype (float32 for training; float64 for the
// gradient checks on the reference path).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ctsr {

struct Parameter {
  std::string name;  // dotted path, e.g. "down.0.conv1.weight"
  Tensor value;
  Tensor grad;       // same shape, dtype and device as value; zeros until backward adds to it
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter of this module and its children, names prefixed by `prefix`.
  std::vector<Parameter*> parameters(const std::string& prefix = "");
  void zero_grad();  // in place where a gradient is allocated (it may be a view of a flat buffer)
  int64_t parameter_count();
  // Frees what forward saved (for a forward without backward, e.g. validation).
  virtual void clear_saved() {}

  // A parameter of `shape`, with a zero gradient, named `name` (checked against a
  // ParameterMemoryLimit of this thread first, when there is one).
  static Parameter make_parameter(const std::string& name, const Shape& shape, DType dtype, Device device);

 protected:
  // Modules list their own parameters and children here.
  virtual void collect(const std::string& prefix, std::vector<Parameter*>& out) = 0;
  static void collect_child(Module& child, const std::string& prefix, const std::string& name,
                            std::vector<Parameter*>& out) {
    child.collect(prefix + name + ".", out);
  }
};

// Called by a network's backward each time the gradients of `params` are complete for this
// backward, so data parallelism can reduce them while the rest of backward runs.
using GradientsReady = std::function<void(const std::vector<Parameter*>& params)>;

// Inference without backward (a frozen VQ-AE, validation sampling): while a NoGradGuard lives on
// a thread, forward passes on that thread save nothing for backward, so activations are freed
// as soon as the next layer has consumed them.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// A ceiling on what a model's parameters may take, checked before each one is allocated. While
// a ParameterMemoryLimit lives on a thread, every parameter made there adds its footprint (value
// and gradient, plus `extra_copies` more of its size: AdamW's two moments and the EMA in
// training) to a running estimate, and the parameter that would take the estimate past the limit
// is refused with an error giving the estimate, the limit and `what` (the settings to change). A
// model made a hundred times too large by a typo in its configuration then fails at once with a
// message instead of being killed by the system when memory runs out.
class ParameterMemoryLimit {
 public:
  ParameterMemoryLimit(uint64_t limit_bytes, int extra_copies, std::string what);
  ~ParameterMemoryLimit();
  ParameterMemoryLimit(const ParameterMemoryLimit&) = delete;
  ParameterMemoryLimit& operator=(const ParameterMemoryLimit&) = delete;
  uint64_t estimate_bytes() const { return estimate_; }
  // Adds a parameter of `shape` with elements of `element_size` bytes, or throws; called by
  // make_parameter.
  void add(const Shape& shape, size_t element_size);

 private:
  uint64_t limit_, estimate_ = 0;
  int64_t parameters_ = 0;
  int copies_;
  std::string what_;
  ParameterMemoryLimit* previous_;
};

// Fills a parameter uniformly in [-bound, bound) from Philox(seed, stream) on any device
// (PyTorch's default for conv and linear layers uses bound = 1/sqrt(fan_in)).
void init_uniform(Parameter& p, double bound, uint64_t seed, uint64_t stream);
void init_constant(Parameter& p, double value);

}  // namespace ctsr
