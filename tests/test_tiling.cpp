// model/tiling.h: tile layouts, the blend window, blend_tiles on functions whose whole-volume
// answer is known, and the tiled sampler's independence of the tiling.
//
// The bound these tests check (and tests/test_tiled_inference.cpp checks on the networks): the
// blend at a position is a convex combination of the tiles' values there, so
//   |blend(p) - whole(p)| <= max over the tiles k covering p of |tile_k(p) - whole(p)|
// up to float rounding: the weights are rounded to float and the sum of at most 8 terms carries a
// relative error of about 8 * 2^-24 < 1e-6 of the largest term, so the tests allow
// 1e-5 * max|whole| beyond the bound. Where every tile agrees with the whole (a pointwise function)
// the bound is that rounding alone.
#include <algorithm>
#include <cmath>

#include "model/tiling.h"
#include "tests/harness.h"
#include "tests/tiling_checks.h"

namespace ctsr {
namespace {

TEST(TileAxis, TilesCoverTheExtentWithTheirOverlapAndTheLastEndsThere) {
  struct Case { int64_t extent, tile, overlap; std::vector<int64_t> starts; };
  for (const Case& c : {Case{20, 8, 2, {0, 6, 12}}, Case{21, 8, 2, {0, 6, 12, 13}}, Case{5, 8, 2, {0}},
                        Case{17, 17, 3, {0}}, Case{11, 4, 0, {0, 4, 7}}, Case{7, 1, 0, {0, 1, 2, 3, 4, 5, 6}}}) {
    const TileAxis a = TileAxis::make(c.extent, c.tile, c.overlap);
    EXPECT_EQ(a.starts, c.starts) << c.extent << " " << c.tile << " " << c.overlap;
    EXPECT_EQ(a.starts.back() + a.tile, c.extent);
    for (size_t i = 1; i < a.starts.size(); ++i) EXPECT_GE(a.starts[i - 1] + a.tile - a.starts[i], a.overlap);
  }
  EXPECT_EQ(TileAxis::make(5, 8, 6).overlap, 4);  // the tile shrinks to the extent, the overlap with it
  test::expect_error_mentions([] { TileAxis::make(10, 4, 4); }, {"overlap 4", "0 <= overlap < tile"});
  test::expect_error_mentions([] { TileAxis::make(0, 4, 1); }, {"over 0"});
}

TEST(TileAxis, WeightsArePositiveRampOnlyTowardsNeighboursAndSumToOneAtTheStride) {
  for (int64_t scale : {1, 3}) {
    const TileAxis a = TileAxis::make(20, 8, 2);  // stride 6: the ramps of neighbours line up
    for (size_t t = 0; t < a.starts.size(); ++t)
      for (int64_t i = 0; i < a.tile * scale; ++i) {
        const double w = a.weight(t, i, scale);
        EXPECT_GT(w, 0.0);
        EXPECT_LE(w, 1.0);
      }
    // The volume's own borders are not tapered; the ends facing a neighbour are.
    EXPECT_EQ(a.weight(0, 0, scale), 1.0);
    EXPECT_LT(a.weight(0, a.tile * scale - 1, scale), 0.15);  // sin^2(pi / 8) at scale 1
    EXPECT_LT(a.weight(1, 0, scale), 0.15);
    EXPECT_EQ(a.weight(2, a.tile * scale - 1, scale), 1.0);
    for (double s : a.weight_sums(scale)) EXPECT_NEAR(s, 1.0, 1e-12);
  }
  // Without overlap every weight is 1.
  const TileAxis b = TileAxis::make(12, 4, 0);
  for (size_t t = 0; t < b.starts.size(); ++t)
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(b.weight(t, i, 2), 1.0);
}

TEST(Tiling, ReflectIndexIsNumpysReflectRepeated) {
  for (int64_t n : {1, 2, 3, 5}) {
    // numpy.pad(range(n), (0, 40), mode="reflect") for n > 1: the sequence mirrored about its ends.
    std::vector<int64_t> want;
    int64_t v = 0, dir = 1;
    for (int64_t p = 0; p < 41; ++p) {
      want.push_back(n == 1 ? 0 : v);
      if (n > 1) {
        if (v + dir < 0 || v + dir >= n) dir = -dir;
        v += dir;
      }
    }
    for (int64_t p = 0; p < 41; ++p) EXPECT_EQ(reflect_index(p, n), want[size_t(p)]) << "p " << p << " n " << n;
  }
}

// The function a tile sees, at the tile's own borders: a 3x3x3 mean with zero padding, so a tile's
// values near its edges differ from the whole volume's (what a network's padding does).
Tensor box_mean(const Tensor& x) {
  const int64_t N = x.dim(0), A = x.dim(1), B = x.dim(2), C = x.dim(3), K = x.dim(4);
  Tensor y = Tensor::zeros(x.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < A; ++i)
      for (int64_t j = 0; j < B; ++j)
        for (int64_t k = 0; k < C; ++k)
          for (int64_t c = 0; c < K; ++c) {
            double s = 0;
            for (int64_t di = -1; di <= 1; ++di)
              for (int64_t dj = -1; dj <= 1; ++dj)
                for (int64_t dk = -1; dk <= 1; ++dk) {
                  const int64_t a = i + di, b = j + dj, e = k + dk;
                  if (a >= 0 && a < A && b >= 0 && b < B && e >= 0 && e < C)
                    s += px[((((n * A + a) * B + b) * C + e) * K) + c];
                }
            py[(((n * A + i) * B + j) * C + k) * K + c] = float(s / 27.0);
          }
  return y;
}

TEST(BlendTiles, APointwiseFunctionGivesTheWholeVolumesAnswerWithinRounding) {
  const Tensor x = test::random_tensor({1, 13, 9, 11, 3}, 41);
  const Tensor cond = test::random_tensor({1, 13, 9, 11, 2}, 42);
  // y = x * cond0 + cond1 per position: misplaced tiles or boxes would not match.
  auto pointwise = [](const Tensor& a, const Tensor& b) {
    Tensor y = Tensor::empty(a.shape());
    const int64_t n = a.numel() / 3;
    for (int64_t v = 0; v < n; ++v)
      for (int64_t c = 0; c < 3; ++c)
        y.data<float>()[v * 3 + c] = a.data<float>()[v * 3 + c] * b.data<float>()[v * 2] + b.data<float>()[v * 2 + 1];
    return y;
  };
  const Tensor want = pointwise(x, cond);
  for (const auto& [tile, overlap] : std::vector<std::pair<std::array<int64_t, 3>, std::array<int64_t, 3>>>{
           {{5, 4, 6}, {2, 1, 3}}, {{13, 9, 11}, {0, 0, 0}}, {{4, 3, 5}, {0, 0, 0}}, {{7, 2, 3}, {3, 1, 2}}}) {
    const TileGrid grid = TileGrid::make({13, 9, 11}, tile, overlap);
    for (int64_t batch : {1, 4}) {
      Tensor out = Tensor::empty(want.shape());
      int64_t calls = 0, last_done = 0;
      blend_tiles(grid, {{&x, 1}, {&cond, 1}}, 1, out, batch,
                  [&](const std::vector<Tensor>& boxes) {
                    EXPECT_LE(boxes[0].dim(0), batch);
                    ++calls;
                    return pointwise(boxes[0], boxes[1]);
                  },
                  [&](int64_t done, int64_t total) {
                    EXPECT_EQ(total, grid.count());
                    EXPECT_GT(done, last_done);
                    last_done = done;
                  });
      EXPECT_EQ(calls, (grid.count() + batch - 1) / batch);
      EXPECT_EQ(last_done, grid.count());
      const std::vector<float> got = out.to_vector<float>(), ref = want.to_vector<float>();
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - ref[i])));
      EXPECT_LE(worst, 1e-5 * 2.0) << grid.str();
      if (grid.count() == 1) {
        EXPECT_TRUE(test::tensors_equal(out, want));  // one tile: bit for bit
      }
    }
  }
}

TEST(BlendTiles, ScalesReflectionPastTheEndAndCropping) {
  // Input at 2 positions per grid unit, output at 1: fn averages 2x2x2 blocks. The input is
  // shorter than the grid along D (reflected), and the output is cropped.
  const Tensor fine = test::random_tensor({1, 19, 12, 14, 1}, 43);  // grid 10 x 6 x 7 at scale 2
  auto pool = [](const Tensor& f) {
    const int64_t N = f.dim(0), A = f.dim(1) / 2, B = f.dim(2) / 2, C = f.dim(3) / 2;
    Tensor y = Tensor::zeros({N, A, B, C, 1});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < A; ++i)
        for (int64_t j = 0; j < B; ++j)
          for (int64_t k = 0; k < C; ++k) {
            double s = 0;
            for (int64_t d = 0; d < 8; ++d)
              s += f.data<float>()[(((n * 2 * A + 2 * i + (d >> 2)) * 2 * B + 2 * j + ((d >> 1) & 1)) * 2 * C) + 2 * k + (d & 1)];
            y.data<float>()[((n * A + i) * B + j) * C + k] = float(s / 8.0);
          }
    return y;
  };
  // The whole answer: the input reflected to 20 slices, pooled, cropped to 9 x 6 x 7.
  Tensor padded = Tensor::empty({1, 20, 12, 14, 1});
  for (int64_t i = 0; i < 20; ++i)
    std::copy_n(fine.data<float>() + reflect_index(i, 19) * 12 * 14, 12 * 14, padded.data<float>() + i * 12 * 14);
  const Tensor pooled = pool(padded);
  const TileGrid grid = TileGrid::make({10, 6, 7}, {4, 4, 3}, {1, 2, 1});
  Tensor out = Tensor::empty({1, 9, 6, 7, 1});
  blend_tiles(grid, {{&fine, 2}}, 1, out, 2, [&](const std::vector<Tensor>& b) { return pool(b[0]); });
  const std::vector<float> got = out.to_vector<float>(), all = pooled.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], all[i], 1e-5) << i;

  // Output at 3 positions per unit (nearest upsampling of a grid-scale input), cropped.
  const Tensor coarse = test::random_tensor({1, 5, 4, 6, 2}, 44);
  auto upsample = [](const Tensor& c) {
    Tensor y = Tensor::empty({c.dim(0), c.dim(1) * 3, c.dim(2) * 3, c.dim(3) * 3, 2});
    for (int64_t n = 0; n < c.dim(0); ++n)
      for (int64_t i = 0; i < y.dim(1); ++i)
        for (int64_t j = 0; j < y.dim(2); ++j)
          for (int64_t k = 0; k < y.dim(3); ++k)
            for (int64_t e = 0; e < 2; ++e)
              y.data<float>()[(((n * y.dim(1) + i) * y.dim(2) + j) * y.dim(3) + k) * 2 + e] =
                  c.data<float>()[(((n * c.dim(1) + i / 3) * c.dim(2) + j / 3) * c.dim(3) + k / 3) * 2 + e];
    return y;
  };
  const Tensor whole = upsample(coarse);
  Tensor up = Tensor::empty({1, 14, 12, 17, 2});
  blend_tiles(TileGrid::make({5, 4, 6}, {3, 2, 4}, {1, 1, 2}), {{&coarse, 1}}, 3, up, 3,
              [&](const std::vector<Tensor>& b) { return upsample(b[0]); });
  for (int64_t i = 0; i < 14; ++i)
    for (int64_t j = 0; j < 12; ++j)
      for (int64_t k = 0; k < 17; ++k)
        for (int64_t e = 0; e < 2; ++e)
          ASSERT_NEAR(up.data<float>()[(((i * 12) + j) * 17 + k) * 2 + e],
                      whole.data<float>()[(((i * 12) + j) * 18 + k) * 2 + e], 1e-6);
  test::expect_error_mentions(
      [&] {
        Tensor big = Tensor::empty({1, 16, 12, 17, 2});
        blend_tiles(TileGrid::make({5, 4, 6}, {3, 2, 4}, {1, 1, 2}), {{&coarse, 1}}, 3, big, 1,
                    [&](const std::vector<Tensor>& b) { return upsample(b[0]); });
      },
      {"larger than the grid's 15 x 12 x 18"});
}

TEST(BlendTiles, ANonLocalFunctionStaysWithinTheConvexityBoundAndLeavesNoSeam) {
  const Tensor x = test::random_tensor({1, 17, 15, 16, 1}, 45);
  const Tensor want = box_mean(x);
  const TileGrid grid = TileGrid::make({17, 15, 16}, {7, 6, 8}, {3, 2, 3});
  Tensor out = Tensor::empty(want.shape());
  blend_tiles(grid, {{&x, 1}}, 1, out, 3, [](const std::vector<Tensor>& b) { return box_mean(b[0]); });
  const std::vector<float> bound = test::convexity_bound(grid, x, 1, want, 1, box_mean);
  const std::vector<float> got = out.to_vector<float>(), ref = want.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_LE(std::fabs(got[i] - ref[i]), bound[i] + 1e-5f) << i;

  // The blend suppresses the tiles' wrong edges: the mean error on the tile-edge planes is far
  // below what hard cuts (the same tiles without overlap weighting: each position from one tile)
  // leave there.
  const std::vector<bool> edge = test::tile_edge_planes(grid, {17, 15, 16, 1}, 1);
  auto edge_error = [&](const std::vector<float>& v) { return test::mean_error(v, ref, edge, true); };
  const TileGrid hard = TileGrid::make({17, 15, 16}, {7, 6, 8}, {0, 0, 0});
  Tensor cut = Tensor::empty(want.shape());
  blend_tiles(hard, {{&x, 1}}, 1, cut, 3, [](const std::vector<Tensor>& b) { return box_mean(b[0]); });
  const double blended = edge_error(got), hard_cut = edge_error(cut.to_vector<float>());
  EXPECT_LT(blended, 0.25 * hard_cut) << blended << " vs " << hard_cut;
}

TEST(SampleInTiles, ThePositionKeyedNoiseMakesTheResultIndependentOfTheTiling) {
  DiffusionConfig config;
  config.sampler = SamplerKind::ddpm;  // noise at every step, not only x_T
  config.sampling_steps = 6;
  const NoiseSchedule schedule(config);
  const Tensor cond = test::random_tensor({1, 9, 10, 7, 2}, 46);
  // A pointwise "network": every tiling gives the same output at every step, so the results may
  // differ only by the noise each position gets and by rounding.
  const TiledNetwork net = [](const Tensor& x_t, const Tensor& c, int64_t t) {
    Tensor y = Tensor::empty(x_t.shape());
    for (int64_t i = 0; i < x_t.numel(); ++i)
      y.data<float>()[i] = 0.5f * x_t.data<float>()[i] + 0.1f * c.data<float>()[i] + 1e-3f * float(t);
    return y;
  };
  const Tensor whole = sample_in_tiles(schedule, config, cond, TileGrid::make({9, 10, 7}, {9, 10, 7}, {0, 0, 0}), 1,
                                       net, 7, 3);
  // The untiled sampler with the same network: the same noise draws.
  const Tensor direct = sample(schedule, config, cond.shape(), DType::float32, Device::cpu(),
                               [&](const Tensor& x_t, int64_t t) { return net(x_t, cond, t); }, 7, {3});
  EXPECT_TRUE(test::tensors_equal(whole, direct));
  for (const auto& [tile, overlap] : std::vector<std::pair<std::array<int64_t, 3>, std::array<int64_t, 3>>>{
           {{4, 4, 4}, {1, 1, 1}}, {{5, 3, 6}, {2, 1, 3}}}) {
    std::vector<double> fractions;
    const Tensor tiled = sample_in_tiles(schedule, config, cond, TileGrid::make({9, 10, 7}, tile, overlap), 2, net, 7, 3,
                                         [&](double f) { fractions.push_back(f); });
    EXPECT_LT(test::relative_l2(tiled, whole), 1e-5);
    ASSERT_FALSE(fractions.empty());
    EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
    EXPECT_TRUE(std::is_sorted(fractions.begin(), fractions.end()));
  }
  // Another key is other noise: the check above could fail.
  const Tensor other = sample_in_tiles(schedule, config, cond, TileGrid::make({9, 10, 7}, {4, 4, 4}, {1, 1, 1}), 2,
                                       net, 7, 4);
  EXPECT_GT(test::relative_l2(other, whole), 0.1);
}

}  // namespace
}  // namespace ctsr
