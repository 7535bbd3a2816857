// Vector quantisation: a hand-checked example with a tie, the argmin property against float64
// distances on random data, and CUDA paths that pick the same indices bit for bit (the distance is
// computed with the same roundings on every path) at awkward sizes for every register width.
#include <cmath>

#include "kernels/codebook.h"
#include "tests/harness.h"

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

CTSR_INSTANTIATE_CUDA_PATHS(CodebookCuda);

}  // namespace
}  // namespace ctsr::test
