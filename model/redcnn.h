// RED-CNN (Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural network",
// IEEE TMI 2017): the learned baseline every ctsr evaluation reports beside the classical ones.
// A 2D network on axial slices, written with our 3D layers as 1 x k x k kernels, so a volume
// [N, D, H, W, 1] is D independent slices:
//
//   c1..c5: Conv 1 -> C, C -> C (k x k, no padding), each followed by ReLU: every conv trims
//           k - 1 voxels from H and W; tensors after c2 (r2) and c4 (r3) are kept as shortcuts
//   t1..t5: ConvTranspose C -> C, ..., C -> 1 (k x k, no padding), each growing H and W back by k - 1
//   y = t5(relu(t4(relu(t3(relu(t2(relu(t1(c5) + r3))) + r2))))) + x
//
// with a ReLU before every transposed conv, as the published network. The published network ends
// with a ReLU too, for data scaled to [0, 1]; ctsr's volumes are on the [-1, 1] scale, where a final
// ReLU would clip every voxel below the middle of the window, so the output is the last sum.
// Defaults: C = 96, k = 5 (1.85 M parameters). H and W must be at least 5 (k - 1) + 1.
// Backward: parameter gradients accumulate (model/module.h); the input gradient is not needed
// (the network is trained, not differentiated through), so backward returns nothing.
#pragma once

#include <memory>
#include <vector>

#include "model/layers.h"

namespace ctsr {

struct RedCnnConfig {
  int64_t channels = 96;
  int64_t kernel = 5;
  std::string str() const;  // "RED-CNN: 96 channels, 1 x 5 x 5 kernels"
};

class RedCnn : public Module {
 public:
  explicit RedCnn(const RedCnnConfig& config = {}, const LayerOptions& options = {});
  // x [N, D, H, W, 1] on the [-1, 1] scale -> the restored volume, same shape.
  Tensor forward(const Tensor& x);
  // dy: the loss gradient with respect to forward's output. Accumulates into every parameter's
  // gradient; returns dL/dx when input_grad (the gradient checks), else an undefined tensor.
  Tensor backward(const Tensor& dy, bool input_grad = false);
  void clear_saved() override;
  const RedCnnConfig& config() const { return config_; }
  // Smallest H and W forward accepts: five convolutions each take k - 1.
  int64_t min_slice_size() const { return 5 * (config_.kernel - 1) + 1; }

 protected:
  void collect(const std::string& prefix, std::vector<Parameter*>& out) override;

 private:
  RedCnnConfig config_;
  std::vector<std::unique_ptr<Conv3d>> convs_;            // c1..c5
  std::vector<std::unique_ptr<ConvTranspose3d>> tconvs_;  // t1..t5
  std::vector<std::unique_ptr<ReLU>> relus_;              // after c1..c5, then before t2..t5
};

}  // namespace ctsr
