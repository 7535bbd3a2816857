// Nearest-neighbour resampling and channel concatenation: the index rule and its inverse, a
// small example checked by hand, the UNet's up path 4 -> 7 -> 13 -> 25, downsizing by odd
// ratios, gradient checks, and CUDA paths equal to the reference bit for bit (these ops only
// copy, and the backward sums in the reference's order).
#include <algorithm>

#include "kernels/resample.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

using Size3 = std::array<int64_t, 3>;

TEST(Resample, DestinationRangesInvertTheSourceRule) {
  for (int64_t n_in = 1; n_in <= 30; ++n_in) {
    for (int64_t n_out = 1; n_out <= 30; ++n_out) {
      for (int64_t j = 0; j < n_in; ++j) {
        const int64_t first = kernels::nearest_first_destination(j, n_in, n_out);
        const int64_t last = kernels::nearest_first_destination(j + 1, n_in, n_out);
        for (int64_t i = 0; i < n_out; ++i) {
          const bool reads_j = kernels::nearest_source_index(i, n_in, n_out) == j;
          ASSERT_EQ(reads_j, i >= first && i < last) << n_in << " -> " << n_out << ", source " << j << ", dest " << i;
        }
      }
    }
  }
  // PyTorch's 'nearest' for 4 -> 7: floor(i * 4 / 7).
  std::vector<int64_t> src;
  for (int64_t i = 0; i < 7; ++i) src.push_back(kernels::nearest_source_index(i, 4, 7));
  EXPECT_EQ(src, (std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3}));
}

// x [1, D=2, H=1, W=3, C=1] holds x[d, 0, w] = 3 d + w. Resized to {3, 2, 2}:
//   D: 2 -> 3 reads sources 0, 0, 1;  H: 1 -> 2 reads 0, 0;  W: 3 -> 2 reads 0, 1 (source 2 unused).
TEST(Resample, KnownSmallExample) {
  for (Device device : {Device::cpu(), Device::cuda_on_cpu()}) {
#if !CTSR_HAVE_CUDA_ON_CPU
    if (device.kind == DeviceKind::cuda_on_cpu) continue;
#endif
    Tensor x = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {1, 2, 1, 3, 1}, device);
    Tensor y = resample_nearest_forward(x, {3, 2, 2});
    EXPECT_EQ(y.shape(), (Shape{1, 3, 2, 2, 1}));
    EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{0, 1, 0, 1, 0, 1, 0, 1, 3, 4, 3, 4}));
    // dy = 1 .. 12 in (d, h, w) order. dx[0, 0, 0] gathers destinations (d, h, w) in {0,1} x {0,1} x {0}:
    // 1 + 3 + 5 + 7 = 16; dx[0, 0, 1]: 2 + 4 + 6 + 8 = 20; dx[1, 0, 0]: d = 2: 9 + 11 = 20;
    // dx[1, 0, 1]: 10 + 12 = 22; w = 2 is read by nobody.
    std::vector<float> dyv(12);
    for (int i = 0; i < 12; ++i) dyv[size_t(i)] = float(i + 1);
    Tensor dy = Tensor::from_vector<float>(dyv, {1, 3, 2, 2, 1}, device);
    Tensor dx = resample_nearest_backward(dy, {2, 1, 3});
    EXPECT_EQ(dx.shape(), (Shape{1, 2, 1, 3, 1}));
    EXPECT_EQ(dx.to_vector<float>(), (std::vector<float>{16, 20, 0, 20, 22, 0}));
  }
}

TEST(Resample, ReferenceGradcheck) {
  struct Case {
    Shape in;
    Size3 out;
  };
  for (const Case& c : {Case{{2, 2, 3, 4, 3}, {5, 3, 7}}, Case{{1, 5, 4, 3, 2}, {3, 2, 2}},
                        Case{{1, 4, 4, 4, 2}, {7, 7, 7}}, Case{{2, 7, 3, 5, 1}, {4, 6, 5}}}) {
    Tensor x = random_tensor(c.in, 5, DType::float64);
    const Size3 in_size{c.in[1], c.in[2], c.in[3]};
    expect_gradcheck(
        "resample_nearest " + c.in.str(), {x},
        [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{resample_nearest_forward(in[0], c.out)}; },
        [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
          return std::vector<Tensor>{resample_nearest_backward(dy[0], in_size)};
        });
  }
}

TEST(ConcatChannels, ReferenceGradcheck) {
  Tensor a = random_tensor({2, 3, 2, 2, 3}, 1, DType::float64);
  Tensor b = random_tensor({2, 3, 2, 2, 5}, 2, DType::float64);
  expect_gradcheck(
      "concat_channels", {a, b},
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{concat_channels(in[0], in[1])}; },
      [](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        auto [da, db] = split_channels(dy[0], 3);
        return std::vector<Tensor>{da, db};
      });
  Tensor y = random_tensor({2, 3, 2, 2, 8}, 3, DType::float64);
  expect_gradcheck(
      "split_channels", {y},
      [](const std::vector<Tensor>& in) {
        auto [a, b] = split_channels(in[0], 3);
        return std::vector<Tensor>{a, b};
      },
      [](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{concat_channels(dy[0], dy[1])};
      });
}

TEST(ConcatChannels, KnownValuesAndErrors) {
  Tensor a = Tensor::from_vector<double>({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector<double>({5, 6}, {2, 1});
  EXPECT_EQ(concat_channels(a, b).to_vector<double>(), (std::vector<double>{1, 2, 5, 3, 4, 6}));
  try {
    concat_channels(a, Tensor::zeros({3, 1}, DType::float64));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 1]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(concat_channels(a, Tensor::zeros({2, 1})), Error);  // float32 with float64
  EXPECT_THROW(split_channels(a, 3), Error);
  EXPECT_THROW(resample_nearest_forward(a, {2, 2, 2}), Error);  // not [N, D, H, W, C]
  EXPECT_THROW(resample_nearest_forward(Tensor::zeros({1, 2, 2, 2, 1}), {2, 0, 2}), Error);
}

// ---- CUDA paths -------------------------------------------------------------------------------

using ResampleParity = CudaPathTest;

void expect_resample_equal(Device device, const Shape& in, const Size3& out, uint64_t seed) {
  SCOPED_TRACE(in.str() + " -> {" + std::to_string(out[0]) + ", " + std::to_string(out[1]) + ", " +
               std::to_string(out[2]) + "}");
  Tensor x = random_tensor(in, seed, DType::float32);
  Tensor dy = random_tensor({in[0], out[0], out[1], out[2], in[4]}, seed + 1, DType::float32);
  const Size3 in_size{in[1], in[2], in[3]};
  EXPECT_TRUE(tensors_equal(resample_nearest_forward(x.to(device), out), resample_nearest_forward(x, out)));
  EXPECT_TRUE(tensors_equal(resample_nearest_backward(dy.to(device), in_size), resample_nearest_backward(dy, in_size)));
}

TEST_P(ResampleParity, UpsizingAndDownsizingMatchReferenceBitwise) {
  uint64_t seed = 10;
  expect_resample_equal(device(), {2, 4, 4, 4, 16}, {7, 7, 7}, seed += 2);
  expect_resample_equal(device(), {2, 13, 8, 8, 8}, {25, 16, 16}, seed += 2);   // 13x8x8 -> the 25x16x16 latent
  expect_resample_equal(device(), {1, 25, 16, 16, 5}, {13, 8, 8}, seed += 2);   // downsizing, odd ratio
  expect_resample_equal(device(), {1, 9, 7, 16, 3}, {4, 5, 5}, seed += 2);      // odd ratios per axis
  expect_resample_equal(device(), {1, 3, 5, 2, 300}, {7, 4, 6}, seed += 2);     // C > 128 lanes: channel loop
  expect_resample_equal(device(), {3, 1, 1, 1, 1}, {3, 2, 5}, seed += 2);       // broadcast one voxel
}

// The UNet's up path: Down takes 25 -> 13 -> 7 -> 4 (ceil(n / 2)); Up resizes back to each skip's
// size, 4 -> 7 -> 13 -> 25. Each step matches the reference, and the chain reads, for every
// destination, the source given by composing the per-step rule.
TEST_P(ResampleParity, UnetRoundTrip) {
  const std::vector<int64_t> sizes{4, 7, 13, 25};
  for (size_t i = 1; i < sizes.size(); ++i) EXPECT_EQ((sizes[i] + 1) / 2, sizes[i - 1]);
  Tensor x = random_tensor({2, 4, 4, 4, 8}, 21, DType::float32);
  Tensor on_device = x.to(device()), on_cpu = x;
  for (size_t i = 1; i < sizes.size(); ++i) {
    const Size3 out{sizes[i], sizes[i], sizes[i]};
    on_device = resample_nearest_forward(on_device, out);
    on_cpu = resample_nearest_forward(on_cpu, out);
    EXPECT_TRUE(tensors_equal(on_device, on_cpu)) << "after resizing to " << sizes[i];
  }
  auto chain = [&](int64_t i) {
    for (size_t k = sizes.size() - 1; k > 0; --k) i = kernels::nearest_source_index(i, sizes[k - 1], sizes[k]);
    return i;
  };
  const std::vector<float> xs = x.to_vector<float>(), ys = on_device.to_vector<float>();
  bool all_match = true;
  for (int64_t n = 0; n < 2 && all_match; ++n)
    for (int64_t d = 0; d < 25; ++d)
      for (int64_t h = 0; h < 25; ++h)
        for (int64_t w = 0; w < 25; ++w)
          for (int64_t c = 0; c < 8; ++c) {
            const float expected = xs[size_t((((n * 4 + chain(d)) * 4 + chain(h)) * 4 + chain(w)) * 8 + c)];
            const float got = ys[size_t((((n * 25 + d) * 25 + h) * 25 + w) * 8 + c)];
            if (got != expected) {
              all_match = false;
              ADD_FAILURE() << "voxel (" << n << ", " << d << ", " << h << ", " << w << ") channel " << c;
            }
          }
  // Backward through the chain gives every source voxel the sum of its destinations' gradients:
  // with dy = 1 that is how many destinations read it, and they add up to 25^3 per channel.
  Tensor dy = Tensor::empty({2, 25, 25, 25, 8});
  std::fill(dy.data<float>(), dy.data<float>() + dy.numel(), 1.0f);
  Tensor g = dy.to(device());
  for (size_t i = sizes.size() - 1; i > 0; --i)
    g = resample_nearest_backward(g, {sizes[i - 1], sizes[i - 1], sizes[i - 1]});
  std::vector<float> gv = g.to_vector<float>();
  double total = 0;
  for (float v : gv) total += v;
  EXPECT_EQ(total, 2.0 * 8 * 25 * 25 * 25);
}

TEST_P(ResampleParity, ConcatAndSplitMatchReferenceBitwise) {
  for (auto [ca, cb] : {std::pair<int64_t, int64_t>{8, 8}, {128, 256}, {3, 5}, {1, 200}}) {
    Tensor a = random_tensor({2, 5, 4, 3, ca}, 31, DType::float32);
    Tensor b = random_tensor({2, 5, 4, 3, cb}, 32, DType::float32);
    Tensor cat = concat_channels(a.to(device()), b.to(device()));
    EXPECT_EQ(cat.device(), device());
    EXPECT_TRUE(tensors_equal(cat, concat_channels(a, b))) << ca << " + " << cb;
    auto [da, db] = split_channels(cat, ca);
    EXPECT_TRUE(tensors_equal(da, a)) << ca << " + " << cb;
    EXPECT_TRUE(tensors_equal(db, b)) << ca << " + " << cb;
  }
}

TEST_P(ResampleParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({1, 2, 2, 2, 1}, 1, DType::float64).to(device());
  EXPECT_THROW(resample_nearest_forward(x, {3, 3, 3}), Error);
  EXPECT_THROW(concat_channels(x, x), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(ResampleParity);

}  // namespace
}  // namespace ctsr::test
