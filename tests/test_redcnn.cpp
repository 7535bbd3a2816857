// RED-CNN (model/redcnn.h): forward and every gradient against an independent PyTorch model (tools/pytorch/make_redcnn_golden.py, tests/data/redcnn/), float64 central-
// difference gradient checks of every parameter and the input at a tiny width on awkward slice
// sizes, the same numbers on the CUDA paths, and the errors for inputs it cannot take.
#include <algorithm>

#include "model/pytorch_import.h"
#include "kernels/resample.h"
#include "model/redcnn.h"
#include "runtime/formats/npy.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

const std::string kDir = std::string(CTSR_TEST_DATA_DIR) + "/redcnn/";

LayerOptions options(DType dtype, Device device = Device::cpu(), uint64_t seed = 5) {
  LayerOptions o;
  o.dtype = dtype;
  o.device = device;
  o.seed = seed;
  return o;
}

// PyTorch's 2D weights to our 1 x k x k ones: Conv2d [out, in, k, k] -> [out, 1, k, k, in];
// ConvTranspose2d [in, out, k, k] -> [in, 1, k, k, out]. Both: axis 1 moved last.
Tensor from_pytorch_2d(const Tensor& w) {
  const Tensor moved = move_axis_last(w, 1);
  return moved.reshape({moved.dim(0), 1, moved.dim(1), moved.dim(2), moved.dim(3)});
}

// Slices [D, H, W] <-> [1, D, H, W, 1].
Tensor as_volume(const Tensor& slices) { return slices.reshape({1, slices.dim(0), slices.dim(1), slices.dim(2), 1}); }

TEST(RedCnn, MatchesPyTorch) {
  RedCnn model({6, 5}, options(DType::float64));
  for (Parameter* p : model.parameters()) {
    const Tensor golden = io::read_npy(kDir + p->name + ".npy");
    const Tensor ours = p->name.ends_with(".weight") ? from_pytorch_2d(golden) : golden;
    ASSERT_EQ(ours.shape(), p->value.shape()) << p->name;
    p->value.copy_from(ours);
  }
  const Tensor x = as_volume(io::read_npy(kDir + "input.npy"));
  const Tensor y = model.forward(x);
  const double forward_error = relative_l2(y, as_volume(io::read_npy(kDir + "output.npy")));
  model.zero_grad();
  const Tensor dx = model.backward(as_volume(io::read_npy(kDir + "dy.npy")), /*input_grad=*/true);
  double grad_error = relative_l2(dx, as_volume(io::read_npy(kDir + "grad_input.npy")));
  for (Parameter* p : model.parameters()) {
    const Tensor golden = io::read_npy(kDir + "grad." + p->name + ".npy");
    const double e = relative_l2(p->grad, p->name.ends_with(".weight") ? from_pytorch_2d(golden) : golden);
    EXPECT_LT(e, 1e-12) << p->name;
    grad_error = std::max(grad_error, e);
  }
  std::printf("RED-CNN against PyTorch (float64): output %.2e, worst gradient (input, 20 parameters) %.2e\n",
              forward_error, grad_error);
  EXPECT_LT(forward_error, 1e-12);
  EXPECT_LT(grad_error, 1e-12);
  // The published width: 1.85 M parameters.
  RedCnn full({}, options(DType::float32));
  EXPECT_EQ(full.parameter_count(), 1848865);
}

// Every parameter's and the input's gradient of `model` at x, by central differences in float64.
void expect_redcnn_gradcheck(const char* name, RedCnn& model, const Tensor& x) {
  Forward f = [&model](const std::vector<Tensor>& in) {
    Tensor y = model.forward(in[0]);
    model.clear_saved();
    return std::vector<Tensor>{y};
  };
  Backward b = [&model](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
    model.forward(in[0]);
    return std::vector<Tensor>{model.backward(dy[0], /*input_grad=*/true)};
  };
  // The step and the bound: see Gradcheck.
  expect_module_gradcheck(name, model, {x}, f, b, /*tol=*/1e-6, /*eps=*/1e-5);
}

TEST(RedCnn, Gradcheck) {
  // 3 channels, 3 x 3 kernels: slices of 13 x 11 shrink to 3 x 1 at the bottleneck.
  RedCnn model({3, 3}, options(DType::float64));
  // The step and the bound, measured: the ReLUs' kinks and float64 rounding pull the central
  // difference two ways here. With eps 1e-4 every weight agrees to 1e-8 or better but conv2.bias
  // and conv4.bias are off by 1e-2 (a bias moves a whole channel's pre-activations, and a step that
  // large carries some across 0); with eps 1e-6 the kinks are gone but conv5.weight, whose gradient
  // is small beside the loss after the ReLUs of this 3-channel net, shows rounding of 1.3e-6, which
  // falls in proportion to eps (1.7e-7 at 1e-5, 1.5e-8 at 1e-4). So eps 1e-5 and a bound of 1e-6.
  // The gradients themselves match PyTorch's to 1e-12 (MatchesPyTorch).
  expect_redcnn_gradcheck("RedCnn(3, 3)", model, random_tensor({2, 2, 13, 11, 1}, 17, DType::float64, 0.05, 1.0));
}

// The refiner's two inputs (low dose, guide): every parameter and both input channels, the outer
// shortcut reaching channel 0 only. The same step and bound as Gradcheck, for the same reasons.
TEST(RedCnn, GuidedGradcheck) {
  RedCnnConfig config{3, 3};
  config.in_channels = 2;
  RedCnn model(config, options(DType::float64, Device::cpu(), 7));
  const Tensor x = random_tensor({1, 3, 11, 13, 2}, 19, DType::float64, 0.05, 1.0);
  EXPECT_EQ(model.forward(x).shape(), Shape({1, 3, 11, 13, 1}));
  model.clear_saved();
  expect_redcnn_gradcheck("RedCnn(3, 3, guided)", model, x);
}

// init_redcnn_from: a two-input network started from a one-input one computes exactly what the
// one-input network does, whatever the guide; the guide moves the output once its weights do.
TEST(RedCnn, GuidedNetworkStartsAsTheNetworkItExtends) {
  RedCnn plain({4, 3}, options(DType::float32, Device::cpu(), 3));
  RedCnnConfig config{4, 3};
  config.in_channels = 2;
  RedCnn guided(config, options(DType::float32, Device::cpu(), 4));
  init_redcnn_from(guided, plain, "plain");
  const Tensor ld = random_tensor({1, 2, 15, 12, 1}, 5, DType::float32, -1, 1);
  const Tensor y = plain.forward(ld);
  for (uint64_t seed : {6, 7}) {
    const Tensor guide = random_tensor(ld.shape(), seed, DType::float32, -1, 1);
    EXPECT_TRUE(tensors_equal(guided.forward(concat_channels(ld, guide)), y)) << "guide seed " << seed;
  }
  // restore_volume with a guide is the network on (ld, guide) slice by slice.
  const Tensor volume = ld.reshape({2, 15, 12}), guide = random_tensor({2, 15, 12}, 8, DType::float32, -1, 1);
  guided.parameters()[0]->value.copy_from(random_tensor(guided.parameters()[0]->value.shape(), 9, DType::float32, -0.3, 0.3));
  const Tensor restored = restore_volume(guided, volume, guide, 1);
  EXPECT_TENSORS_CLOSE(restored, guided.forward(concat_channels(ld, guide.reshape(ld.shape()))).reshape({2, 15, 12}),
                       1e-6, 1e-6);
  EXPECT_FALSE(tensors_equal(restored, y.reshape({2, 15, 12})));
  expect_error_mentions([&] { restore_volume(guided, volume); }, {"needs a guide volume"});
  expect_error_mentions([&] { restore_volume(plain, volume, guide); }, {"takes no guide volume"});
  expect_error_mentions([&] { restore_volume(guided, volume, guide.slice(0, 1)); }, {"[1, 15, 12]", "one shape"});
  RedCnn wider({5, 3}, options(DType::float32));
  expect_error_mentions([&] { init_redcnn_from(guided, wider, "wider.safetensors"); },
                        {"wider.safetensors", "5 channels", "same channels"});
  expect_error_mentions([&] { init_redcnn_from(plain, guided, "guided"); }, {"guided", "no more inputs"});
}

// Without the input gradient: the same parameter gradients, nothing returned.
TEST(RedCnn, BackwardWithoutInputGradient) {
  RedCnn model({4, 3}, options(DType::float32));
  const Tensor x = random_tensor({1, 3, 12, 14, 1}, 3);
  const Tensor dy = random_tensor(x.shape(), 4);
  model.forward(x);
  model.zero_grad();
  EXPECT_TRUE(model.backward(dy, true).defined());
  std::vector<Tensor> with;
  for (Parameter* p : model.parameters()) with.push_back(p->grad.clone());
  model.zero_grad();
  model.forward(x);
  EXPECT_FALSE(model.backward(dy).defined());
  auto params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(tensors_equal(params[i]->grad, with[i])) << params[i]->name;
}

TEST(RedCnn, InputsItCannotTake) {
  RedCnn model({4, 5}, options(DType::float32));
  EXPECT_EQ(model.min_slice_size(), 21);
  expect_error_mentions([&] { model.forward(random_tensor({1, 2, 20, 30, 1}, 1)); }, {"20 x 30", "at least 21"});
  expect_error_mentions([&] { model.forward(random_tensor({1, 2, 30, 30, 2}, 1)); }, {"[1, 2, 30, 30, 2]", "[N, D, H, W, 1]"});
  expect_error_mentions([&] { RedCnn({4, 4}); }, {"kernel is 4", "odd"});
  expect_error_mentions([&] { RedCnn({4, 3, 3}); }, {"in_channels is 3", "1 (the low-dose volume) or 2"});
}

// The CUDA paths against the reference path, float32: output and every parameter gradient.
class RedCnnCuda : public CudaPathTest {};
TEST_P(RedCnnCuda, MatchesTheReferencePath) {
  for (int64_t inputs : {1, 2}) {
    SCOPED_TRACE(inputs == 1 ? "RED-CNN" : "guided");
    RedCnn cpu({5, 5, inputs}, options(DType::float32));
    RedCnn gpu({5, 5, inputs}, options(DType::float32, device()));
    const Tensor x = random_tensor({2, 3, 25, 23, inputs}, 8);
    const Tensor dy = random_tensor({2, 3, 25, 23, 1}, 9);
    const Tensor y_cpu = cpu.forward(x);
    const Tensor y_gpu = gpu.forward(x.to(device()));
    EXPECT_LT(relative_l2(y_gpu, y_cpu), 1e-5);
    cpu.zero_grad();
    gpu.zero_grad();
    const Tensor dx_cpu = cpu.backward(dy, true);
    const Tensor dx_gpu = gpu.backward(dy.to(device()), true);
    EXPECT_LT(relative_l2(dx_gpu, dx_cpu), 1e-4);
    auto pc = cpu.parameters(), pg = gpu.parameters();
    for (size_t i = 0; i < pc.size(); ++i) EXPECT_LT(relative_l2(pg[i]->grad, pc[i]->grad), 1e-4) << pc[i]->name;
  }
}
CTSR_INSTANTIATE_CUDA_PATHS(RedCnnCuda);

}  // namespace
}  // namespace ctsr::test
