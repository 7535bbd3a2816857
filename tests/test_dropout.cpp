// Dropout with a Philox mask regenerated in backward: the same bits on every path, the kept
// fraction, backward applying exactly the forward's mask, p = 0 as the identity, the range of
// p, a gradient check (with (seed, offset) fixed the op is linear), and element_base: a slice
// of a batch dropped on its own with its place in the batch gets the batch's mask, on every path;
// bfloat16 as the rounded float32 op.
#include <algorithm>
#include <cmath>

#include "kernels/copy.h"
#include "kernels/dropout.h"
#include "runtime/philox.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

constexpr uint64_t kSeed = 1234;
const uint64_t kOffset = philox::stream_offset(3, 17);

TEST(Dropout, KeptFractionIsNearOneMinusP) {
  // n = 1e5 Bernoulli(1 - p) draws: the kept fraction has standard deviation sqrt(p (1 - p) / n)
  // (at most 0.0016); we allow 5 of them, which a correct mask misses with probability < 1e-6.
  const int64_t n = 100000;
  Tensor x = Tensor::empty({n});
  std::fill(x.data<float>(), x.data<float>() + n, 1.0f);
  for (double p : {0.1, 0.5, 0.9}) {
    std::vector<float> y = dropout_forward(x, p, kSeed, kOffset).to_vector<float>();
    int64_t kept = 0;
    for (float v : y) kept += v != 0.0f;
    const double fraction = double(kept) / double(n);
    const double bound = 5.0 * std::sqrt(p * (1 - p) / double(n));
    EXPECT_NEAR(fraction, 1.0 - p, bound) << "p = " << p;
  }
}

TEST(Dropout, MaskIsPhiloxUniformAtLeastP) {
  Tensor x = random_tensor({3, 7, 5, 5, 3}, 1, DType::float32, 0.5, 1.5);  // never zero
  const double p = 0.3;
  std::vector<float> xs = x.to_vector<float>(), y = dropout_forward(x, p, kSeed, kOffset).to_vector<float>();
  const float scale = float(1.0 / (1.0 - p));
  for (size_t i = 0; i < xs.size(); ++i) {
    const bool keep = philox::uniform_at(kSeed, kOffset, i) >= float(p);
    ASSERT_EQ(y[i], keep ? xs[i] * scale : 0.0f) << "element " << i;
  }
}

TEST(Dropout, BackwardAppliesTheForwardMask) {
  for (DType dtype : {DType::float32, DType::float64}) {
    Tensor x = random_tensor({2, 5, 4, 4, 7}, 2, dtype, 0.5, 1.5);
    Tensor dy = random_tensor(x.shape(), 3, dtype, 0.5, 1.5);
    Tensor y = dropout_forward(x, 0.25, kSeed, kOffset);
    Tensor dx = dropout_backward(dy, 0.25, kSeed, kOffset);
    EXPECT_TRUE(tensors_equal(dx, dropout_forward(dy, 0.25, kSeed, kOffset)));
    std::vector<double> yv = to_double(y).to_vector<double>(), dxv = to_double(dx).to_vector<double>();
    int64_t dropped = 0;
    for (size_t i = 0; i < yv.size(); ++i) {
      ASSERT_EQ(yv[i] == 0.0, dxv[i] == 0.0) << "element " << i;
      dropped += yv[i] == 0.0;
    }
    EXPECT_GT(dropped, 0);
    EXPECT_LT(dropped, int64_t(yv.size()));
  }
}

TEST(Dropout, SeedAndOffsetChooseTheMask) {
  Tensor x = random_tensor({4096}, 4, DType::float32, 0.5, 1.5);
  Tensor a = dropout_forward(x, 0.5, kSeed, kOffset);
  EXPECT_TRUE(tensors_equal(a, dropout_forward(x, 0.5, kSeed, kOffset)));
  EXPECT_FALSE(tensors_equal(a, dropout_forward(x, 0.5, kSeed + 1, kOffset)));
  EXPECT_FALSE(tensors_equal(a, dropout_forward(x, 0.5, kSeed, kOffset + 1)));
}

TEST(Dropout, ZeroProbabilityIsTheIdentity) {
  Tensor x = random_tensor({3, 13, 8, 8, 4}, 5, DType::float32, -3, 3);
  EXPECT_TRUE(tensors_equal(dropout_forward(x, 0.0, kSeed, kOffset), x));
  EXPECT_TRUE(tensors_equal(dropout_backward(x, 0.0, kSeed, kOffset), x));
}

TEST(Dropout, RejectsProbabilityOutsideZeroToOne) {
  Tensor x = random_tensor({8}, 6, DType::float32);
  for (double p : {1.0, 1.5, -0.1, std::nan("")}) {
    try {
      dropout_forward(x, p, kSeed, kOffset);
      FAIL() << "expected an error for p = " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[0, 1)"), std::string::npos) << e.what();
    }
    EXPECT_THROW(dropout_backward(x, p, kSeed, kOffset), Error);
  }
}

TEST(Dropout, ReferenceGradcheck) {
  Tensor x = random_tensor({3, 4, 3, 5}, 7, DType::float64);
  expect_gradcheck(
      "dropout p=0.3", {x},
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{dropout_forward(in[0], 0.3, kSeed, kOffset)}; },
      [](const std::vector<Tensor>&, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{dropout_backward(dy[0], 0.3, kSeed, kOffset)};
      });
}

TEST(Dropout, ElementBaseShiftsTheDraws) {
  // Element i draws stream element element_base + i, in float32 and float64.
  for (DType dtype : {DType::float32, DType::float64}) {
    Tensor x = random_tensor({3, 11}, 9, dtype, 0.5, 1.5);
    const double p = 0.4;
    for (uint64_t base : {uint64_t(0), uint64_t(1), uint64_t(6), uint64_t(1) << 40}) {
      std::vector<double> xs = to_double(x).to_vector<double>();
      std::vector<double> y = to_double(dropout_forward(x, p, kSeed, kOffset, base)).to_vector<double>();
      for (size_t i = 0; i < xs.size(); ++i) {
        const bool keep = philox::uniform_at(kSeed, kOffset, base + i) >= float(p);
        ASSERT_EQ(y[i] != 0.0, keep) << dtype_name(dtype) << " base " << base << " element " << i;
      }
    }
  }
  // Base 0 is the default.
  Tensor x = random_tensor({257}, 10, DType::float32, 0.5, 1.5);
  EXPECT_TRUE(tensors_equal(dropout_forward(x, 0.3, kSeed, kOffset, 0), dropout_forward(x, 0.3, kSeed, kOffset)));
  EXPECT_FALSE(tensors_equal(dropout_forward(x, 0.3, kSeed, kOffset, 3), dropout_forward(x, 0.3, kSeed, kOffset)));
}

TEST(Dropout, RejectsAnElementBasePastTheStream) {
  Tensor x = random_tensor({8}, 6, DType::float32);
  expect_error_mentions([&] { dropout_forward(x, 0.1, kSeed, kOffset, UINT64_MAX - 3); },
                        {"dropout_forward", "element_base", "8 elements"});
}

using DropoutParity = CudaPathTest;

// Samples [a, b) of a batch, dropped on their own with element_base = a * (elements per sample),
// equal those samples of the whole batch's dropout, forward and backward. Per-sample sizes are
// odd (45) or a single element, so the bases 45 a and a fall anywhere inside a quad of the
// kernels' group-of-4 counter layout, and a slice may lie inside one quad.
void expect_slices_match_batch(Device device, DType dtype) {
  for (Shape shape : {Shape{7, 3, 5, 3}, Shape{9, 1}, Shape{6, 1, 1, 7, 1}}) {
    const int64_t per_sample = shape.numel() / shape[0];
    Tensor x = random_tensor(shape, 11, dtype, 0.5, 1.5).to(device);
    const double p = 0.35;
    Tensor whole = dropout_forward(x, p, kSeed, kOffset);
    Tensor whole_back = dropout_backward(x, p, kSeed + 1, kOffset);
    for (auto [a, b] : {std::pair<int64_t, int64_t>{0, 2}, {1, 4}, {2, 3}, {3, shape[0]}, {5, 6}, {1, shape[0]}}) {
      SCOPED_TRACE(shape.str() + " samples [" + std::to_string(a) + ", " + std::to_string(b) + ")");
      const uint64_t base = uint64_t(a * per_sample);
      Tensor part = dropout_forward(x.slice(a, b), p, kSeed, kOffset, base);
      EXPECT_EQ(part.device(), device);
      EXPECT_TRUE(tensors_equal(part, whole.slice(a, b)));
      EXPECT_TRUE(tensors_equal(dropout_backward(x.slice(a, b), p, kSeed + 1, kOffset, base), whole_back.slice(a, b)));
      // The same bits as the reference with that base.
      EXPECT_TRUE(tensors_equal(part, dropout_forward(x.slice(a, b).to(Device::cpu()), p, kSeed, kOffset, base)));
    }
  }
}

TEST(Dropout, SliceOfBatchWithElementBaseEqualsBatch) {
  for (DType dtype : {DType::float32, DType::float64}) expect_slices_match_batch(Device::cpu(), dtype);
}

TEST_P(DropoutParity, SliceOfBatchWithElementBaseEqualsBatch) { expect_slices_match_batch(device(), DType::float32); }

TEST_P(DropoutParity, ElementBaseIsBitwiseTheReference) {
  // A large tensor with a base not a multiple of 4, so grid-striding and partial quads meet.
  Tensor x = random_tensor({100003}, 12, DType::float32, -2, 2);
  for (uint64_t base : {uint64_t(1), uint64_t(2), uint64_t(4095), (uint64_t(1) << 33) + 3}) {
    Tensor y = dropout_forward(x.to(device()), 0.2, kSeed, kOffset, base);
    EXPECT_TRUE(tensors_equal(y, dropout_forward(x, 0.2, kSeed, kOffset, base))) << "base " << base;
  }
}

// Same mask and same float32 values on the reference, the executor and the GPU: bitwise.
TEST_P(DropoutParity, BitwiseEqualToReference) {
  for (Shape shape : {Shape{1}, Shape{3, 7, 5, 5, 3}, Shape{2, 25, 16, 16, 8}, Shape{5, 3}}) {
    Tensor x = random_tensor(shape, 8, DType::float32, -2, 2);
    for (double p : {0.0, 0.1, 0.5}) {
      Tensor y = dropout_forward(x.to(device()), p, kSeed, kOffset);
      EXPECT_EQ(y.device(), device());
      EXPECT_TRUE(tensors_equal(y, dropout_forward(x, p, kSeed, kOffset))) << shape.str() << " p " << p;
      Tensor dx = dropout_backward(x.to(device()), p, kSeed + 5, kOffset);
      EXPECT_TRUE(tensors_equal(dx, dropout_backward(x, p, kSeed + 5, kOffset))) << shape.str() << " p " << p;
    }
  }
}

// bfloat16 (mixed precision's conv operand): the float32 dropout of the widened values, rounded
// once, on every path: bitwise cast(dropout(float32 x), bf16), the mask included (a kernel that
// scaled in bf16, or kept a different element, would differ).
void expect_bf16_is_rounded_float(Device device) {
  for (Shape shape : {Shape{1}, Shape{3, 7, 5, 5, 3}, Shape{2, 25, 16, 16, 8}}) {
    Tensor x = cast(random_tensor(shape, 9, DType::float32, -2, 2), DType::bfloat16);
    const Tensor x32 = cast(x, DType::float32);
    for (double p : {0.1, 0.3}) {
      Tensor y = dropout_forward(x.to(device), p, kSeed, kOffset, 5);
      ASSERT_EQ(y.dtype(), DType::bfloat16);
      EXPECT_EQ(y.device(), device);
      EXPECT_TRUE(tensors_equal(y, cast(dropout_forward(x32, p, kSeed, kOffset, 5), DType::bfloat16)))
          << shape.str() << " p " << p;
      Tensor dx = dropout_backward(x.to(device), p, kSeed + 5, kOffset);
      EXPECT_TRUE(tensors_equal(dx, cast(dropout_backward(x32, p, kSeed + 5, kOffset), DType::bfloat16)))
          << shape.str() << " p " << p;
    }
  }
}

TEST(Dropout, Bf16IsTheRoundedFloatDropoutOnReference) { expect_bf16_is_rounded_float(Device::cpu()); }

TEST_P(DropoutParity, Bf16IsTheRoundedFloatDropout) { expect_bf16_is_rounded_float(device()); }

TEST_P(DropoutParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4}, 1, DType::float64).to(device());
  EXPECT_THROW(dropout_forward(x, 0.1, kSeed, kOffset), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(DropoutParity);

}  // namespace
}  // namespace ctsr::test
