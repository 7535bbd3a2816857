// The executor's strict mode (CTSR_EXECUTOR_CHECKS=full): each rule with a kernel that breaks
// it (tests/executor_kernels.cu), reported with the kernel's name, its block, thread and the
// rule, and conforming kernels that must pass. The race and alignment rules need kernels that
// report their memory accesses: they run in ctsr_tests_checked and say so where they skip.
#include <set>
#include <string>

#include "runtime/cuda_on_cpu/executor.h"
#include "tests/executor_kernels.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

class StrictExecutor : public ExecutorModeTest {
 protected:
  StrictExecutor() : ExecutorModeTest(cuda_on_cpu::Checks::full) {}
  // Runs `launch`, expects an Error, returns its message.
  template <class F>
  std::string error_of(F&& launch) {
    try {
      launch();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected the strict mode to report an error";
    return "";
  }
  static void expect_has(const std::string& what, const std::string& part) {
    EXPECT_NE(what.find(part), std::string::npos) << "missing \"" << part << "\" in: " << what;
  }
};

TEST_F(StrictExecutor, LaneOutsideItsMaskIsReported) {
  Tensor out = Tensor::zeros({32}, DType::int32, d);
  const std::string what = error_of([&] { CTSR_LAUNCH(d, shuffle_outside_mask, out); });
  expect_has(what, "shuffle_outside_mask_kernel(");
  expect_has(what, "block (0, 0, 0)");
  expect_has(what, "with mask 0x0000ffff, which does not include its own lane");
  expect_has(what, "__shfl_sync at ");
  // Fast mode ignores masks, as the executor always did.
  cuda_on_cpu::set_checks(cuda_on_cpu::Checks::fast);
  EXPECT_NO_THROW(CTSR_LAUNCH(d, shuffle_outside_mask, out));
}

TEST_F(StrictExecutor, LanesAtTwoCallSitesAreReported) {
  Tensor out = Tensor::zeros({32}, DType::int32, d);
  const std::string what = error_of([&] { CTSR_LAUNCH(d, shuffles_at_two_sites, out); });
  expect_has(what, "shuffles_at_two_sites_kernel(");
  expect_has(what, "lanes at different warp-synchronous calls do not exchange values");
  expect_has(what, "executor_kernels.cu:");
  cuda_on_cpu::set_checks(cuda_on_cpu::Checks::fast);
  CTSR_LAUNCH(d, shuffles_at_two_sites, out);  // fast mode pairs them up silently
  EXPECT_EQ(out.to_vector<int>()[0], 16);
}

TEST_F(StrictExecutor, LaneInTheMaskThatNeverArrivesIsNamed) {
  // Lane 0 waits at __syncthreads while lanes 1..31 wait for it in a full-mask shuffle.
  Tensor out = Tensor::zeros({32}, DType::int32, d);
  const std::string what = error_of([&] { CTSR_LAUNCH(d, barrier_deadlock, out); });
  expect_has(what, "shuffle_waits_for_barrier_kernel(");
  expect_has(what, "barrier deadlock: 1 thread(s) wait at __syncthreads");
  expect_has(what, "with mask 0xffffffff for lanes 0");
  expect_has(what, "__shfl_xor_sync at ");
}

TEST_F(StrictExecutor, ThreadsInterleaveInASeededRandomOrder) {
  // 64 blocks of 96 threads: which thread's write to one shared word survives the barrier.
  Tensor out = Tensor::zeros({64}, DType::int32, d);
  if (cuda_on_cpu::access_checks_available()) {
    // With instrumented kernels, the race itself is the report.
    const std::string what = error_of([&] { CTSR_LAUNCH(d, last_writer_wins, out, 96u); });
    expect_has(what, "shared memory race (write after write)");
    expect_has(what, "`winner` + 0 bytes");
    return;
  }
  auto survivors = [&](uint64_t seed) {
    cuda_on_cpu::set_interleaving_seed(seed);
    CTSR_LAUNCH(d, last_writer_wins, out, 96u);
    return out.to_vector<int>();
  };
  const std::vector<int> first = survivors(7);
  EXPECT_EQ(survivors(7), first) << "the same seed must give the same interleaving";
  EXPECT_NE(survivors(8), first) << "another seed must give another interleaving";
  EXPECT_GT(std::set<int>(first.begin(), first.end()).size(), 8u) << "blocks must not share one order";
  cuda_on_cpu::set_checks(cuda_on_cpu::Checks::fast);
  EXPECT_EQ(survivors(7), std::vector<int>(64, 95)) << "fast mode runs threads in order: the last one wins";
}

TEST_F(StrictExecutor, StaticSharedMemoryIsPoisonedInEveryBlock) {
  // One host thread runs all 5 blocks one after another: each must see fresh poison, not the
  // 7s of the block before (what a host thread_local gave).
  cuda_on_cpu::set_worker_threads(1);
  Tensor out = Tensor::zeros({5 * 32}, DType::int32, d);
  for (auto mode : {cuda_on_cpu::Checks::full, cuda_on_cpu::Checks::fast}) {
    cuda_on_cpu::set_checks(mode);
    CTSR_LAUNCH(d, read_static_shared_first, out);
    EXPECT_EQ(out.to_vector<int>(), std::vector<int>(5 * 32, -1));
  }
}

TEST_F(StrictExecutor, SharedMemoryLimitsAreEnforced) {
  Tensor out = Tensor::zeros({32}, DType::float32, d);
  CTSR_LAUNCH(d, shared_over_limits, out, false, size_t(100) * 1024);  // 32 + 100 KiB: fits
  EXPECT_EQ(out.to_vector<float>()[3], 1.0f);
  std::string what = error_of([&] { CTSR_LAUNCH(d, shared_over_limits, out, true, 0); });
  // 65536 bytes, or a few more: full checks place `a` off a 16-byte boundary.
  expect_has(what, "static shared memory: `b` (32768 bytes) brings the block's static shared memory to 655");
  expect_has(what, "at most 49152 (48 KiB)");
  expect_has(what, "shared_over_limits_kernel(");
  expect_has(what, "block (0, 0, 0): thread (");
  what = error_of([&] { CTSR_LAUNCH(d, shared_over_limits, out, false, size_t(200) * 1024); });
  expect_has(what, "`a` (32768 bytes) and 204800 bytes of dynamic shared memory exceed the 232448 bytes (227 KiB)");
}

TEST_F(StrictExecutor, LaunchBoundsAreEnforced) {
  Tensor out = Tensor::zeros({256}, DType::int32, d);
  CTSR_LAUNCH(d, bounded_to_64, out, 64u);
  EXPECT_EQ(out.to_vector<int>(), std::vector<int>(256, 1));
  const std::string what = error_of([&] { CTSR_LAUNCH(d, bounded_to_64, out, 128u); });
  expect_has(what, "bounded_to_64_kernel(");
  expect_has(what, "a block of 128 threads exceeds the kernel's __launch_bounds__(64)");
}

TEST_F(StrictExecutor, SharedMemoryRacesAreReported) {
  if (!cuda_on_cpu::access_checks_available()) {
    GTEST_SKIP() << "kernels of this binary do not report memory accesses: the race rule runs in ctsr_tests_checked";
  }
  Tensor x = random_tensor({64}, 3).to(d);
  Tensor y = Tensor::zeros({64}, DType::float32, d);
  // With __syncthreads, and within one warp with __syncwarp, the exchange is ordered.
  CTSR_LAUNCH(d, exchange_through_shared, x, y, 2);
  Tensor x32 = random_tensor({32}, 4).to(d);
  Tensor y32 = Tensor::zeros({32}, DType::float32, d);
  CTSR_LAUNCH(d, exchange_through_shared, x32, y32, 1);
  std::vector<float> xs = x32.to_vector<float>(), ys = y32.to_vector<float>();
  for (int t = 0; t < 32; ++t) EXPECT_EQ(ys[t], xs[31 - t]);
  // Without: reported, naming the variable and both threads; __syncwarp does not order warps.
  for (int sync : {0, 1}) {
    const std::string what = error_of([&] { CTSR_LAUNCH(d, exchange_through_shared, x, y, sync); });
    expect_has(what, "exchange_through_shared_kernel(");
    expect_has(what, "shared memory race (");
    expect_has(what, "`buf` + ");
    expect_has(what, "since the last __syncthreads");
  }
  const std::string what = error_of([&] { CTSR_LAUNCH(d, overwrite_after_barrier, y); });
  expect_has(what, "shared memory race (");
  expect_has(what, "overwrite_after_barrier_kernel(");
}

TEST_F(StrictExecutor, GlobalMemoryRacesWithinABlockAreReported) {
  if (!cuda_on_cpu::access_checks_available()) {
    GTEST_SKIP() << "kernels of this binary do not report memory accesses: the race rule runs in ctsr_tests_checked";
  }
  Tensor total = Tensor::zeros({1}, DType::float32, d);
  CTSR_LAUNCH(d, accumulate_in_global, total, 96u, true);
  EXPECT_EQ(total.to_vector<float>()[0], 96.0f);
  const std::string what = error_of([&] { CTSR_LAUNCH(d, accumulate_in_global, total, 96u, false); });
  expect_has(what, "global memory race (");
  expect_has(what, "accumulate_in_global_kernel(");
  expect_has(what, "since the last __syncthreads");
}

TEST_F(StrictExecutor, MisalignedVectorAccessesAreReported) {
  if (!cuda_on_cpu::access_checks_available()) {
    GTEST_SKIP() << "kernels of this binary do not report memory accesses: the alignment rule runs in "
                    "ctsr_tests_checked";
  }
  Tensor x = random_tensor({4 * 32 + 4}, 5).to(d);
  Tensor y = Tensor::zeros({32}, DType::float32, d);
  CTSR_LAUNCH(d, vector_load, x, y, 0);
  std::string what = error_of([&] { CTSR_LAUNCH(d, vector_load, x, y, 1); });
  expect_has(what, "misaligned 16-byte access");
  expect_has(what, "vector_load_kernel(");
  // A float array in shared memory is only 4-byte aligned; full checks place it off 16 bytes.
  what = error_of([&] { CTSR_LAUNCH(d, vector_load_from_shared, x, y); });
  expect_has(what, "misaligned 16-byte access");
}

}  // namespace
}  // namespace ctsr::test
