// RED-CNN (Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural network",
// IEEE TMI 2017): the learned baseline every ctsr evaluation reports beside the classical ones.
// A 2D network on axial slices, written with our 3D layers as 1 x k x k kernels, so a volume
// [N, D, H, W, 1] is D independent slices:
//
//   c1..c5: Conv Ci -> C, C -> C (k x k, no padding), each followed by ReLU: every conv trims
//           k - 1 voxels from H and W; tensors after c2 (r2) and c4 (r3) are kept as shortcuts
//   t1..t5: ConvTranspose C -> C, ..., C -> 1 (k x k, no padding), each growing H and W back by k - 1
//   y = t5(relu(t4(relu(t3(relu(t2(relu(t1(c5) + r3))) + r2))))) + x[..., 0]
//
// Ci (in_channels) is 1 for the published network: x is the low-dose volume. With Ci = 2 the same
// network is the refiner of ctsr's super-resolution (issue: SR bounded by the first stage's round
// trip): channel 0 is the low-dose volume, channel 1 a guide (the latent path's decoded SR), and the
// outer shortcut still adds the low-dose channel, so detail the VQ-AE's codes cannot hold reaches
// the output from the input itself while the guide carries what the diffusion model knows.
//
// with a ReLU before every transposed conv, as the published network. The published network ends
// with a ReLU too, for data scaled to [0, 1]; ctsr's volumes are on the [-1, 1] scale, where a final
// ReLU would clip every voxel below the middle of the window, so the output is the last sum.
// Defaults: C = 96, k = 5 (1.85 M parameters). H and W must be at least 5 (k - 1) + 1.
// Backward: parameter gradients accumulate (model/module.h); the input gradient is not needed
// (the network is trained, not differentiated through), so backward returns nothing.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/layers.h"
#include "runtime/formats/volume.h"

namespace ctsr {

struct RedCnnConfig {
  int64_t channels = 96;
  int64_t kernel = 5;
  int64_t in_channels = 1;  // 1: the low-dose volume; 2: it and a guide volume (the refiner)
  std::string str() const;  // "RED-CNN: 96 channels, 1 x 5 x 5 kernels" (+ ", guided" when 2 inputs)
};

class RedCnn : public Module {
 public:
  explicit RedCnn(const RedCnnConfig& config = {}, const LayerOptions& options = {});
  // x [N, D, H, W, Ci] on the [-1, 1] scale -> the restored volume [N, D, H, W, 1].
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

// The weights file ctsr_train_redcnn writes (OUTPUT/redcnn.safetensors) and ctsr_evaluate
// --redcnn reads: safetensors with the parameters under their names (conv1.weight ... tconv5.bias)
// and the metadata format "ctsr-redcnn", channels, kernel, in_channels (absent in older files: 1)
// and hu_window ("lo,hi": the window the network was trained in; its input and output are that
// window's [-1, 1] scale), plus whatever `metadata` adds (step, seed, source).
void write_redcnn_weights(const std::filesystem::path& path, RedCnn& net, const io::HuWindow& window,
                          const std::map<std::string, std::string>& metadata = {});

struct LoadedRedCnn {
  std::unique_ptr<RedCnn> net;
  io::HuWindow window;
  std::map<std::string, std::string> metadata;
};
// Errors name the file and what is wrong (not a RED-CNN file, a missing or misshapen tensor, a bad
// metadata value).
LoadedRedCnn load_redcnn_weights(const std::filesystem::path& path, const LayerOptions& options = {});

// Starts `net` from the weights of `source`, a network of the same channels and kernel: every
// parameter copied, and when net takes more input channels than source, conv1's weights for the
// extra channels set to zero (so net's output equals source's whatever the guide holds, until
// training teaches it to use the guide). Errors name what differs.
void init_redcnn_from(RedCnn& net, RedCnn& source, const std::string& source_name);

// A whole volume [D, H, W] (float32, the network's [-1, 1] scale, any device) restored slice by
// slice, `slab` slices per forward pass to bound the activations' memory (0: all at once); the
// result [D, H, W] float32 on the volume's device. H and W must be at least min_slice_size().
// A network of two input channels takes `guide` ([D, H, W], the volume's shape) as its second.
Tensor restore_volume(RedCnn& net, const Tensor& volume, int64_t slab = 16);
Tensor restore_volume(RedCnn& net, const Tensor& volume, const Tensor& guide, int64_t slab = 16);

}  // namespace ctsr
