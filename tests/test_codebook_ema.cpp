// The EMA codebook (model/codebook_ema.h): the original Codebook's steps computed by torch
// (tests/data/codebook_ema_golden.txt, from tools/pytorch/make_codebook_ema_golden.py: its
// nearest codes, commitment loss, perplexity, EMA, normalisation and a restart) on every path;
// update() against a straightforward float64 implementation written here (with restarts, and
// with a batch smaller than the codebook, which tiles it with noise); the CUDA paths bit for bit
// against the cpu; determinism, reproducibility per (seed, step) and a resumed run equal to an
// uninterrupted one; the restart draw (distinct, in range, uniform); the initialisation; the
// commitment loss (value, float64 gradient check of z_e, CUDA parity); bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/binary.h"
#include "kernels/codebook.h"
#include "kernels/random.h"
#include "model/codebook_ema.h"
#include "runtime/philox.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

// ---- golden data --------------------------------------------------------------------------------

struct GoldenStep {
  std::map<std::string, std::vector<double>> arrays;
  const std::vector<double>& at(const std::string& name) const {
    auto it = arrays.find(name);
    CTSR_CHECK(it != arrays.end(), "codebook_ema_golden.txt: a step has no '", name, "'");
    return it->second;
  }
};

struct Golden {
  int64_t codes = 0, channels = 0, rows = 0, steps = 0;
  double decay = 0, smoothing = 0, threshold = 0, beta = 0;
  std::map<std::string, std::vector<double>> initial;
  std::vector<GoldenStep> step;
};

const Golden& golden() {
  static const Golden g = [] {
    const std::string path = std::string(CTSR_TEST_DATA_DIR) + "/codebook_ema_golden.txt";
    std::ifstream file(path);
    CTSR_CHECK(file.good(), "cannot open ", path);
    Golden out;
    std::map<std::string, std::vector<double>>* target = &out.initial;
    for (std::string text; std::getline(file, text);) {
      if (text.empty() || text[0] == '#') continue;
      std::istringstream line(text);
      std::string key;
      line >> key;
      if (key == "problem") {
        line >> out.codes >> out.channels >> out.rows >> out.steps >> out.decay >> out.smoothing >> out.threshold >>
            out.beta;
      } else if (key == "step") {
        out.step.emplace_back();
        target = &out.step.back().arrays;
      } else {
        int64_t count = 0;
        line >> count;
        std::vector<double> values(static_cast<size_t>(count));
        for (double& v : values) line >> v;
        (*target)[key] = values;
      }
      CTSR_CHECK(!line.fail(), path, ": cannot read the line starting '", text.substr(0, 40), "'");
    }
    CTSR_CHECK(out.codes > 0 && int64_t(out.step.size()) == out.steps, path, ": ", out.step.size(),
               " steps, the problem line says ", out.steps);
    return out;
  }();
  return g;
}

Tensor as(const std::vector<double>& v, const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::from_vector<double>(v, shape);
  return (dtype == DType::float32 ? to_float(t) : t).to(device);
}

// The golden steps on one path: float64 on the cpu to 1e-12, float32 anywhere to float32
// accuracy. The candidates are the golden ones (the original draws them with torch.randperm).
void check_golden(Device device, DType dtype) {
  const Golden& g = golden();
  const double tol = dtype == DType::float64 ? 1e-12 : 3e-6;
  CodebookEmaConfig config;
  config.decay = g.decay;
  config.smoothing = g.smoothing;
  config.restart_threshold = g.threshold;
  CodebookEma ema(g.codes, g.channels, device, dtype, config);
  ema.set_state(as(g.initial.at("embeddings"), {g.codes, g.channels}, dtype, device),
                as(g.initial.at("N"), {g.codes}, dtype, device),
                as(g.initial.at("z_avg"), {g.codes, g.channels}, dtype, device));
  int restarts = 0;
  for (int64_t s = 0; s < g.steps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    const GoldenStep& step = g.step[size_t(s)];
    Tensor latents = as(step.at("latents"), {g.rows, g.channels}, dtype, device);
    Tensor indices = codebook_nearest(latents, ema.embeddings());
    std::vector<int64_t> want_indices;
    for (double v : step.at("indices")) want_indices.push_back(int64_t(v));
    EXPECT_EQ(indices.to_vector<int64_t>(), want_indices);
    Tensor quantized = codebook_lookup(indices, ema.embeddings());
    EXPECT_NEAR(to_double(commitment_loss(latents, quantized, g.beta)).to_vector<double>()[0],
                step.at("commitment_loss")[0], tol * step.at("commitment_loss")[0]);
    CodebookStatistics statistics = codebook_statistics(latents, indices, g.codes);
    EXPECT_NEAR(codebook_perplexity(statistics.counts), step.at("perplexity")[0], 1e-12);
    ema.apply(statistics, as(step.at("candidates"), {g.codes, g.channels}, dtype, device));
    EXPECT_TENSORS_CLOSE(ema.ema_counts(), Tensor::from_vector<double>(step.at("N"), {g.codes}), tol, 0);
    EXPECT_TENSORS_CLOSE(ema.ema_sums(), Tensor::from_vector<double>(step.at("z_avg"), {g.codes, g.channels}), tol,
                         tol);
    EXPECT_TENSORS_CLOSE(ema.embeddings(), Tensor::from_vector<double>(step.at("embeddings"), {g.codes, g.channels}),
                         tol, tol);
    const Shape table{g.codes, g.channels};
    std::printf("golden step %lld, %s %s: relative L2 error of embeddings %.3g, N %.3g, z_avg %.3g\n", (long long)s,
                device.str().c_str(), dtype_name(dtype),
                relative_l2(ema.embeddings(), Tensor::from_vector<double>(step.at("embeddings"), table)),
                relative_l2(ema.ema_counts(), Tensor::from_vector<double>(step.at("N"), {g.codes})),
                relative_l2(ema.ema_sums(), Tensor::from_vector<double>(step.at("z_avg"), table)));
    for (double r : step.at("restarted")) restarts += r != 0.0;
    // Restarted codes hold their candidate exactly.
    const std::vector<double> restarted = step.at("restarted"), cand = step.at("candidates");
    const std::vector<double> e = to_double(ema.embeddings()).to_vector<double>();
    const std::vector<double> c = to_double(as(cand, {g.codes, g.channels}, dtype, Device::cpu())).to_vector<double>();
    for (int64_t k = 0; k < g.codes; ++k) {
      if (restarted[size_t(k)] == 0.0) continue;
      for (int64_t ch = 0; ch < g.channels; ++ch)
        EXPECT_EQ(e[size_t(k * g.channels + ch)], c[size_t(k * g.channels + ch)]) << "code " << k;
    }
  }
  EXPECT_GT(restarts, 0) << "the golden steps should include a restart";
}

TEST(CodebookEma, GoldenStepsOfTheOriginalInFloat64) { check_golden(Device::cpu(), DType::float64); }
TEST(CodebookEma, GoldenStepsOfTheOriginalInFloat32) { check_golden(Device::cpu(), DType::float32); }

// ---- a straightforward float64 implementation ---------------------------------------------------

struct PlainState {
  std::vector<double> embeddings, n, z_avg;
};

// One update, as the header states it, in float64 with plain loops; candidates given.
void plain_update(PlainState& s, const std::vector<double>& latents, const std::vector<int64_t>& indices,
                  const std::vector<double>& candidates, int64_t codes, int64_t channels, const CodebookEmaConfig& c) {
  std::vector<double> counts(size_t(codes), 0.0), sums(size_t(codes * channels), 0.0);
  for (size_t r = 0; r < indices.size(); ++r) {
    counts[size_t(indices[r])] += 1.0;
    for (int64_t ch = 0; ch < channels; ++ch)
      sums[size_t(indices[r] * channels + ch)] += latents[r * size_t(channels) + size_t(ch)];
  }
  double total = 0.0;
  for (int64_t k = 0; k < codes; ++k) {
    s.n[size_t(k)] = c.decay * s.n[size_t(k)] + (1.0 - c.decay) * counts[size_t(k)];
    total += s.n[size_t(k)];
  }
  for (size_t i = 0; i < sums.size(); ++i) s.z_avg[i] = c.decay * s.z_avg[i] + (1.0 - c.decay) * sums[i];
  for (int64_t k = 0; k < codes; ++k) {
    const double weight = (s.n[size_t(k)] + c.smoothing) / (total + double(codes) * c.smoothing) * total;
    const bool dead = !(s.n[size_t(k)] >= c.restart_threshold);
    for (int64_t ch = 0; ch < channels; ++ch) {
      const size_t i = size_t(k * channels + ch);
      s.embeddings[i] = dead ? candidates[i] : s.z_avg[i] / weight;
    }
  }
}

// The candidates as the header describes them: rows chosen by codebook_restart_choice (tested
// below), plus the documented noise when the batch is smaller than the codebook.
std::vector<double> plain_candidates(const std::vector<double>& latents, int64_t rows, int64_t codes, int64_t channels,
                                     uint64_t seed, uint64_t step) {
  const bool tiled = rows < codes;
  const int64_t population = tiled ? rows * ((codes + rows - 1) / rows) : rows;
  const std::vector<int64_t> chosen = codebook_restart_choice(population, codes, seed, step);
  std::vector<double> out(size_t(codes * channels));
  std::vector<double> noise(out.size(), 0.0);
  if (tiled) {
    Tensor z = Tensor::empty({codes, channels}, DType::float64);
    fill_normal(z, seed, philox::stream_offset(kCodebookNoisePurpose, step), 0.0, 0.01 / std::sqrt(double(channels)));
    noise = z.to_vector<double>();
  }
  for (int64_t k = 0; k < codes; ++k)
    for (int64_t ch = 0; ch < channels; ++ch)
      out[size_t(k * channels + ch)] = latents[size_t((chosen[size_t(k)] % rows) * channels + ch)] +
                                       noise[size_t(k * channels + ch)];
  return out;
}

// A state with some small counts (those codes restart on the next update).
PlainState random_state(int64_t codes, int64_t channels, uint64_t seed) {
  PlainState s;
  s.embeddings = random_tensor({codes, channels}, seed, DType::float64, -1.0, 1.0).to_vector<double>();
  s.n = random_tensor({codes}, seed + 1, DType::float64, 0.2, 3.0).to_vector<double>();
  s.z_avg.resize(s.embeddings.size());
  for (int64_t k = 0; k < codes; ++k)
    for (int64_t c = 0; c < channels; ++c)
      s.z_avg[size_t(k * channels + c)] = s.embeddings[size_t(k * channels + c)] * s.n[size_t(k)];
  return s;
}

void load(CodebookEma& ema, const PlainState& s, DType dtype, Device device) {
  const int64_t codes = ema.codes(), channels = ema.channels();
  ema.set_state(as(s.embeddings, {codes, channels}, dtype, device), as(s.n, {codes}, dtype, device),
                as(s.z_avg, {codes, channels}, dtype, device));
}

TEST(CodebookEma, UpdateMatchesAStraightforwardFloat64Implementation) {
  struct Case {
    int64_t codes, channels, rows;
  };
  // 53 rows for 7 codes; 5 rows for 7 codes (tiled to 10 rows, with noise); 300 rows for 61.
  for (const Case& c : {Case{7, 4, 53}, Case{7, 4, 5}, Case{61, 3, 300}}) {
    SCOPED_TRACE(std::to_string(c.codes) + " codes, " + std::to_string(c.rows) + " rows");
    CodebookEmaConfig config;
    PlainState plain = random_state(c.codes, c.channels, 100 + uint64_t(c.rows));
    CodebookEma ema64(c.codes, c.channels, Device::cpu(), DType::float64, config);
    CodebookEma ema32(c.codes, c.channels, Device::cpu(), DType::float32, config);
    load(ema64, plain, DType::float64, Device::cpu());
    load(ema32, plain, DType::float32, Device::cpu());
    int restarts = 0;
    for (uint64_t step = 0; step < 4; ++step) {
      Tensor latents = random_tensor({c.rows, c.channels}, 200 + step, DType::float64, -1.5, 1.5);
      Tensor indices = codebook_nearest(latents, ema64.embeddings());
      const std::vector<double> z = latents.to_vector<double>();
      plain_update(plain, z, indices.to_vector<int64_t>(),
                   plain_candidates(z, c.rows, c.codes, c.channels, 9, step), c.codes, c.channels, config);
      for (double n : plain.n) restarts += !(n >= 1.0);
      ema64.update(latents, indices, 9, step);
      // float32 follows the float64 codebook's indices, so both see the same assignments.
      ema32.update(to_float(latents), indices, 9, step);
      EXPECT_TENSORS_CLOSE(ema64.ema_counts(), Tensor::from_vector<double>(plain.n, {c.codes}), 1e-13, 0);
      EXPECT_TENSORS_CLOSE(ema64.ema_sums(), Tensor::from_vector<double>(plain.z_avg, {c.codes, c.channels}), 1e-12,
                           1e-14);
      EXPECT_TENSORS_CLOSE(ema64.embeddings(), Tensor::from_vector<double>(plain.embeddings, {c.codes, c.channels}),
                           1e-12, 1e-14);
      EXPECT_TENSORS_CLOSE(ema32.ema_counts(), ema64.ema_counts(), 1e-6, 0);
      EXPECT_TENSORS_CLOSE(ema32.ema_sums(), ema64.ema_sums(), 1e-5, 1e-7);
      EXPECT_TENSORS_CLOSE(ema32.embeddings(), ema64.embeddings(), 1e-5, 1e-7);
      std::printf("step %llu: float64 vs plain %.3g, float32 vs float64 %.3g (relative L2 of the embeddings)\n",
                  (unsigned long long)step,
                  relative_l2(ema64.embeddings(), Tensor::from_vector<double>(plain.embeddings, {c.codes, c.channels})),
                  relative_l2(ema32.embeddings(), ema64.embeddings()));
    }
    EXPECT_GT(restarts, 0) << "the case should restart some codes";
  }
}

// ---- CUDA paths ----------------------------------------------------------------------------------

using CodebookEmaCuda = CudaPathTest;

TEST_P(CodebookEmaCuda, GoldenStepsOfTheOriginal) { check_golden(device(), DType::float32); }

TEST_P(CodebookEmaCuda, UpdatesMatchTheCpuBitForBit) {
  struct Case {
    int64_t codes, channels, rows;
  };
  for (const Case& c : {Case{7, 4, 53}, Case{7, 4, 5}, Case{1000, 8, 2500}}) {
    SCOPED_TRACE(std::to_string(c.codes) + " codes, " + std::to_string(c.rows) + " rows");
    CodebookEma cpu(c.codes, c.channels, Device::cpu());
    CodebookEma dev(c.codes, c.channels, device());
    Tensor first = random_tensor({c.rows, c.channels}, 300, DType::float32, -1.0, 1.0);
    cpu.initialize_from(first, 5);
    dev.initialize_from(first.to(device()), 5);
    EXPECT_TRUE(tensors_equal(dev.embeddings(), cpu.embeddings()));
    int restarted = 0;
    for (uint64_t step = 0; step < 3; ++step) {
      // Narrower than the first batch: the outer codes go unused and restart.
      Tensor latents = random_tensor({c.rows, c.channels}, 301 + step, DType::float32, -0.4, 0.4);
      Tensor indices = codebook_nearest(latents, cpu.embeddings());
      EXPECT_TRUE(tensors_equal(codebook_nearest(latents.to(device()), dev.embeddings()), indices));
      CodebookStatistics s = cpu.update(latents, indices, 5, step);
      dev.update(latents.to(device()), indices.to(device()), 5, step);
      EXPECT_TRUE(tensors_equal(dev.ema_counts(), cpu.ema_counts()));
      EXPECT_TRUE(tensors_equal(dev.ema_sums(), cpu.ema_sums()));
      EXPECT_TRUE(tensors_equal(dev.embeddings(), cpu.embeddings()));
      for (float n : cpu.ema_counts().to_vector<float>()) restarted += !(n >= 1.0f);
    }
    EXPECT_GT(restarted, 0);
  }
}

TEST_P(CodebookEmaCuda, CommitmentLossMatchesTheReference) {
  Tensor z_e = random_tensor({2, 5, 3, 7, 8}, 400), z_q = random_tensor({2, 5, 3, 7, 8}, 401);
  Tensor dloss = Tensor::from_vector<float>({1.7f}, {1});
  EXPECT_TENSORS_CLOSE(commitment_loss(z_e.to(device()), z_q.to(device())), commitment_loss(z_e, z_q), 2e-6, 0);
  EXPECT_TENSORS_CLOSE(commitment_loss_backward(z_e.to(device()), z_q.to(device()), dloss.to(device())),
                       commitment_loss_backward(z_e, z_q, dloss), 1e-6, 1e-12);
}

CTSR_INSTANTIATE_CUDA_PATHS(CodebookEmaCuda);

// ---- determinism and reproducibility ----------------------------------------------------------------

// Runs steps [first, last) of a fixed stream of batches on `ema`.
void run_steps(CodebookEma& ema, uint64_t seed, uint64_t first, uint64_t last) {
  for (uint64_t step = first; step < last; ++step) {
    Tensor latents = random_tensor({40, 4}, 500 + step, DType::float32, -1.0, 1.0);
    ema.update(latents, codebook_nearest(latents, ema.embeddings()), seed, step);
  }
}

TEST(CodebookEma, DeterministicAndResumable) {
  Tensor first = random_tensor({40, 4}, 499);
  auto fresh = [&](uint64_t seed) {
    auto ema = std::make_unique<CodebookEma>(11, 4, Device::cpu());
    ema->initialize_from(first, seed);
    return ema;
  };
  auto a = fresh(3), b = fresh(3), other = fresh(4);
  run_steps(*a, 3, 0, 6);
  run_steps(*b, 3, 0, 6);
  run_steps(*other, 4, 0, 6);
  EXPECT_TRUE(tensors_equal(a->embeddings(), b->embeddings()));
  EXPECT_FALSE(tensors_equal(a->embeddings(), other->embeddings()));
  // Interrupted after step 2, its state saved and loaded into a new codebook, resumed at step 3.
  auto interrupted = fresh(3);
  run_steps(*interrupted, 3, 0, 3);
  CodebookEma resumed(11, 4, Device::cpu());
  resumed.set_state(interrupted->embeddings().clone(), interrupted->ema_counts().clone(),
                    interrupted->ema_sums().clone());
  run_steps(resumed, 3, 3, 6);
  EXPECT_TRUE(tensors_equal(resumed.embeddings(), a->embeddings()));
  EXPECT_TRUE(tensors_equal(resumed.ema_counts(), a->ema_counts()));
  EXPECT_TRUE(tensors_equal(resumed.ema_sums(), a->ema_sums()));
}

TEST(CodebookEma, CandidatesArePerSeedAndStep) {
  CodebookEma ema(7, 4, Device::cpu());
  Tensor latents = random_tensor({53, 4}, 600);
  Tensor c = ema.restart_candidates(latents, 1, 2);
  EXPECT_TRUE(tensors_equal(ema.restart_candidates(latents, 1, 2), c));
  EXPECT_FALSE(tensors_equal(ema.restart_candidates(latents, 1, 3), c));
  EXPECT_FALSE(tensors_equal(ema.restart_candidates(latents, 2, 2), c));
  // Each candidate is one of the batch's rows, all distinct (53 rows >= 7 codes: no tiling).
  const std::vector<float> z = latents.to_vector<float>(), v = c.to_vector<float>();
  std::set<int64_t> rows;
  for (int64_t k = 0; k < 7; ++k) {
    int64_t found = -1;
    for (int64_t r = 0; r < 53 && found < 0; ++r)
      if (std::equal(v.begin() + k * 4, v.begin() + k * 4 + 4, z.begin() + r * 4)) found = r;
    EXPECT_GE(found, 0) << "candidate " << k << " is not a row of the batch";
    rows.insert(found);
  }
  EXPECT_EQ(rows.size(), 7u);
}

TEST(CodebookRestartChoice, DistinctInRangeReproducibleAndUniform) {
  for (int64_t population : {int64_t(7), int64_t(53), int64_t(1) << 40}) {
    const std::vector<int64_t> a = codebook_restart_choice(population, 7, 11, 0);
    EXPECT_EQ(a, codebook_restart_choice(population, 7, 11, 0));
    EXPECT_NE(a, codebook_restart_choice(population, 7, 11, 1));
    EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), a.size());
    for (int64_t v : a) {
      EXPECT_GE(v, 0);
      EXPECT_LT(v, population);
    }
  }
  // All codes of a population of 7: a permutation.
  std::vector<int64_t> p = codebook_restart_choice(7, 7, 5, 9);
  std::sort(p.begin(), p.end());
  EXPECT_EQ(p, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  // Uniform: over 20000 steps, each of 10 rows is first (and last of 3) about 2000 times; a
  // chi-square with 9 degrees of freedom beyond 30 has probability ~4e-4.
  std::vector<double> first(10, 0.0), third(10, 0.0);
  const int trials = 20000;
  for (int t = 0; t < trials; ++t) {
    const std::vector<int64_t> c = codebook_restart_choice(10, 3, 77, uint64_t(t));
    first[size_t(c[0])] += 1;
    third[size_t(c[2])] += 1;
  }
  for (const std::vector<double>* h : {&first, &third}) {
    double chi2 = 0;
    for (double o : *h) chi2 += (o - trials / 10.0) * (o - trials / 10.0) / (trials / 10.0);
    EXPECT_LT(chi2, 30.0);
  }
  expect_error_mentions([] { codebook_restart_choice(5, 7, 1, 0); }, {"7 distinct draws from 5 rows"});
}

TEST(CodebookEma, InitializeFromTakesRowsOfTheBatch) {
  // 53 rows >= 7 codes: the codes are 7 distinct rows, z_avg equals them, N is 1.
  CodebookEma ema(7, 4, Device::cpu());
  EXPECT_FALSE(ema.initialized());
  Tensor latents = random_tensor({53, 4}, 700);
  ema.initialize_from(latents, 8);
  EXPECT_TRUE(ema.initialized());
  EXPECT_TRUE(tensors_equal(ema.embeddings(), ema.restart_candidates(latents, 8, kCodebookInitStep)));
  EXPECT_TRUE(tensors_equal(ema.ema_sums(), ema.embeddings()));
  EXPECT_EQ(ema.ema_counts().to_vector<float>(), std::vector<float>(7, 1.0f));
  // 3 rows < 7 codes: tiled to 9 rows with noise of std 0.01 / sqrt(4); each code is a row plus
  // a small nonzero offset.
  CodebookEma small(7, 4, Device::cpu());
  Tensor few = random_tensor({3, 4}, 701);
  small.initialize_from(few, 8);
  const std::vector<float> e = small.embeddings().to_vector<float>(), z = few.to_vector<float>();
  const std::vector<int64_t> chosen = codebook_restart_choice(9, 7, 8, kCodebookInitStep);
  double sum_sq = 0;
  for (int64_t k = 0; k < 7; ++k)
    for (int64_t c = 0; c < 4; ++c) {
      const double d = double(e[size_t(k * 4 + c)]) - double(z[size_t((chosen[size_t(k)] % 3) * 4 + c)]);
      EXPECT_NE(d, 0.0);
      EXPECT_LT(std::fabs(d), 0.05);  // 10 standard deviations
      sum_sq += d * d;
    }
  const double std_dev = std::sqrt(sum_sq / 28.0);
  EXPECT_GT(std_dev, 0.002);
  EXPECT_LT(std_dev, 0.01);
}

// ---- commitment loss and perplexity -------------------------------------------------------------

TEST(CommitmentLoss, ValueAndGradientOfZeOnly) {
  Tensor z_e = random_tensor({3, 5, 7}, 800, DType::float64), z_q = random_tensor({3, 5, 7}, 801, DType::float64);
  const std::vector<double> a = z_e.to_vector<double>(), b = z_q.to_vector<double>();
  double sq = 0;
  for (size_t i = 0; i < a.size(); ++i) sq += (a[i] - b[i]) * (a[i] - b[i]);
  EXPECT_NEAR(commitment_loss(z_e, z_q).to_vector<double>()[0], 0.25 * sq / double(a.size()), 1e-15);
  EXPECT_NEAR(commitment_loss(z_e, z_q, 1.0).to_vector<double>()[0], sq / double(a.size()), 1e-15);
  expect_gradcheck(
      "commitment_loss", {z_e, z_q},
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{commitment_loss(in[0], in[1])}; },
      [](const std::vector<Tensor>& in, const std::vector<Tensor>& dy) {
        return std::vector<Tensor>{commitment_loss_backward(in[0], in[1], dy[0]), Tensor()};
      });
  // beta scales the gradient (0.25 and 1 are powers of two: exactly).
  Tensor dloss = Tensor::from_vector<double>({0.3}, {1});
  EXPECT_TRUE(tensors_equal(scale(commitment_loss_backward(z_e, z_q, dloss, 0.25), 4.0),
                            commitment_loss_backward(z_e, z_q, dloss, 1.0)));
}

TEST(CodebookPerplexity, KnownValues) {
  // Uniform use of 4 codes: exp(-log(1/4 + 1e-7)) = 1 / (1/4 + 1e-7), just below 4.
  EXPECT_NEAR(codebook_perplexity(Tensor::from_vector<float>({5, 5, 5, 5}, {4})), 1.0 / (0.25 + 1e-7), 1e-12);
  EXPECT_NEAR(codebook_perplexity(Tensor::from_vector<float>({0, 9, 0}, {3})), std::exp(-std::log(1.0 + 1e-7)), 1e-15);
  expect_error_mentions([] { codebook_perplexity(Tensor::from_vector<float>({0, 0}, {2})); }, {"sum to 0"});
}

TEST(CodebookEma, RejectsBadUse) {
  CodebookEma ema(7, 4, Device::cpu());
  Tensor latents = random_tensor({53, 4}, 900);
  Tensor indices = Tensor::from_vector<int64_t>(std::vector<int64_t>(53, 0), {53});
  expect_error_mentions([&] { ema.update(latents, indices, 1, 0); }, {"not been initialised", "initialize_from"});
  ema.initialize_from(latents, 1);
  expect_error_mentions([&] { ema.update(random_tensor({53, 3}, 901), indices, 1, 0); },
                        {"CodebookEma::update", "3 channels", "the codebook 4"});
  expect_error_mentions([&] { ema.update(to_double(latents), indices, 1, 0); }, {"CodebookEma::update", "float64"});
  expect_error_mentions([&] { ema.update(latents, Tensor::from_vector<int64_t>({0, 1}, {2}), 1, 0); },
                        {"indices [2]", "53 latent rows"});
  expect_error_mentions(
      [&] { ema.set_state(random_tensor({7, 4}, 1), random_tensor({6}, 2), random_tensor({7, 4}, 3)); },
      {"set_state ema_counts (N)", "[7]"});
  expect_error_mentions([] { CodebookEma(7, 4, Device::cuda_on_cpu(), DType::float64); },
                        {"CodebookEma", "float64", "cuda_on_cpu"});
  CodebookEmaConfig bad;
  bad.decay = 1.5;
  expect_error_mentions([&] { CodebookEma(7, 4, Device::cpu(), DType::float32, bad); }, {"decay 1.5"});
}

}  // namespace
}  // namespace ctsr::test
