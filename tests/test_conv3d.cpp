// conv3d: the im2col reference against an independent direct 9-loop convolution (several chunk
// sizes), float64 gradient checks of x, w and b for every covered configuration (k1 s1 p0,
// k3 s1 p1, k3 s2 p1, k4 s2 p1, mixed per-axis k/s/p) at tiny awkward sizes, float vs double
// agreement, CUDA-path parity of forward and every backward (custom engine; both tile sizes,
// vectorised and scalar gathers), the cuDNN engine on a GPU, accumulation, determinism, the
// engine setting, and bad inputs.
#include <cmath>
#include <functional>

#include "kernels/conv3d.h"
#include "tests/harness.h"
#include "tests/oracle/conv3d.h"

#if CTSR_MMA_MUTANTS
// kernels/conv3d.cu as built with a wrong fragment index (tests/CMakeLists.txt).
namespace ctsr::kernels::cuda_on_cpu_mma_mutant {
void conv3d_forward(const Conv3dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
void conv3d_backward_data(const Conv3dShape& s, const Tensor& dy, const Tensor& w, const Tensor& bias, Tensor& dx);
void conv3d_backward_weight(const Conv3dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw);
}  // namespace ctsr::kernels::cuda_on_cpu_mma_mutant
#endif

namespace ctsr::test {
namespace {

struct Config {
  const char* name;
  Conv3dParams params;
};

Conv3dParams mixed_params() {
  Conv3dParams p;
  p.kernel = {2, 3, 4};
  p.stride = {1, 2, 3};
  p.padding = {0, 1, 1};  // stride 3 with padding 1: residue classes (i + p) mod s != (i - p) mod s
  return p;
}

const std::vector<Config>& configs() {
  static const std::vector<Config> c = {
      {"k1 s1 p0", Conv3dParams::cubic(1, 1, 0)}, {"k3 s1 p1", Conv3dParams::cubic(3, 1, 1)},
      {"k3 s2 p1", Conv3dParams::cubic(3, 2, 1)}, {"k4 s2 p1", Conv3dParams::cubic(4, 2, 1)},
      {"k2x3x4 s1x2x3 p0x1x1", mixed_params()},
  };
  return c;
}

Shape weight_shape(int64_t co, const Conv3dParams& p, int64_t ci) {
  return Shape{co, p.kernel[0], p.kernel[1], p.kernel[2], ci};
}

// Forces the reference's im2col chunks to `bytes` for a scope.
class ScopedColumnBudget {
 public:
  explicit ScopedColumnBudget(int64_t bytes) : previous_(kernels::cpu::set_conv3d_column_budget(bytes)) {}
  ~ScopedColumnBudget() { kernels::cpu::set_conv3d_column_budget(previous_); }

 private:
  int64_t previous_;
};

TEST(Conv3d, ReferenceMatchesDirectConvolution) {
  uint64_t seed = 10;
  for (const Config& c : configs()) {
    for (Shape xs : {Shape{1, 5, 4, 3, 3}, Shape{3, 7, 6, 5, 4}}) {
      const int64_t co = xs[0] == 1 ? 2 : 5;
      Tensor x = random_tensor(xs, ++seed, DType::float64);
      Tensor w = random_tensor(weight_shape(co, c.params, xs[4]), ++seed, DType::float64);
      Tensor b = random_tensor({co}, ++seed, DType::float64);
      Tensor expected = oracle::conv3d(x, w, b, c.params);
      EXPECT_TENSORS_CLOSE(conv3d_forward(x, w, b, c.params), expected, 1e-13, 1e-13) << c.name << " " << xs.str();
      EXPECT_TENSORS_CLOSE(conv3d_forward(x, w, Tensor(), c.params), oracle::conv3d(x, w, Tensor(), c.params), 1e-13,
                           1e-13)
          << c.name << " without bias";
    }
  }
}

// The reference's chunking over (n, od) planes (one plane per chunk, a few planes crossing sample
// boundaries, everything at once) must not change any result beyond rounding.
TEST(Conv3d, ReferenceChunkingDoesNotChangeResults) {
  uint64_t seed = 40;
  for (const Config& c : configs()) {
    const Shape xs{3, 7, 6, 5, 3};
    const int64_t co = 4;
    Tensor x = random_tensor(xs, ++seed, DType::float64);
    Tensor w = random_tensor(weight_shape(co, c.params, 3), ++seed, DType::float64);
    Tensor b = random_tensor({co}, ++seed, DType::float64);
    Tensor y = conv3d_forward(x, w, b, c.params);
    Tensor dy = random_tensor(y.shape(), ++seed, DType::float64);
    Tensor dx = conv3d_backward_data(dy, w, xs, c.params);
    Tensor dw;
    conv3d_backward_weight(x, dy, c.params, dw);
    const int64_t plane_bytes = y.dim(2) * y.dim(3) * w.numel() / co * 8;
    for (int64_t planes : {1, 3}) {
      ScopedColumnBudget budget(planes * plane_bytes);
      const std::string what = std::string(c.name) + ", " + std::to_string(planes) + " planes per chunk";
      EXPECT_TENSORS_CLOSE(conv3d_forward(x, w, b, c.params), y, 1e-13, 1e-13) << what;
      EXPECT_TENSORS_CLOSE(conv3d_backward_data(dy, w, xs, c.params), dx, 1e-13, 1e-13) << what;
      Tensor dw_chunked;
      conv3d_backward_weight(x, dy, c.params, dw_chunked);
      EXPECT_TENSORS_CLOSE(dw_chunked, dw, 1e-13, 1e-13) << what;
    }
  }
}

void gradcheck_config(const Config& c, const Shape& xs, int64_t co, uint64_t seed) {
  Tensor x = random_tensor(xs, seed, DType::float64);
  Tensor w = random_tensor(weight_shape(co, c.params, xs[4]), seed + 1, DType::float64);
  Tensor b = random_tensor({co}, seed + 2, DType::float64);
  const Conv3dParams p = c.params;
  expect_gradcheck(
      std::string("conv3d ") + c.name + " x " + xs.str() + " Co " + std::to_string(co), {x, w, b},
      [p](const std::vector<Tensor>& in) { return std::vector<Tensor>{conv3d_forward(in[0], in[1], in[2], p)}; },
      [p](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        Tensor dx = conv3d_backward_data(dy[0], in[1], in[0].shape(), p);
        Tensor dw, db;  // undefined: created by the backwards
        conv3d_backward_weight(in[0], dy[0], p, dw);
        conv3d_backward_bias(dy[0], db);
        return std::vector<Tensor>{dx, dw, db};
      });
}

// One test per configuration (each under a second).
class Conv3dGradcheck : public ::testing::TestWithParam<size_t> {};

TEST_P(Conv3dGradcheck, Reference) {
  const Config& c = configs()[GetParam()];
  const uint64_t seed = 100 + 20 * GetParam();
  gradcheck_config(c, {1, 5, 4, 3, 3}, 2, seed);
  gradcheck_config(c, {3, 7, 6, 5, 3}, c.params.kernel[0] == 4 ? 3 : 5, seed + 10);
}

std::string config_param_name(const ::testing::TestParamInfo<size_t>& info) {
  static const char* const names[] = {"k1s1p0", "k3s1p1", "k3s2p1", "k4s2p1", "mixed"};
  return names[info.param];
}

INSTANTIATE_TEST_SUITE_P(Configs, Conv3dGradcheck, ::testing::Range(size_t(0), configs().size()), config_param_name);

TEST(Conv3d, FloatAndDoubleReferencesAgree) {
  for (const Config& c : configs()) {
    Tensor x = random_tensor({2, 13, 8, 8, 33}, 3, DType::float32);
    Tensor w = random_tensor(weight_shape(7, c.params, 33), 4, DType::float32);
    Tensor b = random_tensor({7}, 5, DType::float32);
    Tensor y = conv3d_forward(x, w, b, c.params);
    EXPECT_TENSORS_CLOSE(y, conv3d_forward(to_double(x), to_double(w), to_double(b), c.params), 1e-5, 2e-5) << c.name;
    Tensor dy = random_tensor(y.shape(), 6, DType::float32);
    EXPECT_TENSORS_CLOSE(conv3d_backward_data(dy, w, x.shape(), c.params),
                         conv3d_backward_data(to_double(dy), to_double(w), x.shape(), c.params), 1e-5, 2e-5)
        << c.name;
    Tensor dw_f, dw_d, db_f, db_d;
    conv3d_backward_weight(x, dy, c.params, dw_f);
    conv3d_backward_weight(to_double(x), to_double(dy), c.params, dw_d);
    EXPECT_TENSORS_CLOSE(dw_f, dw_d, 1e-5, 1e-4) << c.name;
    conv3d_backward_bias(dy, db_f);
    conv3d_backward_bias(to_double(dy), db_d);
    EXPECT_TENSORS_CLOSE(db_f, db_d, 1e-6, 1e-5) << c.name;
  }
}

TEST(Conv3d, OutputSizes) {
  Tensor x = random_tensor({1, 25, 16, 16, 2}, 1);
  auto out = [&](const Conv3dParams& p) {
    Tensor w = random_tensor(weight_shape(3, p, 2), 2);
    return conv3d_forward(x, w, Tensor(), p).shape();
  };
  EXPECT_EQ(out(Conv3dParams::cubic(1, 1, 0)), (Shape{1, 25, 16, 16, 3}));
  EXPECT_EQ(out(Conv3dParams::cubic(3, 1, 1)), (Shape{1, 25, 16, 16, 3}));
  EXPECT_EQ(out(Conv3dParams::cubic(3, 2, 1)), (Shape{1, 13, 8, 8, 3}));
  EXPECT_EQ(out(Conv3dParams::cubic(4, 2, 1)), (Shape{1, 12, 8, 8, 3}));
  EXPECT_EQ(out(mixed_params()), (Shape{1, 24, 8, 5, 3}));
}

TEST(Conv3d, BackwardsAccumulate) {
  for (const Config& c : {configs()[1], configs()[3]}) {
    Tensor x = random_tensor({2, 5, 4, 3, 3}, 1, DType::float64);
    Tensor w = random_tensor(weight_shape(4, c.params, 3), 2, DType::float64);
    Tensor dy = random_tensor(conv3d_forward(x, w, Tensor(), c.params).shape(), 3, DType::float64);
    Tensor once_w, once_b;
    conv3d_backward_weight(x, dy, c.params, once_w);
    conv3d_backward_bias(dy, once_b);
    Tensor start_w = random_tensor(once_w.shape(), 4, DType::float64), start_b = random_tensor({4}, 5, DType::float64);
    Tensor acc_w = start_w.clone(), acc_b = start_b.clone();
    for (int i = 0; i < 2; ++i) {
      conv3d_backward_weight(x, dy, c.params, acc_w);
      conv3d_backward_bias(dy, acc_b);
    }
    std::vector<double> ow = once_w.to_vector<double>(), sw = start_w.to_vector<double>();
    std::vector<double> aw = acc_w.to_vector<double>();
    for (size_t i = 0; i < ow.size(); ++i) ASSERT_NEAR(aw[i], sw[i] + 2 * ow[i], 1e-12) << c.name << " dw " << i;
    std::vector<double> ob = once_b.to_vector<double>(), sb = start_b.to_vector<double>();
    std::vector<double> ab = acc_b.to_vector<double>();
    for (size_t i = 0; i < ob.size(); ++i) ASSERT_NEAR(ab[i], sb[i] + 2 * ob[i], 1e-12) << c.name << " db " << i;
  }
}

// ---- CUDA paths --------------------------------------------------------------------------------

struct ParityCase {
  Shape x;
  int64_t co;
  Conv3dParams params;
  const char* covers;
};

std::string case_str(const ParityCase& c) {
  return "x " + c.x.str() + " Co " + std::to_string(c.co) + " " + c.params.str() + " (" + c.covers + ")";
}

// Tolerances against the float64 reference of the same float32 inputs: |error| <= atol + rtol |ref|.
// y and dx are sums of K = taps * C products of values in [-1, 1] (|ref| up to ~30 at K = 3564);
// dw and db sum over every voxel (up to 19200 terms, |ref| up to ~100). Measured on the executor
// (no FMA contraction there): at most 2.4e-4 absolute where |ref| ~ 20 (1.2e-5 relative) for y
// and dx, 5e-5 for dw and db, so the custom bounds leave a margin of 4x or more.
struct Tolerance {
  double rtol, atol_data, atol_params;
};
constexpr Tolerance kCustomTolerance{1e-4, 1e-4, 2e-3};
// cuDNN picks its own algorithms (FMA math, no TF32); allow it 5x more.
constexpr Tolerance kCudnnTolerance{5e-4, 5e-4, 1e-2};

// Forward, backward_data, backward_weight (accumulating into a random start) and backward_bias
// on `device` against the reference in float64.
void expect_parity(const ParityCase& c, Device device, uint64_t seed, const Tolerance& tol) {
  Tensor x = random_tensor(c.x, seed);
  Tensor w = random_tensor(weight_shape(c.co, c.params, c.x[4]), seed + 1);
  Tensor b = random_tensor({c.co}, seed + 2);
  Tensor y_ref = conv3d_forward(to_double(x), to_double(w), to_double(b), c.params);
  Tensor dy = random_tensor(y_ref.shape(), seed + 3);
  Tensor w0 = random_tensor(w.shape(), seed + 4), b0 = random_tensor({c.co}, seed + 5);

  Tensor y = conv3d_forward(x.to(device), w.to(device), b.to(device), c.params);
  EXPECT_EQ(y.device(), device);
  EXPECT_TENSORS_CLOSE(y, y_ref, tol.rtol, tol.atol_data) << "forward " << case_str(c);

  Tensor dx = conv3d_backward_data(dy.to(device), w.to(device), c.x, c.params);
  EXPECT_TENSORS_CLOSE(dx, conv3d_backward_data(to_double(dy), to_double(w), c.x, c.params), tol.rtol, tol.atol_data)
      << "backward_data " << case_str(c);

  Tensor dw = w0.to(device), dw_ref = to_double(w0);
  conv3d_backward_weight(x.to(device), dy.to(device), c.params, dw);
  conv3d_backward_weight(to_double(x), to_double(dy), c.params, dw_ref);
  EXPECT_TENSORS_CLOSE(dw, dw_ref, tol.rtol, tol.atol_params) << "backward_weight " << case_str(c);

  Tensor db = b0.to(device), db_ref = to_double(b0);
  conv3d_backward_bias(dy.to(device), db);
  conv3d_backward_bias(to_double(dy), db_ref);
  EXPECT_TENSORS_CLOSE(db, db_ref, tol.rtol, tol.atol_params) << "backward_bias " << case_str(c);
}

// The custom kernels' 64x64 tiles (what the automatic choice takes at these sizes).
const std::vector<ParityCase>& small_tile_cases() {
  static const std::vector<ParityCase> cases = {
      {{3, 25, 16, 16, 5}, 7, Conv3dParams::cubic(3, 1, 1), "scalar gathers, batch 3"},
      {{1, 13, 8, 8, 33}, 33, Conv3dParams::cubic(3, 2, 1), "stride 2: 8 residue classes; 3 channel chunks"},
      {{3, 13, 8, 8, 7}, 5, Conv3dParams::cubic(4, 2, 1), "k4 s2 p1: 2 taps per axis and class"},
      {{3, 25, 16, 16, 33}, 5, Conv3dParams::cubic(1, 1, 0), "pointwise"},
      {{1, 13, 8, 8, 8}, 12, mixed_params(), "per-axis k/s/p, float4 gathers"},
  };
  return cases;
}

// The 128x128 tiles, forced (the automatic choice takes them only at production sizes).
const std::vector<ParityCase>& large_tile_cases() {
  static const std::vector<ParityCase> cases = {
      {{3, 13, 8, 8, 20}, 132, Conv3dParams::cubic(3, 1, 1), "float4 gathers, 2 column tiles"},
      {{1, 13, 8, 8, 5}, 130, Conv3dParams::cubic(3, 1, 1), "scalar gathers"},
      {{1, 13, 8, 8, 130}, 6, Conv3dParams::cubic(3, 2, 1), "stride 2, 130 input channels"},
      {{3, 13, 8, 8, 7}, 5, Conv3dParams::cubic(4, 2, 1), "k4 s2 p1"},
      {{1, 13, 8, 8, 8}, 12, mixed_params(), "per-axis k/s/p, float4"},
  };
  return cases;
}

// Forces the custom kernels' tile size for a scope.
class ScopedTiles {
 public:
  explicit ScopedTiles(kernels::Conv3dTiles tiles) : previous_(kernels::conv3d_tiles()) {
    kernels::set_conv3d_tiles(tiles);
  }
  ~ScopedTiles() { kernels::set_conv3d_tiles(previous_); }

 private:
  kernels::Conv3dTiles previous_;
};

using Conv3dParity = CudaPathTest;

TEST_P(Conv3dParity, CustomEngineSmallTilesMatchReference) {
  ScopedConvEngine engine(ConvEngine::custom);
  ScopedTiles tiles(kernels::Conv3dTiles::small);
  uint64_t seed = 1000;
  for (const ParityCase& c : small_tile_cases()) expect_parity(c, device(), seed += 10, kCustomTolerance);
}

TEST_P(Conv3dParity, CustomEngineLargeTilesMatchReference) {
  ScopedConvEngine engine(ConvEngine::custom);
  ScopedTiles tiles(kernels::Conv3dTiles::large);
  uint64_t seed = 1500;
  for (const ParityCase& c : large_tile_cases()) expect_parity(c, device(), seed += 10, kCustomTolerance);
}

TEST_P(Conv3dParity, CustomEngineIsDeterministic) {
  ScopedConvEngine engine(ConvEngine::custom);
  const ParityCase c = small_tile_cases()[0];
  Tensor x = random_tensor(c.x, 1).to(device());
  Tensor dy = random_tensor({3, 25, 16, 16, c.co}, 2).to(device());
  Tensor dw1, dw2, db1, db2;
  conv3d_backward_weight(x, dy, c.params, dw1);
  conv3d_backward_weight(x, dy, c.params, dw2);
  conv3d_backward_bias(dy, db1);
  conv3d_backward_bias(dy, db2);
  EXPECT_TRUE(tensors_equal(dw1, dw2));
  EXPECT_TRUE(tensors_equal(db1, db2));
}

TEST_P(Conv3dParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({1, 3, 3, 3, 2}, 1, DType::float64).to(device());
  Tensor w = random_tensor({2, 1, 1, 1, 2}, 2, DType::float64).to(device());
  try {
    conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(1));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
}

TEST_P(Conv3dParity, CudnnEngineMatchesReference) {
  if (device().kind != DeviceKind::cuda) {
    // Off the GPU the cudnn engine is an error that names the device.
    ScopedConvEngine engine(ConvEngine::cudnn);
    Tensor x = random_tensor({1, 3, 3, 3, 2}, 1).to(device());
    Tensor w = random_tensor({2, 1, 1, 1, 2}, 2).to(device());
    try {
      conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(1));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cudnn"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(device().str()), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "the cuDNN engine runs on a GPU only; checked that " << device().str() << " rejects it";
  }
  ScopedConvEngine engine(ConvEngine::cudnn);
  uint64_t seed = 2000;
  for (const ParityCase& c : small_tile_cases()) expect_parity(c, device(), seed += 10, kCudnnTolerance);
  for (const ParityCase& c : large_tile_cases()) expect_parity(c, device(), seed += 10, kCudnnTolerance);
}

// ---- bfloat16: the tensor-core kernels ------------------------------------------------------------

// The three GEMM-shaped ops, as the public ops call them or as another build of the kernels does.
struct Conv3dOps {
  std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Conv3dParams&)> forward;
  std::function<Tensor(const Tensor&, const Tensor&, const Shape&, const Conv3dParams&)> backward_data;
  std::function<void(const Tensor&, const Tensor&, const Conv3dParams&, Tensor&)> backward_weight;
};

Conv3dOps public_ops() {
  return {[](const Tensor& x, const Tensor& w, const Tensor& b, const Conv3dParams& p) {
            return conv3d_forward(x, w, b, p);
          },
          [](const Tensor& dy, const Tensor& w, const Shape& xs, const Conv3dParams& p) {
            return conv3d_backward_data(dy, w, xs, p);
          },
          [](const Tensor& x, const Tensor& dy, const Conv3dParams& p, Tensor& dw) {
            conv3d_backward_weight(x, dy, p, dw);
          }};
}

struct Bf16Verdicts {
  ::testing::AssertionResult y = ::testing::AssertionSuccess(), dx = ::testing::AssertionSuccess(),
                             dw = ::testing::AssertionSuccess();
};

// x, w and dy drawn in bf16, bias and the dw accumulator's start in float32; every result against
// the float64 op on the same values, within the bound of within_bf16_bound (tests/harness.h): y
// and dx are rounded to bf16 after K = taps * channels float additions (+1 for the bias), dw stays
// float after one addition per voxel, one per voxel split and one into the accumulator.
Bf16Verdicts bf16_parity(const ParityCase& c, Device device, uint64_t seed, const Conv3dOps& ops) {
  const DType bf16 = DType::bfloat16;
  Tensor x = random_tensor(c.x, seed, bf16);
  Tensor w = random_tensor(weight_shape(c.co, c.params, c.x[4]), seed + 1, bf16);
  Tensor b = random_tensor({c.co}, seed + 2);
  const kernels::Conv3dShape s = kernels::conv3d_shape("test", c.x, "x", w.shape(), "w", c.params);
  Tensor dy = random_tensor({s.n, s.od, s.oh, s.ow, s.co}, seed + 3, bf16);
  Tensor w0 = random_tensor(w.shape(), seed + 4);
  const Tensor x64 = to_double(x), w64 = to_double(w), dy64 = to_double(dy);
  const Tensor ax = abs_double(x), aw = abs_double(w), ady = abs_double(dy);

  Bf16Verdicts v;
  Tensor y = ops.forward(x.to(device), w.to(device), b.to(device), c.params);
  if (y.dtype() != bf16) return {::testing::AssertionFailure() << "y is " << dtype_name(y.dtype())};
  v.y = within_bf16_bound(y, conv3d_forward(x64, w64, to_double(b), c.params),
                          conv3d_forward(ax, aw, abs_double(b), c.params), double(s.reduction() + 1), true);
  Tensor dx = ops.backward_data(dy.to(device), w.to(device), c.x, c.params);
  v.dx = within_bf16_bound(dx, conv3d_backward_data(dy64, w64, c.x, c.params),
                           conv3d_backward_data(ady, aw, c.x, c.params), double(s.taps() * s.co), true);
  Tensor dw = w0.to(device), dw_ref = to_double(w0), dw_abs = abs_double(w0);
  ops.backward_weight(x.to(device), dy.to(device), c.params, dw);
  conv3d_backward_weight(x64, dy64, c.params, dw_ref);
  conv3d_backward_weight(ax, ady, c.params, dw_abs);
  const double voxels = double(s.out_voxels());
  v.dw = within_bf16_bound(dw, dw_ref, dw_abs, voxels + voxels / 256 + 2, false);
  return v;
}

const std::vector<ParityCase>& bf16_cases() {
  static const std::vector<ParityCase> cases = {
      {{3, 25, 16, 16, 5}, 7, Conv3dParams::cubic(3, 1, 1), "scalar gathers, batch 3"},
      {{1, 13, 8, 8, 33}, 33, Conv3dParams::cubic(3, 2, 1), "stride 2: 8 residue classes; 3 channel chunks"},
      {{3, 13, 8, 8, 7}, 5, Conv3dParams::cubic(4, 2, 1), "k4 s2 p1"},
      {{1, 13, 8, 8, 8}, 12, mixed_params(), "per-axis k/s/p, vector gathers"},
  };
  return cases;
}

void expect_bf16_parity(Device device, kernels::Conv3dTiles tiles, uint64_t seed) {
  ScopedConvEngine engine(ConvEngine::custom);
  ScopedTiles scoped(tiles);
  for (const ParityCase& c : bf16_cases()) {
    const Bf16Verdicts v = bf16_parity(c, device, seed += 10, public_ops());
    EXPECT_TRUE(v.y) << "forward " << case_str(c);
    EXPECT_TRUE(v.dx) << "backward_data " << case_str(c);
    EXPECT_TRUE(v.dw) << "backward_weight " << case_str(c);
  }
}

TEST_P(Conv3dParity, Bfloat16TensorCoresSmallTilesWithinBound) {
  expect_bf16_parity(device(), kernels::Conv3dTiles::small, 3000);
}

TEST_P(Conv3dParity, Bfloat16TensorCoresLargeTilesWithinBound) {
  expect_bf16_parity(device(), kernels::Conv3dTiles::large, 3100);
}

TEST_P(Conv3dParity, Bfloat16BiasGradientIsFloat) {
  Tensor dy = random_tensor({2, 5, 4, 3, 9}, 7, DType::bfloat16);
  Tensor db = random_tensor({9}, 8), db_ref = to_double(db);
  Tensor db_dev = db.to(device());
  conv3d_backward_bias(dy.to(device()), db_dev);
  conv3d_backward_bias(to_double(dy), db_ref);
  EXPECT_EQ(db_dev.dtype(), DType::float32);
  Tensor db_abs = abs_double(db);
  conv3d_backward_bias(abs_double(dy), db_abs);
  EXPECT_TRUE(within_bf16_bound(db_dev, db_ref, db_abs, 2 * 5 * 4 * 3 + 2, false));
}

CTSR_INSTANTIATE_CUDA_PATHS(Conv3dParity);

// The reference path takes bf16 too (widened to float, the result rounded): the same bound holds.
TEST(Conv3d, Bfloat16ReferenceWithinBound) {
  uint64_t seed = 3200;
  for (const ParityCase& c : bf16_cases()) {
    const Bf16Verdicts v = bf16_parity(c, Device::cpu(), seed += 10, public_ops());
    EXPECT_TRUE(v.y) << "forward " << case_str(c);
    EXPECT_TRUE(v.dx) << "backward_data " << case_str(c);
    EXPECT_TRUE(v.dw) << "backward_weight " << case_str(c);
  }
}

// Mixed precision: bf16 operands take a float32 bias and accumulate parameter gradients in float32.
TEST(Conv3d, Bfloat16OperandsTakeFloatParameters) {
  Tensor x = random_tensor({1, 3, 3, 3, 2}, 1, DType::bfloat16);
  Tensor w = random_tensor({2, 1, 1, 1, 2}, 2, DType::bfloat16);
  const std::string message = error_message(
      [&] { conv3d_forward(x, w, random_tensor({2}, 3, DType::bfloat16), Conv3dParams::cubic(1)); });
  EXPECT_NE(message.find("bias"), std::string::npos) << message;
  EXPECT_NE(message.find("float32"), std::string::npos) << message;
  Tensor dw;
  conv3d_backward_weight(x, random_tensor({1, 3, 3, 3, 2}, 4, DType::bfloat16), Conv3dParams::cubic(1), dw);
  EXPECT_EQ(dw.dtype(), DType::float32);
}

#if CTSR_MMA_MUTANTS
// The mutation test of the tensor-core kernels: kernels/conv3d.cu built a second time with one
// wrong fragment index in kernels/mma.h (CTSR_MMA_MUTATION, tests/CMakeLists.txt) must fail the
// parity check of every GEMM-shaped op, with both tile sizes.
Conv3dOps mutant_ops() {
  namespace mutant = kernels::cuda_on_cpu_mma_mutant;
  return {[](const Tensor& x, const Tensor& w, const Tensor& b, const Conv3dParams& p) {
            const kernels::Conv3dShape s = kernels::conv3d_shape("mutant", x.shape(), "x", w.shape(), "w", p);
            Tensor y = Tensor::empty(Shape{s.n, s.od, s.oh, s.ow, s.co}, x.dtype(), x.device());
            mutant::conv3d_forward(s, x, w, b, y);
            return y;
          },
          [](const Tensor& dy, const Tensor& w, const Shape& xs, const Conv3dParams& p) {
            const kernels::Conv3dShape s = kernels::conv3d_shape("mutant", xs, "x", w.shape(), "w", p);
            Tensor dx = Tensor::empty(xs, dy.dtype(), dy.device());
            mutant::conv3d_backward_data(s, dy, w, Tensor(), dx);
            return dx;
          },
          [](const Tensor& x, const Tensor& dy, const Conv3dParams& p, Tensor& dw) {
            const kernels::Conv3dShape s = kernels::conv3d_shape("mutant", x.shape(), "x", dw.shape(), "w", p);
            mutant::conv3d_backward_weight(s, x, dy, dw);
          }};
}

TEST(Conv3dMmaMutation, WrongFragmentIndexFailsParity) {
  ScopedConvEngine engine(ConvEngine::custom);
  for (kernels::Conv3dTiles tiles : {kernels::Conv3dTiles::small, kernels::Conv3dTiles::large}) {
    ScopedTiles scoped(tiles);
    const ParityCase& c = bf16_cases()[1];
    const Bf16Verdicts real = bf16_parity(c, Device::cuda_on_cpu(), 3300, public_ops());
    ASSERT_TRUE(real.y && real.dx && real.dw) << "the real kernels must pass first";
    const Bf16Verdicts v = bf16_parity(c, Device::cuda_on_cpu(), 3300, mutant_ops());
    EXPECT_FALSE(v.y) << "forward: a wrong fragment index went unnoticed";
    EXPECT_FALSE(v.dx) << "backward_data: a wrong fragment index went unnoticed";
    EXPECT_FALSE(v.dw) << "backward_weight: a wrong fragment index went unnoticed";
  }
}
#endif

// ---- engine setting and bad inputs ----------------------------------------------------------------

TEST(Conv3d, EngineSetting) {
  EXPECT_EQ(conv_engine(), ConvEngine::custom);
  EXPECT_EQ(parse_conv_engine("custom"), ConvEngine::custom);
  EXPECT_EQ(parse_conv_engine("cudnn"), ConvEngine::cudnn);
  {
    ScopedConvEngine engine(ConvEngine::cudnn);
    EXPECT_EQ(conv_engine(), ConvEngine::cudnn);
    EXPECT_STREQ(conv_engine_name(conv_engine()), "cudnn");
    // The reference path is not a GPU either.
    Tensor x = random_tensor({1, 3, 3, 3, 2}, 1), w = random_tensor({2, 1, 1, 1, 2}, 2);
    try {
      conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(1));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("on cpu"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(conv_engine(), ConvEngine::custom);
  try {
    parse_conv_engine("CUDNN ");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'CUDNN '"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("custom, cudnn"), std::string::npos) << e.what();
  }
}

TEST(Conv3d, RejectsBadInputs) {
  const Conv3dParams k3 = Conv3dParams::cubic(3, 1, 1);
  Tensor x = random_tensor({2, 5, 4, 3, 5}, 1);
  Tensor w = random_tensor({3, 3, 3, 3, 5}, 2);
  // Channel mismatch between x and weight.
  expect_error_mentions([&] { conv3d_forward(x, random_tensor({3, 3, 3, 3, 4}, 3), Tensor(), k3); },
               {"conv3d_forward", "x [2, 5, 4, 3, 5]", "5 channels", "weight [3, 3, 3, 3, 4]", "4 input channels"});
  // Kernel larger than the padded input: W = 3, padding 0, kernel 4.
  expect_error_mentions([&] { conv3d_forward(x, random_tensor({3, 4, 4, 4, 5}, 3), Tensor(), Conv3dParams::cubic(4, 1, 0)); },
               {"conv3d_forward", "kernel size 4 along W", "padded input (3 + 2 * 0 = 3)"});
  // Wrong bias size.
  expect_error_mentions([&] { conv3d_forward(x, w, random_tensor({4}, 4), k3); },
               {"conv3d_forward", "bias [4]", "must be [3]", "weight [3, 3, 3, 3, 5]"});
  // Weight's kernel disagrees with the parameters.
  expect_error_mentions([&] { conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(1)); },
               {"weight [3, 3, 3, 3, 5]", "kernel size 3 along D", "kernel [1, 1, 1]"});
  // Invalid parameters, x not 5-D.
  expect_error_mentions([&] { conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(3, 0, 1)); }, {"stride 0 along D"});
  expect_error_mentions([&] { conv3d_forward(x, w, Tensor(), Conv3dParams::cubic(3, 1, -1)); }, {"padding -1 along D"});
  expect_error_mentions([&] { conv3d_forward(random_tensor({5, 4, 3, 5}, 1), w, Tensor(), k3); },
               {"x must be [N, D, H, W, C]", "[5, 4, 3, 5]"});
  // Backward: dy of the wrong shape, a dweight that does not fit, dtype mismatch.
  Tensor y = conv3d_forward(x, w, Tensor(), k3);
  expect_error_mentions([&] { conv3d_backward_data(random_tensor({2, 5, 4, 4, 3}, 5), w, x.shape(), k3); },
               {"conv3d_backward_data dy", "[2, 5, 4, 4, 3]", "expected [2, 5, 4, 3, 3]"});
  Tensor bad_dw = Tensor::zeros({3, 3, 3, 3, 4});
  expect_error_mentions([&] { conv3d_backward_weight(x, y, k3, bad_dw); },
               {"conv3d_backward_weight dweight", "[3, 3, 3, 3, 4]", "expected [3, 3, 3, 3, 5]"});
  Tensor bad_db = Tensor::zeros({2});
  expect_error_mentions([&] { conv3d_backward_bias(y, bad_db); }, {"conv3d_backward_bias dbias", "[2]", "expected [3]"});
  expect_error_mentions([&] { conv3d_forward(to_double(x), w, Tensor(), k3); }, {"conv3d_forward", "float64", "float32"});
}

}  // namespace
}  // namespace ctsr::test
