// Layers (model/layers.h): float64 gradient checks of inputs and parameters on the reference
// path, the accumulate-in-backward contract, and agreement of the cpu and CUDA-path layers.
#include "kernels/activation.h"
#include "model/layers.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

LayerOptions f64() { return LayerOptions{DType::float64, Device::cpu(), 3, 0}; }

template <class L>
Forward forward_of(L& layer) {
  return [&layer](const std::vector<Tensor>& in) { return std::vector<Tensor>{layer.forward(in[0])}; };
}
template <class L>
Backward backward_of(L& layer) {
  return [&layer](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
    return std::vector<Tensor>{layer.backward(dy[0])};
  };
}

// Non-trivial gamma/beta so their gradients are exercised away from the initial values.
void perturb_parameters(Module& m, uint64_t seed) {
  for (Parameter* p : m.parameters()) p->value.copy_from(random_tensor(p->value.shape(), seed++, p->value.dtype(), 0.5, 1.5));
}

TEST(Layers, SiLUGradcheck) {
  SiLU layer;
  expect_module_gradcheck("SiLU layer", layer, {random_tensor({2, 3, 5}, 1, DType::float64, -3, 3)},
                          forward_of(layer), backward_of(layer));
}

TEST(Layers, GroupNormGradcheck) {
  for (bool fused : {false, true}) {
    GroupNorm layer(12, 4, 1e-5, fused, f64());
    perturb_parameters(layer, 10);
    expect_module_gradcheck(fused ? "GroupNorm+SiLU layer" : "GroupNorm layer", layer,
                            {random_tensor({3, 2, 3, 2, 12}, 2, DType::float64, -2, 2)}, forward_of(layer),
                            backward_of(layer));
  }
}

TEST(Layers, DropoutGradcheckAndEvalIdentity) {
  Dropout layer(0.25);
  layer.set_rng(99, 7);
  expect_module_gradcheck("Dropout layer", layer, {random_tensor({5, 7, 3}, 3, DType::float64)}, forward_of(layer),
                          backward_of(layer));
  layer.train(false);
  Tensor x = random_tensor({5, 7}, 4);
  EXPECT_TRUE(tensors_equal(layer.forward(x), x));
}

TEST(Layers, BackwardAccumulatesParameterGradients) {
  GroupNorm layer(6, 3, 1e-5, false, f64());
  Tensor x = random_tensor({2, 5, 6}, 5, DType::float64);
  Tensor dy = random_tensor({2, 5, 6}, 6, DType::float64);
  layer.zero_grad();
  layer.forward(x);
  layer.backward(dy);
  Tensor once = layer.weight.grad.clone();
  layer.forward(x);
  layer.backward(dy);
  std::vector<double> a = once.to_vector<double>(), b = layer.weight.grad.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], 2 * a[i], 1e-12);
}

TEST(Layers, BackwardWithoutForwardIsAnError) {
  SiLU layer;
  try {
    layer.backward(random_tensor({3}, 1));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SiLU.backward called without a forward"), std::string::npos);
  }
}

TEST(Layers, ParameterNamesAndCount) {
  GroupNorm layer(8, 4, 1e-6, true);
  std::vector<Parameter*> ps = layer.parameters("norm1.");
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0]->name, "norm1.weight");
  EXPECT_EQ(ps[1]->name, "norm1.bias");
  EXPECT_EQ(layer.parameter_count(), 16);
  EXPECT_THROW(GroupNorm(10, 4, 1e-5, false), Error);
}

using LayerParity = CudaPathTest;

TEST_P(LayerParity, GroupNormSiLULayerMatchesReference) {
  GroupNorm ref(12, 4, 1e-5, true);
  GroupNorm dev(12, 4, 1e-5, true, LayerOptions{DType::float32, device(), 0, 0});
  perturb_parameters(ref, 20);
  dev.weight.value.copy_from(ref.weight.value);
  dev.bias.value.copy_from(ref.bias.value);
  Tensor x = random_tensor({3, 13, 8, 8, 12}, 7, DType::float32, -2, 2);
  Tensor dy = random_tensor(x.shape(), 8);
  ref.zero_grad();
  dev.zero_grad();
  EXPECT_TENSORS_CLOSE(dev.forward(x.to(device())), ref.forward(x), 1e-5, 1e-5);
  EXPECT_TENSORS_CLOSE(dev.backward(dy.to(device())), ref.backward(dy), 1e-4, 1e-5);
  EXPECT_TENSORS_CLOSE(dev.weight.grad, ref.weight.grad, 1e-4, 1e-4);
  EXPECT_TENSORS_CLOSE(dev.bias.grad, ref.bias.grad, 1e-4, 1e-4);
}

CTSR_INSTANTIATE_CUDA_PATHS(LayerParity);

}  // namespace
}  // namespace ctsr::test
