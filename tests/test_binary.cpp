// add / sub / mul with a broadcast b, and scale: the collapsed broadcast layout, the reference
// against an independent multi-index loop, float64 gradient checks for every op and broadcast
// pattern at awkward shapes, CUDA paths (forward bit for bit; b's gradient, a float sum, within
// a tolerance derived from its length), determinism of that sum, and errors naming both tensors.
#include <cmath>

#include "kernels/binary.h"
#include "kernels/reduce.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

const BinaryOp kOps[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul};

TEST(Broadcast, LayoutCollapsesDimsOfTheSameKind) {
  struct Case {
    Shape a, b;
    std::vector<int64_t> extents;
    std::vector<bool> kept;
  };
  const Shape a{3, 5, 4, 3, 7};
  for (const Case& c : {Case{a, {7}, {180, 7}, {false, true}},
                        Case{a, {1, 1, 1, 1, 7}, {180, 7}, {false, true}},
                        Case{a, {3, 1, 1, 1, 1}, {3, 420}, {true, false}},
                        Case{a, {3, 1, 1, 1, 7}, {3, 60, 7}, {true, false, true}},
                        Case{a, {1}, {1260}, {false}},
                        Case{a, a, {1260}, {true}},
                        Case{a, {5, 1, 3, 1}, {3, 5, 4, 3, 7}, {false, true, false, true, false}},
                        Case{{3, 1, 4, 1, 7}, {1, 1, 4, 1, 7}, {3, 28}, {false, true}},
                        Case{{1, 1}, {1}, {}, {}}}) {
    const BroadcastLayout layout = broadcast_layout("test", "a", c.a, "b", c.b);
    ASSERT_EQ(layout.groups, int(c.extents.size())) << c.a.str() << " vs " << c.b.str();
    for (int g = 0; g < layout.groups; ++g) {
      EXPECT_EQ(layout.extent[g], c.extents[size_t(g)]) << c.b.str() << " group " << g;
      EXPECT_EQ(layout.kept[g], c.kept[size_t(g)]) << c.b.str() << " group " << g;
    }
    EXPECT_EQ(layout.kept_numel, c.b.numel());
    EXPECT_EQ(layout.full_numel, c.a.numel());
    EXPECT_EQ(layout.kept_numel * layout.broadcast_numel, c.a.numel());
  }
}

// Row-major strides of b left-padded to a's dims, 0 along b's size-1 dims: an index rule written
// independently of broadcast_small_index.
std::vector<int64_t> padded_b_strides(const Shape& a, const Shape& b) {
  const int pad = a.ndim() - b.ndim();
  std::vector<int64_t> strides(size_t(a.ndim()), 0);
  int64_t stride = 1;
  for (int d = a.ndim() - 1; d >= pad; --d) {
    strides[size_t(d)] = b[d - pad] == 1 ? 0 : stride;
    stride *= b[d - pad];
  }
  return strides;
}

int64_t naive_b_index(const Shape& a, const std::vector<int64_t>& strides, int64_t i) {
  int64_t index = 0;
  for (int d = a.ndim() - 1; d >= 0; --d) {
    index += (i % a[d]) * strides[size_t(d)];
    i /= a[d];
  }
  return index;
}

double apply(BinaryOp op, double x, double y) {
  return op == BinaryOp::add ? x + y : op == BinaryOp::sub ? x - y : x * y;
}

const std::vector<Shape> kPatterns5d = {{7},          {1, 1, 1, 1, 7}, {3, 1, 1, 1, 1}, {3, 1, 1, 1, 7}, {1},
                                        {3, 5, 4, 3, 7}, {5, 1, 3, 1},  {1, 5, 1, 1, 1}};

TEST(Binary, ReferenceMatchesIndependentIndexing) {
  const Shape a_shape{3, 5, 4, 3, 7};
  Tensor a = random_tensor(a_shape, 1, DType::float64);
  Tensor dy = random_tensor(a_shape, 2, DType::float64);
  for (const Shape& b_shape : kPatterns5d) {
    Tensor b = random_tensor(b_shape, 3, DType::float64);
    const std::vector<int64_t> strides = padded_b_strides(a_shape, b_shape);
    const double* pa = a.data<double>();
    const double* pb = b.data<double>();
    const double* pdy = dy.data<double>();
    for (BinaryOp op : kOps) {
      std::vector<double> y(size_t(a.numel())), da(size_t(a.numel())), db(size_t(b.numel()), 0.0);
      for (int64_t i = 0; i < a.numel(); ++i) {
        const int64_t j = naive_b_index(a_shape, strides, i);
        y[size_t(i)] = apply(op, pa[i], pb[j]);
        da[size_t(i)] = op == BinaryOp::mul ? pdy[i] * pb[j] : pdy[i];
        db[size_t(j)] += op == BinaryOp::mul ? pdy[i] * pa[i] : op == BinaryOp::sub ? -pdy[i] : pdy[i];
      }
      const std::string what = std::string(binary_op_name(op)) + " b " + b_shape.str();
      EXPECT_TENSORS_CLOSE(binary(op, a, b), Tensor::from_vector(y, a_shape), 0, 0) << what;
      BinaryGrads g = binary_backward(op, a, b, dy);
      EXPECT_TENSORS_CLOSE(g.da, Tensor::from_vector(da, a_shape), 0, 0) << what;
      EXPECT_EQ(g.db.shape(), b_shape) << what;
      EXPECT_TENSORS_CLOSE(g.db, Tensor::from_vector(db, b_shape), 1e-13, 1e-13) << what;
    }
  }
}

TEST(Binary, NamedOpsAndScaleKnownValues) {
  Tensor a = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<double>({10, 20, 30}, {3});
  EXPECT_EQ(add(a, b).to_vector<double>(), (std::vector<double>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ(sub(a, b).to_vector<double>(), (std::vector<double>{-9, -18, -27, -6, -15, -24}));
  EXPECT_EQ(mul(a, b).to_vector<double>(), (std::vector<double>{10, 40, 90, 40, 100, 180}));
  Tensor per_row = Tensor::from_vector<double>({-1, 2}, {2, 1});
  EXPECT_EQ(mul(a, per_row).to_vector<double>(), (std::vector<double>{-1, -2, -3, 8, 10, 12}));
  EXPECT_EQ(scale(a, -0.5).to_vector<double>(), (std::vector<double>{-0.5, -1, -1.5, -2, -2.5, -3}));
  // db for a per-row b: row sums of dy * a.
  Tensor dy = Tensor::from_vector<double>({1, 1, 1, 2, 0, -1}, {2, 3});
  BinaryGrads g = binary_backward(BinaryOp::mul, a, per_row, dy);
  EXPECT_EQ(g.db.to_vector<double>(), (std::vector<double>{1 + 2 + 3, 8 + 0 - 6}));
  EXPECT_EQ(g.da.to_vector<double>(), (std::vector<double>{-1, -1, -1, 4, 0, -2}));
}

TEST(Binary, ReferenceGradcheckEveryOpAndPattern) {
  const Shape a_shape{3, 5, 4, 3, 7};
  for (const Shape& b_shape : kPatterns5d) {
    for (BinaryOp op : kOps) {
      Tensor a = random_tensor(a_shape, 11, DType::float64);
      Tensor b = random_tensor(b_shape, 12, DType::float64);
      expect_gradcheck(
          std::string(binary_op_name(op)) + " a " + a_shape.str() + " b " + b_shape.str(), {a, b},
          [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{binary(op, in[0], in[1])}; },
          [op](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
            BinaryGrads g = binary_backward(op, in[0], in[1], dy[0]);
            return std::vector<Tensor>{g.da, g.db};
          });
    }
  }
}

TEST(Binary, ScaleGradcheck) {
  Tensor x = random_tensor({3, 5, 4, 3, 7}, 13, DType::float64);
  expect_gradcheck(
      "scale", {x}, [](const std::vector<Tensor>& in) { return std::vector<Tensor>{scale(in[0], -1.75)}; },
      [](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{scale_backward(dy[0], -1.75)};
      });
}

TEST(Binary, FloatAndDoubleReferencesAgree) {
  Tensor a = random_tensor({3, 25, 16, 16, 5}, 14);
  Tensor b = random_tensor({3, 1, 1, 1, 5}, 15);
  Tensor dy = random_tensor(a.shape(), 16);
  for (BinaryOp op : kOps) {
    EXPECT_TENSORS_CLOSE(binary(op, a, b), binary(op, to_double(a), to_double(b)), 1e-6, 1e-7);
    BinaryGrads g32 = binary_backward(op, a, b, dy), g64 = binary_backward(op, to_double(a), to_double(b), to_double(dy));
    EXPECT_TENSORS_CLOSE(g32.da, g64.da, 1e-6, 1e-7);
    EXPECT_TENSORS_CLOSE(g32.db, g64.db, 1e-6, 1e-6);  // the float reference also sums in double
  }
}

// The shapes of the CUDA-path checks: a channels-last [N, D, H, W, C] with C not a multiple of
// 32, batch 1, one element, a wide-channel case (C = 64: the split thread-per-output sum), and
// every b pattern.
struct ParityCase {
  Shape a, b;
};
std::vector<ParityCase> parity_cases() {
  const Shape big{3, 25, 16, 16, 5};
  return {{big, big},
          {big, {5}},
          {big, {1, 1, 1, 1, 5}},
          {big, {3, 1, 1, 1, 1}},
          {big, {3, 1, 1, 1, 5}},
          {big, {1}},
          {big, {1, 25, 1, 1, 1}},
          {{1, 25, 16, 16, 5}, {1, 1, 1, 1, 5}},
          {{1, 25, 16, 16, 5}, {1, 1, 1, 1, 1}},
          {{2, 10, 8, 8, 64}, {64}},
          {{2, 10, 8, 8, 64}, {2, 1, 1, 1, 64}},
          {{1}, {1}},
          {{7, 3}, {1, 3}}};
}

// Tolerance of a float32 sum of R terms of mean size |t| against the double reference. Rounding
// errors of terms with random signs add up like a random walk: about 2^-24 sqrt(R) |t| per level
// of the summation (measured: 2 to 5 times that for R = 3 .. 4M on the executor). We allow 64
// times, which still catches a single term dropped or counted twice (error ~|t| = 0.5 >> atol
// for every R here: 6e-4 at R = 1e5, 4e-3 at R = 4M).
double sum_atol(int64_t terms, double mean_abs_term) {
  return 64.0 * std::ldexp(1.0, -24) * std::sqrt(double(std::max<int64_t>(terms, 1))) * mean_abs_term;
}

using BinaryParity = CudaPathTest;

TEST_P(BinaryParity, ForwardBitwiseAndBackwardMatchReference) {
  uint64_t seed = 100;
  for (const ParityCase& c : parity_cases()) {
    Tensor a = random_tensor(c.a, ++seed);
    Tensor b = random_tensor(c.b, ++seed);
    Tensor dy = random_tensor(c.a, ++seed);
    Tensor ad = a.to(device()), bd = b.to(device()), dyd = dy.to(device());
    const int64_t reduced = c.a.numel() / c.b.numel();
    for (BinaryOp op : kOps) {
      const std::string what = std::string(binary_op_name(op)) + " a " + c.a.str() + " b " + c.b.str();
      Tensor y = binary(op, ad, bd);
      EXPECT_EQ(y.device(), device());
      EXPECT_TRUE(tensors_equal(y, binary(op, a, b))) << what;
      BinaryGrads g = binary_backward(op, ad, bd, dyd);
      BinaryGrads ref = binary_backward(op, a, b, dy);
      EXPECT_EQ(g.da.device(), device());
      EXPECT_TRUE(tensors_equal(g.da, ref.da)) << what;
      // Terms are dy (uniform in [-1, 1): mean |t| 1/2) or dy * a (mean |t| 1/4).
      EXPECT_TENSORS_CLOSE(g.db, ref.db, 1e-6, sum_atol(reduced, 0.5)) << what << ", " << reduced << " terms";
    }
  }
  Tensor x = random_tensor({3, 25, 16, 16, 5}, 7);
  EXPECT_TRUE(tensors_equal(scale(x.to(device()), 0.3), scale(x, 0.3)));
}

// The backward of b must not depend on the order threads run in, nor change between runs.
TEST_P(BinaryParity, BackwardIsDeterministic) {
  Tensor a = random_tensor({3, 25, 16, 16, 5}, 31).to(device());
  Tensor dy = random_tensor({3, 25, 16, 16, 5}, 32).to(device());
  for (const Shape& b_shape : {Shape{5}, Shape{3, 1, 1, 1, 1}, Shape{1}}) {
    Tensor b = random_tensor(b_shape, 33).to(device());
    const Tensor first = binary_backward(BinaryOp::mul, a, b, dy).db;
    EXPECT_TRUE(tensors_equal(binary_backward(BinaryOp::mul, a, b, dy).db, first)) << b_shape.str();
    if (device().kind == DeviceKind::cuda_on_cpu) {
      struct RestoreOrder {
        ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
      } restore;
      cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
      EXPECT_TRUE(tensors_equal(binary_backward(BinaryOp::mul, a, b, dy).db, first)) << b_shape.str();
    }
  }
}

TEST_P(BinaryParity, RejectsFloat64OnCudaPaths) {
  Tensor a = random_tensor({4, 3}, 1, DType::float64).to(device());
  EXPECT_THROW(add(a, a), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(BinaryParity);

TEST(Binary, RejectsBadOperandsNamingBoth) {
  Tensor a = random_tensor({2, 3, 5}, 1);
  expect_error_mentions([&] { add(a, random_tensor({4}, 2)); }, {"add", "b [4]", "a [2, 3, 5]", "dim 2: 4 vs 5"});
  expect_error_mentions([&] { mul(a, random_tensor({2, 1, 5}, 2, DType::float64)); },
                        {"mul", "b is float64", "a is float32"});
  expect_error_mentions([&] { sub(random_tensor({4}, 2), a); }, {"sub", "b [2, 3, 5]", "a [4]"});
#if CTSR_HAVE_CUDA_ON_CPU
  expect_error_mentions([&] { add(a, random_tensor({5}, 2).to(Device::cuda_on_cpu())); },
                        {"add", "b is on cuda_on_cpu", "a is on cpu"});
#endif
  expect_error_mentions([&] { binary_backward(BinaryOp::add, a, random_tensor({5}, 2), random_tensor({2, 3}, 3)); },
                        {"add backward", "dy has shape [2, 3]", "a has [2, 3, 5]"});
}

}  // namespace
}  // namespace ctsr::test
