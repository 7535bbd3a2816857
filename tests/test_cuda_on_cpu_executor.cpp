// The CUDA-on-CPU executor's own tests: kernels using shared memory, barriers, warp shuffles,
// ballots, atomics and dynamic shared memory, checked against plain loops. They run on the
// executor always and on the GPU when one is present (tests/executor_kernels.cu).
#include <numeric>
#include <string>

#include "runtime/cuda_on_cpu/executor.h"
#include "runtime/stream.h"
#include "tests/executor_kernels.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

std::vector<double> plain_block_sums(const std::vector<float>& x, int64_t block) {
  std::vector<double> sums((x.size() + block - 1) / block, 0.0);
  for (size_t i = 0; i < x.size(); ++i) sums[i / block] += x[i];
  return sums;
}

Tensor empty_on(const Shape& s, DType t, Device d) { return Tensor::zeros(s, t, d); }

using Executor = CudaPathTest;

TEST_P(Executor, SharedMemoryTiledReduction) {
  for (unsigned threads : {32u, 256u, 1024u}) {
    for (int64_t n : {int64_t(1), int64_t(1000), int64_t(4099)}) {
      Tensor x = random_tensor({n}, 1 + n);
      const int64_t blocks = (n + threads - 1) / threads;
      Tensor sums = empty_on({blocks}, DType::float32, device());
      CTSR_LAUNCH(device(), tiled_block_sums, x.to(device()), sums, threads);
      std::vector<double> expect = plain_block_sums(x.to_vector<float>(), threads);
      EXPECT_TENSORS_CLOSE(sums, Tensor::from_vector(expect, {blocks}), 1e-5, 1e-5) << threads << " " << n;
    }
  }
}

TEST_P(Executor, WarpShuffleReductionAnyBlockSize) {
  // 100 and 37 threads leave a partial last warp; 1 is a single lane.
  for (unsigned threads : {1u, 37u, 100u, 512u}) {
    const int64_t n = 3001;
    Tensor x = random_tensor({n}, threads);
    const int64_t blocks = (n + threads - 1) / threads;
    Tensor sums = empty_on({blocks}, DType::float32, device());
    CTSR_LAUNCH(device(), shuffle_block_sums, x.to(device()), sums, threads);
    std::vector<double> expect = plain_block_sums(x.to_vector<float>(), threads);
    EXPECT_TENSORS_CLOSE(sums, Tensor::from_vector(expect, {blocks}), 1e-5, 1e-5) << threads;
  }
}

std::vector<double> plain_segment_scan(const std::vector<float>& x, int64_t block) {
  std::vector<double> y(x.size());
  double run = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (i % block == 0) run = 0;
    run += x[i];
    y[i] = run;
  }
  return y;
}

TEST_P(Executor, BlockScanWithSeveralBarriers) {
  for (unsigned threads : {64u, 256u, 1024u}) {
    const int64_t n = 2 * threads + 77;
    Tensor x = random_tensor({n}, 9 * threads);
    Tensor y = empty_on({n}, DType::float32, device());
    CTSR_LAUNCH(device(), block_inclusive_scan, x.to(device()), y, threads, false);
    EXPECT_TENSORS_CLOSE(y, Tensor::from_vector(plain_segment_scan(x.to_vector<float>(), threads), {n}), 1e-5, 1e-4)
        << threads;
  }
}

TEST_P(Executor, AtomicsFromManyBlocks) {
  const unsigned blocks = 97, threads = 128;
  const int64_t n = int64_t(blocks) * threads - 5;
  std::vector<int> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = int((i * 7919) % 1237);
  Tensor v = Tensor::from_vector(values, {n}).to(device());
  Tensor histogram = empty_on({16}, DType::int32, device());
  Tensor total = empty_on({1}, DType::float32, device());
  Tensor maxima = Tensor::from_vector<int>({-2000000000, 0, 0}, {3}).to(device());
  Tensor cas = empty_on({3}, DType::int32, device());
  CTSR_LAUNCH(device(), atomics_from_many_blocks, v, histogram, total, maxima, cas, blocks, threads);

  std::vector<int> expect_hist(16, 0);
  for (int x : values) expect_hist[x % 16]++;
  EXPECT_EQ(histogram.to_vector<int>(), expect_hist);
  EXPECT_FLOAT_EQ(total.to_vector<float>()[0], 0.5f * float(n));  // exact: sums of 0.5 below 2^24
  const int vmax = *std::max_element(values.begin(), values.end());
  std::vector<int> m = maxima.to_vector<int>();
  EXPECT_EQ(m[0], vmax - 1000);
  EXPECT_EQ(unsigned(m[1]), unsigned(vmax) * 3u);
  float mf;
  std::memcpy(&mf, &m[2], 4);
  EXPECT_FLOAT_EQ(mf, float(vmax) * 0.25f);
  std::vector<int> c = cas.to_vector<int>();
  EXPECT_EQ(c[0], n);
  EXPECT_EQ(unsigned(c[1]), 2u * unsigned(n));
  float cf;
  std::memcpy(&cf, &c[2], 4);
  EXPECT_FLOAT_EQ(cf, float(n));
}

TEST_P(Executor, DynamicSharedMemory) {
  for (unsigned pad : {0u, 13u}) {
    const unsigned threads = 96;
    const int64_t n = 3 * threads + 41;
    Tensor x = random_tensor({n}, pad + 3);
    Tensor y = empty_on({n}, DType::float32, device());
    CTSR_LAUNCH(device(), reverse_through_dynamic_shared, x.to(device()), y, threads, pad);
    std::vector<float> in = x.to_vector<float>(), expect(n);
    for (int64_t b = 0; b < n; b += threads) {
      const int64_t len = std::min<int64_t>(threads, n - b);
      for (int64_t i = 0; i < len; ++i) expect[b + i] = in[b + len - 1 - i];
    }
    EXPECT_TRUE(tensors_equal(y, Tensor::from_vector(expect, {n})));
  }
}

TEST_P(Executor, ThreeDimensionalGridsAndBlocks) {
  const int64_t total = 3 * 2 * 5 * 4 * 8 * 2;
  Tensor ids = Tensor::from_vector(std::vector<int>(total, -1), {total}).to(device());
  CTSR_LAUNCH(device(), write_linear_ids, ids, 3u, 2u, 5u, 4u, 8u, 2u);
  std::vector<int> expect(total);
  std::iota(expect.begin(), expect.end(), 0);
  EXPECT_EQ(ids.to_vector<int>(), expect);  // every thread ran once, with consistent indices
}

TEST_P(Executor, WarpShufflesAndBallot) {
  for (int width : {32, 8}) {
    const unsigned threads = 64;
    const int64_t n = 128;
    std::vector<int> in(n);
    for (int64_t i = 0; i < n; ++i) in[i] = int(i * 13 % 101);
    Tensor x = Tensor::from_vector(in, {n}).to(device());
    Tensor idx = empty_on({n}, DType::int32, device()), up = idx.clone(), down = idx.clone(), xr = idx.clone(),
           ballot = idx.clone();
    CTSR_LAUNCH(device(), warp_intrinsics, x, idx, up, down, xr, ballot, threads, width);
    std::vector<int> e_idx(n), e_up(n), e_down(n), e_xr(n), e_ballot(n);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t warp_base = t / 32 * 32, lane = t % 32, seg = lane / width * width;
      e_idx[t] = in[warp_base + seg + 3 % width];
      e_up[t] = (lane % width) >= 2 ? in[t - 2] : in[t];
      e_down[t] = (lane % width) + 5 < width ? in[t + 5] : in[t];
      e_xr[t] = in[warp_base + (lane ^ 1)];
      unsigned mask = 0;
      for (int l = 0; l < 32; ++l) mask |= (in[warp_base + l] % 2 != 0 ? 1u : 0u) << l;
      e_ballot[t] = int(mask);
    }
    EXPECT_EQ(idx.to_vector<int>(), e_idx) << "width " << width;
    EXPECT_EQ(up.to_vector<int>(), e_up) << "width " << width;
    EXPECT_EQ(down.to_vector<int>(), e_down) << "width " << width;
    EXPECT_EQ(xr.to_vector<int>(), e_xr) << "width " << width;
    EXPECT_EQ(ballot.to_vector<int>(), e_ballot) << "width " << width;
  }
}

TEST_P(Executor, SyncthreadsCount) {
  const unsigned threads = 200;
  const int64_t blocks = 7;
  Tensor x = random_tensor({blocks * threads}, 77);
  Tensor counts = empty_on({blocks}, DType::int32, device());
  CTSR_LAUNCH(device(), syncthreads_count, x.to(device()), counts, threads);
  std::vector<float> v = x.to_vector<float>();
  std::vector<int> expect(blocks, 0);
  for (int64_t i = 0; i < blocks * int64_t(threads); ++i) expect[i / threads] += v[i] > 0 ? 1 : 0;
  EXPECT_EQ(counts.to_vector<int>(), expect);
}

CTSR_INSTANTIATE_CUDA_PATHS(Executor);

// ---- executor-only behaviour (on a GPU these would hang or race) ------------------------------

// The fast mode's behaviour (the strict mode's is in test_strict_executor.cpp).
class ExecutorOnly : public ExecutorModeTest {
 protected:
  ExecutorOnly() : ExecutorModeTest(cuda_on_cpu::Checks::fast) {}
};

TEST_F(ExecutorOnly, MissingBarrierInScanGivesWrongResult) {
  // Fibers run alone between barriers, so dropping the scan's read/write barrier makes later
  // threads read values already updated by earlier ones: deterministic, visible corruption.
  const unsigned threads = 128;
  Tensor x = random_tensor({threads}, 5, DType::float32, 0.5, 1.0);
  Tensor y = Tensor::zeros({threads}, DType::float32, d);
  CTSR_LAUNCH(d, block_inclusive_scan, x.to(d), y, threads, true);
  Tensor expect = Tensor::from_vector(plain_segment_scan(x.to_vector<float>(), threads), {threads});
  EXPECT_FALSE(tensors_close(y, expect, 1e-4, 1e-4)) << "a missing __syncthreads went unnoticed";
}

TEST_F(ExecutorOnly, ReverseThreadOrderGivesSameResults) {
  cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
  const unsigned threads = 256;
  const int64_t n = 1000;
  Tensor x = random_tensor({n}, 12);
  Tensor y = Tensor::zeros({n}, DType::float32, d);
  CTSR_LAUNCH(d, block_inclusive_scan, x.to(d), y, threads, false);
  EXPECT_TENSORS_CLOSE(y, Tensor::from_vector(plain_segment_scan(x.to_vector<float>(), threads), {n}), 1e-5, 1e-4);
}

TEST_F(ExecutorOnly, DivergentBarrierIsReportedNotHung) {
  Tensor out = Tensor::zeros({64}, DType::int32, d);
  try {
    CTSR_LAUNCH(d, divergent_barrier, out, 64u);
    FAIL() << "expected a divergent-barrier report";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divergent __syncthreads"), std::string::npos) << e.what();
    // The report names the kernel (from the binary's symbol table) and the block.
    EXPECT_NE(std::string(e.what()).find("kernel ctsr::kernels::cuda_on_cpu::(anonymous namespace)::divergent_barrier_kernel("),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("block (0, 0, 0)"), std::string::npos) << e.what();
  }
}

TEST_F(ExecutorOnly, BarrierDeadlockIsReportedNotHung) {
  Tensor out = Tensor::zeros({32}, DType::int32, d);
  try {
    CTSR_LAUNCH(d, barrier_deadlock, out);
    FAIL() << "expected a deadlock report";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("barrier deadlock"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shuffle_waits_for_barrier_kernel("), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1 thread(s) wait at __syncthreads and 31 at a warp barrier"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(ExecutorOnly, TrapNamesTheKernelBlockAndThread) {
  // __trap() in thread (5, 0, 0) of block (2, 0, 0): the executor's form of a device fault.
  Tensor out = Tensor::zeros({3 * 64}, DType::int32, d);
  try {
    CTSR_LAUNCH(d, trap_in_one_thread, out, 2u, 5u);
    FAIL() << "expected the trap to be reported";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("trap_in_one_thread_kernel("), std::string::npos) << what;
    EXPECT_NE(what.find("block (2, 0, 0): thread (5, 0, 0): __trap() called"), std::string::npos) << what;
  }
}

// CTSR_SYNC_LAUNCHES=1 (here through its setter): on the executor launches are synchronous
// anyway; the mode changes nothing there, and a fault is still reported by its own launch,
// naming the kernel, block and thread.
TEST_F(ExecutorOnly, SyncLaunchesReportsAFaultAtItsLaunch) {
  struct SyncLaunches {
    const bool before = sync_launches();
    SyncLaunches() { set_sync_launches(true); }
    ~SyncLaunches() { set_sync_launches(before); }
  } on;
  ASSERT_TRUE(sync_launches());
  Tensor out = Tensor::zeros({3 * 64}, DType::int32, d);
  const std::string what = error_message([&] { CTSR_LAUNCH(d, trap_in_one_thread, out, 1u, 7u); });
  EXPECT_NE(what.find("kernel ctsr::kernels::cuda_on_cpu::(anonymous namespace)::trap_in_one_thread_kernel("),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("grid (3, 1, 1), block (64, 1, 1): block (1, 0, 0): thread (7, 0, 0): __trap() called"),
            std::string::npos)
      << what;
}

TEST(SyncLaunches, VariableIsOneOrZero) {
  EXPECT_FALSE(parse_sync_launches(nullptr));
  EXPECT_FALSE(parse_sync_launches(""));
  EXPECT_FALSE(parse_sync_launches("0"));
  EXPECT_TRUE(parse_sync_launches("1"));
  const std::string e = error_message([] { parse_sync_launches("yes"); });
  EXPECT_NE(e.find("CTSR_SYNC_LAUNCHES='yes': expected 1"), std::string::npos) << e;
}

TEST_F(ExecutorOnly, ShuffleFromMissingLaneIsPoisoned) {
  // 40 threads: the second warp has 8 lanes; shfl_sync from lane 3 of a full warp is defined,
  // and shfl_down by 5 in the partial warp reads lanes 8..12 that do not exist.
  std::vector<int> in(40);
  for (int i = 0; i < 40; ++i) in[i] = 100 + i;
  Tensor x = Tensor::from_vector(in, {40}).to(d);
  Tensor idx = Tensor::zeros({40}, DType::int32, d), up = idx.clone(), down = idx.clone(), xr = idx.clone(),
         ballot = idx.clone();
  CTSR_LAUNCH(d, warp_intrinsics, x, idx, up, down, xr, ballot, 40u, 32);
  std::vector<int> got = down.to_vector<int>();
  EXPECT_EQ(got[32 + 2], 100 + 32 + 7);  // lane 2 + 5 = lane 7 exists
  EXPECT_EQ(got[32 + 3], -1);            // lane 3 + 5 = lane 8 does not: poison
}

TEST_F(ExecutorOnly, InvalidLaunchConfigurationsAreRejected) {
  Tensor out = Tensor::zeros({4096}, DType::int32, d);
  EXPECT_THROW(CTSR_LAUNCH(d, write_linear_ids, out, 1u, 1u, 1u, 2048u, 1u, 1u), Error);
  EXPECT_THROW(CTSR_LAUNCH(d, write_linear_ids, out, 1u, 1u, 1u, 1u, 1u, 65u), Error);
  EXPECT_THROW(CTSR_LAUNCH(d, write_linear_ids, out, 1u, 70000u, 1u, 1u, 1u, 1u), Error);
  Tensor x = random_tensor({64}, 1).to(d);
  Tensor y = Tensor::zeros({64}, DType::float32, d);
  EXPECT_THROW(CTSR_LAUNCH(d, reverse_through_dynamic_shared, x, y, 64u, 64u * 1024u), Error);
}

TEST_F(ExecutorOnly, SingleWorkerThreadGivesSameResults) {
  const int before = cuda_on_cpu::worker_threads();
  cuda_on_cpu::set_worker_threads(1);
  Tensor x = random_tensor({5000}, 4);
  Tensor sums = Tensor::zeros({20}, DType::float32, d);
  CTSR_LAUNCH(d, tiled_block_sums, x.to(d), sums, 256u);
  cuda_on_cpu::set_worker_threads(before);
  Tensor sums_parallel = Tensor::zeros({20}, DType::float32, d);
  CTSR_LAUNCH(d, tiled_block_sums, x.to(d), sums_parallel, 256u);
  EXPECT_TRUE(tensors_equal(sums, sums_parallel));
}

TEST_F(ExecutorOnly, BuiltinOutsideKernelThrows) {
  EXPECT_THROW(cuda_on_cpu::sync_threads(), Error);
}

}  // namespace
}  // namespace ctsr::test
