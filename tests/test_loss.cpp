// Mean squared error: known values, float64 gradient check of both inputs, float32 against
// float64 references, CUDA-path parity at awkward sizes (1 element, a prime count past one
// block, the UNet's latent batch), bitwise determinism of the two-pass reduction (and its
// independence from the executor's thread order), and the error messages for bad inputs.
#include <cmath>
#include <string>

#include "kernels/loss.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

Tensor scalar(double v, DType dtype, Device device = Device::cpu()) {
  Tensor t = dtype == DType::float64 ? Tensor::from_vector<double>({v}, {1})
                                     : Tensor::from_vector<float>({float(v)}, {1});
  return t.to(device);
}

TEST(MseLoss, ReferenceKnownValues) {
  Tensor pred = Tensor::from_vector<double>({1.0, 2.0, 3.0, -1.5}, {2, 2});
  Tensor target = Tensor::from_vector<double>({0.0, 0.5, 1.0, 0.5}, {2, 2});
  // (1 + 2.25 + 4 + 4) / 4
  EXPECT_DOUBLE_EQ(mse_loss(pred, target).to_vector<double>()[0], 11.25 / 4);
  MseLossGradients g = mse_loss_backward(pred, target, scalar(3.0, DType::float64));
  // 2 * 3 / 4 * (pred - target)
  const std::vector<double> expected = {1.5, 2.25, 3.0, -3.0};
  const std::vector<double> dpred = g.dpred.to_vector<double>(), dtarget = g.dtarget.to_vector<double>();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_DOUBLE_EQ(dpred[i], expected[i]) << i;
    EXPECT_DOUBLE_EQ(dtarget[i], -expected[i]) << i;
  }
}

TEST(MseLoss, ReferenceGradcheck) {
  Tensor pred = random_tensor({3, 5, 7}, 11, DType::float64, -2.0, 2.0);
  Tensor target = random_tensor({3, 5, 7}, 12, DType::float64, -2.0, 2.0);
  expect_gradcheck(
      "mse_loss", {pred, target},
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{mse_loss(in[0], in[1])}; },
      [](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        MseLossGradients g = mse_loss_backward(in[0], in[1], dy[0]);
        return std::vector<Tensor>{g.dpred, g.dtarget};
      });
}

TEST(MseLoss, ReferenceGradcheckSingleElement) {
  Tensor pred = random_tensor({1}, 13, DType::float64, -2.0, 2.0);
  Tensor target = random_tensor({1}, 14, DType::float64, -2.0, 2.0);
  expect_gradcheck(
      "mse_loss 1 element", {pred, target},
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{mse_loss(in[0], in[1])}; },
      [](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        MseLossGradients g = mse_loss_backward(in[0], in[1], dy[0]);
        return std::vector<Tensor>{g.dpred, g.dtarget};
      });
}

TEST(MseLoss, FloatAndDoubleReferencesAgree) {
  Tensor pred = random_tensor({4, 25, 16, 16}, 3, DType::float32, -3, 3);
  Tensor target = random_tensor({4, 25, 16, 16}, 4, DType::float32, -3, 3);
  EXPECT_TENSORS_CLOSE(mse_loss(pred, target), mse_loss(to_double(pred), to_double(target)), 1e-6, 0);
  MseLossGradients f = mse_loss_backward(pred, target, scalar(0.7, DType::float32));
  MseLossGradients d = mse_loss_backward(to_double(pred), to_double(target), scalar(0.7, DType::float64));
  EXPECT_TENSORS_CLOSE(f.dpred, d.dpred, 1e-6, 1e-12);
  EXPECT_TENSORS_CLOSE(f.dtarget, d.dtarget, 1e-6, 1e-12);
}

TEST(MseLoss, RejectsBadInputs) {
  Tensor pred = random_tensor({4, 3}, 1), target = random_tensor({3, 4}, 2);
  std::string m = error_message([&] { mse_loss(pred, target); });
  EXPECT_NE(m.find("target"), std::string::npos) << m;
  EXPECT_NE(m.find("[3, 4]"), std::string::npos) << m;
  EXPECT_NE(m.find("[4, 3]"), std::string::npos) << m;

  m = error_message([&] { mse_loss(pred, random_tensor({4, 3}, 2, DType::float64)); });
  EXPECT_NE(m.find("target is float64"), std::string::npos) << m;

  m = error_message([&] { mse_loss(Tensor::empty({0, 3}), Tensor::empty({0, 3})); });
  EXPECT_NE(m.find("no elements"), std::string::npos) << m;

  m = error_message([&] { mse_loss(pred, Tensor()); });
  EXPECT_NE(m.find("target"), std::string::npos) << m;

  m = error_message([&] { mse_loss_backward(pred, pred, random_tensor({2}, 3)); });
  EXPECT_NE(m.find("dloss"), std::string::npos) << m;
  EXPECT_NE(m.find("expected [1]"), std::string::npos) << m;

  m = error_message([&] { mse_loss_backward(pred, pred, scalar(1.0, DType::float64)); });
  EXPECT_NE(m.find("dloss"), std::string::npos) << m;
  EXPECT_NE(m.find("expected float32"), std::string::npos) << m;
}

// ---- CUDA paths -------------------------------------------------------------------------------

using MseLossParity = CudaPathTest;

// 1 element (one block, one live thread), 257 (a warp and a bit), a prime past one pass-1 block
// of 2048, and the UNet's latent batch (819200 elements: the full 1024 partials, grid-stride).
TEST_P(MseLossParity, ForwardAndBackwardMatchReference) {
  uint64_t seed = 100;
  for (Shape shape : {Shape{1}, Shape{257}, Shape{100003}, Shape{3, 8, 25, 16, 16}, Shape{32, 25, 16, 16, 4}}) {
    SCOPED_TRACE(shape.str());
    Tensor pred = random_tensor(shape, ++seed, DType::float32, -2, 3);
    Tensor target = random_tensor(shape, ++seed, DType::float32, -2, 2);
    Tensor dloss = scalar(0.37, DType::float32);
    Tensor loss = mse_loss(pred.to(device()), target.to(device()));
    EXPECT_EQ(loss.device(), device());
    // Float32 partial sums against the float64 reference (see loss.cu): observed <= 1.8e-8
    // relative on the executor at 819200 elements; 2e-6 leaves room for the GPU's FMAs.
    EXPECT_TENSORS_CLOSE(loss, mse_loss(to_double(pred), to_double(target)), 2e-6, 0);
    MseLossGradients g = mse_loss_backward(pred.to(device()), target.to(device()), dloss.to(device()));
    MseLossGradients r = mse_loss_backward(to_double(pred), to_double(target), to_double(dloss));
    // Three float32 roundings (scale, difference, product) per element.
    EXPECT_TENSORS_CLOSE(g.dpred, r.dpred, 1e-6, 1e-12);
    EXPECT_TENSORS_CLOSE(g.dtarget, r.dtarget, 1e-6, 1e-12);
  }
}

TEST_P(MseLossParity, ReductionIsDeterministic) {
  Tensor pred = random_tensor({100003}, 21, DType::float32, -2, 2).to(device());
  Tensor target = random_tensor({100003}, 22, DType::float32, -2, 2).to(device());
  Tensor first = mse_loss(pred, target);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(tensors_equal(mse_loss(pred, target), first));
  if (device().kind == DeviceKind::cuda_on_cpu) {
    // Running each block's threads in reverse must not change a bit (a missing barrier would).
    struct RestoreOrder {
      ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
    } restore;
    cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
    EXPECT_TRUE(tensors_equal(mse_loss(pred, target), first));
  }
}

TEST_P(MseLossParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4}, 1, DType::float64).to(device());
  EXPECT_THROW(mse_loss(x, x), Error);
}

TEST_P(MseLossParity, RejectsTensorsOnDifferentDevices) {
  Tensor x = random_tensor({4}, 1);
  std::string m = error_message([&] { mse_loss(x.to(device()), x); });
  EXPECT_NE(m.find("target"), std::string::npos) << m;
  m = error_message([&] { mse_loss_backward(x.to(device()), x.to(device()), scalar(1.0, DType::float32)); });
  EXPECT_NE(m.find("dloss"), std::string::npos) << m;
}

CTSR_INSTANTIATE_CUDA_PATHS(MseLossParity);

}  // namespace
}  // namespace ctsr::test
