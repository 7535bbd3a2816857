// The classical baselines of evaluations (train/baselines.h) against SciPy and scikit-image
// (tests/data/baselines, from tools/pytorch/make_baseline_golden.py): the Gaussian for every
// sigma of the grid, TV to its early stop (the same number of iterations) and at a lower cap,
// the median exactly; TV independent of the number of threads; bad inputs refused by name; and
// the choice of sigma and TV weight by mean PSNR on training pairs, against PSNRs computed here
// and against cases whose answer is known (no noise: the lightest; heavy noise on a constant:
// the heaviest).
#include <omp.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/formats/npy.h"
#include "tests/harness.h"
#include "train/baselines.h"

namespace ctsr::train {
namespace {

const std::filesystem::path kGolden = std::filesystem::path(CTSR_TEST_DATA_DIR) / "baselines";

double max_abs_difference(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  const auto g = got.to_vector<float>(), w = want.to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < g.size() && i < w.size(); ++i) m = std::max(m, std::abs(double(g[i]) - double(w[i])));
  return m;
}

TEST(Baselines, MatchScipyAndScikitImage) {
  std::ifstream in(kGolden / "cases.json");
  ASSERT_TRUE(in) << (kGolden / "cases.json");
  const nlohmann::json manifest = nlohmann::json::parse(in);
  std::map<std::string, int> seen;
  std::map<std::string, double> worst;
  for (const auto& c : manifest.at("cases")) {
    const std::string op = c.at("op");
    const Tensor input = io::read_npy(kGolden / c.at("input").get<std::string>());
    const Tensor want = io::read_npy(kGolden / c.at("output").get<std::string>());
    SCOPED_TRACE(c.dump());
    ASSERT_EQ(input.ndim(), 3);
    // The golden output is not the input: a filter that did nothing would fail.
    ASSERT_GT(max_abs_difference(input, want), 0.01);
    double difference = 0;
    if (op == "gaussian") {
      difference = max_abs_difference(gaussian_filter(input, c.at("sigma")), want);
      EXPECT_LE(difference, 1e-6);
    } else if (op == "tv") {
      const TvResult r = denoise_tv_chambolle(input, c.at("weight"), {.max_iterations = c.at("max_num_iter")});
      EXPECT_EQ(r.iterations, c.at("iterations").get<int>());
      difference = max_abs_difference(r.volume, want);
      EXPECT_LE(difference, 1e-5);
    } else if (op == "median") {
      difference = max_abs_difference(median_filter3(input), want);
      EXPECT_EQ(difference, 0.0);
    } else {
      ADD_FAILURE() << "unknown op " << op;
    }
    ++seen[op];
    worst[op] = std::max(worst[op], difference);
  }
  EXPECT_GE(seen["gaussian"], 5);
  EXPECT_GE(seen["tv"], 4);
  EXPECT_GE(seen["median"], 3);
  for (const auto& [op, d] : worst) std::printf("  %-8s max |ctsr - reference| %.3g\n", op.c_str(), d);
}

TEST(Baselines, TvStopsEarlyAndDoesNotDependOnThreads) {
  const Tensor x = test::random_tensor({9, 14, 12}, 3);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const TvResult one = denoise_tv_chambolle(x, 0.1);
  omp_set_num_threads(std::max(threads, 3));
  const TvResult many = denoise_tv_chambolle(x, 0.1);
  omp_set_num_threads(threads);
  EXPECT_EQ(one.iterations, many.iterations);
  EXPECT_TRUE(test::tensors_equal(one.volume, many.volume));
  EXPECT_LT(one.iterations, 200);
  // eps 0 never stops early: the cap is reached.
  EXPECT_EQ(denoise_tv_chambolle(x, 0.1, {.eps = 0, .max_iterations = 17}).iterations, 17);
}

TEST(Baselines, RefuseBadInputs) {
  const Tensor x = test::random_tensor({4, 5, 6}, 1);
  test::expect_error_mentions([&] { gaussian_filter(x, 0.0); }, {"gaussian_filter", "sigma is 0"});
  test::expect_error_mentions([&] { gaussian_filter(x.reshape({1, 4, 5, 6}), 1.0); }, {"gaussian_filter", "[1, 4, 5, 6]"});
  test::expect_error_mentions([&] { denoise_tv_chambolle(x, -0.1); }, {"denoise_tv_chambolle", "weight is -0.1"});
  test::expect_error_mentions([&] { median_filter3(test::random_tensor({4, 5, 6}, 1, DType::float64)); },
                      {"median_filter3", "float64"});
}

// ---- choosing sigma and the TV weight --------------------------------------------------------

// A smooth target (slow waves) and its input with uniform noise of amplitude `noise`.
VolumePair smooth_pair(uint64_t seed, double noise, Shape shape = {12, 20, 18}) {
  Tensor target = Tensor::empty(shape);
  Tensor input = noise == 0 ? Tensor::zeros(shape) : test::random_tensor(shape, seed, DType::float32, -noise, noise);
  float* t = target.data<float>();
  float* x = input.data<float>();
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) {
        const int64_t i = (d * shape[1] + h) * shape[2] + w;
        t[i] = float(0.5 * std::sin(0.3 * double(d) + 0.2 * double(h)) * std::cos(0.25 * double(w) + double(seed)));
        x[i] += t[i];
      }
  return {input, target};
}

double psnr_here(const Tensor& x, const Tensor& y) {
  const auto a = x.to_vector<float>(), b = y.to_vector<float>();
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
  return 10 * std::log10(4.0 / (sum / double(a.size())));
}

TEST(Baselines, SelectionPicksTheBestMeanPsnrOnTheTrainingPairs) {
  const std::vector<VolumePair> pairs{smooth_pair(1, 0.25), smooth_pair(2, 0.5), smooth_pair(3, 0.35)};
  std::vector<int64_t> reads;
  const BaselineParameters chosen = select_baseline_parameters(int64_t(pairs.size()), [&](int64_t i) {
    reads.push_back(i);
    return pairs[size_t(i)];
  });
  EXPECT_EQ(reads, (std::vector<int64_t>{0, 1, 2}));  // each pair read once
  EXPECT_EQ(chosen.pairs, 3);
  EXPECT_EQ(chosen.sigma.grid, kGaussianSigmas);
  EXPECT_EQ(chosen.tv_weight.grid, kTvWeights);
  // The mean PSNRs recomputed here, and the grid value of the highest.
  auto check = [&](const GridChoice& choice, const std::function<Tensor(const Tensor&, double)>& filter) {
    ASSERT_EQ(choice.mean_psnr.size(), choice.grid.size());
    double best = -1e9, best_value = 0, worst = 1e9;
    for (size_t k = 0; k < choice.grid.size(); ++k) {
      double mean = 0;
      for (const auto& p : pairs) mean += psnr_here(filter(p.input, choice.grid[k]), p.target) / double(pairs.size());
      EXPECT_NEAR(choice.mean_psnr[k], mean, 1e-3) << choice.grid[k];
      if (mean > best) best = mean, best_value = choice.grid[k];
      worst = std::min(worst, mean);
    }
    EXPECT_EQ(choice.chosen, best_value);
    EXPECT_GT(best - worst, 0.1);  // the grid matters on these pairs, so a wrong choice shows
  };
  check(chosen.sigma, [](const Tensor& x, double s) { return gaussian_filter(x, s); });
  check(chosen.tv_weight, [](const Tensor& x, double w) { return denoise_tv_chambolle(x, w).volume; });

  // Known answers: without noise the lightest filter is best, with heavy noise on a constant the
  // heaviest; the choice follows the values, not their place in the grid.
  const VolumePair clean = smooth_pair(4, 0.0);
  const auto read_clean = [&](int64_t) { return clean; };
  BaselineParameters p = select_baseline_parameters(1, read_clean, {1.5, 0.5, 1.0}, {0.2, 0.05});
  EXPECT_EQ(p.sigma.chosen, 0.5);
  EXPECT_EQ(p.tv_weight.chosen, 0.05);
  VolumePair flat{test::random_tensor({10, 16, 16}, 5, DType::float32, -0.5, 0.5), Tensor::zeros({10, 16, 16})};
  p = select_baseline_parameters(1, [&](int64_t) { return flat; });
  EXPECT_EQ(p.sigma.chosen, 1.5);
  EXPECT_EQ(p.tv_weight.chosen, 0.2);
  // The sigma alone (the trainer's panels) is the same choice over the same means.
  const GridChoice sigma = select_gaussian_sigma(int64_t(pairs.size()), [&](int64_t i) { return pairs[size_t(i)]; });
  EXPECT_EQ(sigma.grid, chosen.sigma.grid);
  EXPECT_EQ(sigma.mean_psnr, chosen.sigma.mean_psnr);
  EXPECT_EQ(sigma.chosen, chosen.sigma.chosen);
  EXPECT_EQ(select_gaussian_sigma(1, read_clean, {1.5, 0.5, 1.0}).chosen, 0.5);
}

}  // namespace
}  // namespace ctsr::train
