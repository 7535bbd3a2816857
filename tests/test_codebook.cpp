// Vector quantisation: a hand-checked example with a tie, the argmin property against float64
// distances on random data, and CUDA paths that pick the same indices bit for bit (the distance is
// computed with the same roundings on every path) at awkward sizes for every register width.
// Codebook statistics: a hand-checked example, the documented summation order re-implemented
// here (bit for bit), float64 sums, CUDA paths bit for bit at awkward sizes (one row, rows not
// a multiple of a warp, several tiles, codes with several runs, unused codes) and at the
// training scale (8192 codes x 8 channels x 32768 rows, timed), determinism under the
// executor's reversed thread order, bad indices. The EMA normalisation: the documented order
// re-implemented here, float64, restarts at the threshold's edges, CUDA paths bit for bit.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "kernels/codebook.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "tests/harness.h"
#include "tests/oracle/codebook.h"

namespace ctsr::test {
namespace {

// Codes (2-D): e0 = (0, 0), e1 = (2, 0), e2 = (1, 0) duplicated as e3. The point (1.5, 0) is
// 0.25 from e1 and from e2/e3: the first of the tied codes, e1, wins; (1, 0.5) ties e2 and e3 -> 2.
TEST(Codebook, KnownSmallExampleWithTies) {
  for (Device device : {Device::cpu(), Device::cuda_on_cpu()}) {
#if !CTSR_HAVE_CUDA_ON_CPU
    if (device.kind == DeviceKind::cuda_on_cpu) continue;
#endif
    Tensor codes = Tensor::from_vector<float>({0, 0, 2, 0, 1, 0, 1, 0}, {4, 2}, device);
    Tensor latent = Tensor::from_vector<float>({-1, 0, 1.5f, 0, 1, 0.5f, 3, 3}, {1, 4, 2}, device);
    Tensor idx = codebook_nearest(latent, codes);
    EXPECT_EQ(idx.shape(), (Shape{1, 4}));
    EXPECT_EQ(idx.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 1})) << device.str();
    Tensor q = codebook_quantize(latent, codes);
    EXPECT_EQ(q.to_vector<float>(), (std::vector<float>{0, 0, 2, 0, 1, 0, 2, 0})) << device.str();
  }
}

TEST(Codebook, ReferenceIsTheArgminInFloat64) {
  const int64_t rows = 97, codes = 301, channels = 8;
  Tensor latent = random_tensor({rows, channels}, 11, DType::float64);
  Tensor embeddings = random_tensor({codes, channels}, 12, DType::float64);
  std::vector<int64_t> idx = codebook_nearest(latent, embeddings).to_vector<int64_t>();
  std::vector<double> v = latent.to_vector<double>(), e = embeddings.to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    auto dist = [&](int64_t k) {
      double s = 0;
      for (int64_t c = 0; c < channels; ++c) s += (v[r * channels + c] - e[k * channels + c]) * (v[r * channels + c] - e[k * channels + c]);
      return s;
    };
    const double chosen = dist(idx[size_t(r)]);
    for (int64_t k = 0; k < codes; ++k) ASSERT_LE(chosen, dist(k) + 1e-12) << "row " << r << " code " << k;
  }
}

TEST(Codebook, LookupRejectsIndicesOutsideTheCodebook) {
  Tensor codes = random_tensor({5, 3}, 1);
  Tensor idx = Tensor::from_vector<int64_t>({0, 4, 5}, {3});
  expect_error_mentions([&] { codebook_lookup(idx, codes); }, {"index 5", "position 2", "[0, 5)"});
  expect_error_mentions([&] { codebook_nearest(random_tensor({2, 7}, 2), codes); },
                        {"codebook_nearest", "7 channels", "the codebook 3"});
  expect_error_mentions([&] { codebook_nearest(random_tensor({2, 3}, 2), random_tensor({5}, 3)); },
                        {"embeddings [5]", "[codes, channels]"});
}

// ---- statistics ------------------------------------------------------------------------------

// Indices skewed towards low codes (u^3 K): some codes take many rows (several runs of 64),
// high ones few or none.
Tensor skewed_indices(const Shape& shape, int64_t codes, uint64_t seed) {
  std::vector<double> u = random_tensor(shape, seed, DType::float64, 0.0, 1.0).to_vector<double>();
  std::vector<int64_t> k(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    k[i] = std::min<int64_t>(codes - 1, int64_t(u[i] * u[i] * u[i] * double(codes)));
  return Tensor::from_vector<int64_t>(k, shape);
}

TEST(CodebookStatistics, KnownSmallExample) {
  // 4 codes, 2 channels; code 2 unused.
  Tensor latents = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8, -1, 0.5}, {1, 5, 2});
  Tensor indices = Tensor::from_vector<int64_t>({3, 0, 3, 1, 0}, {1, 5});
  CodebookStatistics s = codebook_statistics(latents, indices, 4);
  EXPECT_EQ(s.counts.shape(), (Shape{4}));
  EXPECT_EQ(s.sums.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.counts.to_vector<double>(), (std::vector<double>{2, 1, 0, 2}));
  EXPECT_EQ(s.sums.to_vector<double>(), (std::vector<double>{3 - 1, 4 + 0.5, 7, 8, 0, 0, 1 + 5, 2 + 6}));
}

TEST(CodebookStatistics, ReferenceFollowsTheDocumentedOrderAndMatchesFloat64) {
  const int64_t rows = 3001, codes = 13, channels = 5;  // code 0 takes ~1/2.35 of the rows: ~20 runs
  Tensor latents = random_tensor({rows, channels}, 31, DType::float32, -3.0, 3.0);
  Tensor indices = skewed_indices({rows}, codes, 32);
  CodebookStatistics s = codebook_statistics(latents, indices, codes);
  const std::vector<int64_t> idx = indices.to_vector<int64_t>();
  EXPECT_EQ(s.sums.to_vector<float>(), oracle::codebook_sums(latents.to_vector<float>(), idx, codes, channels));
  CodebookStatistics d = codebook_statistics(to_double(latents), indices, codes);
  // Independent float64 sums in plain row order.
  std::vector<double> want_counts(size_t(codes), 0.0), want_sums(size_t(codes * channels), 0.0);
  const std::vector<double> v = to_double(latents).to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    want_counts[size_t(idx[size_t(r)])] += 1.0;
    for (int64_t c = 0; c < channels; ++c)
      want_sums[size_t(idx[size_t(r)] * channels + c)] += v[size_t(r * channels + c)];
  }
  EXPECT_EQ(d.counts.to_vector<double>(), want_counts);
  EXPECT_EQ(to_double(s.counts).to_vector<double>(), want_counts);
  EXPECT_TENSORS_CLOSE(d.sums, Tensor::from_vector<double>(want_sums, {codes, channels}), 1e-13, 1e-12);
  // float32 against float64: run sums of <= 64 terms, then <= 20 runs, of magnitude <= 3 each.
  const double worst = relative_l2(s.sums, d.sums);
  std::printf("codebook_statistics float32 vs float64: relative L2 %.3g\n", worst);
  EXPECT_LT(worst, 1e-6);
  EXPECT_TENSORS_CLOSE(s.sums, d.sums, 0, 1e-4);
}

TEST(CodebookStatistics, RejectsBadInputs) {
  Tensor latents = random_tensor({2, 3, 4}, 1);
  Tensor seven = Tensor::from_vector<int64_t>({0, 1, 2, 7, 0, 1}, {2, 3});
  expect_error_mentions([&] { codebook_statistics(latents, seven, 5); },
                        {"codebook_statistics", "index 7", "row 3", "[0, 5)"});
  Tensor negative = Tensor::from_vector<int64_t>({0, -1, 0, 0, 0, 0}, {6});
  expect_error_mentions([&] { codebook_statistics(latents, negative, 5); }, {"index -1", "row 1"});
  expect_error_mentions([&] { codebook_statistics(latents, Tensor::from_vector<int64_t>({0, 1, 2}, {3}), 5); },
                        {"indices [3]", "6 latent rows"});
  expect_error_mentions([&] { codebook_statistics(latents, Tensor::from_vector<int32_t>({0}, {1}), 5); },
                        {"codebook_statistics indices", "int64"});
  expect_error_mentions([&] { codebook_statistics(latents, Tensor::from_vector<int64_t>({0, 0, 0, 0, 0, 0}, {6}), 0); },
                        {"0 codes"});
}

TEST(CodebookStatistics, NoRowsGivesZeros) {
  CodebookStatistics s = codebook_statistics(Tensor::empty({0, 3}), Tensor::empty({0}, DType::int64), 4);
  EXPECT_EQ(s.counts.to_vector<float>(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(s.sums.to_vector<float>(), std::vector<float>(12, 0.0f));
}

// ---- EMA normalisation and restart -------------------------------------------------------------

// Counts around the threshold 1: far below, just below (restart), exactly 1, just above (kept).
std::vector<float> counts_around_threshold(int64_t codes, uint64_t seed) {
  std::vector<float> n = random_tensor({codes}, seed, DType::float32, 0.0, 40.0).to_vector<float>();
  const float edge[] = {0.01f, std::nextafter(1.0f, 0.0f), 1.0f, std::nextafter(1.0f, 2.0f)};
  for (int64_t k = 0; k < codes; k += 3) n[size_t(k)] = edge[(k / 3) % 4];
  return n;
}

TEST(CodebookEmaEmbeddings, ReferenceFollowsTheDocumentedOrderAndMatchesFloat64) {
  const int64_t codes = 1031, channels = 7;  // more codes than lanes, not a multiple of 256
  std::vector<float> counts = random_tensor({codes}, 41, DType::float32, 0.0, 40.0).to_vector<float>();
  Tensor ema_counts = Tensor::from_vector<float>(counts, {codes});
  Tensor ema_sums = random_tensor({codes, channels}, 42, DType::float32, -30.0, 30.0);
  Tensor e = codebook_ema_embeddings(ema_counts, ema_sums, 1e-7, 1.0, Tensor());
  EXPECT_EQ(e.to_vector<float>(),
            oracle::codebook_ema_embeddings(counts, ema_sums.to_vector<float>(), channels, 1e-7f, 1.0f, nullptr));
  // float64, straight from the original's formula.
  std::vector<double> n64 = to_double(ema_counts).to_vector<double>(), z = to_double(ema_sums).to_vector<double>();
  double n = 0.0;
  for (double v : n64) n += v;
  std::vector<double> want(z.size());
  for (int64_t k = 0; k < codes; ++k)
    for (int64_t c = 0; c < channels; ++c)
      want[size_t(k * channels + c)] = z[size_t(k * channels + c)] / ((n64[size_t(k)] + 1e-7) / (n + codes * 1e-7) * n);
  Tensor e64 = codebook_ema_embeddings(to_double(ema_counts), to_double(ema_sums), 1e-7, 1.0, Tensor());
  EXPECT_TENSORS_CLOSE(e64, Tensor::from_vector<double>(want, {codes, channels}), 1e-13, 0);
  // float32: a handful of roundings (the total's ~1e-7 relative among them).
  EXPECT_TENSORS_CLOSE(e, e64, 2e-6, 0);
}

TEST(CodebookEmaEmbeddings, RestartsExactlyTheCodesBelowTheThreshold) {
  const int64_t codes = 20, channels = 3;
  std::vector<float> counts = counts_around_threshold(codes, 43);
  Tensor ema_sums = random_tensor({codes, channels}, 44);
  Tensor candidates = random_tensor({codes, channels}, 45, DType::float32, 10.0, 11.0);
  Tensor e = codebook_ema_embeddings(Tensor::from_vector<float>(counts, {codes}), ema_sums, 1e-7, 1.0, candidates);
  Tensor kept = codebook_ema_embeddings(Tensor::from_vector<float>(counts, {codes}), ema_sums, 1e-7, 1.0, Tensor());
  const std::vector<float> got = e.to_vector<float>(), cand = candidates.to_vector<float>();
  const std::vector<float> no = kept.to_vector<float>();
  for (int64_t k = 0; k < codes; ++k) {
    const bool restart = !(counts[size_t(k)] >= 1.0f);
    for (int64_t c = 0; c < channels; ++c) {
      const size_t i = size_t(k * channels + c);
      EXPECT_EQ(got[i], restart ? cand[i] : no[i]) << "code " << k << " count " << counts[size_t(k)];
    }
  }
  // The edges: 0.01 and just below 1 restart, exactly 1 and just above stay.
  EXPECT_EQ(got[0], cand[0]);
  EXPECT_EQ(got[3 * channels], cand[3 * channels]);
  EXPECT_NE(got[6 * channels], cand[6 * channels]);
  EXPECT_NE(got[9 * channels], cand[9 * channels]);
  EXPECT_EQ(got[12 * channels], cand[12 * channels]);
}

TEST(CodebookEmaEmbeddings, ANaNCountRestartsItsCodeAndPoisonsTheOthers) {
  // As in the original: (N >= threshold) is false for NaN, and the NaN enters the total n.
  Tensor counts = Tensor::from_vector<float>({3.0f, std::numeric_limits<float>::quiet_NaN(), 5.0f}, {3});
  Tensor candidates = random_tensor({3, 2}, 46);
  const std::vector<float> e =
      codebook_ema_embeddings(counts, random_tensor({3, 2}, 47), 1e-7, 1.0, candidates).to_vector<float>();
  const std::vector<float> cand = candidates.to_vector<float>();
  EXPECT_EQ(e[2], cand[2]);
  EXPECT_EQ(e[3], cand[3]);
  for (size_t i : {size_t(0), size_t(1), size_t(4), size_t(5)}) EXPECT_TRUE(std::isnan(e[i])) << i;
}

TEST(CodebookEmaEmbeddings, RejectsBadInputs) {
  Tensor sums = random_tensor({5, 3}, 1), counts = random_tensor({5}, 2, DType::float32, 0, 3);
  expect_error_mentions([&] { codebook_ema_embeddings(random_tensor({4}, 3), sums, 1e-7, 1.0, Tensor()); },
                        {"ema_counts", "[5]"});
  expect_error_mentions([&] { codebook_ema_embeddings(counts, sums, 1e-7, 1.0, random_tensor({5, 2}, 4)); },
                        {"candidates", "[5, 3]"});
  expect_error_mentions([&] { codebook_ema_embeddings(counts, random_tensor({15}, 5), 1e-7, 1.0, Tensor()); },
                        {"ema_sums [15]", "[codes, channels]"});
  expect_error_mentions([&] { codebook_ema_embeddings(counts, to_double(sums), 1e-7, 1.0, Tensor()); },
                        {"codebook_ema_embeddings", "float64"});
  expect_error_mentions([&] { codebook_ema_embeddings(counts, sums, -1.0, 1.0, Tensor()); }, {"smoothing", "-1"});
}

class CodebookCuda : public CudaPathTest {};

TEST_P(CodebookCuda, SameIndicesAsTheReference) {
  struct Case {
    Shape latent;
    int64_t codes;
  };
  // Channel counts exercise the 8-, 16-, 32- and 64-wide register rows; codebooks are not a
  // multiple of the 128-code tile, and rows not a multiple of the 64-row block.
  for (const Case& c : {Case{{3, 7, 5, 11, 8}, 1000}, Case{{1, 5, 3, 3, 5}, 257}, Case{{2, 3, 3, 13, 13}, 129},
                        Case{{1, 1, 1, 67, 31}, 130}, Case{{1, 2, 2, 5, 37}, 61}}) {
    const int64_t channels = c.latent[c.latent.ndim() - 1];
    Tensor latent = random_tensor(c.latent, 21);
    Tensor embeddings = random_tensor({c.codes, channels}, 22);
    Tensor want = codebook_nearest(latent, embeddings);
    Tensor got = codebook_nearest(latent.to(device()), embeddings.to(device()));
    EXPECT_TRUE(tensors_equal(got.to(Device::cpu()), want)) << c.latent.str() << " codes " << c.codes;
    Tensor q_want = codebook_lookup(want, embeddings);
    Tensor q_got = codebook_lookup(got, embeddings.to(device()));
    EXPECT_TRUE(tensors_equal(q_got.to(Device::cpu()), q_want)) << c.latent.str();
  }
}

TEST_P(CodebookCuda, LookupOutsideTheCodebookGivesNaNRows) {
  Tensor codes = random_tensor({4, 3}, 5).to(device());
  Tensor idx = Tensor::from_vector<int64_t>({1, 7, -1}, {3}, device());
  std::vector<float> q = codebook_lookup(idx, codes).to_vector<float>();
  for (int c = 0; c < 3; ++c) {
    EXPECT_FALSE(std::isnan(q[size_t(c)]));
    EXPECT_TRUE(std::isnan(q[size_t(3 + c)]));
    EXPECT_TRUE(std::isnan(q[size_t(6 + c)]));
  }
}

TEST_P(CodebookCuda, StatisticsMatchTheReferenceBitForBit) {
  struct Case {
    Shape latents;
    int64_t codes;
  };
  // One row; the tiny EMA problem; rows not a multiple of 32 with more codes than rows; several
  // 1024-row tiles with skewed codes (many runs of 64 for the low codes, none for some high
  // ones); 5-D latents with channel counts that do not divide a warp.
  for (const Case& c : {Case{{1, 4}, 7}, Case{{53, 4}, 7}, Case{{3, 1, 7, 5}, 301}, Case{{5003, 3}, 37},
                        Case{{2, 3, 9, 13, 5}, 64}, Case{{1, 4, 16, 16, 8}, 8192}}) {
    SCOPED_TRACE(c.latents.str() + " codes " + std::to_string(c.codes));
    std::vector<int64_t> rows_shape = c.latents.vec();
    rows_shape.pop_back();
    if (rows_shape.empty()) rows_shape.push_back(1);
    Tensor latents = random_tensor(c.latents, 51, DType::float32, -2.0, 3.0);
    Tensor indices = skewed_indices(Shape(rows_shape), c.codes, 52);
    CodebookStatistics want = codebook_statistics(latents, indices, c.codes);
    CodebookStatistics got = codebook_statistics(latents.to(device()), indices.to(device()), c.codes);
    EXPECT_EQ(got.counts.device(), device());
    EXPECT_TRUE(tensors_equal(got.counts, want.counts));
    EXPECT_TRUE(tensors_equal(got.sums, want.sums));
  }
}

TEST_P(CodebookCuda, StatisticsOfNearestCodesAtTrainingScale) {
  // 8192 codes x 8 channels, 32768 rows (the 32^3 latent of one 256^3 volume), the indices from
  // codebook_nearest as in training; the reference and this path timed.
  const int64_t rows = 32768, codes = 8192, channels = 8;
  Tensor latents = random_tensor({rows, channels}, 61, DType::float32, -1.0, 1.0);
  Tensor embeddings = random_tensor({codes, channels}, 62, DType::float32, -1.0, 1.0);
  Tensor indices = codebook_nearest(latents, embeddings);
  // Best of three calls each (the first call of a path also pays for its allocations).
  auto best_ms = [](const std::function<void()>& f) {
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  CodebookStatistics want, got;
  const double cpu_ms = best_ms([&] { want = codebook_statistics(latents, indices, codes); });
  Tensor latents_d = latents.to(device()), indices_d = indices.to(device());
  std::vector<float> counts;
  const double device_ms = best_ms([&] {
    got = codebook_statistics(latents_d, indices_d, codes);
    counts = got.counts.to_vector<float>();  // waits for the device
  });
  std::printf("codebook_statistics %lld codes x %lld channels x %lld rows: cpu %.2f ms, %s %.2f ms\n",
              (long long)codes, (long long)channels, (long long)rows, cpu_ms, device().str().c_str(), device_ms);
  EXPECT_TRUE(tensors_equal(got.counts, want.counts));
  EXPECT_TRUE(tensors_equal(got.sums, want.sums));
  double total = 0;
  for (float v : counts) total += v;
  EXPECT_EQ(total, double(rows));
}

TEST_P(CodebookCuda, StatisticsAreDeterministic) {
  Tensor latents = random_tensor({4099, 8}, 71).to(device());
  Tensor indices = skewed_indices({4099}, 100, 72).to(device());
  CodebookStatistics first = codebook_statistics(latents, indices, 100);
  for (int i = 0; i < 2; ++i) {
    CodebookStatistics again = codebook_statistics(latents, indices, 100);
    EXPECT_TRUE(tensors_equal(again.sums, first.sums));
    EXPECT_TRUE(tensors_equal(again.counts, first.counts));
  }
  if (device().kind == DeviceKind::cuda_on_cpu) {
    struct RestoreOrder {
      ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
    } restore;
    cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
    CodebookStatistics reversed = codebook_statistics(latents, indices, 100);
    EXPECT_TRUE(tensors_equal(reversed.sums, first.sums));
    EXPECT_TRUE(tensors_equal(reversed.counts, first.counts));
  }
}

TEST_P(CodebookCuda, StatisticsRejectBadIndices) {
  Tensor latents = random_tensor({2100, 3}, 81).to(device());
  std::vector<int64_t> idx(2100, 2);
  idx[1500] = 9;
  idx[1777] = -4;
  expect_error_mentions([&] { codebook_statistics(latents, Tensor::from_vector<int64_t>(idx, {2100}, device()), 5); },
                        {"codebook_statistics", "index 9", "row 1500", "[0, 5)"});
  Tensor zeros = Tensor::from_vector<int64_t>(std::vector<int64_t>(2100, 0), {2100}, device());
  expect_error_mentions([&] { codebook_statistics(to_double(latents).to(device()), zeros, 5); },
                        {"codebook_statistics (CUDA) latents", "float32"});
}

TEST_P(CodebookCuda, EmaEmbeddingsMatchTheReferenceBitForBit) {
  for (int64_t codes : {int64_t(1), int64_t(7), int64_t(300), int64_t(8192)}) {
    SCOPED_TRACE(codes);
    const int64_t channels = codes == 300 ? 5 : 8;
    Tensor counts = Tensor::from_vector<float>(counts_around_threshold(codes, 91), {codes});
    Tensor sums = random_tensor({codes, channels}, 92, DType::float32, -20.0, 20.0);
    Tensor candidates = random_tensor({codes, channels}, 93);
    for (bool restart : {false, true}) {
      Tensor want = codebook_ema_embeddings(counts, sums, 1e-7, 1.0, restart ? candidates : Tensor());
      Tensor got = codebook_ema_embeddings(counts.to(device()), sums.to(device()), 1e-7, 1.0,
                                           restart ? candidates.to(device()) : Tensor());
      EXPECT_TRUE(tensors_equal(got, want)) << "restart " << restart;
    }
  }
}

CTSR_INSTANTIATE_CUDA_PATHS(CodebookCuda);

}  // namespace
}  // namespace ctsr::test
