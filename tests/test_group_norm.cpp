// GroupNorm and the fused GroupNorm + SiLU: reference gradient checks in float64 (x, gamma,
// beta; groups 1, C and in between; eps 1e-5 and 1e-6; channel counts that are not multiples
// of 32; batch 1 and 3), CUDA-path parity with the reference at the UNet's 25x16x16 and 13x8x8
// grids, fused == unfused composition on every path, accumulation into dgamma / dbeta,
// determinism, the variance's behaviour when |mean| >> std, and a bfloat16 y.
#include <cmath>

#include "kernels/activation.h"
#include "kernels/copy.h"
#include "kernels/group_norm.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

struct Case {
  Shape shape;
  int64_t groups;
  double eps;
};

std::string case_str(const Case& c) {
  return c.shape.str() + " groups " + std::to_string(c.groups) + " eps " + std::to_string(c.eps);
}

// Affine parameters away from the trivial (1, 0).
Tensor gamma_for(int64_t channels, uint64_t seed, DType dtype) {
  return random_tensor({channels}, seed, dtype, 0.5, 1.5);
}
Tensor beta_for(int64_t channels, uint64_t seed, DType dtype) {
  return random_tensor({channels}, seed, dtype, -0.5, 0.5);
}

// The gradcheck of one op (fused or not) over inputs {x, gamma, beta}.
void gradcheck_case(const Case& c, bool silu, uint64_t seed) {
  const int64_t channels = c.shape[-1];
  Tensor x = random_tensor(c.shape, seed, DType::float64, -2.0, 2.0);
  Tensor gamma = gamma_for(channels, seed + 1, DType::float64);
  Tensor beta = beta_for(channels, seed + 2, DType::float64);
  auto forward = [&](const std::vector<Tensor>& in) {
    GroupNormOutput out = silu ? group_norm_silu_forward(in[0], in[1], in[2], c.groups, c.eps)
                               : group_norm_forward(in[0], in[1], in[2], c.groups, c.eps);
    return std::vector<Tensor>{out.y};
  };
  auto backward = [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
    GroupNormOutput out = silu ? group_norm_silu_forward(in[0], in[1], in[2], c.groups, c.eps)
                               : group_norm_forward(in[0], in[1], in[2], c.groups, c.eps);
    Tensor dgamma, dbeta;  // undefined: created by backward
    Tensor dx = silu ? group_norm_silu_backward(in[0], in[1], in[2], out.mean, out.rstd, dy[0], c.groups, dgamma, dbeta)
                     : group_norm_backward(in[0], in[1], out.mean, out.rstd, dy[0], c.groups, dgamma, dbeta);
    return std::vector<Tensor>{dx, dgamma, dbeta};
  };
  expect_gradcheck((silu ? "group_norm_silu " : "group_norm ") + case_str(c), {x, gamma, beta}, forward, backward,
                   1e-6);
}

const std::vector<Case>& gradcheck_cases() {
  static const std::vector<Case> cases = {
      {{1, 3, 2, 2, 12}, 4, 1e-5},   // batch 1, C = 12 with G = 4
      {{3, 2, 2, 3, 12}, 1, 1e-6},   // groups = 1
      {{3, 2, 2, 2, 12}, 12, 1e-5},  // groups = C
      {{1, 2, 2, 1, 48}, 24, 1e-6},  // the VQ-AE's GroupNorm(24) on 48 channels
      {{3, 2, 3, 2, 6}, 3, 1e-6},    // C = 6: not a multiple of 4 or 32
      {{2, 3, 5}, 5, 1e-5},          // [N, S, C] with a single middle dim
  };
  return cases;
}

TEST(GroupNorm, ReferenceGradcheck) {
  uint64_t seed = 100;
  for (const Case& c : gradcheck_cases()) gradcheck_case(c, false, seed += 10);
}

TEST(GroupNormSilu, ReferenceGradcheck) {
  uint64_t seed = 200;
  for (const Case& c : gradcheck_cases()) gradcheck_case(c, true, seed += 10);
}

TEST(GroupNorm, ReferenceKnownValues) {
  // One group of 4 values {1, 2, 3, 6}: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 6}, {1, 2, 2});
  Tensor gamma = Tensor::from_vector<double>({2, 1}, {2});
  Tensor beta = Tensor::from_vector<double>({0, 10}, {2});
  GroupNormOutput out = group_norm_forward(x, gamma, beta, 1, 0.5);
  const double r = 1.0 / std::sqrt(3.5 + 0.5);  // = 0.5
  EXPECT_DOUBLE_EQ(out.mean.to_vector<double>()[0], 3.0);
  EXPECT_DOUBLE_EQ(out.rstd.to_vector<double>()[0], r);
  std::vector<double> y = out.y.to_vector<double>();
  EXPECT_DOUBLE_EQ(y[0], 2 * (1 - 3) * r);       // channel 0: gamma 2, beta 0
  EXPECT_DOUBLE_EQ(y[1], 1 * (2 - 3) * r + 10);  // channel 1: gamma 1, beta 10
  EXPECT_DOUBLE_EQ(y[2], 2 * (3 - 3) * r);
  EXPECT_DOUBLE_EQ(y[3], 1 * (6 - 3) * r + 10);
}

TEST(GroupNorm, FloatAndDoubleReferencesAgree) {
  Tensor x = random_tensor({2, 13, 8, 8, 48}, 3, DType::float32, -3, 3);
  Tensor gamma = gamma_for(48, 4, DType::float32), beta = beta_for(48, 5, DType::float32);
  GroupNormOutput f = group_norm_silu_forward(x, gamma, beta, 24, 1e-6);
  GroupNormOutput d = group_norm_silu_forward(to_double(x), to_double(gamma), to_double(beta), 24, 1e-6);
  EXPECT_TENSORS_CLOSE(f.y, d.y, 1e-6, 1e-6);
  EXPECT_TENSORS_CLOSE(f.rstd, d.rstd, 1e-6, 0);
}

TEST(GroupNorm, BackwardAccumulatesIntoParameterGradients) {
  Tensor x = random_tensor({2, 3, 2, 2, 8}, 1, DType::float64);
  Tensor dy = random_tensor(x.shape(), 2, DType::float64);
  Tensor gamma = gamma_for(8, 3, DType::float64), beta = beta_for(8, 4, DType::float64);
  for (bool silu : {false, true}) {
    GroupNormOutput out =
        silu ? group_norm_silu_forward(x, gamma, beta, 4, 1e-5) : group_norm_forward(x, gamma, beta, 4, 1e-5);
    auto run = [&](Tensor& dgamma, Tensor& dbeta) {
      return silu ? group_norm_silu_backward(x, gamma, beta, out.mean, out.rstd, dy, 4, dgamma, dbeta)
                  : group_norm_backward(x, gamma, out.mean, out.rstd, dy, 4, dgamma, dbeta);
    };
    Tensor once_g, once_b;
    run(once_g, once_b);
    Tensor start_g = random_tensor({8}, 5, DType::float64), start_b = random_tensor({8}, 6, DType::float64);
    Tensor acc_g = start_g.clone(), acc_b = start_b.clone();
    run(acc_g, acc_b);
    run(acc_g, acc_b);
    std::vector<double> og = once_g.to_vector<double>(), ob = once_b.to_vector<double>();
    std::vector<double> sg = start_g.to_vector<double>(), sb = start_b.to_vector<double>();
    std::vector<double> ag = acc_g.to_vector<double>(), ab = acc_b.to_vector<double>();
    for (size_t c = 0; c < 8; ++c) {
      EXPECT_NEAR(ag[c], sg[c] + 2 * og[c], 1e-12) << "silu " << silu << " channel " << c;
      EXPECT_NEAR(ab[c], sb[c] + 2 * ob[c], 1e-12) << "silu " << silu << " channel " << c;
    }
  }
}

TEST(GroupNorm, RejectsBadArguments) {
  Tensor x = random_tensor({1, 2, 2, 2, 48}, 1);
  Tensor gamma = gamma_for(48, 2, DType::float32), beta = beta_for(48, 3, DType::float32);
  try {
    group_norm_forward(x, gamma, beta, 32, 1e-5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("48 channels"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("32 groups"), std::string::npos) << e.what();
  }
  EXPECT_THROW(group_norm_forward(x, random_tensor({47}, 1), beta, 24, 1e-5), Error);
  EXPECT_THROW(group_norm_forward(x, gamma, beta, 24, -1.0), Error);
  GroupNormOutput out = group_norm_forward(x, gamma, beta, 24, 1e-5);
  Tensor bad_dgamma = Tensor::zeros({24}), dbeta;
  EXPECT_THROW(group_norm_backward(x, gamma, out.mean, out.rstd, x, 24, bad_dgamma, dbeta), Error);
  Tensor dgamma;
  EXPECT_THROW(group_norm_backward(x, gamma, out.mean, out.rstd, random_tensor({1, 2, 2, 4, 24}, 1), 24, dgamma, dbeta),
               Error);
  EXPECT_THROW(group_norm_backward(x, gamma, out.mean, out.rstd, x, 12, dgamma, dbeta), Error);  // mean is [1, 24]
}

// ---- CUDA paths -------------------------------------------------------------------------------

struct ParityCase {
  Shape shape;
  int64_t groups;
  double eps;
};

// The UNet's grids (25x16x16 latent, 13x8x8 after one Down), the VQ-AE's 48 / 24, narrow
// groups, C not a multiple of 4 (scalar loads), and C > 512 (several channel tiles, the last
// one partial).
const std::vector<ParityCase>& parity_cases() {
  static const std::vector<ParityCase> cases = {
      {{2, 25, 16, 16, 32}, 8, 1e-5},   {{3, 13, 8, 8, 48}, 24, 1e-6}, {{1, 13, 8, 8, 12}, 4, 1e-5},
      {{3, 13, 8, 8, 12}, 12, 1e-6},    {{1, 25, 16, 16, 6}, 1, 1e-5}, {{2, 4, 4, 4, 640}, 32, 1e-5},
      {{1, 3, 4, 4, 1028}, 4, 1e-5},    {{3, 7, 7, 7, 9}, 3, 1e-6},
  };
  return cases;
}

struct Reference {
  GroupNormOutput fwd;
  Tensor dx, dgamma, dbeta;
};

// float64 reference from the float32 inputs: forward, then backward with its own mean / rstd.
Reference reference(const ParityCase& c, bool silu, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& dy) {
  Reference r;
  Tensor xd = to_double(x), gd = to_double(gamma), bd = to_double(beta), dyd = to_double(dy);
  r.fwd = silu ? group_norm_silu_forward(xd, gd, bd, c.groups, c.eps) : group_norm_forward(xd, gd, bd, c.groups, c.eps);
  r.dx = silu ? group_norm_silu_backward(xd, gd, bd, r.fwd.mean, r.fwd.rstd, dyd, c.groups, r.dgamma, r.dbeta)
              : group_norm_backward(xd, gd, r.fwd.mean, r.fwd.rstd, dyd, c.groups, r.dgamma, r.dbeta);
  return r;
}

using GroupNormParity = CudaPathTest;

TEST_P(GroupNormParity, ForwardAndBackwardMatchReference) {
  uint64_t seed = 300;
  for (const ParityCase& c : parity_cases()) {
    const int64_t channels = c.shape[-1];
    Tensor x = random_tensor(c.shape, ++seed, DType::float32, -2.0, 3.0);
    Tensor dy = random_tensor(c.shape, ++seed, DType::float32);
    Tensor gamma = gamma_for(channels, ++seed, DType::float32), beta = beta_for(channels, ++seed, DType::float32);
    for (bool silu : {false, true}) {
      SCOPED_TRACE(case_str({c.shape, c.groups, c.eps}) + (silu ? " silu" : ""));
      const Reference ref = reference(c, silu, x, gamma, beta, dy);
      Tensor xg = x.to(device()), gg = gamma.to(device()), bg = beta.to(device()), dyg = dy.to(device());
      GroupNormOutput out = silu ? group_norm_silu_forward(xg, gg, bg, c.groups, c.eps)
                                 : group_norm_forward(xg, gg, bg, c.groups, c.eps);
      EXPECT_EQ(out.y.device(), device());
      EXPECT_TENSORS_CLOSE(out.mean, ref.fwd.mean, 1e-5, 1e-6);
      EXPECT_TENSORS_CLOSE(out.rstd, ref.fwd.rstd, 1e-5, 0);
      EXPECT_TENSORS_CLOSE(out.y, ref.fwd.y, 1e-5, 2e-6);
      Tensor dgamma, dbeta;
      Tensor dx = silu ? group_norm_silu_backward(xg, gg, bg, out.mean, out.rstd, dyg, c.groups, dgamma, dbeta)
                       : group_norm_backward(xg, gg, out.mean, out.rstd, dyg, c.groups, dgamma, dbeta);
      EXPECT_TENSORS_CLOSE(dx, ref.dx, 1e-4, 1e-5);
      // Sums over N * S values: tolerances scale with the sum's size (a few hundred here).
      EXPECT_TENSORS_CLOSE(dgamma, ref.dgamma, 1e-4, 1e-3);
      EXPECT_TENSORS_CLOSE(dbeta, ref.dbeta, 1e-4, 1e-3);
    }
  }
}

// Fused == unfused composition: silu(group_norm(x)) forward, and group_norm_backward of
// silu_backward for backward, on this path.
void expect_fused_matches_unfused(Device device, DType dtype, double rtol, double atol) {
  const Shape shape{3, 13, 8, 8, 48};
  const int64_t groups = 24;
  Tensor x = random_tensor(shape, 41, dtype, -2.0, 3.0).to(device);
  Tensor dy = random_tensor(shape, 42, dtype).to(device);
  Tensor gamma = gamma_for(48, 43, dtype).to(device), beta = beta_for(48, 44, dtype).to(device);
  GroupNormOutput fused = group_norm_silu_forward(x, gamma, beta, groups, 1e-6);
  GroupNormOutput plain = group_norm_forward(x, gamma, beta, groups, 1e-6);
  EXPECT_TRUE(tensors_equal(fused.mean, plain.mean));  // the statistics do not depend on the activation
  EXPECT_TRUE(tensors_equal(fused.rstd, plain.rstd));
  EXPECT_TENSORS_CLOSE(fused.y, silu_forward(plain.y), rtol, atol);

  Tensor fused_dgamma, fused_dbeta, plain_dgamma, plain_dbeta;
  Tensor fused_dx =
      group_norm_silu_backward(x, gamma, beta, fused.mean, fused.rstd, dy, groups, fused_dgamma, fused_dbeta);
  Tensor plain_dx = group_norm_backward(x, gamma, plain.mean, plain.rstd, silu_backward(plain.y, dy), groups,
                                        plain_dgamma, plain_dbeta);
  EXPECT_TENSORS_CLOSE(fused_dx, plain_dx, rtol, atol);
  EXPECT_TENSORS_CLOSE(fused_dgamma, plain_dgamma, rtol, 100 * atol);
  EXPECT_TENSORS_CLOSE(fused_dbeta, plain_dbeta, rtol, 100 * atol);
}

TEST(GroupNormSilu, FusedMatchesUnfusedOnReference) {
  expect_fused_matches_unfused(Device::cpu(), DType::float64, 1e-12, 1e-12);
  expect_fused_matches_unfused(Device::cpu(), DType::float32, 1e-5, 1e-5);
}

TEST_P(GroupNormParity, FusedMatchesUnfused) { expect_fused_matches_unfused(device(), DType::float32, 1e-5, 1e-5); }

TEST_P(GroupNormParity, DeterministicAndAccumulating) {
  const Shape shape{2, 13, 8, 8, 64};
  Tensor x = random_tensor(shape, 51, DType::float32).to(device());
  Tensor dy = random_tensor(shape, 52, DType::float32).to(device());
  Tensor gamma = gamma_for(64, 53, DType::float32).to(device()), beta = beta_for(64, 54, DType::float32).to(device());
  GroupNormOutput a = group_norm_silu_forward(x, gamma, beta, 32, 1e-5);
  GroupNormOutput b = group_norm_silu_forward(x, gamma, beta, 32, 1e-5);
  EXPECT_TRUE(tensors_equal(a.y, b.y));
  EXPECT_TRUE(tensors_equal(a.rstd, b.rstd));
  Tensor g1, b1, g2, b2;
  Tensor dx1 = group_norm_silu_backward(x, gamma, beta, a.mean, a.rstd, dy, 32, g1, b1);
  Tensor dx2 = group_norm_silu_backward(x, gamma, beta, a.mean, a.rstd, dy, 32, g2, b2);
  EXPECT_TRUE(tensors_equal(dx1, dx2));
  EXPECT_TRUE(tensors_equal(g1, g2));
  EXPECT_TRUE(tensors_equal(b1, b2));
  // A second backward into the same buffers adds the same amount again.
  group_norm_silu_backward(x, gamma, beta, a.mean, a.rstd, dy, 32, g2, b2);
  std::vector<float> once = g1.to_vector<float>(), twice = g2.to_vector<float>();
  for (size_t c = 0; c < once.size(); ++c) EXPECT_FLOAT_EQ(twice[c], 2 * once[c]) << "channel " << c;
}

// |mean| / std = 1000: E[x^2] - E[x]^2 in float would lose about a tenth of the variance here.
TEST_P(GroupNormParity, VarianceSurvivesLargeMean) {
  const Shape shape{2, 25, 16, 16, 32};
  Tensor x = random_tensor(shape, 61, DType::float32, 99.8, 100.2);  // mean 100, std ~0.115
  Tensor gamma = gamma_for(32, 62, DType::float32), beta = beta_for(32, 63, DType::float32);
  GroupNormOutput ref = group_norm_forward(to_double(x), to_double(gamma), to_double(beta), 8, 1e-5);
  GroupNormOutput out = group_norm_forward(x.to(device()), gamma.to(device()), beta.to(device()), 8, 1e-5);
  EXPECT_TENSORS_CLOSE(out.rstd, ref.rstd, 1e-4, 0);
  EXPECT_TENSORS_CLOSE(out.y, ref.y, 1e-3, 1e-3);
}

// A float32 tensor that starts 4 bytes into its storage: the kernels' 16-byte loads cannot be
// used, so the scalar path runs even though C % 4 == 0.
TEST_P(GroupNormParity, UnalignedTensorsTakeTheScalarPath) {
  const Shape shape{2, 5, 4, 4, 16};
  Tensor flat = random_tensor({shape.numel() + 1}, 71, DType::float32).to(device());
  Tensor x = flat.slice(1, shape.numel() + 1).reshape(shape);
  ASSERT_NE(reinterpret_cast<uintptr_t>(x.raw_data()) % 16, 0u);
  Tensor gamma = gamma_for(16, 72, DType::float32), beta = beta_for(16, 73, DType::float32);
  Tensor dy = random_tensor(shape, 74, DType::float32);
  const ParityCase c{shape, 4, 1e-5};
  const Reference ref = reference(c, true, x.to(Device::cpu()), gamma, beta, dy);
  GroupNormOutput out = group_norm_silu_forward(x, gamma.to(device()), beta.to(device()), 4, 1e-5);
  EXPECT_TENSORS_CLOSE(out.y, ref.fwd.y, 1e-5, 2e-6);
  Tensor dy_flat = Tensor::zeros({shape.numel() + 1}, DType::float32, device());
  Tensor dyu = dy_flat.slice(1, shape.numel() + 1).reshape(shape);
  dyu.copy_from(dy.to(device()));
  Tensor dgamma, dbeta;
  Tensor dx = group_norm_silu_backward(x, gamma.to(device()), beta.to(device()), out.mean, out.rstd, dyu, 4, dgamma,
                                       dbeta);
  EXPECT_TENSORS_CLOSE(dx, ref.dx, 1e-4, 1e-5);
  EXPECT_TENSORS_CLOSE(dgamma, ref.dgamma, 1e-4, 1e-4);
}

// On the executor, running each block's threads in reverse order must not change a bit (a
// missing barrier, or a reduction that relies on thread 0 running first, would).
TEST_P(GroupNormParity, ExecutorThreadOrderDoesNotMatter) {
  if (device().kind != DeviceKind::cuda_on_cpu) GTEST_SKIP() << "executor only";
  const Shape shape{2, 13, 8, 8, 48};
  Tensor x = random_tensor(shape, 81, DType::float32).to(device());
  Tensor dy = random_tensor(shape, 82, DType::float32).to(device());
  Tensor gamma = gamma_for(48, 83, DType::float32).to(device()), beta = beta_for(48, 84, DType::float32).to(device());
  auto run = [&] {
    GroupNormOutput out = group_norm_silu_forward(x, gamma, beta, 24, 1e-6);
    Tensor dgamma, dbeta;
    Tensor dx = group_norm_silu_backward(x, gamma, beta, out.mean, out.rstd, dy, 24, dgamma, dbeta);
    return std::vector<Tensor>{out.y, out.mean, out.rstd, dx, dgamma, dbeta};
  };
  expect_same_in_both_thread_orders(run);
}

// y stored as bfloat16 (the operand of a bf16 convolution): the float32 arithmetic of the
// float32 y, rounded once as it is stored, so on every path it equals cast(float32 y, bf16) bit
// for bit (a store that truncated, or rounded an intermediate, would not), and the statistics are
// the float32 op's. Against the float64 reference: bf16's unit roundoff 2^-8 on top of the
// float32 path's tolerance. Every parity case: vectorised (C % 4 == 0) and scalar stores.
void expect_bf16_output_is_rounded_float(Device device) {
  uint64_t seed = 900;
  for (const ParityCase& c : parity_cases()) {
    const int64_t channels = c.shape[-1];
    Tensor x = random_tensor(c.shape, ++seed, DType::float32, -2.0, 3.0);
    Tensor gamma = gamma_for(channels, ++seed, DType::float32), beta = beta_for(channels, ++seed, DType::float32);
    for (bool silu : {false, true}) {
      SCOPED_TRACE(case_str({c.shape, c.groups, c.eps}) + (silu ? " silu" : ""));
      const Tensor xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
      const Tensor ref = silu ? group_norm_silu_forward(xd, gd, bd, c.groups, c.eps).y
                              : group_norm_forward(xd, gd, bd, c.groups, c.eps).y;
      Tensor xg = x.to(device), gg = gamma.to(device), bg = beta.to(device);
      auto run = [&](std::optional<DType> y_dtype) {
        return silu ? group_norm_silu_forward(xg, gg, bg, c.groups, c.eps, y_dtype)
                    : group_norm_forward(xg, gg, bg, c.groups, c.eps, y_dtype);
      };
      const GroupNormOutput f = run(std::nullopt), h = run(DType::bfloat16);
      ASSERT_EQ(h.y.dtype(), DType::bfloat16);
      EXPECT_EQ(h.y.device(), device);
      EXPECT_EQ(h.mean.dtype(), DType::float32);
      EXPECT_TRUE(tensors_equal(h.y, cast(f.y, DType::bfloat16)));
      EXPECT_TRUE(tensors_equal(h.mean, f.mean));
      EXPECT_TRUE(tensors_equal(h.rstd, f.rstd));
      EXPECT_TENSORS_CLOSE(to_double(h.y), ref, 1.0 / 256 + 1e-5, 2e-6);
    }
  }
}

TEST(GroupNorm, Bf16OutputIsTheRoundedFloatOutputOnReference) {
  expect_bf16_output_is_rounded_float(Device::cpu());
}

TEST_P(GroupNormParity, Bf16OutputIsTheRoundedFloatOutput) { expect_bf16_output_is_rounded_float(device()); }

TEST(GroupNorm, RejectsAnOutputDtypeItCannotProduce) {
  Tensor x = random_tensor({1, 2, 2, 2, 4}, 5, DType::float32);
  Tensor gamma = gamma_for(4, 6, DType::float32), beta = beta_for(4, 7, DType::float32);
  expect_error_mentions([&] { group_norm_forward(x, gamma, beta, 2, 1e-5, DType::float64); },
                        {"group_norm_forward", "y_dtype float64", "x of dtype float32", "bfloat16 for a float32 x"});
  Tensor xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
  expect_error_mentions([&] { group_norm_silu_forward(xd, gd, bd, 2, 1e-5, DType::bfloat16); },
                        {"group_norm_silu_forward", "y_dtype bfloat16", "x of dtype float64"});
}

TEST_P(GroupNormParity, RejectsFloat64OnCudaPaths) {
  Tensor x = random_tensor({1, 2, 2, 2, 4}, 1, DType::float64).to(device());
  Tensor gamma = gamma_for(4, 2, DType::float64).to(device()), beta = beta_for(4, 3, DType::float64).to(device());
  EXPECT_THROW(group_norm_forward(x, gamma, beta, 2, 1e-5), Error);
}

CTSR_INSTANTIATE_CUDA_PATHS(GroupNormParity);

}  // namespace
}  // namespace ctsr::test
