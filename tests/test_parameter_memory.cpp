// ParameterMemoryLimit (model/module.h): a model's parameters are checked against the device's
// memory before each is allocated, so a configuration made far too large by a typo fails at once
// with the estimate in the message (issue 22) instead of being killed when memory runs out.
#include "model/unet.h"
#include "runtime/allocator.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

UNetConfig small_unet() {
  UNetConfig c;
  c.in_channels = 4;
  c.out_channels = 2;
  c.model_channels = 8;
  c.channel_mult = {1, 2};
  c.num_blocks = 1;
  c.attention_levels = {false, true};
  c.head_channels = 8;
  c.time_embed_dim = 16;
  c.norm_groups = 4;
  return c;
}

TEST(ParameterMemory, TheEstimateCountsEveryParameterAndItsCopies) {
  LayerOptions o;
  o.device = Device::cpu();
  ParameterMemoryLimit limit(uint64_t{1} << 40, 3, "test");
  UNet3D net(small_unet(), o);
  // Value, gradient and three more copies of 4 bytes for every parameter, biases included.
  EXPECT_EQ(limit.estimate_bytes(), uint64_t(net.parameter_count()) * 5 * 4);
}

TEST(ParameterMemory, AModelLargerThanTheLimitIsRefusedBeforeItIsAllocated) {
  LayerOptions o;
  o.device = Device::cpu();
  {
    ParameterMemoryLimit limit(uint64_t{1} << 40, 0, "outer");
    {
      // The innermost limit applies; the outer one is back afterwards.
      ParameterMemoryLimit inner(1000, 0, "model of the test");
      expect_error_mentions([&] { UNet3D net(small_unet(), o); },
                            {"model of the test", "the model's parameters need more than", "2 copies of 4 bytes",
                             "before allocating it", "more than the 1000 B", "choose a smaller model"});
    }
    UNet3D net(small_unet(), o);
    EXPECT_GT(limit.estimate_bytes(), 0u);
  }
  // model_channels 65536 (a typo for 64): hundreds of GiB of weights, refused against the
  // machine's memory without allocating them.
  UNetConfig huge = small_unet();
  huge.model_channels = 65536;
  huge.norm_groups = 32;
  huge.head_channels = 64;
  reset_peak_memory(Device::cpu());
  const size_t before = allocator_stats(Device::cpu()).allocated;
  ParameterMemoryLimit limit(device_memory_capacity(Device::cpu()), 3, "model " + huge.str());
  expect_error_mentions([&] { UNet3D net(huge, o); },
                        {"widths [65536, 131072+attn]", "the model's parameters need more than", "this device has"});
  EXPECT_LT(allocator_stats(Device::cpu()).peak_allocated - before, size_t{1} << 31);
}

}  // namespace
}  // namespace ctsr::test
