// Tensor runtime: creation, views along dim 0, reshape, copies between devices, to_string,
// the errors for shape, dtype and device mismatches, and the CUDA device queries behind --device auto.
#include <cmath>
#include <limits>

#include "runtime/cuda_runtime_bridge.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/harness.h"
#include "tools/common/cli.h"

namespace ctsr::test {
namespace {

TEST(Tensor, ShapeBasics) {
  Shape s{3, 25, 16, 16, 5};
  EXPECT_EQ(s.ndim(), 5);
  EXPECT_EQ(s.numel(), 3 * 25 * 16 * 16 * 5);
  EXPECT_EQ(s[-1], 5);
  EXPECT_EQ(s.str(), "[3, 25, 16, 16, 5]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7}), Error);
  EXPECT_NE(error_message([&] { (void)s[5]; }).find("out of range"), std::string::npos);
}

// Issue 22: element counts multiplied unchecked, so a file's shape could wrap to a small
// count (and a small allocation) that the readers then overran.
TEST(Tensor, ElementCountsThatDoNotFitAreRefused) {
  const int64_t big = int64_t{1} << 32;
  expect_error_mentions([&] { Shape s{big, big}; }, {"[4294967296, 4294967296]", "more than 2^63 - 1 elements"});
  expect_error_mentions([&] { Shape s{1, 32, 576460752303423489}; }, {"more than 2^63 - 1 elements"});
  EXPECT_EQ((Shape{int64_t{1} << 31, int64_t{1} << 31}).numel(), int64_t{1} << 62);
  expect_error_mentions([&] { Shape s{int64_t{1} << 31, int64_t{1} << 31, 2}; }, {"more than 2^63 - 1 elements"});
  EXPECT_EQ(checked_numel({3, 0, int64_t{1} << 62, 5}, "x"), 0);
  EXPECT_EQ(checked_numel({int64_t{1} << 62, 4, 0}, "x"), 0);
  EXPECT_EQ(checked_numel({-1, 4, 5}, "x"), -20);  // reshape's inferred dimension
  expect_error_mentions([&] { checked_numel({2, -3}, "the test shape"); }, {"the test shape [2, -3]", "dimension 1 is -3"});
  EXPECT_EQ(checked_bytes(int64_t{1} << 60, 4, "x"), uint64_t{1} << 62);
  expect_error_mentions([&] { checked_bytes(int64_t{1} << 61, 4, "the test tensor"); },
                        {"the test tensor", "2305843009213693952 elements of 4 bytes", "more than 2^63 - 1 bytes"});
  // A Tensor whose bytes would not fit is refused before anything is allocated.
  expect_error_mentions([&] { Tensor::empty({int64_t{1} << 31, int64_t{1} << 31}, DType::float64); },
                        {"Tensor::empty", "more than 2^63 - 1 bytes"});
}

TEST(Tensor, EveryDtypeRoundTripsThroughEveryHostDevice) {
  for (Device d : {Device::cpu(), Device::cuda_on_cpu()}) {
    Tensor f = Tensor::from_vector<float>({1.5f, -2.25f, 3.0f}, {3}, d);
    EXPECT_EQ(f.device(), d);
    EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
    Tensor i64 = Tensor::from_vector<int64_t>({1, -(int64_t(1) << 40)}, {2}, d);
    EXPECT_EQ(i64.to_vector<int64_t>()[1], -(int64_t(1) << 40));
    Tensor u8 = Tensor::from_vector<uint8_t>({0, 255, 7}, {3}, d);
    EXPECT_EQ(u8.nbytes(), 3u);
    Tensor b = Tensor::from_vector<bfloat16>({bfloat16(1.0f), bfloat16(-0.5f)}, {2}, d);
    EXPECT_EQ(float(b.to_vector<bfloat16>()[1]), -0.5f);
  }
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = random_tensor({5, 3, 2}, 1);
  Tensor rows = t.slice(1, 4);
  EXPECT_EQ(rows.shape(), (Shape{3, 3, 2}));
  Tensor row = t.select(2);
  EXPECT_EQ(row.shape(), (Shape{3, 2}));
  row.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2 * 6], 42.0f);
  EXPECT_EQ(rows.data<float>()[6], 42.0f);
  Tensor flat = t.reshape({-1});
  EXPECT_EQ(flat.shape(), (Shape{30}));
  EXPECT_EQ(flat.data<float>()[12], 42.0f);
  EXPECT_EQ(t.reshape({6, -1}).shape(), (Shape{6, 5}));
  Tensor c = t.clone();
  c.data<float>()[12] = 0.0f;
  EXPECT_EQ(t.data<float>()[12], 42.0f);  // clone is a copy
}

TEST(Tensor, ViewErrorsNameTheShape) {
  Tensor t = random_tensor({5, 3}, 1);
  EXPECT_NE(error_message([&] { t.slice(2, 6); }).find("[5, 3]"), std::string::npos);
  EXPECT_NE(error_message([&] { t.select(5); }).find("out of range"), std::string::npos);
  std::string e = error_message([&] { t.reshape({4, 4}); });
  EXPECT_NE(e.find("15 elements"), std::string::npos) << e;
  EXPECT_NE(error_message([&] { t.reshape({-1, -1}); }).find("at most one"), std::string::npos);
}

TEST(Tensor, DtypeShapeDeviceMismatchErrors) {
  Tensor f = random_tensor({2, 3}, 1);
  std::string e = error_message([&] { f.data<double>(); });
  EXPECT_NE(e.find("float32"), std::string::npos) << e;
  EXPECT_NE(e.find("float64"), std::string::npos) << e;
  e = error_message([&] { f.check_shape({3, 2}, "op x"); });
  EXPECT_NE(e.find("op x: tensor has shape [2, 3], expected [3, 2]"), std::string::npos) << e;
  Tensor g = f.to(Device::cuda_on_cpu());
  e = error_message([&] { check_same_device("add", {{"a", &f}, {"b", &g}}); });
  EXPECT_NE(e.find("add: b is on cuda_on_cpu but a is on cpu"), std::string::npos) << e;
  Tensor d = random_tensor({2, 3}, 1, DType::float64);
  e = error_message([&] { check_same_dtype("mul", {{"a", &f}, {"b", &d}}); });
  EXPECT_NE(e.find("mul: b is float64 but a is float32"), std::string::npos) << e;
  EXPECT_NE(error_message([&] { Tensor().raw_data(); }).find("undefined"), std::string::npos);
}

TEST(Tensor, CopyFromChecksAndCopiesAcrossDevices) {
  Tensor src = random_tensor({4, 7}, 3);
  Tensor dst = Tensor::zeros({4, 7}, DType::float32, Device::cuda_on_cpu());
  dst.copy_from(src);
  EXPECT_TRUE(tensors_equal(dst, src.to(Device::cuda_on_cpu())));
  Tensor wrong = Tensor::zeros({7, 4});
  EXPECT_THROW(wrong.copy_from(src), Error);
}

TEST(Tensor, ToStringIsReadable) {
  Tensor t = Tensor::from_vector<float>({1.5f, 2.0f, -3.0f}, {3});
  EXPECT_EQ(t.to_string(), "Tensor[3] float32 cpu {1.5, 2, -3}");
  Tensor big = Tensor::zeros({100}, DType::int32);
  EXPECT_NE(big.to_string(2).find("... (100 total)"), std::string::npos);
  EXPECT_EQ(Tensor().to_string(), "Tensor(undefined)");
}

TEST(Device, ParseAndName) {
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda_on_cpu").str(), "cuda_on_cpu");
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  try {
    Device::parse("gpu0");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device 'gpu0'"), std::string::npos);
  }
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

TEST(Device, CudaQueriesNeverThrow) {
  const int n = cuda_device_count();
  EXPECT_GE(n, 0);
  EXPECT_FALSE(cuda_device_description(0).empty());
  if (n == 0) {
    std::string e = error_message([] { Tensor::zeros({4}, DType::float32, Device::cuda(0)); });
    EXPECT_FALSE(e.empty()) << "a tensor on cuda:0 without a GPU must fail";
    std::printf("no GPU: %s\n", cuda_device_description(0).c_str());
  }
}

// cudaGetDeviceCount's answers: no GPU and no NVIDIA driver at all are 0 devices and no problem;
// a driver older than the runtime, and any other failure, are a problem naming CUDA's error.
TEST(Device, OnlyNoGpuOrNoDriverCountsAsZeroDevicesWithoutAProblem) {
  using bridge::DeviceCountAnswer;
  auto answer = [](int status, int driver_version, const char* name, const char* text) {
    DeviceCountAnswer a;
    a.status = status, a.driver_version = driver_version, a.runtime_version = 13000;
    a.error_name = name, a.error_text = text;
    return a;
  };
  DeviceCountAnswer ok;
  ok.count = 2;
  EXPECT_EQ(bridge::classify_device_count(ok).count, 2);
  EXPECT_EQ(bridge::classify_device_count(ok).problem, "");

  const CudaDeviceCount no_gpu = bridge::classify_device_count(
      answer(bridge::kCudaErrorNoDevice, 13000, "cudaErrorNoDevice", "no CUDA-capable device is detected"));
  EXPECT_EQ(no_gpu.count, 0);
  EXPECT_EQ(no_gpu.problem, "");
  const char* insufficient = "CUDA driver version is insufficient for CUDA runtime version";
  const CudaDeviceCount no_driver = bridge::classify_device_count(
      answer(bridge::kCudaErrorInsufficientDriver, 0, "cudaErrorInsufficientDriver", insufficient));
  EXPECT_EQ(no_driver.count, 0);
  EXPECT_EQ(no_driver.problem, "");

  const CudaDeviceCount old_driver = bridge::classify_device_count(
      answer(bridge::kCudaErrorInsufficientDriver, 12040, "cudaErrorInsufficientDriver", insufficient));
  EXPECT_EQ(old_driver.count, 0);
  for (const std::string& part : {"cudaGetDeviceCount failed with cudaErrorInsufficientDriver (35): " +
                                     std::string(insufficient),
                                 std::string("the NVIDIA driver supports CUDA up to 12.4, older than the CUDA runtime "
                                             "13.0"),
                                 std::string("update the driver")})
    EXPECT_NE(old_driver.problem.find(part), std::string::npos) << "'" << part << "' not in: " << old_driver.problem;

  const CudaDeviceCount unknown =
      bridge::classify_device_count(answer(999, -1, "cudaErrorUnknown", "unknown error"));
  EXPECT_EQ(unknown.count, 0);
  EXPECT_NE(unknown.problem.find("cudaErrorUnknown (999): unknown error"), std::string::npos) << unknown.problem;
  EXPECT_NE(unknown.problem.find("nvidia-smi"), std::string::npos) << unknown.problem;
}

// A fake answer of CUDA's device count for one test; CUDA's own again afterwards.
struct FakeCudaDevices {
  explicit FakeCudaDevices(CudaDeviceCount fake) { set_cuda_device_count_for_testing(std::move(fake)); }
  ~FakeCudaDevices() { set_cuda_device_count_for_testing(std::nullopt); }
  FakeCudaDevices(const FakeCudaDevices&) = delete;
  FakeCudaDevices& operator=(const FakeCudaDevices&) = delete;
};

TEST(Device, AutoFailsNamingTheCudaErrorWhenCudaCannotCountGpus) {
  bridge::DeviceCountAnswer old_driver;
  old_driver.status = bridge::kCudaErrorInsufficientDriver;
  old_driver.driver_version = 12080, old_driver.runtime_version = 13000;
  old_driver.error_name = "cudaErrorInsufficientDriver";
  old_driver.error_text = "CUDA driver version is insufficient for CUDA runtime version";
  FakeCudaDevices fake(bridge::classify_device_count(old_driver));
  EXPECT_FALSE(cuda_available());
  EXPECT_NE(cuda_device_description(0).find("cudaErrorInsufficientDriver"), std::string::npos);
  for (const char* flag_text : {"auto", "cuda"}) {
    const std::string flag = flag_text;
    const std::string e = error_message([&] { tools::device_from_flag(flag); });
    for (const std::string& part : {"--device " + flag + ": ", std::string("cudaErrorInsufficientDriver (35): CUDA "
                                                                          "driver version is insufficient"),
                                   std::string("supports CUDA up to 12.8"), std::string("cpu")})
      EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;
  }
  EXPECT_EQ(tools::device_from_flag("cpu"), Device::cpu());  // an explicit choice is not affected
}

TEST(Device, AutoFallsBackToTheCpuWithoutAGpu) {
  FakeCudaDevices fake(CudaDeviceCount{0, ""});
  EXPECT_EQ(tools::resolve_device("auto"), Device::cpu());
  EXPECT_EQ(tools::device_from_flag("auto"), Device::cpu());
  const std::string e = error_message([] { tools::device_from_flag("cuda"); });
  EXPECT_NE(e.find("--device cuda: no CUDA GPU is available"), std::string::npos) << e;
}

TEST(Event, HostEventsMeasureElapsedTime) {
  Event start(Device::cuda_on_cpu()), stop(Device::cuda_on_cpu());
  start.record();
  volatile double x = 0;
  for (int i = 0; i < 200000; ++i) x = x + 1e-9 * i;
  stop.record();
  stop.synchronize();
  EXPECT_GE(stop.elapsed_ms(start), 0.0f);
  EXPECT_EQ(Stream::current(Device::cpu()).handle(), nullptr);
}

TEST(Dtype, NamesAndSizes) {
  for (DType t : {DType::float32, DType::float64, DType::bfloat16, DType::float16, DType::int32, DType::int64,
                  DType::uint8}) {
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  }
  EXPECT_EQ(dtype_size(DType::bfloat16), 2u);
  EXPECT_EQ(dtype_size(DType::int64), 8u);
  EXPECT_EQ(dtype_from_name("F32"), DType::float32);  // safetensors spelling
  EXPECT_THROW(dtype_from_name("complex64"), Error);
}

TEST(HalfTypes, BFloat16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(bfloat16(1.0f + 0.00390625f).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(bfloat16(1.0f + 3 * 0.00390625f).bits, 0x3f82);
  EXPECT_EQ(bfloat16(1.0f + 0.00390625f + 1e-6f).bits, 0x3f81);  // above halfway: up
  EXPECT_EQ(float(bfloat16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(float(bfloat16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(float(bfloat16(std::numeric_limits<float>::infinity()))));
}

TEST(HalfTypes, Float16ConversionsMatchIEEE) {
  EXPECT_EQ(float16(1.0f).bits, 0x3c00);
  EXPECT_EQ(float16(-2.0f).bits, 0xc000);
  EXPECT_EQ(float16(65504.0f).bits, 0x7bff);    // largest finite
  EXPECT_EQ(float16(65520.0f).bits, 0x7c00);    // rounds to inf
  EXPECT_EQ(float16(5.9604645e-08f).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(float16(2.9802322e-08f).bits, 0x0000);  // half of it: tie to even (0)
  EXPECT_EQ(float16(8.940697e-08f).bits, 0x0002);   // 1.5 ulp: tie to even (2)
  EXPECT_EQ(float16(1.0f + 0.00048828125f).bits, 0x3c00);  // halfway above 1: to even
  EXPECT_EQ(float16(1.0f + 3 * 0.00048828125f).bits, 0x3c02);
  // Every finite half converts to float and back unchanged.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7c00) == 0x7c00) continue;  // inf / nan
    float16 h = float16::from_bits(uint16_t(b));
    ASSERT_EQ(float16(float(h)).bits, uint16_t(b)) << std::hex << b;
  }
}

}  // namespace
}  // namespace ctsr::test
