// Layers (model/layers.h): float64 gradient checks of inputs and parameters on the reference
// path, the accumulate-in-backward contract, and agreement of the cpu and CUDA-path layers.
#include <cmath>

#include "kernels/activation.h"
#include "model/layers.h"
#include "kernels/copy.h"
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

TEST(Layers, DropoutElementBaseGivesAMicroBatchItsPlaceInTheBatch) {
  // Samples [2, 5) of a batch of 5 (21 elements each): set_rng(seed, offset, 2 * 21) reproduces
  // the whole batch's mask on them, forward and backward.
  Dropout whole(0.4), part(0.4);
  whole.set_rng(99, 7);
  part.set_rng(99, 7, 2 * 21);
  Tensor x = random_tensor({5, 7, 3}, 5, DType::float32, 0.5, 1.5), dy = random_tensor({5, 7, 3}, 6);
  Tensor y = whole.forward(x), dx = whole.backward(dy);
  EXPECT_TRUE(tensors_equal(part.forward(x.slice(2, 5)), y.slice(2, 5)));
  EXPECT_TRUE(tensors_equal(part.backward(dy.slice(2, 5)), dx.slice(2, 5)));
  part.set_rng(99, 7);  // without the base the slice draws the batch's first samples' mask
  EXPECT_FALSE(tensors_equal(part.forward(x.slice(2, 5)), y.slice(2, 5)));
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

TEST(Layers, LinearGradcheck) {
  for (bool bias : {true, false}) {
    Linear layer(5, 3, bias, f64());
    expect_module_gradcheck(bias ? "Linear layer" : "Linear layer (no bias)", layer,
                            {random_tensor({2, 7, 5}, 4, DType::float64)}, forward_of(layer), backward_of(layer));
  }
}

TEST(Layers, Conv3dGradcheck) {
  Conv3d layer(3, 2, 3, 1, 1, true, f64());
  expect_module_gradcheck("Conv3d k3 s1 p1 layer", layer, {random_tensor({1, 3, 4, 5, 3}, 5, DType::float64)},
                          forward_of(layer), backward_of(layer));
}

TEST(Layers, DownsampleGradcheck) {
  Downsample layer(2, f64());
  Tensor x = random_tensor({2, 5, 3, 4, 2}, 6, DType::float64);
  expect_module_gradcheck("Downsample layer", layer, {x}, forward_of(layer), backward_of(layer));
  EXPECT_EQ(layer.forward(x).shape(), (Shape{2, 3, 2, 2, 2}));  // ceil(n / 2)
}

TEST(Layers, ConvTranspose3dGradcheck) {
  ConvTranspose3d layer(2, 3, 4, 2, 1, true, f64());
  Tensor x = random_tensor({1, 2, 3, 2, 2}, 7, DType::float64);
  expect_module_gradcheck("ConvTranspose3d k4 s2 p1 layer", layer, {x}, forward_of(layer), backward_of(layer));
  EXPECT_EQ(layer.forward(x).shape(), (Shape{1, 4, 6, 4, 3}));  // doubles each size
}

TEST(Layers, UpsampleGradcheck) {
  Upsample layer(2, f64());
  const std::array<int64_t, 3> size{5, 3, 4};  // from 3x2x2, odd sizes as the UNet's skips
  expect_module_gradcheck(
      "Upsample layer", layer, {random_tensor({1, 3, 2, 2, 2}, 8, DType::float64)},
      [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{layer.forward(in[0], size)}; },
      backward_of(layer));
}

TEST(Layers, AttentionBlockGradcheck) {
  for (bool qkv_bias : {true, false}) {
    AttentionOptions a;
    a.heads = 2, a.head_dim = 3, a.groups = 2, a.qkv_bias = qkv_bias;
    AttentionBlock layer(4, a, f64());
    perturb_parameters(layer, 30);
    expect_module_gradcheck(qkv_bias ? "AttentionBlock (qkv bias)" : "AttentionBlock (no qkv bias, inner 6 != 4)",
                            layer, {random_tensor({2, 1, 3, 2, 4}, 9, DType::float64)}, forward_of(layer),
                            backward_of(layer));
  }
}

TEST(Layers, ZeroInitialisedConvOutputsBias) {
  Conv3d layer(3, 4, 3, 1, 1, true);
  layer.zero_init();
  Tensor y = layer.forward(random_tensor({1, 3, 3, 3, 3}, 1));
  for (float v : y.to_vector<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(Layers, DefaultInitialisationIsBoundedAndSeeded) {
  Linear a(64, 8, true, LayerOptions{DType::float32, Device::cpu(), 5, 1});
  Linear b(64, 8, true, LayerOptions{DType::float32, Device::cpu(), 5, 1});
  Linear c(64, 8, true, LayerOptions{DType::float32, Device::cpu(), 5, 2});
  EXPECT_TRUE(tensors_equal(a.weight.value, b.weight.value));
  EXPECT_FALSE(tensors_equal(a.weight.value, c.weight.value));
  for (float v : a.weight.value.to_vector<float>()) EXPECT_LE(std::fabs(v), 0.125f);  // 1/sqrt(64)
}

using LayerParity = CudaPathTest;

// Copies every parameter of `from` into `to` (same architecture, any devices).
void copy_parameters(Module& to, Module& from) {
  std::vector<Parameter*> a = to.parameters(), b = from.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) a[i]->value.copy_from(b[i]->value);
}

void expect_grads_close(Module& dev, Module& ref, double rtol, double atol) {
  std::vector<Parameter*> a = dev.parameters(), b = ref.parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TENSORS_CLOSE(a[i]->grad, b[i]->grad, rtol, atol) << b[i]->name;
}

TEST_P(LayerParity, AttentionBlockMatchesReference) {
  AttentionOptions a;
  a.heads = 2, a.head_dim = 32, a.groups = 8;
  AttentionBlock ref(64, a), dev(64, a, LayerOptions{DType::float32, device(), 0, 0});
  perturb_parameters(ref, 40);
  copy_parameters(dev, ref);
  Tensor x = random_tensor({1, 5, 4, 3, 64}, 11);
  Tensor dy = random_tensor(x.shape(), 12);
  ref.zero_grad();
  dev.zero_grad();
  EXPECT_TENSORS_CLOSE(dev.forward(x.to(device())), ref.forward(x), 1e-4, 1e-4);
  EXPECT_TENSORS_CLOSE(dev.backward(dy.to(device())), ref.backward(dy), 1e-3, 1e-4);
  expect_grads_close(dev, ref, 1e-3, 1e-3);
}

TEST_P(LayerParity, UpsampleConvMatchesReference) {
  Upsample ref(5), dev(5, LayerOptions{DType::float32, device(), 0, 0});
  copy_parameters(dev, ref);
  Tensor x = random_tensor({3, 7, 4, 4, 5}, 13);
  const std::array<int64_t, 3> size{13, 8, 8};
  Tensor dy = random_tensor({3, 13, 8, 8, 5}, 14);
  ref.zero_grad();
  dev.zero_grad();
  EXPECT_TENSORS_CLOSE(dev.forward(x.to(device()), size), ref.forward(x, size), 1e-4, 1e-5);
  EXPECT_TENSORS_CLOSE(dev.backward(dy.to(device())), ref.backward(dy), 1e-4, 1e-4);
  expect_grads_close(dev, ref, 1e-4, 1e-3);
}


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

// Mixed precision (LayerOptions::compute bfloat16): a Conv3d given float32 activations rounds
// them and its weight to bf16, returns float32 (the bf16-rounded result of a float sum), keeps
// float32 parameters and gradients, and saves its input in bf16. Checked against the float64 op
// on the bf16-rounded operands, within within_bf16_bound (tests/harness.h).
void expect_bf16_conv_layer(Device device) {
  LayerOptions o{DType::float32, device, 3, 0};
  o.compute = DType::bfloat16;
  Conv3d conv(6, 5, 3, 1, 1, true, o);
  Tensor x = random_tensor({2, 7, 5, 6, 6}, 31), dy = random_tensor({2, 7, 5, 6, 5}, 32);
  const Tensor xb = to_double(cast(x, DType::bfloat16)), dyb = to_double(cast(dy, DType::bfloat16));
  const Tensor wb = to_double(cast(conv.weight.value.to(Device::cpu()), DType::bfloat16));
  const Tensor b = to_double(conv.bias.value);
  const Conv3dParams p = conv.params();
  conv.zero_grad();
  const Tensor y = conv.forward(x.to(device));
  EXPECT_EQ(y.dtype(), DType::float32);
  EXPECT_TRUE(within_bf16_bound(y, conv3d_forward(xb, wb, b, p),
                                conv3d_forward(abs_double(xb), abs_double(wb), abs_double(b), p), 27 * 6 + 1, true));
  const Tensor dx = conv.backward(dy.to(device));
  EXPECT_EQ(dx.dtype(), DType::float32);
  EXPECT_TRUE(within_bf16_bound(dx, conv3d_backward_data(dyb, wb, x.shape(), p),
                                conv3d_backward_data(abs_double(dyb), abs_double(wb), x.shape(), p), 27 * 5, true));
  Tensor dw_ref, dw_abs;
  conv3d_backward_weight(xb, dyb, p, dw_ref);
  conv3d_backward_weight(abs_double(xb), abs_double(dyb), p, dw_abs);
  EXPECT_EQ(conv.weight.grad.dtype(), DType::float32);
  const double voxels = 2 * 7 * 5 * 6;
  EXPECT_TRUE(within_bf16_bound(conv.weight.grad, dw_ref, dw_abs, voxels + voxels / 256 + 2, false));
  EXPECT_EQ(conv.bias.grad.dtype(), DType::float32);
}

TEST(Layers, Bf16ComputeConv3dOnReference) { expect_bf16_conv_layer(Device::cpu()); }
TEST_P(LayerParity, Bf16ComputeConv3dWithinBound) { expect_bf16_conv_layer(device()); }

// A GroupNorm in bf16 compute writes its output in bf16 for the bf16 layer after it: the float32
// layer's output rounded once (bitwise), with the float32 layer's backward and parameter
// gradients unchanged (bitwise: only the store of y differs).
void expect_bf16_group_norm_layer(Device device) {
  LayerOptions o{DType::float32, device, 0, 0};
  GroupNorm plain(12, 4, 1e-5, true, o);
  o.compute = DType::bfloat16;
  GroupNorm mixed(12, 4, 1e-5, true, o);
  perturb_parameters(plain, 21);
  mixed.weight.value.copy_from(plain.weight.value);
  mixed.bias.value.copy_from(plain.bias.value);
  Tensor x = random_tensor({3, 13, 8, 8, 12}, 9, DType::float32, -2, 2).to(device);
  Tensor dy = random_tensor(x.shape(), 10).to(device);
  plain.zero_grad();
  mixed.zero_grad();
  const Tensor y = mixed.forward(x);
  ASSERT_EQ(y.dtype(), DType::bfloat16);
  EXPECT_TRUE(tensors_equal(y, cast(plain.forward(x), DType::bfloat16)));
  EXPECT_TRUE(tensors_equal(mixed.backward(dy), plain.backward(dy)));
  EXPECT_TRUE(tensors_equal(mixed.weight.grad, plain.weight.grad));
  EXPECT_TRUE(tensors_equal(mixed.bias.grad, plain.bias.grad));
}

TEST(Layers, Bf16ComputeGroupNormOnReference) { expect_bf16_group_norm_layer(Device::cpu()); }
TEST_P(LayerParity, Bf16ComputeGroupNormWritesBf16) { expect_bf16_group_norm_layer(device()); }

CTSR_INSTANTIATE_CUDA_PATHS(LayerParity);

}  // namespace
}  // namespace ctsr::test
