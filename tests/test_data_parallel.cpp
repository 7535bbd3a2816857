// Data parallelism (train/data_parallel.h, runtime/communicator.h) as users run it: ctsr_train
// under `mpirun -np N` on the CPU (MPI collectives) against one process with the same global
// batch, with and without ZeRO-1; validation shares that score every sample once for any N; a
// rank killed or hung mid-run ends the job with a clear error in bounded time, and the job
// resumes from its checkpoint. The same for ctsr_train_vqae (the VQ-AE task), and its codebook's
// EMA update over the ranks (CodebookEma::update_across_ranks) against one process's.
#include <algorithm>
#include <csignal>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "kernels/random.h"
#include "model/codebook_ema.h"
#include "runtime/communicator.h"
#include "runtime/formats/safetensors.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/train_fixtures.h"
#include "tests/vqae_train_fixtures.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/metrics_log.h"
#include "train/trainer.h"
#include "train/vqae_trainer.h"

namespace ctsr::train {
namespace {

using test::TempDir;

const std::string kRepo = std::string(CTSR_TEST_DATA_DIR) + "/../../";
const std::string kTrain = std::string(CTSR_TOOLS_BIN_DIR) + "/ctsr_train";
const std::string kTrainVqae = std::string(CTSR_TOOLS_BIN_DIR) + "/ctsr_train_vqae";

std::string find_mpirun() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':'))
    if (!dir.empty() && ::access((dir + "/mpirun").c_str(), X_OK) == 0) return dir + "/mpirun";
  return "";
}

#define SKIP_WITHOUT_MPI()                                                                          \
  do {                                                                                              \
    if (!mpi_built()) GTEST_SKIP() << "ctsr was built without MPI (libopenmpi-dev)";                \
    if (find_mpirun().empty()) GTEST_SKIP() << "no mpirun on PATH (openmpi-bin)";                  \
  } while (0)

// mpirun -np N ctsr_train ARGS: one thread per rank (the ranks share the cores). In the sanitizer
// build the ranks keep AddressSanitizer's checks but not its leak report: Open MPI leaves
// allocations of its plugins behind at exit (in MPI's own code, unloaded by then).
std::vector<std::string> mpirun(int ranks, const std::vector<std::string>& args, const std::string& program = kTrain) {
  std::vector<std::string> argv{find_mpirun(), "--oversubscribe", "--bind-to", "none", "-np", std::to_string(ranks),
                                "-x", "OMP_NUM_THREADS=1", "-x", "ASAN_OPTIONS=detect_leaks=0"};
  if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
  argv.push_back(program);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

test::ToolResult run_argv(const std::vector<std::string>& argv) {
  std::string command;
  for (const auto& a : argv) command += test::shell_quote(a) + " ";
  command += "2>&1";
  test::ToolResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::filesystem::path write_config(const std::filesystem::path& path, const DiffusionTrainConfig& c) {
  std::ofstream(path) << to_yaml(c);
  return path;
}

std::vector<double> training_losses(const std::filesystem::path& metrics) {
  std::vector<double> out;
  for (const auto& j : read_metrics(metrics))
    if (!j.contains("tier")) out.push_back(j["loss"].get<double>());
  return out;
}

nlohmann::json last_of_tier(const std::filesystem::path& metrics, const std::string& tier) {
  nlohmann::json found;
  for (const auto& j : read_metrics(metrics))
    if (j.value("tier", "") == tier) found = j;
  return found;
}

// The largest relative L2 difference over the tensors of two checkpoints (model, EMA, AdamW
// moments), and its tensor; a tensor that is all zeros in `a` must be all zeros in `b` too.
struct CheckpointDistance {
  double worst = 0;
  std::string name;
};
CheckpointDistance checkpoint_distance(const std::filesystem::path& a, const std::filesystem::path& b) {
  io::SafetensorsReader ra(a), rb(b);
  CheckpointDistance d;
  EXPECT_EQ(ra.names(), rb.names());
  if (ra.names() != rb.names()) return {1e30, "(the tensor names differ)"};
  for (const auto& name : ra.names()) {
    const Tensor ta = ra.load(name), tb = rb.load(name);
    const std::vector<float> va = ta.to_vector<float>();
    if (std::all_of(va.begin(), va.end(), [](float v) { return v == 0.0f; })) {
      EXPECT_TRUE(test::tensors_equal(tb, ta)) << name;
      continue;
    }
    const double e = test::relative_l2(tb, ta);
    if (e > d.worst) d = {e, name};
  }
  return d;
}

// Every tensor within `rtol`. Sums in another order (per rank, then across ranks) differ in the
// last bits, and AdamW's early updates, about lr * sign(gradient), carry that to full steps where
// a gradient is near zero, so the weights agree less closely than the losses. How much depends on
// OpenBLAS's kernels: after these 4 steps, two ranks against one process measured 1.4e-5 (its
// SSE3 "Prescott" kernels), 2.6e-5 (SkylakeX) and 4.6e-5 (Haswell), always an EMA bias; and with
// no second rank at all, `mpirun -np 1` (one thread) against the two-thread process moves by 7.0e-5
// with the Haswell kernels (0 with the others). So the bound is 1e-4, far under what a reduction
// bug does (the test checks that the comparison can fail).
void expect_same_checkpoint(const std::filesystem::path& a, const std::filesystem::path& b, double rtol) {
  const CheckpointDistance d = checkpoint_distance(a, b);
  EXPECT_LT(d.worst, rtol) << d.name;
  std::printf("checkpoints agree to %.2e (worst %s)\n", d.worst, d.name.c_str());
}

TEST(RankShare, EverySampleOnceForAnyNumberOfRanks) {
  for (int size = 1; size <= 5; ++size) {
    for (int64_t count = 0; count <= 13; ++count) {
      std::vector<int> seen(size_t(count), 0);
      int64_t smallest = count, largest = 0;
      for (int r = 0; r < size; ++r) {
        const auto [first, last] = rank_share(count, r, size);
        EXPECT_LE(first, last);
        smallest = std::min(smallest, last - first), largest = std::max(largest, last - first);
        for (int64_t i = first; i < last; ++i) ++seen[size_t(i)];
      }
      for (int64_t i = 0; i < count; ++i) EXPECT_EQ(seen[size_t(i)], 1) << "item " << i << ", " << size << " ranks";
      EXPECT_LE(largest - smallest, 1) << count << " items over " << size << " ranks";
    }
  }
  test::expect_error_mentions([] { rank_share(4, 2, 2); }, {"rank 2 of 2"});
}

// In one process ZeRO-1 shards over a single rank: the same training, through the other code.
TEST(DataParallel, ZeroOneInOneProcessTrainsLikeThePlainPath) {
  TempDir dir("dp-zero1-single");
  write_cache(dir / "cache", {});
  DiffusionTrainConfig c = small_config(dir);
  c.validation.light_every = 0;
  c.distributed.bucket_mb = 0.01;  // several buckets
  std::ostringstream sink;
  TrainerOptions o;
  o.progress = false;
  o.log = &sink;
  c.output.dir = (dir / "plain").string();
  Trainer plain(c, o);
  c.distributed.zero1 = true;
  c.output.dir = (dir / "zero1").string();
  Trainer zero1(c, o);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(zero1.step(), plain.step(), 1e-6);
  auto a = plain.model().parameters(), b = zero1.model().parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(test::relative_l2(b[i]->value, a[i]->value), 1e-6) << a[i]->name;
}

// `mpirun -np 2` on configs/tiny.yaml ends with the parameters (and EMA, and AdamW's moments) of
// one process with the same global batch, to float32 rounding; with and without ZeRO-1.
TEST(DataParallel, TwoRanksEqualOneRankWithTheSameGlobalBatch) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-equivalence");
  write_cache(dir / "cache", {.train = 9});
  const std::vector<std::string> common{"--config",  kRepo + "configs/tiny.yaml",
                                        "--device",  "cpu",
                                        "--quiet",   "--set",
                                        "data.cache_dir=" + (dir / "cache").string(),
                                        "--set",     "training.max_steps=4",
                                        "--set",     "training.log_every=1",
                                        "--set",     "validation.full_every=0",
                                        "--set",     "validation.light_every=2",
                                        "--set",     "distributed.bucket_mb=0.5"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  std::vector<std::string> one{kTrain};
  for (const auto& a : with({"--set", "output.dir=" + (dir / "one").string()})) one.push_back(a);
  auto r = run_argv(one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // What a rank trains on when its gradients are not reduced (half the global batch) is far
  // outside the bound: the comparison below can fail (measured: 4.0, AdamW's second moments).
  constexpr double rtol = 1e-4;
  std::vector<std::string> half{kTrain};
  for (const auto& a : with({"--set", "output.dir=" + (dir / "half").string(), "--set", "training.batch_size=4"}))
    half.push_back(a);
  r = run_argv(half);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(checkpoint_distance(checkpoint_path(dir / "one" / "checkpoints", 4), checkpoint_path(dir / "half" / "checkpoints", 4))
                .worst,
            100 * rtol);
  for (bool zero1 : {false, true}) {
    const std::string name = zero1 ? "two_zero1" : "two";
    r = run_argv(mpirun(2, with({"--set", "output.dir=" + (dir / name).string(), "--set",
                                 std::string("distributed.zero1=") + (zero1 ? "true" : "false")})));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("over 2 ranks (mpi"), std::string::npos) << r.output;
    const auto losses_one = training_losses(dir / "one" / "metrics.jsonl");
    const auto losses_two = training_losses(dir / name / "metrics.jsonl");
    ASSERT_EQ(losses_two.size(), 4u);
    for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(losses_two[k], losses_one[k], 1e-5 * losses_one[k]) << "step " << k + 1;
    EXPECT_NEAR(last_of_tier(dir / name / "metrics.jsonl", "light")["loss"].get<double>(),
                last_of_tier(dir / "one" / "metrics.jsonl", "light")["loss"].get<double>(), 1e-5);
    expect_same_checkpoint(checkpoint_path(dir / "one" / "checkpoints", 4), checkpoint_path(dir / name / "checkpoints", 4),
                           rtol);
  }
}

// Three ranks share five validation samples (2 + 1 + 2... as rank_share deals them): the light
// and full tiers report what one process reports, over all five, and rank 0 writes the panels
// of samples that other ranks scored.
TEST(DataParallel, ValidationScoresEverySampleOnceOnAnyNumberOfRanks) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-validation");
  auto vqae = Vqae::load(kVqae, 2, Device::cpu());
  write_cache(dir / "cache", {.train = 6, .val = 5, .hd_volumes = true, .latent_min = vqae->code_min(),
                              .latent_max = vqae->code_max()});
  DiffusionTrainConfig c = small_config(dir);
  c.training.batch_size = 6;
  c.training.max_steps = 2;
  c.validation.light_every = 2;
  c.validation.light_samples = 5;
  c.validation.full_every = 2;
  c.validation.num_samples = 5;
  c.validation.batch_size = 2;
  c.validation.panels = 2;
  c.data.vqae_weights = kVqae;
  c.data.vqae_num_groups = 2;
  for (int ranks : {1, 3}) {
    c.output.dir = (dir / ("run" + std::to_string(ranks))).string();
    const auto config = write_config(dir / ("c" + std::to_string(ranks) + ".yaml"), c);
    const std::vector<std::string> args{"--config", config.string(), "--device", "cpu", "--quiet"};
    std::vector<std::string> argv = ranks == 1 ? std::vector<std::string>{kTrain} : mpirun(ranks, {});
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_argv(argv);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const auto full1 = last_of_tier(dir / "run1" / "metrics.jsonl", "full");
  const auto full3 = last_of_tier(dir / "run3" / "metrics.jsonl", "full");
  ASSERT_FALSE(full3.is_null());
  EXPECT_EQ(full3["samples"], 5);
  for (const char* key : {"ssim_sr", "psnr_sr", "ssim_input_roundtrip", "psnr_input_roundtrip"})
    EXPECT_NEAR(full3[key].get<double>(), full1[key].get<double>(), 1e-4 * std::abs(full1[key].get<double>())) << key;
  EXPECT_NEAR(last_of_tier(dir / "run3" / "metrics.jsonl", "light")["loss"].get<double>(),
              last_of_tier(dir / "run1" / "metrics.jsonl", "light")["loss"].get<double>(), 1e-5);
  std::set<std::string> images;
  for (const auto& e : std::filesystem::directory_iterator(dir / "run3" / "images")) images.insert(e.path().filename());
  EXPECT_EQ(images.size(), 6u);  // 2 samples x slices, orthogonal, mip
  EXPECT_EQ(images.count("step_00000002_val_1_mip.png"), 1u);  // val_1 was scored by rank 1
  EXPECT_EQ(test::read_text(dir / "run3" / "images" / "step_00000002_val_1_mip.png"),
            test::read_text(dir / "run1" / "images" / "step_00000002_val_1_mip.png"));
}

struct RunningJob {
  TempDir dir{"dp-fault"};
  std::filesystem::path log = dir / "log.txt";
  test::Spawned job;
  std::vector<std::string> args;
  RunningJob(double timeout_s) {
    write_cache(dir / "cache", {});
    DiffusionTrainConfig c = small_config(dir);
    c.training.max_steps = 100000;
    c.training.checkpoint_every = 2;
    c.validation.light_every = 0;
    c.distributed.timeout_s = timeout_s;
    args = {"--config", write_config(dir / "c.yaml", c).string(), "--device", "cpu"};
    job = test::spawn_program(mpirun(2, args), log);
  }
  // The pid rank 1 printed, once the run has reached `step`.
  pid_t rank1_pid_after(int step) {
    const std::regex banner("rank 1/2 \\(local [0-9]+\\) pid ([0-9]+)");
    for (int waited = 0; waited < 600; ++waited) {
      const std::string text = test::read_text(log);
      std::smatch m;
      if (std::regex_search(text, m, banner) && text.find("step " + std::to_string(step) + "/") != std::string::npos)
        return pid_t(std::stoi(m[1]));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }
};

TEST(DataParallel, AKilledRankEndsTheJobAndTheRunResumes) {
  SKIP_WITHOUT_MPI();
  RunningJob run(600);
  const pid_t rank1 = run.rank1_pid_after(3);
  ASSERT_GT(rank1, 0) << test::read_text(run.log);
  const auto start = std::chrono::steady_clock::now();
  ::kill(rank1, SIGKILL);
  const int status = test::wait_for(run.job, 60);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string text = test::read_text(run.log);
  ASSERT_NE(status, -1) << "the job did not end within 60 s of a rank's death:\n" << text;
  EXPECT_NE(status, 0) << text;
  EXPECT_NE(text.find("signal 9"), std::string::npos) << text;
  std::printf("the job ended %.1f s after rank 1 was killed (status %d)\n", seconds, status);
  // The README's recipe: the same command with --resume auto continues from the last checkpoint.
  const auto kept = list_checkpoints(run.dir / "run" / "checkpoints");
  ASSERT_FALSE(kept.empty()) << text;
  std::vector<std::string> args = run.args;
  args.insert(args.end(), {"--resume", "auto", "--set", "training.max_steps=" + std::to_string(kept.back().first + 2)});
  auto r = run_argv(mpirun(2, args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("done at step " + std::to_string(kept.back().first + 2)), std::string::npos) << r.output;
}

TEST(DataParallel, AHungRankEndsTheJobAfterTheTimeout) {
  SKIP_WITHOUT_MPI();
  RunningJob run(3);
  const pid_t rank1 = run.rank1_pid_after(2);
  ASSERT_GT(rank1, 0) << test::read_text(run.log);
  ::kill(rank1, SIGSTOP);  // alive, but it never joins another collective
  const int status = test::wait_for(run.job, 60);
  ::kill(rank1, SIGKILL);
  const std::string text = test::read_text(run.log);
  ASSERT_NE(status, -1) << "the job still hangs 60 s after a rank stopped:\n" << text;
  EXPECT_NE(status, 0) << text;
  EXPECT_NE(text.find("rank 0: "), std::string::npos) << text;
  EXPECT_NE(text.find("has waited"), std::string::npos) << text;
  EXPECT_NE(text.find("distributed.timeout_s 3"), std::string::npos) << text;
}

TEST(DataParallel, ABatchThatDoesNotSplitOverTheRanksNamesTheKeys) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-split");
  write_cache(dir / "cache", {});
  DiffusionTrainConfig c = small_config(dir);  // batch 4, accumulation 2
  auto r = run_argv(mpirun(3, {"--config", write_config(dir / "c.yaml", c).string(), "--device", "cpu"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("training.batch_size 4 is not divisible by 3 ranks x training.gradient_accumulation_steps 2"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "run" / "checkpoints"));
}

// ---- the VQ-AE task (ctsr_train_vqae) ------------------------------------------------------------

// Run by CodebookEmaAcrossRanksEqualsOneProcess under mpirun: every rank makes the same batches of
// latents [2 R or 4 R samples, 3 rows, 4 channels] for R ranks and takes its samples (in rank
// order); CodebookEma::update_across_ranks on the shares against update() of one codebook on the
// whole batch, over steps with fewer latent rows than codes (tiled restart candidates with noise)
// and steps with more.
TEST(DataParallel, DISABLED_CodebookEmaRankWorker) {
  const LauncherInfo launch = launcher_info();
  ASSERT_TRUE(launch.distributed()) << "a worker of DataParallel.CodebookEmaAcrossRanksEqualsOneProcess";
  std::unique_ptr<Communicator> comm = make_communicator(launch, Device::cpu(), 60);
  const int64_t K = 16, C = 4, ranks = comm->size(), rank = comm->rank();
  CodebookEmaConfig config;
  config.decay = 0.8;
  config.restart_threshold = 1.0;
  CodebookEma across(K, C, Device::cpu(), DType::float32, config), alone(K, C, Device::cpu(), DType::float32, config);
  const uint64_t seed = 11;
  double worst = 0;
  int64_t restarted = 0;
  for (uint64_t step = 0; step < 6; ++step) {
    const int64_t per_rank = step < 3 ? 2 : 4;  // 6 R or 12 R rows: below, then above 16 codes for R = 2
    Tensor whole = Tensor::empty({per_rank * ranks, 3, C});
    fill_normal(whole, 5, step);
    const Tensor share = whole.slice(rank * per_rank, (rank + 1) * per_rank);
    if (step == 0) {
      across.initialize_from(gather_batch(*comm, share), seed);
      alone.initialize_from(whole, seed);
      ASSERT_TRUE(test::tensors_equal(across.embeddings(), alone.embeddings()));
    }
    const CodebookStatistics a =
        across.update_across_ranks(*comm, share, codebook_nearest(share, across.embeddings()), seed, step);
    const CodebookStatistics b = alone.update(whole, codebook_nearest(whole, alone.embeddings()), seed, step);
    // Counts are whole numbers: exact. Sums, and the codes made from them, to float32 rounding of
    // the other order of summation (each rank's rows, then the ranks): a code's sum of n rows of
    // N(0, 1) values moves by about n * 2^-24 of its size, well under 1e-5 for n <= 48; a rank's
    // rows left out or counted twice moves it by O(1).
    EXPECT_TRUE(test::tensors_equal(a.counts, b.counts)) << "step " << step;
    EXPECT_TRUE(test::tensors_equal(across.ema_counts(), alone.ema_counts())) << "step " << step;
    for (double e : {test::relative_l2(a.sums, b.sums), test::relative_l2(across.ema_sums(), alone.ema_sums()),
                     test::relative_l2(across.embeddings(), alone.embeddings())}) {
      EXPECT_LT(e, 1e-5) << "step " << step;
      worst = std::max(worst, e);
    }
    // Dead codes restart from the same rows of the whole batch (bit for bit).
    const std::vector<float> n = alone.ema_counts().to_vector<float>();
    const std::vector<float> ea = across.embeddings().to_vector<float>(), eb = alone.embeddings().to_vector<float>();
    for (int64_t k = 0; k < K; ++k) {
      if (!(n[size_t(k)] >= config.restart_threshold)) {
        ++restarted;
        for (int64_t c = 0; c < C; ++c) EXPECT_EQ(ea[size_t(k * C + c)], eb[size_t(k * C + c)]) << "code " << k;
      }
    }
    // Every rank keeps the same codebook.
    const Tensor all = gather_batch(*comm, across.embeddings());
    for (int64_t r = 1; r < ranks; ++r)
      EXPECT_TRUE(test::tensors_equal(all.slice(r * K, (r + 1) * K), all.slice(0, K))) << "rank " << r;
  }
  EXPECT_GT(restarted, 0);  // the restarts were exercised
  std::printf("rank %lld: %lld restarted codes; worst relative difference to one process %.2e\n",
              static_cast<long long>(rank), static_cast<long long>(restarted), worst);
}

TEST(DataParallel, CodebookEmaAcrossRanksEqualsOneProcess) {
  SKIP_WITHOUT_MPI();
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  for (int ranks : {2, 3}) {
    const auto r = run_argv(mpirun(ranks,
                                   {"--gtest_filter=DataParallel.DISABLED_CodebookEmaRankWorker",
                                    "--gtest_also_run_disabled_tests", "--gtest_color=no"},
                                   self));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
  }
}

// ctsr_train_vqae on the synthetic pairs: batch 4 of 16^3 patches, 4 steps, both tiers.
std::vector<std::string> vqae_args(const TempDir& dir, const std::string& output, const std::vector<std::string>& extra) {
  VqaeTrainConfig c = tiny_vqae_config(dir);
  c.training.batch_size = 4;
  c.training.max_steps = 4;
  c.training.checkpoint_every = 2;
  c.validation.light_every = 2;
  c.validation.light_patches = 3;  // 1 + 2 over two ranks
  c.validation.full_every = 4;
  c.validation.num_volumes = 3;
  c.validation.panels = 2;
  c.output_dir = (dir / output).string();
  const std::filesystem::path config = dir / (output + ".yaml");
  std::ofstream(config) << to_yaml(c);
  std::vector<std::string> args{"--config", config.string(), "--device", "cpu", "--quiet"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// `mpirun -np 2 ctsr_train_vqae` against one process with the same global batch: the same
// training lines (losses, the gradient norm of the global batch's mean loss, the perplexity of its
// codes), the same validation, and checkpoints (weights, Adam's moments, the codebook's buffers)
// within the bound below; with and without ZeRO-1, with clipping (training.max_grad_norm 9: the
// norms are 8.1 to 9.5).
//
// The bound. Sums in another order (each rank's two patches, then the ranks) change gradients in
// their last bits; the logged gradient norms agree to 1e-6. What reaches the weights depends on
// Adam's eps: some gradient components are zero in exact arithmetic (e.g. the attention's
// pre-norm bias, softmax being blind to a shift of every key; a convolution behind one that has
// not moved yet), so their float32 value is rounding noise, and with eps 1e-8 Adam turns noise of
// 1e-9 into a step of +-lr. At the default eps, after 4 steps, two ranks against one process
// measured 3.7e-4 (model/encoder.mid_block.res2.conv1.weight), and one process with 2 threads
// against one thread 2.0e-4 already: the same effect with no second rank (mpirun -np 1 against
// one thread: 0, bit for bit). With optimizer.eps 1e-4 (the gradients' typical component is about
// 0.03, so Adam's step is unchanged there, while noise of 1e-9 moves a weight by lr * 1e-5) the
// two ranks measured 1.7e-5 (an adam_m of a GroupNorm weight) against one process of one thread
// (the ranks' OMP_NUM_THREADS), so the bound is 1e-4; half the batch, as one rank trains without
// the reduction, is 4.0 away.
TEST(DataParallel, VqaeTwoRanksEqualOneProcessWithTheSameGlobalBatch) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-vqae");
  write_synthetic_pairs(dir / "data", 6, {0, 1, 2});
  const std::vector<std::string> settings{"--set", "optimizer.eps=1e-4", "--set", "training.max_grad_norm=9"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), settings.begin(), settings.end());
    return extra;
  };
  auto one_thread = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{"env", "OMP_NUM_THREADS=1", kTrainVqae};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  auto r = run_argv(one_thread(vqae_args(dir, "one", with({}))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  constexpr double rtol = 1e-4;
  r = run_argv(one_thread(vqae_args(dir, "half", with({"--set", "training.batch_size=2"}))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const double half = checkpoint_distance(checkpoint_path(dir / "one" / "checkpoints", 4),
                                          checkpoint_path(dir / "half" / "checkpoints", 4))
                          .worst;
  EXPECT_GT(half, 100 * rtol);
  std::printf("half the batch in one process: %.2e\n", half);
  const auto lines_one = training_lines(dir / "one" / "metrics.jsonl");
  for (bool zero1 : {false, true}) {
    const std::string name = zero1 ? "two_zero1" : "two";
    r = run_argv(mpirun(
        2, vqae_args(dir, name, with({"--set", std::string("distributed.zero1=") + (zero1 ? "true" : "false")})),
        kTrainVqae));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(std::string("over 2 ranks (mpi") + (zero1 ? ", ZeRO-1" : "") + "), 2 each"), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("done at step 4"), std::string::npos) << r.output;
    const auto lines = training_lines(dir / name / "metrics.jsonl");
    ASSERT_EQ(lines.size(), lines_one.size());
    for (size_t k = 0; k < lines.size(); ++k) {
      for (const char* key : {"loss", "l1", "mse", "commitment", "grad_norm"})
        EXPECT_NEAR(lines[k][key].get<double>(), lines_one[k][key].get<double>(),
                    1e-5 * std::abs(lines_one[k][key].get<double>()))
            << key << " at step " << k + 1;
      // The step's codes, counted over the whole batch: the same counts.
      EXPECT_EQ(lines[k]["perplexity"].get<double>(), lines_one[k]["perplexity"].get<double>()) << "step " << k + 1;
    }
    const auto light = last_of_tier(dir / name / "metrics.jsonl", "light");
    const auto light_one = last_of_tier(dir / "one" / "metrics.jsonl", "light");
    EXPECT_NEAR(light["loss"].get<double>(), light_one["loss"].get<double>(), 1e-5 * light_one["loss"].get<double>());
    const auto full = last_of_tier(dir / name / "metrics.jsonl", "full");
    const auto full_one = last_of_tier(dir / "one" / "metrics.jsonl", "full");
    ASSERT_FALSE(full.is_null());
    EXPECT_EQ(full["volumes"], 3);
    EXPECT_EQ(full["codes_used"], full_one["codes_used"]);
    for (const char* key : {"ssim_roundtrip", "psnr_roundtrip", "perplexity"})
      EXPECT_NEAR(full[key].get<double>(), full_one[key].get<double>(), 1e-4 * std::abs(full_one[key].get<double>()))
          << key;
    // Rank 0 wrote the pictures of both panel volumes (case0_ld was scored by rank 1).
    std::set<std::string> images;
    for (const auto& e : std::filesystem::directory_iterator(dir / name / "images")) images.insert(e.path().filename());
    EXPECT_EQ(images.size(), 6u);
    EXPECT_EQ(images.count("step_00000004_case0_ld_mip.png"), 1u);
    expect_same_checkpoint(checkpoint_path(dir / "one" / "checkpoints", 4), checkpoint_path(dir / name / "checkpoints", 4),
                           rtol);
  }
}

// A 2-rank run stopped after its step-2 checkpoint and resumed (--resume auto, 2 ranks) ends
// exactly where the uninterrupted 2-rank run does: the same training lines and the same tensors
// in the last checkpoint, bit for bit (the same reductions in the same order). With ZeRO-1, so
// the moments are gathered from both ranks for the checkpoint and split again on resuming.
TEST(DataParallel, VqaeTwoRankRunResumesFromItsCheckpoint) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-vqae-resume");
  write_synthetic_pairs(dir / "data", 6, {0, 1, 2});
  const std::vector<std::string> zero1{"--set", "distributed.zero1=true"};
  auto r = run_argv(mpirun(2, vqae_args(dir, "straight", zero1), kTrainVqae));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> first = zero1;
  first.insert(first.end(), {"--set", "training.max_steps=2"});
  r = run_argv(mpirun(2, vqae_args(dir, "resumed", first), kTrainVqae));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> rest = zero1;
  rest.insert(rest.end(), {"--resume", "auto"});
  r = run_argv(mpirun(2, vqae_args(dir, "resumed", rest), kTrainVqae));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("at step 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("done at step 4"), std::string::npos) << r.output;
  const auto a = training_lines(dir / "straight" / "metrics.jsonl"), b = training_lines(dir / "resumed" / "metrics.jsonl");
  ASSERT_EQ(b.size(), 4u);
  for (size_t k = 0; k < a.size(); ++k)
    for (const char* key : {"loss", "l1", "mse", "commitment", "perplexity", "grad_norm"})
      EXPECT_EQ(b[k][key].get<double>(), a[k][key].get<double>()) << key << " at step " << k + 1;
  io::SafetensorsReader ra(checkpoint_path(dir / "straight" / "checkpoints", 4)),
      rb(checkpoint_path(dir / "resumed" / "checkpoints", 4));
  ASSERT_EQ(ra.names(), rb.names());
  for (const auto& name : ra.names()) EXPECT_TRUE(test::tensors_equal(rb.load(name), ra.load(name))) << name;
}

TEST(DataParallel, VqaeBatchThatDoesNotSplitOverTheRanksNamesTheKey) {
  SKIP_WITHOUT_MPI();
  TempDir dir("dp-vqae-split");
  write_synthetic_pairs(dir / "data", 4);
  auto r = run_argv(mpirun(3, vqae_args(dir, "run", {}), kTrainVqae));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("training.batch_size 4 is not divisible by 3 ranks"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "run" / "checkpoints"));
}


}  // namespace
}  // namespace ctsr::train
