// Multi-head attention: reference gradient checks in float64 (qkv; batch 1 and 2, 1, 5 and 17
// tokens, 1 and 2 heads, head_dim 3 to 8), the reference against an independent naive
// softmax(q k^T) v that materialises the whole score matrix (forward and backward), known values,
// float vs double reference, CUDA-path parity with the reference at head_dim 32 and 64 and 1, 7,
// 129 and 832 tokens (the VQ-AE mid-block's 8 x 13 x 8), batch 1 and 3, large logits, the
// determinism of the kernels (also under reversed executor thread order), O(N) memory on the
// CUDA path, and argument errors.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "runtime/allocator.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"
#include "tests/oracle/attention.h"

#if CTSR_MMA_MUTANTS
// kernels/attention.cu as built with a wrong fragment index (tests/CMakeLists.txt).
namespace ctsr::kernels::cuda_on_cpu_mma_mutant {
void attention_forward(const AttentionShape& shape, const Tensor& qkv, Tensor& o, Tensor& lse);
void attention_backward(const AttentionShape& shape, const Tensor& qkv, const Tensor& o, const Tensor& lse,
                        const Tensor& d_o, Tensor& d_qkv);
}  // namespace ctsr::kernels::cuda_on_cpu_mma_mutant
#endif

namespace ctsr::test {
namespace {

// Sanitizer builds (Debug, every memory access checked) run the executor and the reference
// some 50 to 100 times slower: there the largest cases keep their token counts and tile
// structure but take fewer heads or batches.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizerBuild = true;
#else
constexpr bool kSanitizerBuild = false;
#endif

struct Case {
  int64_t batch, tokens, heads, head_dim;
};

std::string case_str(const Case& c) {
  return "B " + std::to_string(c.batch) + " N " + std::to_string(c.tokens) + " heads " + std::to_string(c.heads) +
         " head_dim " + std::to_string(c.head_dim);
}

Shape qkv_shape(const Case& c) { return Shape{c.batch, c.tokens, 3 * c.heads * c.head_dim}; }
Shape out_shape(const Case& c) { return Shape{c.batch, c.tokens, c.heads * c.head_dim}; }

// Inputs in [-2, 2]: scores of a few units, so the softmax is far from uniform.
Tensor random_qkv(const Case& c, uint64_t seed, DType dtype, double range = 2.0) {
  return random_tensor(qkv_shape(c), seed, dtype, -range, range);
}

void expect_message(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message lacks \"" << part << "\": " << e.what();
  }
}

// ---- reference ----------------------------------------------------------------------------------

TEST(Attention, ReferenceGradcheck) {
  const std::vector<Case> cases = {
      {1, 1, 1, 3}, {2, 1, 2, 6}, {1, 5, 1, 4}, {2, 5, 2, 7}, {1, 17, 1, 8}, {2, 17, 2, 5}, {1, 17, 2, 3},
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    Tensor qkv = random_qkv(c, ++seed, DType::float64);
    auto forward = [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{attention_forward(in[0], c.heads).o}; };
    auto backward = [&](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
      AttentionOutput out = attention_forward(in[0], c.heads);
      return std::vector<Tensor>{attention_backward(in[0], out.o, out.lse, dy[0], c.heads)};
    };
    expect_gradcheck("attention " + case_str(c), {qkv}, forward, backward);
  }
}

TEST(Attention, ReferenceMatchesNaiveMaterialisedSoftmax) {
  uint64_t seed = 200;
  for (const Case& c : std::vector<Case>{{2, 23, 3, 5}, {1, 40, 2, 32}, {3, 9, 1, 64}}) {
    SCOPED_TRACE(case_str(c));
    Tensor qkv = random_qkv(c, ++seed, DType::float64, 3.0);
    Tensor d_o = random_tensor(out_shape(c), ++seed, DType::float64);
    const oracle::AttentionResult expected =
        oracle::attention(c.batch, c.tokens, c.heads, c.head_dim, qkv.to_vector<double>(), d_o.to_vector<double>());
    AttentionOutput out = attention_forward(qkv, c.heads);
    EXPECT_TENSORS_CLOSE(out.o, Tensor::from_vector(expected.o, out_shape(c)), 1e-12, 1e-13);
    EXPECT_TENSORS_CLOSE(out.lse, Tensor::from_vector(expected.lse, Shape{c.batch, c.heads, c.tokens}), 1e-12, 1e-13);
    Tensor d_qkv = attention_backward(qkv, out.o, out.lse, d_o, c.heads);
    EXPECT_TENSORS_CLOSE(d_qkv, Tensor::from_vector(expected.d_qkv, qkv_shape(c)), 1e-10, 1e-12);
  }
}

// With a single token the softmax is 1: o = v, lse = scale q . k, dv = dO and dq = dk = 0.
TEST(Attention, ReferenceSingleTokenKnownValues) {
  const Case c{2, 1, 2, 3};
  Tensor qkv = random_qkv(c, 300, DType::float64);
  Tensor d_o = random_tensor(out_shape(c), 301, DType::float64);
  AttentionOutput out = attention_forward(qkv, c.heads);
  const std::vector<double> x = qkv.to_vector<double>(), o = out.o.to_vector<double>(), lse = out.lse.to_vector<double>();
  const std::vector<double> g = attention_backward(qkv, out.o, out.lse, d_o, c.heads).to_vector<double>();
  const std::vector<double> dy = d_o.to_vector<double>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h) {
      double s = 0;
      for (int64_t d = 0; d < 3; ++d) {
        s += x[size_t(b * 18 + h * 3 + d)] * x[size_t(b * 18 + 6 + h * 3 + d)];
        EXPECT_DOUBLE_EQ(o[size_t(b * 6 + h * 3 + d)], x[size_t(b * 18 + 12 + h * 3 + d)]);
        EXPECT_NEAR(g[size_t(b * 18 + h * 3 + d)], 0.0, 1e-15);
        EXPECT_NEAR(g[size_t(b * 18 + 6 + h * 3 + d)], 0.0, 1e-15);
        EXPECT_DOUBLE_EQ(g[size_t(b * 18 + 12 + h * 3 + d)], dy[size_t(b * 6 + h * 3 + d)]);
      }
      EXPECT_NEAR(lse[size_t(b * 2 + h)], s / std::sqrt(3.0), 1e-15);
    }
}

// The float instantiation of the reference loops (Device::cpu's float forward is the sgemm path,
// tested below), called directly.
AttentionOutput reference_loops_float(const Tensor& qkv, const Case& c) {
  AttentionOutput out{Tensor::empty(out_shape(c)), Tensor::empty({c.batch, c.heads, c.tokens})};
  kernels::AttentionShape shape{c.batch, c.tokens, c.heads, c.head_dim};
  kernels::cpu::attention_forward<float>(shape, qkv.data<float>(), out.o.data<float>(), out.lse.data<float>());
  return out;
}

TEST(Attention, FloatAndDoubleReferencesAgree) {
  const Case c{2, 129, 2, 32};
  Tensor qkv = random_qkv(c, 400, DType::float32);
  Tensor d_o = random_tensor(out_shape(c), 401, DType::float32);
  AttentionOutput f = reference_loops_float(qkv, c);
  AttentionOutput d = attention_forward(to_double(qkv), c.heads);
  // The float reference sums in double too: only the rounding of its outputs differs.
  EXPECT_TENSORS_CLOSE(f.o, d.o, 1e-6, 1e-7);
  EXPECT_TENSORS_CLOSE(f.lse, d.lse, 1e-6, 1e-7);
  Tensor gf = attention_backward(qkv, f.o, f.lse, d_o, c.heads);
  Tensor gd = attention_backward(to_double(qkv), d.o, d.lse, to_double(d_o), c.heads);
  EXPECT_TENSORS_CLOSE(gf, gd, 1e-4, 1e-6);  // o and lse enter backward rounded to float
}

// kernels::cpu::attention_forward_gemm (sgemm in float, 64 query rows a block) against the
// float64 reference from the same inputs, at sizes that leave partial blocks, odd head_dims and
// several heads and batches, and the VQ-AE middle block's 4096 tokens. The bounds are the CUDA
// paths' float32 ones (below): o is a convex combination of v rows, so its float error is a few
// ulps of |v| <= 2; lse a few ulps of a few units. Device::cpu takes this path in float32 from
// kAttentionGemmTokens tokens up and the loops below that.
TEST(Attention, CpuFloatGemmPathMatchesTheReference) {
  uint64_t seed = 450;
  for (const Case& c : {Case{1, 1, 1, 4}, Case{2, 37, 3, 5}, Case{1, 65, 1, 32}, Case{3, 129, 2, 7},
                        Case{1, 1031, 2, 16}, Case{1, 4096, 1, 32}}) {
    SCOPED_TRACE(case_str(c));
    Tensor qkv = random_qkv(c, ++seed, DType::float32);
    AttentionOutput f{Tensor::empty(out_shape(c)), Tensor::empty({c.batch, c.heads, c.tokens})};
    kernels::cpu::attention_forward_gemm({c.batch, c.tokens, c.heads, c.head_dim}, qkv.data<float>(),
                                         f.o.data<float>(), f.lse.data<float>());
    AttentionOutput d = attention_forward(to_double(qkv), c.heads);
    EXPECT_TENSORS_CLOSE(f.o, d.o, 1e-5, 1e-5);
    EXPECT_TENSORS_CLOSE(f.lse, d.lse, 1e-6, 1e-5);
    // What attention_forward on the CPU computes: this path from 1024 tokens, the loops below.
    const AttentionOutput dispatched = attention_forward(qkv, c.heads), loops = reference_loops_float(qkv, c);
    const bool long_sequence = c.tokens >= kernels::cpu::kAttentionGemmTokens;
    EXPECT_TRUE(tensors_equal(dispatched.o, long_sequence ? f.o : loops.o));
    if (c.tokens > 1) {
      EXPECT_FALSE(tensors_equal(f.o, loops.o));  // two routes to the same sums
    }
  }
}

TEST(Attention, RejectsBadArguments) {
  Tensor qkv = random_tensor({1, 5, 96}, 1);  // 3 * 2 heads * 16
  expect_message([&] { attention_forward(qkv, 5); }, {"attention_forward", "96 columns", "5 heads", "15"});
  expect_message([&] { attention_forward(qkv, 0); }, {"heads must be positive"});
  expect_message([&] { attention_forward(random_tensor({5, 96}, 1), 2); }, {"[5, 96]", "[B, N, 3 * heads * head_dim]"});
  AttentionOutput out = attention_forward(qkv, 2);
  EXPECT_EQ(out.o.shape(), (Shape{1, 5, 32}));
  EXPECT_EQ(out.lse.shape(), (Shape{1, 2, 5}));
  Tensor d_o = random_tensor({1, 5, 32}, 2);
  expect_message([&] { attention_backward(qkv, out.o, random_tensor({1, 5, 2}, 3), d_o, 2); },
                 {"attention_backward lse", "[1, 5, 2]", "expected [1, 2, 5]"});
  expect_message([&] { attention_backward(qkv, out.o, out.lse, random_tensor({1, 5, 31}, 3), 2); },
                 {"attention_backward d_o", "[1, 5, 31]"});
  expect_message([&] { attention_backward(qkv, out.o, out.lse, d_o, 3); }, {"96 columns", "3 heads"});
  expect_message([&] { attention_backward(qkv, to_double(out.o), out.lse, d_o, 2); },
                 {"attention_backward o", "float64", "expected float32"});
  expect_message([&] { attention_backward(qkv, out.o.to(Device::cuda_on_cpu()), out.lse, d_o, 2); },
                 {"attention_backward o", "cuda_on_cpu", "expected cpu"});
  Tensor undefined;
  expect_message([&] { attention_backward(qkv, out.o, out.lse, undefined, 2); }, {"attention_backward d_o", "undefined"});
}

// ---- CUDA paths -----------------------------------------------------------------------------------

struct Reference {
  AttentionOutput fwd;
  Tensor d_qkv;
};

// float64 reference from the float32 inputs: forward, then backward from its own o and lse.
Reference reference(const Case& c, const Tensor& qkv, const Tensor& d_o) {
  Reference r;
  Tensor qd = to_double(qkv);
  r.fwd = attention_forward(qd, c.heads);
  r.d_qkv = attention_backward(qd, r.fwd.o, r.fwd.lse, to_double(d_o), c.heads);
  return r;
}

// float32 tolerances. o is a convex combination of v rows (|v| <= 2), lse is a few units and
// |d_qkv| < 2 in these cases; the worst errors seen on the executor are ~1e-6 absolute for all
// three (a few float32 ulps of sums over up to 832 keys). The bounds leave a margin of ~10
// for the GPU's different rounding (contracted FMAs, its exp2f).
constexpr double kOutRtol = 1e-5, kOutAtol = 1e-5;
constexpr double kLseRtol = 1e-6, kLseAtol = 1e-5;
constexpr double kGradRtol = 1e-5, kGradAtol = 1e-5;

void expect_parity(const Case& c, Device device, uint64_t seed, double range = 2.0) {
  SCOPED_TRACE(case_str(c) + " on " + device.str());
  Tensor qkv = random_qkv(c, seed, DType::float32, range);
  Tensor d_o = random_tensor(out_shape(c), seed + 1, DType::float32);
  const Reference ref = reference(c, qkv, d_o);
  Tensor qkv_dev = qkv.to(device);
  AttentionOutput out = attention_forward(qkv_dev, c.heads);
  EXPECT_EQ(out.o.device(), device);
  EXPECT_EQ(out.lse.shape(), (Shape{c.batch, c.heads, c.tokens}));
  EXPECT_TENSORS_CLOSE(out.o, ref.fwd.o, kOutRtol, kOutAtol);
  EXPECT_TENSORS_CLOSE(out.lse, ref.fwd.lse, kLseRtol, kLseAtol);
  Tensor d_qkv = attention_backward(qkv_dev, out.o, out.lse, d_o.to(device), c.heads);
  EXPECT_EQ(d_qkv.device(), device);
  EXPECT_TENSORS_CLOSE(d_qkv, ref.d_qkv, kGradRtol, kGradAtol);
}

using AttentionParity = CudaPathTest;

TEST_P(AttentionParity, HeadDim32MatchesReference) {
  uint64_t seed = 500;
  for (const Case& c : std::vector<Case>{{3, 1, 2, 32}, {1, 7, 3, 32}, {2, 64, 1, 32}, {3, 129, 2, 32},
                                         {kSanitizerBuild ? 1 : 3, 832, 1, 32}})
    expect_parity(c, device(), seed += 10);
}

TEST_P(AttentionParity, HeadDim64MatchesReference) {
  uint64_t seed = 600;
  for (const Case& c : std::vector<Case>{{1, 1, 1, 64}, {3, 7, 2, 64}, {1, 65, 3, 64}, {1, 129, 2, 64}, {3, 129, 1, 64}})
    expect_parity(c, device(), seed += 10);
}

// The VQ-AE mid-block: 8 x 13 x 8 = 832 tokens, 8 heads of 64 (1 in sanitizer builds).
TEST_P(AttentionParity, VqaeMidBlockTokensMatchReference) {
  expect_parity({1, 832, kSanitizerBuild ? 1 : 8, 64}, device(), 700);
}

// Inputs in [-6, 6] at head_dim 64: scores reach ~±100, so exp without the running max would
// overflow, and the max grows from one key tile to the next (the accumulator is rescaled).
TEST_P(AttentionParity, LargeLogitsStayFinite) {
  const Case c{1, 200, 1, 64};
  Tensor qkv = random_qkv(c, 800, DType::float32, 6.0);
  const Reference ref = reference(c, qkv, random_tensor(out_shape(c), 801, DType::float32));
  AttentionOutput out = attention_forward(qkv.to(device()), c.heads);
  // lse ~ 100 here: its absolute error scales with it.
  EXPECT_TENSORS_CLOSE(out.lse, ref.fwd.lse, 1e-5, 1e-4);
  EXPECT_TENSORS_CLOSE(out.o, ref.fwd.o, 1e-4, 2e-5);
  std::vector<float> lse = out.lse.to_vector<float>();
  EXPECT_GT(*std::max_element(lse.begin(), lse.end()), 50.0f);  // the case is as hard as it means to be
}

// Keys that grow with their index: each key tile holds larger scores than the last, so every
// step of the online softmax rescales (alpha < 1) and the final max sits in the last, partial tile.
TEST_P(AttentionParity, RunningMaxGrowsAcrossTiles) {
  const Case c{1, 150, 1, 32};
  std::vector<float> x = random_qkv(c, 900, DType::float32, 0.5).to_vector<float>();
  for (int64_t n = 0; n < c.tokens; ++n)
    for (int64_t d = 0; d < 32; ++d) {
      x[size_t(n * 96 + d)] = 1.0f;                                // q
      x[size_t(n * 96 + 32 + d)] += 0.02f * float(n);              // k
    }
  Tensor qkv = Tensor::from_vector(x, qkv_shape(c));
  Tensor d_o = random_tensor(out_shape(c), 901, DType::float32);
  const Reference ref = reference(c, qkv, d_o);
  AttentionOutput out = attention_forward(qkv.to(device()), c.heads);
  EXPECT_TENSORS_CLOSE(out.lse, ref.fwd.lse, 1e-5, 2e-5);
  EXPECT_TENSORS_CLOSE(out.o, ref.fwd.o, 1e-4, 1e-5);
  Tensor d_qkv = attention_backward(qkv.to(device()), out.o, out.lse, d_o.to(device()), c.heads);
  EXPECT_TENSORS_CLOSE(d_qkv, ref.d_qkv, 1e-4, 1e-4);
}

TEST_P(AttentionParity, DeterministicAcrossCalls) {
  const Case c{2, 100, 2, 32};
  Tensor qkv = random_qkv(c, 1000, DType::float32).to(device());
  Tensor d_o = random_tensor(out_shape(c), 1001, DType::float32).to(device());
  AttentionOutput a = attention_forward(qkv, c.heads), b = attention_forward(qkv, c.heads);
  EXPECT_TRUE(tensors_equal(a.o, b.o));
  EXPECT_TRUE(tensors_equal(a.lse, b.lse));
  EXPECT_TRUE(tensors_equal(attention_backward(qkv, a.o, a.lse, d_o, c.heads),
                            attention_backward(qkv, a.o, a.lse, d_o, c.heads)));
}

// On the executor, running each block's threads in reverse order must not change a bit (a
// missing barrier, or a reduction that relies on thread 0 running first, would).
TEST_P(AttentionParity, ExecutorThreadOrderDoesNotMatter) {
  if (device().kind != DeviceKind::cuda_on_cpu) GTEST_SKIP() << "executor only";
  const Case c{1, 130, 2, 64};
  Tensor qkv = random_qkv(c, 1100, DType::float32).to(device());
  Tensor d_o = random_tensor(out_shape(c), 1101, DType::float32).to(device());
  auto run = [&] {
    AttentionOutput out = attention_forward(qkv, c.heads);
    return std::vector<Tensor>{out.o, out.lse, attention_backward(qkv, out.o, out.lse, d_o, c.heads)};
  };
  expect_same_in_both_thread_orders(run);
}

// Forward at N = 2048 allocates its outputs and nothing else, where an N x N score matrix would
// be 16 MiB; backward allocates d_qkv and D ([B, heads, N]) and nothing else (both checked at
// 1024 tokens in sanitizer builds). Counted by the device's allocator in size classes (the
// executor's runs uncached, at exact sizes, in sanitizer builds: peak_allocated works either way).
void expect_linear_memory(Device device, bool backward, int64_t tokens) {
  const Case c{1, tokens, 1, 32};
  const size_t score_matrix = size_t(c.tokens * c.tokens) * sizeof(float);
  const size_t row_stats = size_t(c.batch * c.heads * c.tokens) * sizeof(float);  // lse, D
  Tensor qkv = random_qkv(c, 1200, DType::float32).to(device);
  AttentionOutput out;
  if (backward) out = attention_forward(qkv, c.heads);
  Tensor d_o = random_tensor(out_shape(c), 1201, DType::float32).to(device);
  reset_peak_memory(device);
  const size_t before = allocator_stats(device).allocated;
  size_t expected = 0;
  if (!backward) {
    out = attention_forward(qkv, c.heads);
    expected = CachingAllocator::size_class(out.o.nbytes()) + CachingAllocator::size_class(row_stats);
  } else {
    Tensor d_qkv = attention_backward(qkv, out.o, out.lse, d_o, c.heads);
    expected = CachingAllocator::size_class(d_qkv.nbytes()) + CachingAllocator::size_class(row_stats);
  }
  const size_t extra = allocator_stats(device).peak_allocated - before;
  EXPECT_LE(extra, expected) << (backward ? "backward" : "forward") << " at " << tokens << " tokens used "
                             << format_bytes(extra);
  EXPECT_LT(extra, score_matrix / 4);  // at 2048 tokens: forward ~1/60 of it, backward ~1/20
}

TEST_P(AttentionParity, MemoryIsLinearInTokens) {
  const int64_t tokens = kSanitizerBuild ? 1024 : 2048;
  expect_linear_memory(device(), false, tokens);
  expect_linear_memory(device(), true, tokens);
}

TEST_P(AttentionParity, RejectsUnsupportedHeadDimAndFloat64) {
  Tensor qkv48 = random_tensor({1, 5, 3 * 2 * 48}, 1).to(device());
  expect_message([&] { attention_forward(qkv48, 2); }, {"attention_forward (CUDA)", "head_dim 48", "32 and 64"});
  Tensor o = random_tensor({1, 5, 96}, 2).to(device()), lse = random_tensor({1, 2, 5}, 3).to(device());
  expect_message([&] { attention_backward(qkv48, o, lse, o, 2); }, {"attention_backward (CUDA)", "head_dim 48"});
  expect_message([&] { attention_forward(random_tensor({1, 5, 96}, 4, DType::float64).to(device()), 1); },
                 {"attention_forward (CUDA) qkv", "float64"});
}

// ---- bfloat16: the tensor-core kernels ----------------------------------------------------------

// The float64 attention of bf16 inputs (widened exactly), with the sums of magnitudes that bound
// a bf16 kernel's error. Backward takes the o it is given (the kernel's bf16 o, as the op does).
struct Bf16Reference {
  std::vector<double> o, lse, d_qkv;              // the values
  std::vector<double> o_mag, lse_mag, d_qkv_mag;  // what the rounding of P or dS is relative to
  std::vector<double> d_qkv_cancel;               // what float sums of dP and D are relative to
};

Bf16Reference bf16_reference(const Case& c, const Tensor& qkv, const Tensor& o_given, const Tensor& d_o) {
  const std::vector<double> x = to_double(qkv).to_vector<double>(), og = to_double(o_given).to_vector<double>();
  const std::vector<double> dov = to_double(d_o).to_vector<double>();
  const int64_t B = c.batch, N = c.tokens, H = c.heads, D = c.head_dim, C = H * D, W = 3 * C;
  const double scale = 1.0 / std::sqrt(double(D));
  Bf16Reference r;
  r.o.assign(size_t(B * N * C), 0), r.o_mag = r.o;
  r.lse.assign(size_t(B * H * N), 0), r.lse_mag = r.lse;
  r.d_qkv.assign(size_t(B * N * W), 0), r.d_qkv_mag = r.d_qkv, r.d_qkv_cancel = r.d_qkv;
  auto q = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return x[size_t((b * N + i) * W + h * D + d)]; };
  auto k = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return x[size_t((b * N + j) * W + C + h * D + d)]; };
  auto v = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return x[size_t((b * N + j) * W + 2 * C + h * D + d)]; };
  auto at = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return size_t((b * N + i) * C + h * D + d); };
  auto dq_at = [&](int64_t b, int64_t i, int64_t part, int64_t h, int64_t d) {
    return size_t((b * N + i) * W + part * C + h * D + d);
  };
  std::vector<double> P(size_t(N * N)), S(size_t(N * N)), Smag(size_t(N * N));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < N; ++i) {
        double mx = -INFINITY, mag = 0;
        for (int64_t j = 0; j < N; ++j) {
          double sum = 0, m = 0;
          for (int64_t d = 0; d < D; ++d) sum += q(b, i, h, d) * k(b, j, h, d), m += std::fabs(q(b, i, h, d) * k(b, j, h, d));
          S[size_t(i * N + j)] = scale * sum, mx = std::max(mx, scale * sum), mag = std::max(mag, scale * m);
        }
        double l = 0;
        for (int64_t j = 0; j < N; ++j) l += std::exp(S[size_t(i * N + j)] - mx);
        for (int64_t j = 0; j < N; ++j) P[size_t(i * N + j)] = std::exp(S[size_t(i * N + j)] - mx) / l;
        r.lse[size_t((b * H + h) * N + i)] = mx + std::log(l), r.lse_mag[size_t((b * H + h) * N + i)] = mag;
        for (int64_t d = 0; d < D; ++d) {
          double sum = 0, m = 0;
          for (int64_t j = 0; j < N; ++j) sum += P[size_t(i * N + j)] * v(b, j, h, d), m += P[size_t(i * N + j)] * std::fabs(v(b, j, h, d));
          r.o[at(b, i, h, d)] = sum, r.o_mag[at(b, i, h, d)] = m;
        }
      }
      // Backward: dS = P (dP - D), D_i = dO_i . o_i with the given o.
      for (int64_t i = 0; i < N; ++i) {
        double Di = 0, Dmag = 0;
        for (int64_t d = 0; d < D; ++d) Di += dov[at(b, i, h, d)] * og[at(b, i, h, d)], Dmag += std::fabs(dov[at(b, i, h, d)] * og[at(b, i, h, d)]);
        for (int64_t j = 0; j < N; ++j) {
          double dp = 0, dpmag = 0;
          for (int64_t d = 0; d < D; ++d) dp += dov[at(b, i, h, d)] * v(b, j, h, d), dpmag += std::fabs(dov[at(b, i, h, d)] * v(b, j, h, d));
          S[size_t(i * N + j)] = P[size_t(i * N + j)] * (dp - Di);         // dS
          Smag[size_t(i * N + j)] = P[size_t(i * N + j)] * (dpmag + Dmag);  // its float sums' scale
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t d = 0; d < D; ++d) {
          for (int64_t j = 0; j < N; ++j) {
            const double ds = S[size_t(i * N + j)], dsm = Smag[size_t(i * N + j)], p = P[size_t(i * N + j)];
            r.d_qkv[dq_at(b, i, 0, h, d)] += scale * ds * k(b, j, h, d);
            r.d_qkv_mag[dq_at(b, i, 0, h, d)] += scale * std::fabs(ds * k(b, j, h, d));
            r.d_qkv_cancel[dq_at(b, i, 0, h, d)] += scale * dsm * std::fabs(k(b, j, h, d));
            r.d_qkv[dq_at(b, j, 1, h, d)] += scale * ds * q(b, i, h, d);
            r.d_qkv_mag[dq_at(b, j, 1, h, d)] += scale * std::fabs(ds * q(b, i, h, d));
            r.d_qkv_cancel[dq_at(b, j, 1, h, d)] += scale * dsm * std::fabs(q(b, i, h, d));
            r.d_qkv[dq_at(b, j, 2, h, d)] += p * dov[at(b, i, h, d)];
            r.d_qkv_mag[dq_at(b, j, 2, h, d)] += p * std::fabs(dov[at(b, i, h, d)]);
          }
        }
      }
    }
  }
  return r;
}

// |actual - ref| <= 2^-8 |ref| (the bf16 result) + 2 2^-8 mag (P or dS rounded to bf16 as an mma
// operand; the factor 2 also covers the float scores' and exponentials' relative errors, ~2^-20)
// + 2 (2D + N) 2^-24 (mag + cancel) (float sums over head_dim and over the tokens, of scores, dP
// and D as well as of the products) + 1e-7.
::testing::AssertionResult within_attention_bound(const char* what, const Tensor& actual, const std::vector<double>& ref,
                                                  const std::vector<double>& mag, const std::vector<double>* cancel,
                                                  double terms, bool rounded) {
  const std::vector<double> a = to_double(actual).to_vector<double>();
  const double u16 = std::ldexp(1.0, -8), u32 = std::ldexp(1.0, -24);
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t e = 0; e < a.size(); ++e) {
    const double bound = (rounded ? u16 * std::fabs(ref[e]) : 0.0) + 2 * u16 * mag[e] +
                         2 * terms * u32 * (mag[e] + (cancel ? (*cancel)[e] : 0.0)) + 1e-7;
    const double ratio = std::fabs(a[e] - ref[e]) / bound;
    if (!(ratio <= 1)) ++bad;
    if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = e;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << a.size() << " elements beyond the bound; worst at "
                                       << worst << ": " << a[worst] << " vs " << ref[worst] << " (" << worst_ratio
                                       << " times the bound)";
}

struct Bf16AttentionOps {
  std::function<AttentionOutput(const Tensor&, int64_t)> forward;
  std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t)> backward;
};

Bf16AttentionOps public_attention() {
  return {[](const Tensor& qkv, int64_t heads) { return attention_forward(qkv, heads); },
          [](const Tensor& qkv, const Tensor& o, const Tensor& lse, const Tensor& d_o, int64_t heads) {
            return attention_backward(qkv, o, lse, d_o, heads);
          }};
}

struct Bf16AttentionVerdicts {
  ::testing::AssertionResult o = ::testing::AssertionSuccess(), lse = ::testing::AssertionSuccess(),
                             d_qkv = ::testing::AssertionSuccess();
};

Bf16AttentionVerdicts bf16_attention_parity(const Case& c, Device device, uint64_t seed, const Bf16AttentionOps& ops) {
  Tensor qkv = random_qkv(c, seed, DType::bfloat16);
  Tensor d_o = random_tensor(out_shape(c), seed + 1, DType::bfloat16);
  AttentionOutput out = ops.forward(qkv.to(device), c.heads);
  Bf16AttentionVerdicts v;
  if (out.o.dtype() != DType::bfloat16 || out.lse.dtype() != DType::float32) {
    v.o = ::testing::AssertionFailure() << "o is " << dtype_name(out.o.dtype()) << ", lse " << dtype_name(out.lse.dtype());
    return v;
  }
  Tensor d_qkv = ops.backward(qkv.to(device), out.o, out.lse, d_o.to(device), c.heads);
  const Bf16Reference r = bf16_reference(c, qkv, out.o, d_o);
  const double D = double(c.head_dim), N = double(c.tokens);
  v.o = within_attention_bound("o", out.o, r.o, r.o_mag, nullptr, D + N, true);
  // lse is float throughout: float scores (D terms, relative to max |s|), the sum of N exponentials
  // and log2f / exp2f (a few ulps of |lse|): 2 (D + N) 2^-24 (max_j sum |q k| scale + |lse| + 1).
  std::vector<double> lse_scale(r.lse_mag.size());
  for (size_t e = 0; e < lse_scale.size(); ++e) lse_scale[e] = r.lse_mag[e] + std::fabs(r.lse[e]) + 1;
  v.lse = within_attention_bound("lse", out.lse, r.lse, std::vector<double>(lse_scale.size(), 0.0), &lse_scale, D + N,
                                 false);
  v.d_qkv = within_attention_bound("d_qkv", d_qkv, r.d_qkv, r.d_qkv_mag, &r.d_qkv_cancel, D + N, true);
  return v;
}

const std::vector<Case>& bf16_cases() {
  static const std::vector<Case> cases = {{2, 70, 2, 32}, {1, 131, 1, 64}, {3, 5, 2, 32}};
  return cases;
}

TEST_P(AttentionParity, Bfloat16TensorCoresWithinBound) {
  uint64_t seed = 700;
  for (const Case& c : bf16_cases()) {
    SCOPED_TRACE(case_str(c));
    const Bf16AttentionVerdicts v = bf16_attention_parity(c, device(), seed += 10, public_attention());
    EXPECT_TRUE(v.o);
    EXPECT_TRUE(v.lse);
    EXPECT_TRUE(v.d_qkv);
  }
}

CTSR_INSTANTIATE_CUDA_PATHS(AttentionParity);

TEST(Attention, Bfloat16ReferenceWithinBound) {
  uint64_t seed = 800;
  for (const Case& c : bf16_cases()) {
    SCOPED_TRACE(case_str(c));
    const Bf16AttentionVerdicts v = bf16_attention_parity(c, Device::cpu(), seed += 10, public_attention());
    EXPECT_TRUE(v.o);
    EXPECT_TRUE(v.lse);
    EXPECT_TRUE(v.d_qkv);
  }
}

#if CTSR_MMA_MUTANTS
// kernels/attention.cu built with a wrong fragment index (tests/CMakeLists.txt) fails the bound.
TEST(AttentionMmaMutation, WrongFragmentIndexFailsParity) {
  namespace mutant = kernels::cuda_on_cpu_mma_mutant;
  const Bf16AttentionOps ops{
      [](const Tensor& qkv, int64_t heads) {
        kernels::AttentionShape s{qkv.dim(0), qkv.dim(1), heads, qkv.dim(2) / (3 * heads)};
        AttentionOutput out{Tensor::empty(Shape{s.batch, s.tokens, s.channels()}, qkv.dtype(), qkv.device()),
                            Tensor::empty(Shape{s.batch, heads, s.tokens}, DType::float32, qkv.device())};
        mutant::attention_forward(s, qkv, out.o, out.lse);
        return out;
      },
      [](const Tensor& qkv, const Tensor& o, const Tensor& lse, const Tensor& d_o, int64_t heads) {
        kernels::AttentionShape s{qkv.dim(0), qkv.dim(1), heads, qkv.dim(2) / (3 * heads)};
        Tensor d_qkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
        mutant::attention_backward(s, qkv, o, lse, d_o, d_qkv);
        return d_qkv;
      }};
  const Case c = bf16_cases()[0];
  const Bf16AttentionVerdicts real = bf16_attention_parity(c, Device::cuda_on_cpu(), 900, public_attention());
  ASSERT_TRUE(real.o && real.lse && real.d_qkv) << "the real kernels must pass first";
  const Bf16AttentionVerdicts v = bf16_attention_parity(c, Device::cuda_on_cpu(), 900, ops);
  EXPECT_FALSE(v.o) << "forward: a wrong fragment index went unnoticed";
  // The backward of the mutant's own (wrong) forward output still has to be wrong itself.
  EXPECT_FALSE(v.d_qkv) << "backward: a wrong fragment index went unnoticed";
}
#endif

}  // namespace
}  // namespace ctsr::test
