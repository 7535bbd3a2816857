// Mean squared error and mean absolute error (L1): known values (L1 with exact ties, whose
// gradient is 0), float64 gradient checks of both inputs (L1 away from its kink), float32
// against float64 references, CUDA-path parity at awkward sizes (1 element, a prime count past
// one block, the UNet's latent batch; the L1 gradient bit for bit), bitwise determinism of the
// two-pass reduction (and its independence from the executor's thread order), the pred-only
// backward against the full one, and the error messages for bad inputs.
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

// Gradient check of both inputs of a pair loss.
void expect_loss_gradcheck(const std::string& name, const Tensor& pred, const Tensor& target,
                           Tensor (*loss)(const Tensor&, const Tensor&),
                           PairLossGradients (*backward)(const Tensor&, const Tensor&, const Tensor&)) {
  expect_gradcheck(
      name, {pred, target}, [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{loss(in[0], in[1])}; },
      [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        PairLossGradients g = backward(in[0], in[1], dy[0]);
        return std::vector<Tensor>{g.dpred, g.dtarget};
      });
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
  expect_loss_gradcheck("mse_loss", pred, target, mse_loss, mse_loss_backward);
}

TEST(MseLoss, ReferenceGradcheckSingleElement) {
  Tensor pred = random_tensor({1}, 13, DType::float64, -2.0, 2.0);
  Tensor target = random_tensor({1}, 14, DType::float64, -2.0, 2.0);
  expect_loss_gradcheck("mse_loss 1 element", pred, target, mse_loss, mse_loss_backward);
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

// ---- L1 ----------------------------------------------------------------------------------------

// pred and target = pred + offset, |offset| in [margin, 1] with random signs: no element within
// `margin` of the kink, so central differences with a small step see a linear function.
std::pair<Tensor, Tensor> away_from_kink(const Shape& shape, uint64_t seed, DType dtype, double margin) {
  Tensor pred = random_tensor(shape, seed, DType::float64, -2.0, 2.0);
  Tensor u = random_tensor(shape, seed + 1, DType::float64, -1.0, 1.0);
  std::vector<double> p = pred.to_vector<double>(), o = u.to_vector<double>(), t(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double magnitude = margin + (1.0 - margin) * std::fabs(o[i]);
    t[i] = p[i] + (o[i] < 0 ? -magnitude : magnitude);
  }
  Tensor target = Tensor::from_vector<double>(t, shape);
  if (dtype == DType::float32) return {to_float(pred), to_float(target)};
  return {pred, target};
}

TEST(L1Loss, ReferenceKnownValuesWithTies) {
  for (DType dtype : {DType::float64, DType::float32}) {
    Tensor pred = to_double(Tensor::from_vector<float>({1.0f, 2.0f, 3.0f, -1.5f, 0.25f}, {5}));
    Tensor target = to_double(Tensor::from_vector<float>({0.0f, 2.0f, 1.0f, 0.5f, 0.25f}, {5}));
    if (dtype == DType::float32) pred = to_float(pred), target = to_float(target);
    // (1 + 0 + 2 + 2 + 0) / 5
    EXPECT_DOUBLE_EQ(to_double(l1_loss(pred, target)).to_vector<double>()[0], 1.0) << dtype_name(dtype);
    L1LossGradients g = l1_loss_backward(pred, target, scalar(3.0, dtype));
    // sign(pred - target) * 3 / 5; the ties (elements 1 and 4) get 0.
    const double s = dtype == DType::float64 ? 0.6 : double(0.6f);
    const std::vector<double> expected = {s, 0.0, s, -s, 0.0};
    const std::vector<double> dpred = to_double(g.dpred).to_vector<double>();
    const std::vector<double> dtarget = to_double(g.dtarget).to_vector<double>();
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(dpred[i], expected[i]) << dtype_name(dtype) << " " << i;
      EXPECT_EQ(dtarget[i], -expected[i]) << dtype_name(dtype) << " " << i;
    }
  }
}

TEST(L1Loss, NaNGivesANaNLossAndNoGradient) {
  Tensor pred = Tensor::from_vector<float>({1.0f, std::nanf(""), 3.0f}, {3});
  Tensor target = Tensor::from_vector<float>({0.0f, 1.0f, 4.0f}, {3});
  EXPECT_TRUE(std::isnan(l1_loss(pred, target).to_vector<float>()[0]));
  // torch's sign(NaN) is 0: the NaN element's gradient is 0, the others are unaffected.
  const std::vector<float> g = l1_loss_backward_pred(pred, target, scalar(1.5, DType::float32)).to_vector<float>();
  EXPECT_EQ(g, (std::vector<float>{0.5f, 0.0f, -0.5f}));
}

TEST(L1Loss, ReferenceGradcheckAwayFromTheKink) {
  for (Shape shape : {Shape{3, 5, 7}, Shape{1}}) {
    auto [pred, target] = away_from_kink(shape, 31, DType::float64, 0.05);
    expect_loss_gradcheck("l1_loss " + shape.str(), pred, target, l1_loss, l1_loss_backward);
  }
}

TEST(L1Loss, FloatAndDoubleReferencesAgree) {
  Tensor pred = random_tensor({4, 25, 16, 16}, 5, DType::float32, -3, 3);
  Tensor target = random_tensor({4, 25, 16, 16}, 6, DType::float32, -3, 3);
  EXPECT_TENSORS_CLOSE(l1_loss(pred, target), l1_loss(to_double(pred), to_double(target)), 1e-6, 0);
  L1LossGradients f = l1_loss_backward(pred, target, scalar(0.7, DType::float32));
  L1LossGradients d = l1_loss_backward(to_double(pred), to_double(target), scalar(0.7, DType::float64));
  // One rounding of the scale: 0.7 / n in float32 against float64.
  EXPECT_TENSORS_CLOSE(f.dpred, d.dpred, 1e-7, 0);
  EXPECT_TENSORS_CLOSE(f.dtarget, d.dtarget, 1e-7, 0);
}

TEST(L1Loss, RejectsBadInputs) {
  Tensor pred = random_tensor({4, 3}, 1);
  expect_error_mentions([&] { l1_loss(pred, random_tensor({3, 4}, 2)); }, {"l1_loss", "target", "[3, 4]", "[4, 3]"});
  expect_error_mentions([&] { l1_loss_backward(pred, pred, random_tensor({2}, 3)); },
                        {"l1_loss_backward dloss", "expected [1]"});
  expect_error_mentions([&] { l1_loss_backward_pred(pred, pred, scalar(1.0, DType::float64)); },
                        {"l1_loss_backward_pred dloss", "expected float32"});
  expect_error_mentions([&] { l1_loss(Tensor::empty({0, 3}), Tensor::empty({0, 3})); }, {"l1_loss", "no elements"});
}

TEST(PairLosses, PredOnlyBackwardIsTheFullOnesDpred) {
  for (DType dtype : {DType::float32, DType::float64}) {
    Tensor pred = random_tensor({3, 7, 11}, 41, dtype), target = random_tensor({3, 7, 11}, 42, dtype);
    Tensor dloss = scalar(-1.3, dtype);
    EXPECT_TRUE(
        tensors_equal(mse_loss_backward_pred(pred, target, dloss), mse_loss_backward(pred, target, dloss).dpred));
    EXPECT_TRUE(tensors_equal(l1_loss_backward_pred(pred, target, dloss), l1_loss_backward(pred, target, dloss).dpred));
  }
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

// The loss of a prime count of elements is the same bits on every call, and on the executor
// also with each block's threads run in reverse (a missing barrier would change it).
void expect_deterministic(Device device, Tensor (*loss)(const Tensor&, const Tensor&), uint64_t seed) {
  Tensor pred = random_tensor({100003}, seed, DType::float32, -2, 2).to(device);
  Tensor target = random_tensor({100003}, seed + 1, DType::float32, -2, 2).to(device);
  Tensor first = loss(pred, target);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(tensors_equal(loss(pred, target), first));
  if (device.kind == DeviceKind::cuda_on_cpu) {
    struct RestoreOrder {
      ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
    } restore;
    cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
    EXPECT_TRUE(tensors_equal(loss(pred, target), first));
  }
}

TEST_P(MseLossParity, ReductionIsDeterministic) { expect_deterministic(device(), mse_loss, 21); }

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

using L1LossParity = CudaPathTest;

// The sizes of the MSE parity test; every seventh target element equals pred exactly (a tie,
// gradient 0 on every path).
TEST_P(L1LossParity, ForwardAndBackwardMatchReference) {
  uint64_t seed = 200;
  for (Shape shape : {Shape{1}, Shape{257}, Shape{100003}, Shape{3, 8, 25, 16, 16}, Shape{32, 25, 16, 16, 4}}) {
    SCOPED_TRACE(shape.str());
    Tensor pred = random_tensor(shape, ++seed, DType::float32, -2, 3);
    std::vector<float> t = random_tensor(shape, ++seed, DType::float32, -2, 2).to_vector<float>();
    const std::vector<float> p = pred.to_vector<float>();
    for (size_t i = 0; i < t.size(); i += 7) t[i] = p[i];
    Tensor target = Tensor::from_vector<float>(t, shape);
    Tensor dloss = scalar(-0.37, DType::float32);
    Tensor loss = l1_loss(pred.to(device()), target.to(device()));
    EXPECT_EQ(loss.device(), device());
    // Float32 partial sums of |d| against the float64 reference, as for the MSE.
    EXPECT_TENSORS_CLOSE(loss, l1_loss(to_double(pred), to_double(target)), 2e-6, 0);
    L1LossGradients g = l1_loss_backward(pred.to(device()), target.to(device()), dloss.to(device()));
    L1LossGradients r = l1_loss_backward(pred, target, dloss);
    EXPECT_TRUE(tensors_equal(g.dpred, r.dpred));
    EXPECT_TRUE(tensors_equal(g.dtarget, r.dtarget));
    EXPECT_TRUE(tensors_equal(l1_loss_backward_pred(pred.to(device()), target.to(device()), dloss.to(device())),
                              r.dpred));
    EXPECT_TRUE(tensors_equal(mse_loss_backward_pred(pred.to(device()), target.to(device()), dloss.to(device())),
                              mse_loss_backward(pred.to(device()), target.to(device()), dloss.to(device())).dpred));
  }
}

TEST_P(L1LossParity, ReductionIsDeterministic) { expect_deterministic(device(), l1_loss, 23); }

TEST_P(L1LossParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({4}, 1, DType::float64).to(device());
  expect_error_mentions([&] { l1_loss(x, x); }, {"l1_loss (CUDA) pred"});
}

CTSR_INSTANTIATE_CUDA_PATHS(L1LossParity);

}  // namespace
}  // namespace ctsr::test
