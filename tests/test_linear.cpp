// Fully connected layer: known values, float64 gradient checks of x, W and b at awkward sizes
// (7 x 5 -> 3, a single row, leading dims, no bias), accumulation into dW / db, leading-dim
// flattening, CUDA-path parity (cuBLAS route + our bias kernels) including a bitwise
// determinism check of the bias-gradient sums, and the error messages for bad inputs.
#include <cmath>
#include <functional>
#include <string>

#include "kernels/linear.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

TEST(Linear, ReferenceKnownValues) {
  // x [2, 3], W [2, 3], b [2]
  Tensor x = Tensor::from_vector<double>({1, 2, 3, -1, 0.5, 2}, {2, 3});
  Tensor w = Tensor::from_vector<double>({0.5, -1, 2, 1, 1, -0.25}, {2, 3});
  Tensor b = Tensor::from_vector<double>({0.25, -3}, {2});
  const std::vector<double> y = linear_forward(x, w, b).to_vector<double>();
  // row 0: 0.5 - 2 + 6 + 0.25 = 4.75, 1 + 2 - 0.75 - 3 = -0.75
  // row 1: -0.5 - 0.5 + 4 + 0.25 = 3.25, -1 + 0.5 - 0.5 - 3 = -4
  const std::vector<double> expected = {4.75, -0.75, 3.25, -4};
  ASSERT_EQ(y.size(), expected.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_DOUBLE_EQ(y[i], expected[i]) << i;

  Tensor dy = Tensor::from_vector<double>({1, 2, -1, 0.5}, {2, 2});
  Tensor dw, db;
  const std::vector<double> dx = linear_backward(x, w, dy, dw, &db).to_vector<double>();
  // dx = dy W; dW = dy^T x; db = column sums of dy
  const std::vector<double> dx_expected = {2.5, 1, 1.5, 0, 1.5, -2.125};
  const std::vector<double> dw_expected = {2, 1.5, 1, 1.5, 4.25, 7};
  const std::vector<double> db_expected = {0, 2.5};
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_DOUBLE_EQ(dx[i], dx_expected[i]) << i;
  const std::vector<double> dwv = dw.to_vector<double>(), dbv = db.to_vector<double>();
  for (size_t i = 0; i < dwv.size(); ++i) EXPECT_DOUBLE_EQ(dwv[i], dw_expected[i]) << i;
  for (size_t i = 0; i < dbv.size(); ++i) EXPECT_DOUBLE_EQ(dbv[i], db_expected[i]) << i;
}

void gradcheck_linear(const std::string& name, const Shape& x_shape, int64_t out, bool with_bias, uint64_t seed) {
  const int64_t in = x_shape[-1];
  Tensor x = random_tensor(x_shape, seed, DType::float64, -2, 2);
  Tensor w = random_tensor({out, in}, seed + 1, DType::float64);
  std::vector<Tensor> inputs = {x, w};
  if (with_bias) inputs.push_back(random_tensor({out}, seed + 2, DType::float64));
  expect_gradcheck(
      name, inputs,
      [](const std::vector<Tensor>& t) {
        return std::vector<Tensor>{linear_forward(t[0], t[1], t.size() > 2 ? t[2] : Tensor())};
      },
      [](const std::vector<Tensor>& t, const std::vector<Tensor>& dy) {
        Tensor dw, db;
        Tensor dx = linear_backward(t[0], t[1], dy[0], dw, t.size() > 2 ? &db : nullptr);
        std::vector<Tensor> grads = {dx, dw};
        if (t.size() > 2) grads.push_back(db);
        return grads;
      });
}

TEST(Linear, ReferenceGradcheck) { gradcheck_linear("linear 7x5->3", {7, 5}, 3, true, 10); }
TEST(Linear, ReferenceGradcheckSingleRow) {
  gradcheck_linear("linear 1x5->3", {1, 5}, 3, true, 20);
  gradcheck_linear("linear [4]->6 (1-D x)", {4}, 6, true, 25);
}
TEST(Linear, ReferenceGradcheckLeadingDims) { gradcheck_linear("linear [2,3,4]->5", {2, 3, 4}, 5, true, 30); }
TEST(Linear, ReferenceGradcheckWithoutBias) { gradcheck_linear("linear 7x5->3 no bias", {7, 5}, 3, false, 40); }

TEST(Linear, LeadingDimsAreFlattenedIntoRows) {
  Tensor x = random_tensor({2, 3, 4, 5}, 1, DType::float64);
  Tensor w = random_tensor({6, 5}, 2, DType::float64), b = random_tensor({6}, 3, DType::float64);
  Tensor y = linear_forward(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4, 6}));
  EXPECT_TRUE(tensors_equal(y.reshape({24, 6}), linear_forward(x.reshape({24, 5}), w, b)));
}

TEST(Linear, BackwardAccumulatesIntoParameterGradients) {
  Tensor x = random_tensor({9, 5}, 1, DType::float64), w = random_tensor({4, 5}, 2, DType::float64);
  Tensor dy = random_tensor({9, 4}, 3, DType::float64);
  Tensor once_w, once_b;
  linear_backward(x, w, dy, once_w, &once_b);
  // Twice from zeros doubles the gradients; twice from random starting values adds 2x to them.
  Tensor twice_w, twice_b;
  linear_backward(x, w, dy, twice_w, &twice_b);
  linear_backward(x, w, dy, twice_w, &twice_b);
  Tensor start_w = random_tensor({4, 5}, 4, DType::float64), start_b = random_tensor({4}, 5, DType::float64);
  Tensor acc_w = start_w.clone(), acc_b = start_b.clone();
  linear_backward(x, w, dy, acc_w, &acc_b);
  linear_backward(x, w, dy, acc_w, &acc_b);
  const std::vector<double> ow = once_w.to_vector<double>(), ob = once_b.to_vector<double>();
  const std::vector<double> tw = twice_w.to_vector<double>(), tb = twice_b.to_vector<double>();
  const std::vector<double> sw = start_w.to_vector<double>(), sb = start_b.to_vector<double>();
  const std::vector<double> aw = acc_w.to_vector<double>(), ab = acc_b.to_vector<double>();
  for (size_t i = 0; i < ow.size(); ++i) {
    EXPECT_NEAR(tw[i], 2 * ow[i], 1e-12) << i;
    EXPECT_NEAR(aw[i], sw[i] + 2 * ow[i], 1e-12) << i;
  }
  for (size_t i = 0; i < ob.size(); ++i) {
    EXPECT_NEAR(tb[i], 2 * ob[i], 1e-12) << i;
    EXPECT_NEAR(ab[i], sb[i] + 2 * ob[i], 1e-12) << i;
  }
  // Without a bias-gradient pointer only dW is touched.
  Tensor only_w;
  linear_backward(x, w, dy, only_w, nullptr);
  EXPECT_TRUE(tensors_equal(only_w, once_w));
}

TEST(Linear, FloatAndDoubleReferencesAgree) {
  Tensor x = random_tensor({300, 37}, 1), w = random_tensor({19, 37}, 2), b = random_tensor({19}, 3);
  Tensor dy = random_tensor({300, 19}, 4);
  EXPECT_TENSORS_CLOSE(linear_forward(x, w, b), linear_forward(to_double(x), to_double(w), to_double(b)), 1e-5, 1e-5);
  Tensor dw, db, dwd, dbd;
  Tensor dx = linear_backward(x, w, dy, dw, &db);
  Tensor dxd = linear_backward(to_double(x), to_double(w), to_double(dy), dwd, &dbd);
  EXPECT_TENSORS_CLOSE(dx, dxd, 1e-5, 1e-5);
  EXPECT_TENSORS_CLOSE(dw, dwd, 1e-5, 1e-4);
  EXPECT_TENSORS_CLOSE(db, dbd, 1e-6, 1e-6);
}

TEST(Linear, RejectsBadInputs) {
  Tensor x = random_tensor({7, 4}, 1), w = random_tensor({3, 5}, 2), b = random_tensor({3}, 3);
  std::string m = error_message([&] { linear_forward(x, w, b); });
  expect_contains(m, "linear_forward");
  expect_contains(m, "x of shape [7, 4]");
  expect_contains(m, "expected 5");

  Tensor x5 = random_tensor({7, 5}, 4);
  m = error_message([&] { linear_forward(x5, w, random_tensor({4}, 5)); });
  expect_contains(m, "linear_forward bias");
  expect_contains(m, "expected [3]");

  m = error_message([&] { linear_forward(x5, random_tensor({15}, 6), b); });
  expect_contains(m, "weight must be [out, in]");

  m = error_message([&] { linear_forward(x5, to_double(w), b); });
  expect_contains(m, "weight is float64");

  Tensor dy = random_tensor({7, 3}, 7);
  Tensor bad_dw = random_tensor({5, 3}, 8);
  const Tensor bad_dw_before = bad_dw.clone();
  Tensor db = random_tensor({3}, 9);
  const Tensor db_before = db.clone();
  m = error_message([&] { linear_backward(x5, w, dy, bad_dw, &db); });
  expect_contains(m, "linear_backward dweight");
  expect_contains(m, "expected [3, 5]");
  // Rejected before anything is accumulated.
  EXPECT_TRUE(tensors_equal(bad_dw, bad_dw_before));
  EXPECT_TRUE(tensors_equal(db, db_before));

  Tensor dw;
  Tensor bad_db = random_tensor({2}, 10);
  m = error_message([&] { linear_backward(x5, w, dy, dw, &bad_db); });
  expect_contains(m, "linear_backward dbias");
  expect_contains(m, "expected [3]");

  m = error_message([&] { linear_backward(x5, w, random_tensor({7, 4}, 11), dw, nullptr); });
  expect_contains(m, "linear_backward dy");
  expect_contains(m, "expected [7, 3]");
}

// ---- CUDA paths -------------------------------------------------------------------------------

struct ParityCase {
  Shape x_shape;
  int64_t out;
  bool bias;
};

struct Result {
  Tensor y, dx, dw, db;
};

Result run_linear(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, Device device) {
  Result r;
  const Tensor bd = b.defined() ? b.to(device) : Tensor();
  r.y = linear_forward(x.to(device), w.to(device), bd);
  r.dx = linear_backward(x.to(device), w.to(device), dy.to(device), r.dw, b.defined() ? &r.db : nullptr);
  return r;
}

using LinearParity = CudaPathTest;

// Tolerances, float32 against the float64 reference with inputs in [-1, 1): a float32 sum of k
// products errs by up to ~k 2^-24 times its largest partial sum in the worst case (random-walk
// growth: partial sums ~ sqrt(k) / 3). We allow rtol 1e-5 plus 2e-7 k + 1e-6 absolute, i.e.
// 1.3e-3 for dW's and db's k = 6400 rows where entries reach ~30 (observed on the executor:
// <= 2.6e-5; 9e-5 at k = 12800), and 5e-6 for y's k = 37 (observed 2.4e-6 at |y| ~ 2.6).
double gemm_atol(int64_t k) { return 2e-7 * double(k) + 1e-6; }

TEST_P(LinearParity, ForwardAndBackwardMatchReference) {
  const std::vector<ParityCase> cases = {
      {{6400, 37}, 19, true}, {{7, 5}, 3, true},           {{1, 5}, 3, true},        {{5}, 3, true},
      {{2, 25, 16, 16, 8}, 12, true}, {{130, 64}, 33, false}, {{3, 70}, 1, true},
  };
  uint64_t seed = 50;
  for (const ParityCase& c : cases) {
    SCOPED_TRACE(c.x_shape.str() + " -> " + std::to_string(c.out) + (c.bias ? " with bias" : " no bias"));
    const int64_t in = c.x_shape[-1];
    Tensor x = random_tensor(c.x_shape, ++seed), w = random_tensor({c.out, in}, ++seed);
    Tensor b = c.bias ? random_tensor({c.out}, ++seed) : Tensor();
    Shape y_shape = c.x_shape;
    y_shape[-1] = c.out;
    Tensor dy = random_tensor(y_shape, ++seed);
    const Result got = run_linear(x, w, b, dy, device());
    const Result ref = run_linear(to_double(x), to_double(w), c.bias ? to_double(b) : Tensor(), to_double(dy),
                                  Device::cpu());
    const int64_t rows = x.numel() / in;
    EXPECT_EQ(got.y.device(), device());
    EXPECT_TENSORS_CLOSE(got.y, ref.y, 1e-5, gemm_atol(in));
    EXPECT_TENSORS_CLOSE(got.dx, ref.dx, 1e-5, gemm_atol(c.out));
    EXPECT_TENSORS_CLOSE(got.dw, ref.dw, 1e-5, gemm_atol(rows));
    if (c.bias) EXPECT_TENSORS_CLOSE(got.db, ref.db, 1e-5, gemm_atol(rows));
    else EXPECT_FALSE(got.db.defined());
  }
}

// bfloat16: x, W and dy in bf16, the bias in float32; y and dx come back in bf16 after float
// accumulation (in + 1 and out additions), dW and db in float32 (one addition per row, per voxel
// split and into the zero start). Bounds: within_bf16_bound (tests/harness.h), against the float64
// op on the same values and its sums of |products|.
void expect_bf16_linear(Device device) {
  const std::vector<ParityCase> cases = {{{700, 37}, 19, true}, {{7, 5}, 3, true}, {{2, 5, 4, 3, 16}, 12, false}};
  uint64_t seed = 80;
  for (const ParityCase& c : cases) {
    SCOPED_TRACE(c.x_shape.str() + " -> " + std::to_string(c.out) + (c.bias ? " with bias" : " no bias"));
    const int64_t in = c.x_shape[-1];
    Tensor x = random_tensor(c.x_shape, ++seed, DType::bfloat16), w = random_tensor({c.out, in}, ++seed, DType::bfloat16);
    Tensor b = c.bias ? random_tensor({c.out}, ++seed) : Tensor();
    Shape y_shape = c.x_shape;
    y_shape[-1] = c.out;
    Tensor dy = random_tensor(y_shape, ++seed, DType::bfloat16);
    const Result got = run_linear(x, w, b, dy, device);
    EXPECT_EQ(got.y.dtype(), DType::bfloat16);
    EXPECT_EQ(got.dx.dtype(), DType::bfloat16);
    EXPECT_EQ(got.dw.dtype(), DType::float32);
    const Tensor b64 = c.bias ? to_double(b) : Tensor(), ab = c.bias ? abs_double(b) : Tensor();
    const Result ref = run_linear(to_double(x), to_double(w), b64, to_double(dy), Device::cpu());
    const Result mag = run_linear(abs_double(x), abs_double(w), ab, abs_double(dy), Device::cpu());
    const double rows = double(x.numel() / in);
    EXPECT_TRUE(within_bf16_bound(got.y, ref.y, mag.y, double(in + 1), true));
    EXPECT_TRUE(within_bf16_bound(got.dx, ref.dx, mag.dx, double(c.out), true));
    EXPECT_TRUE(within_bf16_bound(got.dw, ref.dw, mag.dw, rows + rows / 256 + 2, false));
    if (c.bias) {
      EXPECT_TRUE(within_bf16_bound(got.db, ref.db, mag.db, rows + rows / 256 + 2, false));
    }
  }
}

TEST_P(LinearParity, Bfloat16WithinBound) { expect_bf16_linear(device()); }
TEST(Linear, Bfloat16ReferenceWithinBound) { expect_bf16_linear(Device::cpu()); }

// More outputs (33000 x 33 = 1089000) than the bias add's grid has threads (4096 x 256): some
// threads take a second element, whose column comes from the carried-along column index.
TEST_P(LinearParity, BiasAddGridStrideMatchesReference) {
  Tensor x = random_tensor({33000, 3}, 71), w = random_tensor({33, 3}, 72), b = random_tensor({33}, 73);
  Tensor y = linear_forward(x.to(device()), w.to(device()), b.to(device()));
  EXPECT_TENSORS_CLOSE(y, linear_forward(to_double(x), to_double(w), to_double(b)), 1e-5, gemm_atol(3));
}

// The bias-gradient sums are the same bits every time (and under the executor's reversed thread
// order), and accumulate: a second call from the first result adds the same amount again
// (db exactly: it adds the same float sum to itself).
TEST_P(LinearParity, BiasGradientIsDeterministicAndAccumulates) {
  Tensor x = random_tensor({6400, 37}, 61).to(device()), w = random_tensor({19, 37}, 62).to(device());
  Tensor dy = random_tensor({6400, 19}, 63).to(device());
  Tensor dw1, db1;
  linear_backward(x, w, dy, dw1, &db1);
  Tensor dw2, db2;
  linear_backward(x, w, dy, dw2, &db2);
  EXPECT_TRUE(tensors_equal(db2, db1));
  EXPECT_TRUE(tensors_equal(dw2, dw1));
  if (device().kind == DeviceKind::cuda_on_cpu) {
    struct RestoreOrder {
      ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
    } restore;
    cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
    Tensor dw3, db3;
    linear_backward(x, w, dy, dw3, &db3);
    EXPECT_TRUE(tensors_equal(db3, db1));
  }
  linear_backward(x, w, dy, dw2, &db2);  // now 2x
  const std::vector<float> once_b = db1.to_vector<float>(), twice_b = db2.to_vector<float>();
  for (size_t i = 0; i < once_b.size(); ++i) EXPECT_FLOAT_EQ(twice_b[i], 2 * once_b[i]) << i;
  // dW goes through the GEMM with beta = 1, which folds C into its blocked sums over the 6400
  // rows, so the second call's rounding differs from the first's (entries ~ 27, errors ~ 1e-6).
  const std::vector<float> once_w = dw1.to_vector<float>(), twice_w = dw2.to_vector<float>();
  for (size_t i = 0; i < once_w.size(); ++i) EXPECT_NEAR(twice_w[i], 2 * once_w[i], 1e-4 + 1e-5 * std::fabs(2 * once_w[i])) << i;
}

TEST_P(LinearParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4, 3}, 1, DType::float64).to(device());
  Tensor w = random_tensor({2, 3}, 2, DType::float64).to(device());
  std::string m = error_message([&] { linear_forward(x, w, Tensor()); });
  expect_contains(m, "expected float32");
}

TEST_P(LinearParity, RejectsTensorsOnDifferentDevices) {
  Tensor x = random_tensor({4, 3}, 1), w = random_tensor({2, 3}, 2), b = random_tensor({2}, 3);
  std::string m = error_message([&] { linear_forward(x.to(device()), w, b); });
  expect_contains(m, "weight is on cpu");
  m = error_message([&] { linear_forward(x.to(device()), w.to(device()), b); });
  expect_contains(m, "linear_forward bias");
}

CTSR_INSTANTIATE_CUDA_PATHS(LinearParity);

}  // namespace
}  // namespace ctsr::test
