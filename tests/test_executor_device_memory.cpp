// Executor device memory under full checks (runtime/cuda_on_cpu/device_memory.h): host code that
// reads or writes it outside a kernel launch or a copy dies with a message, as it would fault on
// a GPU; copies, fills, kernel launches and the host gemm (cuBLAS's stand-in) still work.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <csignal>
#include <cstdio>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/cuda_on_cpu/device_memory.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "runtime/gemm.h"
#include "tests/executor_kernels.h"
#include "tests/harness.h"

namespace ctsr::test {
namespace {

using cuda_on_cpu::Checks;

// Full checks for one test; the setting from before comes back at its end.
class FullChecks {
 public:
  FullChecks() { cuda_on_cpu::set_checks(Checks::full); }
  ~FullChecks() { cuda_on_cpu::set_checks(before_); }

 private:
  Checks before_ = cuda_on_cpu::checks();
};

constexpr const char* kHostAccessMessage =
    "CUDA-on-CPU executor \\(CTSR_EXECUTOR_CHECKS=full\\): host code read or wrote device memory at "
    "0x[0-9a-f]+ outside a kernel launch or a copy \\(on a GPU this is an invalid host access to device memory\\)";

float read_first(const Tensor& t) {
  const volatile float* p = t.data<float>();
  return p[0];
}

TEST(ExecutorDeviceMemory, HostReadOfDeviceMemoryDiesUnderFullChecks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cuda_on_cpu::set_checks(Checks::full);
        Tensor t = Tensor::from_vector<float>({1.5f, 2.5f}, {2}, Device::cuda_on_cpu());
        std::printf("%f\n", read_first(t));
      },
      kHostAccessMessage);
}

TEST(ExecutorDeviceMemory, HostWriteOfDeviceMemoryDiesUnderFullChecks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cuda_on_cpu::set_checks(Checks::full);
        Tensor t = Tensor::zeros({4}, DType::float32, Device::cuda_on_cpu());
        volatile float* p = t.data<float>();
        p[3] = 1.0f;
      },
      kHostAccessMessage);
}

TEST(ExecutorDeviceMemory, OtherFaultsGoToTheHandlerBeforeIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The executor's handler is installed with the range; a fault elsewhere (a page of the test's
  // own, mapped without access: a real fault, not a null store UBSan would stop first) goes to
  // the handler that was there before: the default action (death by SIGSEGV, no executor report),
  // or AddressSanitizer's in the sanitizer build (its SEGV report, exit status 1).
#if defined(__SANITIZE_ADDRESS__)
  const auto ends = ::testing::ExitedWithCode(1);
  const char* report = "^range at 0x[0-9a-f]+\n(.|\n)*AddressSanitizer: SEGV on unknown address";
#else
  const auto ends = ::testing::KilledBySignal(SIGSEGV);
  const char* report = "^range at 0x[0-9a-f]+\n$";
#endif
  EXPECT_EXIT(
      {
        cuda_on_cpu::set_checks(Checks::full);
        Tensor t = Tensor::zeros({4}, DType::float32, Device::cuda_on_cpu());
        std::fprintf(stderr, "range at %p\n", t.raw_data());
        void* page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) std::abort();
        *static_cast<volatile int*>(page) = 1;
      },
      ends, report);
}

TEST(ExecutorDeviceMemory, HostReadWorksUnderFastChecks) {
  const Checks before = cuda_on_cpu::checks();
  cuda_on_cpu::set_checks(Checks::fast);
  Tensor t = Tensor::from_vector<float>({1.5f, 2.5f}, {2}, Device::cuda_on_cpu());
  EXPECT_TRUE(Device::cuda_on_cpu().is_host_memory());
  EXPECT_FALSE(cuda_on_cpu::in_protected_range(t.raw_data()));
  EXPECT_EQ(read_first(t), 1.5f);
  cuda_on_cpu::set_checks(before);
}

TEST(ExecutorDeviceMemory, CopiesAndFillsWorkUnderFullChecks) {
  FullChecks full;
  const Device d = Device::cuda_on_cpu();
  EXPECT_FALSE(d.is_host_memory());
  EXPECT_TRUE(Device::cpu().is_host_memory());

  Tensor z = Tensor::zeros({3, 5}, DType::float32, d);
  EXPECT_TRUE(cuda_on_cpu::in_protected_range(z.raw_data()));
  EXPECT_EQ(z.to_vector<float>(), std::vector<float>(15, 0.0f));

  std::vector<float> values(15);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * float(i) - 1.0f;
  Tensor x = Tensor::from_vector(values, {3, 5}, d);
  EXPECT_EQ(x.to_vector<float>(), values);
  EXPECT_EQ(x.to(Device::cpu()).to_vector<float>(), values);
  EXPECT_EQ(x.clone().to_vector<float>(), values);  // executor to executor
  z.copy_from(Tensor::from_vector(values, {3, 5}));  // cpu to executor
  EXPECT_EQ(z.to_vector<float>(), values);
  EXPECT_EQ(x.select(2).to_vector<float>(), std::vector<float>(values.begin() + 10, values.end()));
  EXPECT_NE(x.to_string().find("-1, -0.75"), std::string::npos) << x.to_string();
}

TEST(ExecutorDeviceMemory, KernelLaunchWorksUnderFullChecks) {
#if !CTSR_HAVE_CUDA_ON_CPU
  GTEST_SKIP() << "built with CTSR_CUDA_ON_CPU=OFF";
#endif
  FullChecks full;
  const Device d = Device::cuda_on_cpu();
  std::vector<float> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = float(i % 7);
  Tensor sums = Tensor::zeros({4}, DType::float32, d);
  CTSR_LAUNCH(d, tiled_block_sums, Tensor::from_vector(values, {1000}, d), sums, 256u);
  std::vector<float> expect(4, 0.0f);
  for (size_t i = 0; i < values.size(); ++i) expect[i / 256] += values[i];
  EXPECT_EQ(sums.to_vector<float>(), expect);
}

TEST(ExecutorDeviceMemory, HostGemmReadsDeviceMemoryUnderFullChecks) {
  FullChecks full;
  const Device d = Device::cuda_on_cpu();
  // [[1, 2], [3, 4]] times [[5, 6], [7, 8]], row-major.
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}, d);
  Tensor b = Tensor::from_vector<float>({5, 6, 7, 8}, {2, 2}, d);
  Tensor c = Tensor::zeros({2, 2}, DType::float32, d);
  GemmArgs g;
  g.m = g.n = g.k = 2;
  g.a = a.raw_data();
  g.b = b.raw_data();
  g.c = c.raw_data();
  g.lda = g.ldb = g.ldc = 2;
  gemm(d, g);
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{19, 22, 43, 50}));
}

TEST(ExecutorDeviceMemory, FullChecksAllocateFromTheRangeWithinTheCapacity) {
  FullChecks full;
  const Device d = Device::cuda_on_cpu();
  Tensor fits = Tensor::empty({1024}, DType::float32, d);
  EXPECT_TRUE(cuda_on_cpu::in_protected_range(fits.raw_data()));
  EXPECT_GE(allocator_stats(d).allocated, size_t{4096});
  set_cuda_on_cpu_capacity(size_t{1} << 20);
  try {
    Tensor t = Tensor::empty({int64_t(1) << 20}, DType::float32, d);  // 4 MiB
    set_cuda_on_cpu_capacity(0);
    FAIL() << "expected out of memory";
  } catch (const Error& e) {
    set_cuda_on_cpu_capacity(0);
    EXPECT_NE(std::string(e.what()).find("cuda_on_cpu out of memory: tried to allocate 4.00 MiB"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ctsr::test
