// sum, mean, sum_to_shape, mean_to_shape, broadcast_to and their backward: hand-checked values,
// the reference against an independent loop, float64 gradient checks, the CUDA reduction plan
// (each kernel, split and unsplit, reached by a named test shape), CUDA paths against the
// reference within a tolerance derived from the sum's length, determinism, and errors.
#include <cmath>

#include "kernels/reduce.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"
#include "tests/oracle/reduce.h"

namespace ctsr::test {
namespace {

using kernels::ReduceKernel;
using kernels::ReducePass;

TEST(Reduce, ReferenceKnownValues) {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(sum(x).shape(), Shape{1});
  EXPECT_EQ(sum(x).to_vector<double>(), std::vector<double>{21});
  EXPECT_EQ(mean(x).to_vector<double>(), std::vector<double>{3.5});
  EXPECT_EQ(sum_to_shape(x, {1, 3}).to_vector<double>(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum_to_shape(x, {3}).shape(), Shape{3});
  EXPECT_EQ(sum_to_shape(x, {3}).to_vector<double>(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum_to_shape(x, {2, 1}).to_vector<double>(), (std::vector<double>{6, 15}));
  EXPECT_EQ(mean_to_shape(x, {2, 1}).to_vector<double>(), (std::vector<double>{2, 5}));
  EXPECT_EQ(sum_to_shape(x, {2, 3}).to_vector<double>(), x.to_vector<double>());
  Tensor dy = Tensor::from_vector<double>({1, -2}, {2, 1});
  EXPECT_EQ(broadcast_to(dy, {2, 3}).to_vector<double>(), (std::vector<double>{1, 1, 1, -2, -2, -2}));
  EXPECT_EQ(sum_to_shape_backward(dy, {2, 3}).to_vector<double>(), (std::vector<double>{1, 1, 1, -2, -2, -2}));
  EXPECT_EQ(mean_to_shape_backward(dy, {2, 4}).to_vector<double>(),
            (std::vector<double>{0.25, 0.25, 0.25, 0.25, -0.5, -0.5, -0.5, -0.5}));
  Tensor g = Tensor::from_vector<double>({4}, {1});
  EXPECT_EQ(sum_backward(g, {2, 2}).to_vector<double>(), (std::vector<double>{4, 4, 4, 4}));
  EXPECT_EQ(mean_backward(g, {2, 2}).to_vector<double>(), (std::vector<double>{1, 1, 1, 1}));
  EXPECT_EQ(sum_backward(g, {2, 2}).shape(), (Shape{2, 2}));
}

const std::vector<Shape> kTargets5d = {{7}, {1, 1, 1, 1, 7}, {3, 1, 1, 1, 1}, {3, 1, 1, 1, 7}, {1},
                                       {3, 5, 4, 3, 7}, {5, 1, 3, 1}, {1, 5, 1, 1, 1}};

TEST(Reduce, ReferenceMatchesIndependentIndexing) {
  const Shape shape{3, 5, 4, 3, 7};
  Tensor x = random_tensor(shape, 1, DType::float64);
  for (const Shape& target : kTargets5d) {
    const std::vector<double> expected = oracle::sum_to(x, target);
    EXPECT_TENSORS_CLOSE(sum_to_shape(x, target), Tensor::from_vector(expected, target), 1e-13, 1e-13) << target.str();
    std::vector<double> means = expected;
    for (double& m : means) m /= double(shape.numel() / target.numel());
    EXPECT_TENSORS_CLOSE(mean_to_shape(x, target), Tensor::from_vector(means, target), 1e-13, 1e-13) << target.str();
  }
  double total = 0;
  for (double v : x.to_vector<double>()) total += v;
  EXPECT_NEAR(sum(x).to_vector<double>()[0], total, 1e-12);
  EXPECT_NEAR(mean(x).to_vector<double>()[0], total / double(shape.numel()), 1e-15);
}

TEST(Reduce, ReferenceGradcheck) {
  const Shape shape{3, 5, 4, 3, 7};
  Tensor x = random_tensor(shape, 2, DType::float64);
  expect_gradcheck(
      "sum", {x}, [](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0])}; },
      [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{sum_backward(dy[0], shape)};
      });
  expect_gradcheck(
      "mean", {x}, [](const std::vector<Tensor>& in) { return std::vector<Tensor>{mean(in[0])}; },
      [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{mean_backward(dy[0], shape)};
      });
  for (const Shape& target : kTargets5d) {
    expect_gradcheck(
        "sum_to_shape " + target.str(), {x},
        [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum_to_shape(in[0], target)}; },
        [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
          return std::vector<Tensor>{sum_to_shape_backward(dy[0], shape)};
        });
    expect_gradcheck(
        "mean_to_shape " + target.str(), {x},
        [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mean_to_shape(in[0], target)}; },
        [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
          return std::vector<Tensor>{mean_to_shape_backward(dy[0], shape)};
        });
    Tensor small = random_tensor(target, 3, DType::float64);
    expect_gradcheck(
        "broadcast_to " + target.str(), {small},
        [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{broadcast_to(in[0], shape)}; },
        [&](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
          return std::vector<Tensor>{sum_to_shape(dy[0], target)};
        });
  }
}

TEST(Reduce, FloatReferenceSumsInDouble) {
  // 2^24 + 1 + 1 + ... : a float accumulator would lose every 1; the reference sums in double.
  std::vector<float> v(1001, 1.0f);
  v[0] = 16777216.0f;
  Tensor x = Tensor::from_vector(v, {1001});
  EXPECT_EQ(sum(x).to_vector<float>()[0], 16777216.0f + 1000.0f);
}

bool same_passes(const std::vector<ReducePass>& a, const std::vector<ReduceKernel>& kinds) {
  if (a.size() != kinds.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].kernel != kinds[i]) return false;
  return true;
}

// The shapes the parity tests use reach each kernel, split and unsplit.
TEST(Reduce, PlanReachesEveryKernel) {
  const auto thread = ReduceKernel::thread_per_output, block = ReduceKernel::block_per_output;
  // sum of 100003: blocks over chunks, then a thread sums the partials.
  std::vector<ReducePass> p = kernels::reduce_plan(1, 100003, true);
  EXPECT_TRUE(same_passes(p, {block, thread}));
  EXPECT_GT(p[0].splits, 1);
  EXPECT_GE(p[0].splits * p[0].chunk, 100003);
  EXPECT_LT((p[0].splits - 1) * p[0].chunk, 100003);
  // [4097, 3] summed over dim 1: a thread per output.
  p = kernels::reduce_plan(4097, 3, true);
  EXPECT_TRUE(same_passes(p, {thread}));
  // [64, 4000] summed over dim 1: a block per output, no split.
  p = kernels::reduce_plan(64, 4000, true);
  EXPECT_TRUE(same_passes(p, {block}));
  // [2, 10, 8, 8, 64] -> [64]: neighbouring threads read neighbouring channels, split, then again.
  p = kernels::reduce_plan(64, 1280, false);
  EXPECT_TRUE(same_passes(p, {thread, thread}));
  EXPECT_GT(p[0].splits, 1);
  // [3, 25, 16, 16, 5] -> [5]: too few channels for threads; blocks over chunks.
  p = kernels::reduce_plan(5, 19200, false);
  EXPECT_TRUE(same_passes(p, {block, thread}));
  // Per sample [3, 25 * 16 * 16 * 5].
  p = kernels::reduce_plan(3, 32000, true);
  EXPECT_TRUE(same_passes(p, {block, thread}));
  // A sum big enough that the partials of the first pass need a block pass of their own.
  p = kernels::reduce_plan(1, int64_t(1) << 22, true);
  EXPECT_TRUE(same_passes(p, {block, block}));
}

// Tolerance of a float32 sum of R terms of mean size |t| against the double reference. Rounding
// errors of terms with random signs add up like a random walk: about 2^-24 sqrt(R) |t| per level
// of the summation (measured: 2 to 5 times that for R = 3 .. 4M on the executor). We allow 64
// times, which still catches a single term dropped or counted twice (error ~|t| = 0.5 >> atol
// for every R here: 6e-4 at R = 1e5, 4e-3 at R = 4M).
double sum_atol(int64_t terms, double mean_abs_term) {
  return 64.0 * std::ldexp(1.0, -24) * std::sqrt(double(std::max<int64_t>(terms, 1))) * mean_abs_term;
}

struct ReduceCase {
  Shape x, target;
};

using ReduceParity = CudaPathTest;

TEST_P(ReduceParity, SumsMatchReference) {
  const std::vector<ReduceCase> cases = {
      {{100003}, {1}},                          // block pass over chunks, then a thread
      {{4097, 3}, {4097, 1}},                   // thread per output
      {{64, 4000}, {64, 1}},                    // block per output, unsplit
      {{2, 10, 8, 8, 64}, {64}},                // split thread pass (channels)
      {{3, 25, 16, 16, 5}, {5}},                // few channels: split block pass
      {{3, 25, 16, 16, 5}, {1, 1, 1, 1, 5}},
      {{3, 25, 16, 16, 5}, {3, 1, 1, 1, 1}},    // per sample
      {{3, 25, 16, 16, 5}, {3, 1, 1, 1, 5}},    // per sample and channel
      {{3, 25, 16, 16, 5}, {1, 25, 1, 1, 1}},   // a middle dim kept
      {{3, 25, 16, 16, 5}, {3, 25, 16, 16, 5}}, // nothing summed
      {{1, 25, 16, 16, 5}, {1}},
      {{1}, {1}},
      {{1 << 22}, {1}},                         // two block passes
  };
  uint64_t seed = 40;
  for (const ReduceCase& c : cases) {
    Tensor x = random_tensor(c.x, ++seed);
    Tensor xd = x.to(device());
    const int64_t terms = c.x.numel() / c.target.numel();
    Tensor s = sum_to_shape(xd, c.target);
    EXPECT_EQ(s.device(), device());
    EXPECT_EQ(s.shape(), c.target);
    EXPECT_TENSORS_CLOSE(s, sum_to_shape(x, c.target), 1e-6, sum_atol(terms, 0.5)) << c.x.str() << " -> " << c.target.str();
    EXPECT_TENSORS_CLOSE(mean_to_shape(xd, c.target), mean_to_shape(x, c.target), 1e-6,
                         sum_atol(terms, 0.5) / double(terms))
        << c.x.str() << " -> " << c.target.str();
    // Backward: dy repeated back (bitwise for the sum; the mean's 1/count rounds differently).
    Tensor dy = random_tensor(c.target, ++seed);
    EXPECT_TRUE(tensors_equal(sum_to_shape_backward(dy.to(device()), c.x), sum_to_shape_backward(dy, c.x)))
        << c.x.str() << " -> " << c.target.str();
    EXPECT_TENSORS_CLOSE(mean_to_shape_backward(dy.to(device()), c.x), mean_to_shape_backward(dy, c.x), 1e-6, 0)
        << c.x.str() << " -> " << c.target.str();
  }
  Tensor x = random_tensor({3, 25, 16, 16, 5}, 60);
  EXPECT_TENSORS_CLOSE(sum(x.to(device())), sum(x), 1e-6, sum_atol(x.numel(), 0.5));
  EXPECT_TENSORS_CLOSE(mean(x.to(device())), mean(x), 1e-6, sum_atol(x.numel(), 0.5) / double(x.numel()));
  Tensor g = random_tensor({1}, 61);
  EXPECT_TRUE(tensors_equal(sum_backward(g.to(device()), x.shape()), sum_backward(g, x.shape())));
  EXPECT_TENSORS_CLOSE(mean_backward(g.to(device()), x.shape()), mean_backward(g, x.shape()), 1e-6, 0);
}

// Sums of positive terms have no cancellation, so their relative error is small: a tight check
// that every term is counted exactly once (a skipped or doubled chunk would be off by >= 1e-4).
TEST_P(ReduceParity, PositiveSumsAreTight) {
  for (const ReduceCase& c : {ReduceCase{{100003}, {1}}, ReduceCase{{3, 25, 16, 16, 5}, {5}},
                              ReduceCase{{2, 10, 8, 8, 64}, {64}}, ReduceCase{{64, 4000}, {64, 1}},
                              ReduceCase{{4097, 3}, {4097, 1}}}) {
    Tensor x = random_tensor(c.x, 70, DType::float32, 0.5, 1.5);
    EXPECT_TENSORS_CLOSE(sum_to_shape(x.to(device()), c.target), sum_to_shape(x, c.target), 2e-6, 0)
        << c.x.str() << " -> " << c.target.str();
  }
}

TEST_P(ReduceParity, DeterministicInAnyThreadOrder) {
  for (const ReduceCase& c : {ReduceCase{{100003}, {1}}, ReduceCase{{2, 10, 8, 8, 64}, {64}},
                              ReduceCase{{3, 25, 16, 16, 5}, {3, 1, 1, 1, 5}}}) {
    Tensor x = random_tensor(c.x, 80).to(device());
    const Tensor first = sum_to_shape(x, c.target);
    EXPECT_TRUE(tensors_equal(sum_to_shape(x, c.target), first)) << c.x.str();
    if (device().kind == DeviceKind::cuda_on_cpu) {
      struct RestoreOrder {
        ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
      } restore;
      cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
      EXPECT_TRUE(tensors_equal(sum_to_shape(x, c.target), first)) << c.x.str();
    }
  }
}

TEST_P(ReduceParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4, 3}, 1, DType::float64).to(device());
  EXPECT_THROW(sum(x), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(ReduceParity);

TEST(Reduce, RejectsBadShapesNamingBoth) {
  Tensor x = random_tensor({2, 3}, 1);
  try {
    sum_to_shape(x, {4});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("sum_to_shape: shape [4] does not broadcast to x [2, 3]"), std::string::npos) << m;
  }
  try {
    mean_to_shape(x, {1, 2, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shape [1, 2, 3] does not broadcast to x [2, 3]"), std::string::npos)
        << e.what();
  }
  try {
    sum_backward(random_tensor({2}, 2), {2, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sum_backward: dy has shape [2], expected [1]"), std::string::npos)
        << e.what();
  }
  try {
    sum_to_shape_backward(random_tensor({2}, 2), {2, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dy [2] does not broadcast to x_shape [2, 3]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ctsr::test
