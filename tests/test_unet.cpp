// The conditional UNet (model/unet.h): structure, float64 gradient check of the whole network,
// parity of the CUDA paths with the reference, activation checkpointing, configuration errors.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "kernels/copy.h"
#include "model/unet.h"
#include "tests/harness.h"

namespace ctsr {
namespace {

using test::random_tensor;

// 8 channels, 2 levels, 1 block, attention on the deeper level: the gradcheck network.
UNetConfig tiny_config() {
  UNetConfig c;
  c.in_channels = 3;
  c.out_channels = 2;
  c.model_channels = 8;
  c.channel_mult = {1, 2};
  c.num_blocks = 1;
  c.attention_levels = {false, true};
  c.head_channels = 8;  // two heads at level 1
  c.time_embed_dim = 12;
  c.dropout = 0.25;
  c.norm_groups = 4;
  return c;
}

// A width the CUDA attention kernels take (head_dim 32).
UNetConfig parity_config() {
  UNetConfig c;
  c.in_channels = 16;
  c.out_channels = 8;
  c.model_channels = 16;
  c.channel_mult = {1, 2};
  c.num_blocks = 1;
  c.attention_levels = {false, true};
  c.head_channels = 32;
  c.time_embed_dim = 24;
  c.dropout = 0.1;
  c.norm_groups = 4;
  return c;
}

LayerOptions options(DType dtype, Device device, uint64_t seed = 5) {
  LayerOptions o;
  o.dtype = dtype;
  o.device = device;
  o.seed = seed;
  return o;
}

// The zero-initialised layers would hide half the graph from a gradient check: perturb every
// parameter by a small random amount (the same on every device).
void perturb_parameters(UNet3D& net, uint64_t seed) {
  std::vector<Parameter*> params = net.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i];
    Tensor host = test::to_double(p.value.to(Device::cpu()));
    Tensor noise = random_tensor(host.shape(), seed + i, DType::float64, -0.2, 0.2);
    double* h = host.data<double>();
    const double* n = noise.data<double>();
    for (int64_t j = 0; j < host.numel(); ++j) h[j] += n[j];
    p.value.copy_from(p.value.dtype() == DType::float64 ? host : test::to_float(host));
  }
}

Tensor timesteps(const std::vector<int64_t>& t, Device device) { return Tensor::from_vector(t, {int64_t(t.size())}, device); }

TEST(UNet, ShapesNamesAndZeroInitialisedLayers) {
  UNetConfig c = parity_config();
  c.num_blocks = 2;
  UNet3D net(c);
  std::set<std::string> names;
  for (Parameter* p : net.parameters()) {
    EXPECT_TRUE(names.insert(p->name).second) << "duplicate parameter name " << p->name;
  }
  for (const char* expected :
       {"time_embed.0.weight", "time_embed.2.bias", "conv_in.weight", "down.0.block.0.conv1.weight",
        "down.0.block.1.time_proj.weight", "down.0.downsample.conv.weight", "down.1.attn.1.qkv.bias",
        "mid.block1.norm1.weight", "mid.attn.proj_out.weight", "mid.block2.conv2.bias", "up.1.block.2.skip.weight",
        "up.1.upsample.conv.weight", "up.0.block.0.skip.weight", "out_norm.weight", "conv_out.weight"}) {
    EXPECT_EQ(names.count(expected), 1u) << "no parameter " << expected;
  }
  EXPECT_EQ(names.count("up.0.upsample.conv.weight"), 0u);
  EXPECT_EQ(names.count("down.1.downsample.conv.weight"), 0u);
  // up.0.block.0 takes h (32, from level 1) and the last skip of level 0 (the downsample's 16)...
  for (Parameter* p : net.parameters()) {
    if (p->name == "up.0.block.0.conv1.weight") {
      EXPECT_EQ(p->value.shape(), (Shape{16, 3, 3, 3, 48}));
    } else if (p->name == "up.1.block.0.conv1.weight") {
      EXPECT_EQ(p->value.shape(), (Shape{32, 3, 3, 3, 64}));
    } else if (p->name == "conv_in.weight") {
      EXPECT_EQ(p->value.shape(), (Shape{16, 3, 3, 3, 16}));
    }
  }
  // The spec's zero-initialised layers: every ResBlock's conv2, attention outputs, conv_out.
  for (Parameter* p : net.parameters()) {
    const bool zero = p->name.find(".conv2.") != std::string::npos ||
                      p->name.find("proj_out.") != std::string::npos || p->name.rfind("conv_out.", 0) == 0;
    const std::vector<float> v = p->value.to_vector<float>();
    double max_abs = 0;
    for (float x : v) max_abs = std::max(max_abs, double(std::abs(x)));
    if (zero) {
      EXPECT_EQ(max_abs, 0.0) << p->name;
    } else if (p->name.find("norm") == std::string::npos) {
      EXPECT_GT(max_abs, 0.0) << p->name;
    }
  }
  // So the untrained network outputs zeros, at any odd size.
  Tensor x = random_tensor({2, 7, 5, 3, 16}, 3);
  Tensor y = net.forward(x, timesteps({3, 999}, Device::cpu()));
  EXPECT_EQ(y.shape(), (Shape{2, 7, 5, 3, 8}));
  for (float v : y.to_vector<float>()) ASSERT_EQ(v, 0.0f);
}

TEST(UNet, SameParametersOnEveryDeviceFromOneSeed) {
  UNet3D a(parity_config(), options(DType::float32, Device::cpu(), 9));
  UNet3D b(parity_config(), options(DType::float32, Device::cuda_on_cpu(), 9));
  UNet3D other(parity_config(), options(DType::float32, Device::cpu(), 10));
  auto pa = a.parameters(), pb = b.parameters(), po = other.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  bool any_differs = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(test::tensors_equal(pb[i]->value.to(Device::cpu()), pa[i]->value)) << pa[i]->name;
    if (!test::tensors_equal(po[i]->value, pa[i]->value)) any_differs = true;
  }
  EXPECT_TRUE(any_differs) << "another seed gave the same parameters";
}

// The whole network against central differences in float64: 8 channels, 2 levels, 1 block,
// attention on, an odd grid (5 x 7 x 3 -> 3 x 4 x 2 and back), dropout on with fixed masks.
TEST(UNet, GradientCheckOfTheWholeNetwork) {
  UNet3D net(tiny_config(), options(DType::float64, Device::cpu()));
  perturb_parameters(net, 100);
  net.set_dropout_rng(17, 3);
  Tensor x = random_tensor({2, 5, 7, 3, 3}, 21, DType::float64);
  const Tensor t = Tensor::from_vector(std::vector<double>{7.0, 640.0}, {2});
  test::Forward f = [&](const std::vector<Tensor>& in) {
    Tensor y = net.forward(in[0], t);
    net.clear_saved();
    return std::vector<Tensor>{y};
  };
  test::Backward b = [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
    net.forward(in[0], t);
    return std::vector<Tensor>{net.backward(dy[0])};
  };
  test::expect_module_gradcheck_sampled("UNet3D", net, {x}, f, b, /*elements=*/3, /*tol=*/1e-6);
}

TEST(UNet, GradientCheckWithCheckpointedResBlocks) {
  UNetConfig c = tiny_config();
  c.checkpoint_res_blocks = true;
  c.attention_levels = {true, false};
  UNet3D net(c, options(DType::float64, Device::cpu()));
  perturb_parameters(net, 200);
  net.set_dropout_rng(5, 8);
  Tensor x = random_tensor({1, 3, 5, 4, 3}, 22, DType::float64);
  const Tensor t = Tensor::from_vector(std::vector<double>{311.0}, {1});
  test::Forward f = [&](const std::vector<Tensor>& in) {
    Tensor y = net.forward(in[0], t);
    net.clear_saved();
    return std::vector<Tensor>{y};
  };
  test::Backward b = [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
    net.forward(in[0], t);
    return std::vector<Tensor>{net.backward(dy[0])};
  };
  test::expect_module_gradcheck_sampled("UNet3D (checkpointed)", net, {x}, f, b, 3, 1e-6);
}

// Checkpointing recomputes, it does not approximate: the same output and gradients, bit for bit.
TEST(UNet, CheckpointingGivesTheSameBits) {
  UNetConfig c = parity_config();
  UNet3D plain(c), checkpointed(c);
  checkpointed.set_checkpointing(true);
  perturb_parameters(plain, 300);
  perturb_parameters(checkpointed, 300);
  Tensor x = random_tensor({2, 5, 3, 7, 16}, 4);
  Tensor dy = random_tensor({2, 5, 3, 7, 8}, 6);
  Tensor t = timesteps({0, 421}, Device::cpu());
  for (UNet3D* net : {&plain, &checkpointed}) {
    net->set_dropout_rng(1, 2);
    net->zero_grad();
  }
  Tensor y0 = plain.forward(x, t), y1 = checkpointed.forward(x, t);
  EXPECT_TRUE(test::tensors_equal(y1, y0));
  Tensor dx0 = plain.backward(dy), dx1 = checkpointed.backward(dy);
  EXPECT_TRUE(test::tensors_equal(dx1, dx0));
  auto p0 = plain.parameters(), p1 = checkpointed.parameters();
  for (size_t i = 0; i < p0.size(); ++i) EXPECT_TRUE(test::tensors_equal(p1[i]->grad, p0[i]->grad)) << p0[i]->name;
}

TEST(UNet, DropoutOffInEvalModeAndMasksFollowTheStep) {
  UNet3D net(parity_config());
  perturb_parameters(net, 400);
  Tensor x = random_tensor({1, 3, 3, 3, 16}, 8);
  Tensor t = timesteps({50}, Device::cpu());
  NoGradGuard no_grad;
  net.set_dropout_rng(1, 1);
  Tensor a = net.forward(x, t);
  net.set_dropout_rng(1, 1);
  Tensor a_again = net.forward(x, t);
  net.set_dropout_rng(1, 2);
  Tensor b = net.forward(x, t);
  net.train(false);
  Tensor e1 = net.forward(x, t);
  net.set_dropout_rng(1, 3);
  Tensor e2 = net.forward(x, t);
  EXPECT_TRUE(test::tensors_equal(a_again, a));
  EXPECT_FALSE(test::tensors_equal(b, a));
  EXPECT_TRUE(test::tensors_equal(e2, e1));
  EXPECT_FALSE(test::tensors_equal(e1, a));
}

// Data parallelism splits a batch across ranks: sample n's dropout masks (and so its output)
// must not depend on which other samples share its micro-batch.
TEST(UNet, DropoutMasksDoNotDependOnHowTheBatchIsSplit) {
  UNet3D net(parity_config());
  perturb_parameters(net, 450);
  Tensor x = random_tensor({3, 3, 5, 3, 16}, 12);
  Tensor t = timesteps({9, 99, 999}, Device::cpu());
  NoGradGuard no_grad;
  net.set_dropout_rng(7, 11, 0);
  Tensor whole = net.forward(x, t);
  net.set_dropout_rng(7, 11, 1);
  Tensor tail = net.forward(x.slice(1, 3), Tensor::from_vector(std::vector<int64_t>{99, 999}, {2}));
  // Equal up to the GEMMs' blocking, which may differ with the batch size; other masks would
  // change the output by far more.
  EXPECT_LT(test::relative_l2(tail, whole.slice(1, 3)), 1e-6);
  net.set_dropout_rng(7, 11, 0);
  Tensor tail_unshifted = net.forward(x.slice(1, 3), Tensor::from_vector(std::vector<int64_t>{99, 999}, {2}));
  EXPECT_GT(test::relative_l2(tail_unshifted, whole.slice(1, 3)), 1e-2);
}

// Data parallelism reduces a layer's gradients while backward goes on: every parameter must be
// announced exactly once, and its gradient must already be final when it is.
TEST(UNet, GradientsAreAnnouncedOnceAndFinal) {
  UNetConfig c = parity_config();
  c.num_blocks = 2;
  UNet3D net(c);
  perturb_parameters(net, 470);
  std::map<const Parameter*, Tensor> at_announcement;
  std::vector<std::string> order;
  net.set_gradients_ready([&](const std::vector<Parameter*>& params) {
    for (Parameter* p : params) {
      EXPECT_EQ(at_announcement.count(p), 0u) << p->name << " announced twice";
      at_announcement[p] = p->grad.clone();
      order.push_back(p->name);
    }
  });
  net.zero_grad();
  net.forward(random_tensor({2, 3, 5, 3, 16}, 13), timesteps({5, 700}, Device::cpu()));
  net.backward(random_tensor({2, 3, 5, 3, 8}, 14), false);
  const auto params = net.parameters();
  EXPECT_EQ(at_announcement.size(), params.size());
  for (Parameter* p : params) {
    ASSERT_EQ(at_announcement.count(p), 1u) << p->name << " never announced";
    EXPECT_TRUE(test::tensors_equal(at_announcement[p], p->grad)) << p->name << " changed after its announcement";
  }
  EXPECT_EQ(order.front().rfind("conv_out.", 0), 0u) << order.front();
  EXPECT_EQ(order.back().rfind("time_embed.0.", 0), 0u) << order.back();
  EXPECT_EQ(params.front()->name, "time_embed.0.weight");  // listing pieces kept the full names
}

class UNetParity : public test::CudaPathTest {};

// Forward and backward of the whole network on the CUDA kernels against the reference.
TEST_P(UNetParity, ForwardAndBackwardMatchTheReference) {
  UNet3D ref(parity_config(), options(DType::float32, Device::cpu()));
  UNet3D dev(parity_config(), options(DType::float32, device()));
  perturb_parameters(ref, 500);
  perturb_parameters(dev, 500);
  ref.set_dropout_rng(3, 4);
  dev.set_dropout_rng(3, 4);
  Tensor x = random_tensor({3, 5, 3, 7, 16}, 9);
  Tensor dy = random_tensor({3, 5, 3, 7, 8}, 10);
  const std::vector<int64_t> steps{1, 500, 998};
  ref.zero_grad();
  dev.zero_grad();
  Tensor y_ref = ref.forward(x, timesteps(steps, Device::cpu()));
  Tensor y_dev = dev.forward(x.to(device()), timesteps(steps, device()));
  EXPECT_LT(test::relative_l2(y_dev, y_ref), 2e-5);
  Tensor dx_ref = ref.backward(dy);
  Tensor dx_dev = dev.backward(dy.to(device()));
  EXPECT_LT(test::relative_l2(dx_dev, dx_ref), 2e-5);
  auto pr = ref.parameters(), pd = dev.parameters();
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < pr.size(); ++i) {
    const double e = test::relative_l2(pd[i]->grad, pr[i]->grad);
    EXPECT_LT(e, 1e-4) << pr[i]->name;
    if (e > worst) worst = e, worst_name = pr[i]->name;
  }
  std::printf("UNet parity on %s: output %.2e, dx %.2e, worst parameter gradient %.2e (%s)\n", device().str().c_str(),
              test::relative_l2(y_dev, y_ref), test::relative_l2(dx_dev, dx_ref), worst, worst_name.c_str());
}

CTSR_INSTANTIATE_CUDA_PATHS(UNetParity);

TEST(UNet, ConfigurationErrorsNameTheKey) {
  auto with = [](auto edit) {
    UNetConfig c = parity_config();
    edit(c);
    return c;
  };
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.norm_groups = 5; }).validate(); },
                              {"model.norm_groups", "5", "16"});
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.head_channels = 24; }).validate(); },
                              {"model.head_channels", "24", "32"});
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.attention_levels = {true}; }).validate(); },
                              {"model.attention_levels", "1", "2"});
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.model_channels = 15; }).validate(); },
                              {"model.model_channels", "15", "even"});
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.dropout = 1.0; }).validate(); },
                              {"model.dropout", "[0, 1)"});
  test::expect_error_mentions([&] { with([](UNetConfig& c) { c.num_blocks = 0; }).validate(); },
                              {"model.num_blocks", "0", "positive"});
  UNet3D net(parity_config());
  test::expect_error_mentions([&] { net.forward(random_tensor({1, 3, 3, 3, 8}, 1), timesteps({1}, Device::cpu())); },
                              {"[1, 3, 3, 3, 8]", "16"});
  test::expect_error_mentions([&] { net.backward(random_tensor({1, 3, 3, 3, 8}, 1)); }, {"without a forward"});
}

}  // namespace
}  // namespace ctsr
