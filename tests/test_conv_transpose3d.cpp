// conv_transpose3d: the reference against an independent direct scatter loop, the adjoint
// identity with conv3d, float64 gradient checks of x, w and b (k4 s2 p1, k3 s2 p1, k3 s1 p1,
// k1, k2 s2 p0 and mixed per-axis k/s/p), output sizes, float vs double, CUDA-path parity
// (custom engine, both tile sizes; cuDNN on a GPU), accumulation and bad inputs.
#include <cmath>

#include "kernels/conv_transpose3d.h"
#include "tests/harness.h"
#include "tests/oracle/conv_transpose3d.h"

namespace ctsr::test {
namespace {

struct Config {
  const char* name;
  Conv3dParams params;
};

Conv3dParams mixed_params() {
  Conv3dParams p;
  p.kernel = {3, 2, 4};
  p.stride = {2, 1, 3};
  p.padding = {1, 0, 2};
  return p;
}

const std::vector<Config>& configs() {
  static const std::vector<Config> c = {
      {"k4 s2 p1", Conv3dParams::cubic(4, 2, 1)}, {"k3 s2 p1", Conv3dParams::cubic(3, 2, 1)},
      {"k3 s1 p1", Conv3dParams::cubic(3, 1, 1)}, {"k1 s1 p0", Conv3dParams::cubic(1, 1, 0)},
      {"k2 s2 p0", Conv3dParams::cubic(2, 2, 0)}, {"k3x2x4 s2x1x3 p1x0x2", mixed_params()},
  };
  return c;
}

// [Ci, kD, kH, kW, Co]
Shape weight_shape(int64_t ci, const Conv3dParams& p, int64_t co) {
  return Shape{ci, p.kernel[0], p.kernel[1], p.kernel[2], co};
}

TEST(ConvTranspose3d, ReferenceMatchesDirectScatter) {
  uint64_t seed = 10;
  for (const Config& c : configs()) {
    for (Shape xs : {Shape{1, 5, 4, 3, 3}, Shape{3, 7, 6, 5, 4}}) {
      const int64_t co = xs[0] == 1 ? 2 : 5;
      Tensor x = random_tensor(xs, ++seed, DType::float64);
      Tensor w = random_tensor(weight_shape(xs[4], c.params, co), ++seed, DType::float64);
      Tensor b = random_tensor({co}, ++seed, DType::float64);
      EXPECT_TENSORS_CLOSE(conv_transpose3d_forward(x, w, b, c.params), oracle::conv_transpose3d(x, w, b, c.params),
                           1e-13, 1e-13)
          << c.name << " " << xs.str();
      EXPECT_TENSORS_CLOSE(conv_transpose3d_forward(x, w, Tensor(), c.params),
                           oracle::conv_transpose3d(x, w, Tensor(), c.params), 1e-13, 1e-13)
          << c.name << " without bias";
    }
  }
}

double dot(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < va.size(); ++i) s += va[i] * vb[i];
  return s;
}

// <conv_transpose3d(x; w), u> == <x, conv3d(u; w)> with the same weight tensor.
TEST(ConvTranspose3d, IsTheAdjointOfConv3d) {
  uint64_t seed = 30;
  for (const Config& c : configs()) {
    Tensor x = random_tensor({2, 5, 4, 3, 3}, ++seed, DType::float64);
    Tensor w = random_tensor(weight_shape(3, c.params, 4), ++seed, DType::float64);
    Tensor y = conv_transpose3d_forward(x, w, Tensor(), c.params);
    Tensor u = random_tensor(y.shape(), ++seed, DType::float64);
    Tensor cu = conv3d_forward(u, w, Tensor(), c.params);
    ASSERT_EQ(cu.shape(), x.shape()) << c.name;
    EXPECT_NEAR(dot(y, u), dot(x, cu), 1e-12 * std::max(1.0, std::fabs(dot(y, u)))) << c.name;
  }
}

TEST(ConvTranspose3d, OutputSizes) {
  Tensor x = random_tensor({1, 13, 8, 8, 2}, 1);
  auto out = [&](const Conv3dParams& p) {
    return conv_transpose3d_forward(x, random_tensor(weight_shape(2, p, 3), 2), Tensor(), p).shape();
  };
  EXPECT_EQ(out(Conv3dParams::cubic(4, 2, 1)), (Shape{1, 26, 16, 16, 3}));  // doubles every size
  EXPECT_EQ(out(Conv3dParams::cubic(3, 2, 1)), (Shape{1, 25, 15, 15, 3}));
  EXPECT_EQ(out(Conv3dParams::cubic(3, 1, 1)), (Shape{1, 13, 8, 8, 3}));
  EXPECT_EQ(out(Conv3dParams::cubic(2, 2, 0)), (Shape{1, 26, 16, 16, 3}));
  EXPECT_EQ(out(mixed_params()), (Shape{1, 25, 9, 21, 3}));
}

class ConvTranspose3dGradcheck : public ::testing::TestWithParam<size_t> {};

TEST_P(ConvTranspose3dGradcheck, Reference) {
  const Config& c = configs()[GetParam()];
  uint64_t seed = 100 + 20 * GetParam();
  for (auto [xs, co] : {std::pair{Shape{1, 3, 4, 2, 3}, int64_t(2)}, std::pair{Shape{3, 2, 3, 2, 3}, int64_t(4)}}) {
    Tensor x = random_tensor(xs, seed, DType::float64);
    Tensor w = random_tensor(weight_shape(xs[4], c.params, co), seed + 1, DType::float64);
    Tensor b = random_tensor({co}, seed + 2, DType::float64);
    seed += 10;
    const Conv3dParams p = c.params;
    expect_gradcheck(
        std::string("conv_transpose3d ") + c.name + " x " + xs.str() + " Co " + std::to_string(co), {x, w, b},
        [p](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{conv_transpose3d_forward(in[0], in[1], in[2], p)};
        },
        [p](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
          Tensor dx = conv_transpose3d_backward_data(dy[0], in[1], in[0].shape(), p);
          Tensor dw, db;
          conv_transpose3d_backward_weight(in[0], dy[0], p, dw);
          conv_transpose3d_backward_bias(dy[0], db);
          return std::vector<Tensor>{dx, dw, db};
        });
  }
}

std::string config_param_name(const ::testing::TestParamInfo<size_t>& info) {
  static const char* const names[] = {"k4s2p1", "k3s2p1", "k3s1p1", "k1s1p0", "k2s2p0", "mixed"};
  return names[info.param];
}

INSTANTIATE_TEST_SUITE_P(Configs, ConvTranspose3dGradcheck, ::testing::Range(size_t(0), configs().size()),
                         config_param_name);

TEST(ConvTranspose3d, FloatAndDoubleReferencesAgree) {
  const Conv3dParams p = Conv3dParams::cubic(4, 2, 1);
  Tensor x = random_tensor({2, 13, 8, 8, 33}, 3);
  Tensor w = random_tensor(weight_shape(33, p, 7), 4);
  Tensor b = random_tensor({7}, 5);
  Tensor y = conv_transpose3d_forward(x, w, b, p);
  EXPECT_TENSORS_CLOSE(y, conv_transpose3d_forward(to_double(x), to_double(w), to_double(b), p), 1e-5, 2e-5);
  Tensor dy = random_tensor(y.shape(), 6);
  EXPECT_TENSORS_CLOSE(conv_transpose3d_backward_data(dy, w, x.shape(), p),
                       conv_transpose3d_backward_data(to_double(dy), to_double(w), x.shape(), p), 1e-5, 2e-5);
  Tensor dw_f, dw_d;
  conv_transpose3d_backward_weight(x, dy, p, dw_f);
  conv_transpose3d_backward_weight(to_double(x), to_double(dy), p, dw_d);
  EXPECT_TENSORS_CLOSE(dw_f, dw_d, 1e-5, 1e-4);
}

TEST(ConvTranspose3d, BackwardsAccumulate) {
  const Conv3dParams p = Conv3dParams::cubic(4, 2, 1);
  Tensor x = random_tensor({2, 3, 4, 2, 3}, 1, DType::float64);
  Tensor w = random_tensor(weight_shape(3, p, 4), 2, DType::float64);
  Tensor dy = random_tensor(conv_transpose3d_forward(x, w, Tensor(), p).shape(), 3, DType::float64);
  Tensor once_w, once_b;
  conv_transpose3d_backward_weight(x, dy, p, once_w);
  conv_transpose3d_backward_bias(dy, once_b);
  Tensor start_w = random_tensor(once_w.shape(), 4, DType::float64), start_b = random_tensor({4}, 5, DType::float64);
  Tensor acc_w = start_w.clone(), acc_b = start_b.clone();
  for (int i = 0; i < 2; ++i) {
    conv_transpose3d_backward_weight(x, dy, p, acc_w);
    conv_transpose3d_backward_bias(dy, acc_b);
  }
  std::vector<double> ow = once_w.to_vector<double>(), sw = start_w.to_vector<double>(), aw = acc_w.to_vector<double>();
  for (size_t i = 0; i < ow.size(); ++i) ASSERT_NEAR(aw[i], sw[i] + 2 * ow[i], 1e-12) << "dw " << i;
  std::vector<double> ob = once_b.to_vector<double>(), sb = start_b.to_vector<double>(), ab = acc_b.to_vector<double>();
  for (size_t i = 0; i < ob.size(); ++i) ASSERT_NEAR(ab[i], sb[i] + 2 * ob[i], 1e-12) << "db " << i;
}

// ---- CUDA paths --------------------------------------------------------------------------------

struct ParityCase {
  Shape x;
  int64_t co;
  Conv3dParams params;
  kernels::Conv3dTiles tiles;
};

std::string case_str(const ParityCase& c) {
  return "x " + c.x.str() + " Co " + std::to_string(c.co) + " " + c.params.str() +
         (c.tiles == kernels::Conv3dTiles::large ? " (128x128 tiles)" : " (64x64 tiles)");
}

// Tolerances against the float64 reference of the same float32 inputs, as in test_conv3d.cpp:
// outputs and dx are sums of at most taps * C <= 64 * 33 products (1e-4); dw and db sum over
// every voxel (2e-3).
struct Tolerance {
  double rtol, atol_data, atol_params;
};
constexpr Tolerance kCustomTolerance{1e-4, 1e-4, 2e-3};
// cuDNN picks its own algorithms (FMA math, no TF32); allow it 5x more.
constexpr Tolerance kCudnnTolerance{5e-4, 5e-4, 1e-2};

void expect_parity(const ParityCase& c, Device device, uint64_t seed, const Tolerance& tol) {
  const kernels::Conv3dTiles previous = kernels::conv3d_tiles();
  kernels::set_conv3d_tiles(c.tiles);
  Tensor x = random_tensor(c.x, seed);
  Tensor w = random_tensor(weight_shape(c.x[4], c.params, c.co), seed + 1);
  Tensor b = random_tensor({c.co}, seed + 2);
  Tensor y_ref = conv_transpose3d_forward(to_double(x), to_double(w), to_double(b), c.params);
  Tensor dy = random_tensor(y_ref.shape(), seed + 3);
  Tensor w0 = random_tensor(w.shape(), seed + 4), b0 = random_tensor({c.co}, seed + 5);

  Tensor y = conv_transpose3d_forward(x.to(device), w.to(device), b.to(device), c.params);
  EXPECT_EQ(y.device(), device);
  EXPECT_TENSORS_CLOSE(y, y_ref, tol.rtol, tol.atol_data) << "forward " << case_str(c);
  Tensor dx = conv_transpose3d_backward_data(dy.to(device), w.to(device), c.x, c.params);
  EXPECT_TENSORS_CLOSE(dx, conv_transpose3d_backward_data(to_double(dy), to_double(w), c.x, c.params), tol.rtol,
                       tol.atol_data)
      << "backward_data " << case_str(c);
  Tensor dw = w0.to(device), dw_ref = to_double(w0);
  conv_transpose3d_backward_weight(x.to(device), dy.to(device), c.params, dw);
  conv_transpose3d_backward_weight(to_double(x), to_double(dy), c.params, dw_ref);
  EXPECT_TENSORS_CLOSE(dw, dw_ref, tol.rtol, tol.atol_params) << "backward_weight " << case_str(c);
  Tensor db = b0.to(device), db_ref = to_double(b0);
  conv_transpose3d_backward_bias(dy.to(device), db);
  conv_transpose3d_backward_bias(to_double(dy), db_ref);
  EXPECT_TENSORS_CLOSE(db, db_ref, tol.rtol, tol.atol_params) << "backward_bias " << case_str(c);
  kernels::set_conv3d_tiles(previous);
}

const std::vector<ParityCase>& parity_cases() {
  using kernels::Conv3dTiles;
  static const std::vector<ParityCase> cases = {
      {{1, 13, 8, 8, 5}, 7, Conv3dParams::cubic(4, 2, 1), Conv3dTiles::small},    // 13x8x8 -> 26x16x16
      {{3, 7, 4, 4, 33}, 5, Conv3dParams::cubic(4, 2, 1), Conv3dTiles::small},    // batch 3, 33 channels in
      {{1, 13, 8, 8, 7}, 33, Conv3dParams::cubic(3, 2, 1), Conv3dTiles::small},   // 13x8x8 -> 25x15x15
      {{3, 13, 8, 8, 8}, 12, Conv3dParams::cubic(3, 1, 1), Conv3dTiles::small},   // float4 gathers
      {{1, 7, 4, 4, 20}, 132, Conv3dParams::cubic(4, 2, 1), Conv3dTiles::large},  // 2 column tiles, float4
      {{3, 7, 4, 4, 5}, 7, Conv3dParams::cubic(4, 2, 1), Conv3dTiles::large},
      {{1, 5, 4, 3, 6}, 5, mixed_params(), Conv3dTiles::small},
  };
  return cases;
}

using ConvTranspose3dParity = CudaPathTest;

TEST_P(ConvTranspose3dParity, CustomEngineMatchesReference) {
  ScopedConvEngine engine(ConvEngine::custom);
  uint64_t seed = 1000;
  for (const ParityCase& c : parity_cases()) expect_parity(c, device(), seed += 10, kCustomTolerance);
}

TEST_P(ConvTranspose3dParity, CudnnEngineMatchesReference) {
  ScopedConvEngine engine(ConvEngine::cudnn);
  if (device().kind != DeviceKind::cuda) {
    Tensor x = random_tensor({1, 3, 3, 3, 2}, 1).to(device());
    Tensor w = random_tensor({2, 4, 4, 4, 3}, 2).to(device());
    try {
      conv_transpose3d_forward(x, w, Tensor(), Conv3dParams::cubic(4, 2, 1));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("conv_transpose3d_forward"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(device().str()), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "the cuDNN engine runs on a GPU only; checked that " << device().str() << " rejects it";
  }
  uint64_t seed = 2000;
  for (const ParityCase& c : parity_cases()) expect_parity(c, device(), seed += 10, kCudnnTolerance);
}

CTSR_INSTANTIATE_CUDA_PATHS(ConvTranspose3dParity);

// ---- bad inputs --------------------------------------------------------------------------------

TEST(ConvTranspose3d, RejectsBadInputs) {
  const Conv3dParams p = Conv3dParams::cubic(4, 2, 1);
  Tensor x = random_tensor({2, 3, 4, 2, 5}, 1);
  Tensor w = random_tensor({5, 4, 4, 4, 3}, 2);
  expect_error_mentions([&] { conv_transpose3d_forward(x, random_tensor({4, 4, 4, 4, 3}, 3), Tensor(), p); },
               {"conv_transpose3d_forward", "x [2, 3, 4, 2, 5]", "5 channels", "weight [4, 4, 4, 4, 3]",
                "4 input channels"});
  expect_error_mentions([&] { conv_transpose3d_forward(x, w, random_tensor({5}, 4), p); },
               {"conv_transpose3d_forward", "bias [5]", "must be [3]", "weight [5, 4, 4, 4, 3]"});
  // Padding too large for the kernel: (2 - 1) * 1 - 2 * 2 + 1 < 1.
  expect_error_mentions(
      [&] { conv_transpose3d_forward(x, random_tensor({5, 1, 1, 1, 3}, 5), Tensor(), Conv3dParams::cubic(1, 1, 2)); },
      {"conv_transpose3d_forward", "output size along D", "padding is too large"});
  expect_error_mentions([&] { conv_transpose3d_forward(x, w, Tensor(), Conv3dParams::cubic(3, 2, 1)); },
               {"weight [5, 4, 4, 4, 3]", "kernel size 4 along D", "kernel [3, 3, 3]"});
  Tensor y = conv_transpose3d_forward(x, w, Tensor(), p);
  EXPECT_EQ(y.shape(), (Shape{2, 6, 8, 4, 3}));
  expect_error_mentions([&] { conv_transpose3d_backward_data(random_tensor({2, 6, 8, 4, 4}, 6), w, x.shape(), p); },
               {"conv_transpose3d_backward_data dy", "[2, 6, 8, 4, 4]", "expected [2, 6, 8, 4, 3]"});
  Tensor bad_dw = Tensor::zeros({5, 4, 4, 4, 2});
  expect_error_mentions([&] { conv_transpose3d_backward_weight(x, y, p, bad_dw); },
               {"conv_transpose3d_backward_weight dweight", "[5, 4, 4, 4, 2]", "expected [5, 4, 4, 4, 3]"});
}

}  // namespace
}  // namespace ctsr::test
