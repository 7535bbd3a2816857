// SiLU: reference gradient check in float64, and CUDA-path parity with the reference.
#include "kernels/activation.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

TEST(Silu, ReferenceGradcheck) {
  Tensor x = random_tensor({3, 5, 7}, 11, DType::float64, -4.0, 4.0);
  expect_gradcheck(
      "silu", {x}, [](const std::vector<Tensor>& in) { return std::vector<Tensor>{silu_forward(in[0])}; },
      [](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{silu_backward(in[0], dy[0])};
      });
}

TEST(Silu, ReferenceKnownValues) {
  Tensor x = Tensor::from_vector<double>({0.0, 1.0, -1.0, 20.0, -20.0}, {5});
  std::vector<double> y = silu_forward(x).to_vector<double>();
  EXPECT_DOUBLE_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.7310585786300049, 1e-15);
  EXPECT_NEAR(y[2], -0.2689414213699951, 1e-15);
  EXPECT_NEAR(y[3], 20.0, 1e-7);
  EXPECT_NEAR(y[4], -20.0 * 2.0611536181902037e-09, 1e-20);
}

TEST(Silu, FloatAndDoubleReferencesAgree) {
  Tensor x = random_tensor({25, 16, 16}, 3, DType::float32, -6, 6);
  EXPECT_TENSORS_CLOSE(silu_forward(x), silu_forward(to_double(x)), 1e-6, 1e-7);
}

using SiluParity = CudaPathTest;

TEST_P(SiluParity, ForwardAndBackwardMatchReference) {
  for (Shape shape : {Shape{1}, Shape{13, 8, 8}, Shape{3, 25, 16, 16, 5}}) {
    Tensor x = random_tensor(shape, 5, DType::float32, -6, 6);
    Tensor dy = random_tensor(shape, 6, DType::float32);
    Tensor y = silu_forward(x.to(device()));
    Tensor dx = silu_backward(x.to(device()), dy.to(device()));
    EXPECT_EQ(y.device(), device());
    EXPECT_TENSORS_CLOSE(y, silu_forward(x), 1e-6, 1e-6) << shape.str();
    EXPECT_TENSORS_CLOSE(dx, silu_backward(x, dy), 1e-6, 1e-6) << shape.str();
  }
}

TEST_P(SiluParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4}, 1, DType::float64).to(device());
  EXPECT_THROW(silu_forward(x), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(SiluParity);

TEST(Silu, BackwardRejectsMismatchedShapes) {
  Tensor x = random_tensor({4, 3}, 1);
  Tensor dy = random_tensor({3, 4}, 2);
  try {
    silu_backward(x, dy);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 3]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ctsr::test
