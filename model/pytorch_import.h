// Parameters from files written by PyTorch (or our safetensors copies of them). PyTorch stores
// conv weights [out, in, kD, kH, kW] and transposed-conv weights [in, out, kD, kH, kW]; ours move
// the second dimension last ([out, kD, kH, kW, in] and [in, kD, kH, kW, out]), so one rule
// converts both. A 1x1x1 conv whose counterpart here is a Linear ([out, in]) is reshaped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/module.h"
#include "runtime/formats/tensor_source.h"

namespace ctsr {

// Host-side permutations between channels-first files and our channels-last tensors:
// move_axis_last([C, d, h, w], 0) -> [d, h, w, C]; move_last_axis_to([d, h, w, C], 0) -> [C, d, h, w].
Tensor move_axis_last(const Tensor& t, int axis);
Tensor move_last_axis_to(const Tensor& t, int axis);

// PyTorch's shape of a tensor whose shape here is `ours` (the inverse of the rule above), given
// the rank the file uses: for error messages that speak the file's language.
Shape pytorch_shape(const Shape& ours, int pytorch_ndim);

// `t` (any float dtype, cpu) in our layout and dtype for a parameter of shape `ours`; throws
// naming `file` and `key` when the shapes cannot match.
Tensor from_pytorch_layout(const Tensor& t, const Shape& ours, DType dtype, const std::string& file,
                           const std::string& key);
// The inverse, to write our parameters back in PyTorch's layout (float32).
Tensor to_pytorch_layout(const Tensor& ours, int pytorch_ndim);

// Loads every parameter of `params` from `source`, the file's key for each given by key_of(name).
// Missing keys are reported together (the count and the first few), then shape mismatches.
void load_parameters(const io::TensorSource& source, const std::vector<Parameter*>& params,
                     const std::function<std::string(const std::string&)>& key_of);

}  // namespace ctsr
