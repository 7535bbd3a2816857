// Test harness shared by every op test.
//   random_tensor     awkward random inputs (never all zeros), reproducible per seed
//   expect_close      compare two tensors on any devices, reporting the worst element
//   gradcheck         central finite differences in float64 on the reference path against
//                     the op's backward, relative error per input tensor
//   CudaPathTest      value-parameterised over the CUDA paths: cuda_on_cpu always, cuda:0 when
//                     a GPU is present (otherwise the GPU case skips, saying so)
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "model/module.h"
#include "runtime/cuda_on_cpu/executor.h"
#include "runtime/tensor.h"

namespace ctsr::test {

// Where the tests find their data and the programs: the environment variables CTSR_TEST_DATA_DIR
// and CTSR_TOOLS_BIN_DIR when set (a copied build, such as scripts/gpu_bundle.sh's bundle), else the
// source and build folders compiled in. Tests spell them as the macros of the same names
// (tests/CMakeLists.txt defines those as calls to these, and includes this header in every test).
const char* test_data_dir();
const char* tools_bin_dir();

// Uniform in [lo, hi) on the cpu, from Philox(seed); float32 or float64.
Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::float32, double lo = -1.0, double hi = 1.0);
// Same values as a float64 host tensor (for comparisons and gradchecks).
Tensor to_double(const Tensor& t);
Tensor to_float(const Tensor& t);

// |actual - expected| <= atol + rtol * |expected| for every element; on failure reports the
// first offending index, both values and the max error.
::testing::AssertionResult tensors_close(const Tensor& actual, const Tensor& expected, double rtol, double atol);
#define EXPECT_TENSORS_CLOSE(actual, expected, rtol, atol) \
  EXPECT_TRUE(::ctsr::test::tensors_close((actual), (expected), (rtol), (atol)))

// Parity of a bfloat16 kernel (bf16 operands, float accumulation) with the float64 op on the same
// bf16 values. Products of two bf16 are exact in float, so the errors are the float additions and,
// when the result is stored as bf16, its final rounding. Per element:
//   |actual - ref| <= (rounded_to_bf16 ? 2^-8 |ref| : 0) + 2 terms 2^-24 abs_ref
// where abs_ref is the same op on the operands' absolute values (the sum of |products|), `terms`
// the number of additions behind each output (the reduction length plus any partial sums), 2^-8
// bf16's unit roundoff (8-bit significand) and 2^-24 float's; the factor 2 allows adders that
// truncate instead of rounding (a GPU's tensor cores). On failure reports the worst element.
::testing::AssertionResult within_bf16_bound(const Tensor& actual, const Tensor& ref, const Tensor& abs_ref,
                                             double terms, bool rounded_to_bf16);
// The elementwise absolute value of t, in float64 on the CPU.
Tensor abs_double(const Tensor& t);

// The message of the ctsr::Error that f throws (a test failure, and "", when it throws none).
std::string error_message(const std::function<void()>& f);
// Expects `text` to contain `part`, printing both otherwise.
void expect_contains(const std::string& text, const std::string& part);
// Expects f to throw a ctsr::Error whose message contains every one of `parts`.
void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& parts);

// Bitwise equality (for RNG and copies).
// sqrt(sum (got - want)^2 / sum want^2) over all elements, in float64; tensors on any device.
double relative_l2(const Tensor& got, const Tensor& want);

::testing::AssertionResult tensors_equal(const Tensor& actual, const Tensor& expected);
// On the CUDA-on-CPU executor: runs `run` with the threads of every block in forward order, then
// in reverse order, and expects every returned tensor bitwise equal (a result that depends on the
// order in which threads run, such as an unordered sum, would differ). Restores forward order.
void expect_same_in_both_thread_orders(const std::function<std::vector<Tensor>()>& run);

// f: inputs -> outputs (all float64, cpu). backward: (inputs, output grads) -> input grads
// (an undefined tensor for a non-differentiable input). Checks each differentiable input's
// analytic gradient against central differences of L = sum_k <outputs_k, dy_k>, with dy
// random. Returns the relative error per input (||g - g_num|| / ||g_num||).
using Forward = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
using Backward = std::function<std::vector<Tensor>(const std::vector<Tensor>&, const std::vector<Tensor>&)>;
std::vector<double> gradcheck(const std::vector<Tensor>& inputs, const Forward& f, const Backward& backward,
                              double eps = 1e-6, uint64_t seed = 7);
// gradcheck plus an assertion that every relative error is below tol, printing them.
void expect_gradcheck(const std::string& name, const std::vector<Tensor>& inputs, const Forward& f,
                      const Backward& backward, double tol = 1e-7, double eps = 1e-6);

// Gradient check of a module: its inputs and every parameter. f runs the module's forward,
// backward its backward (returning input gradients); parameter gradients are read from the
// module after zero_grad + backward. Parameters must be float64 on the cpu.
void expect_module_gradcheck(const std::string& name, Module& module, const std::vector<Tensor>& inputs,
                             const Forward& f, const Backward& backward, double tol = 1e-7, double eps = 1e-6);

// The same for modules too large for element-by-element differences (a whole network): each
// input and parameter tensor gets one directional derivative along a random direction (its
// whole extent at once) and `elements` randomly chosen single elements, all compared with the
// analytic gradient (the elements relative to the tensor's RMS gradient, so an element whose
// true gradient is zero compares against the tensor's scale, not against rounding noise).
// Reports per tensor the worse of the two relative errors. Parameters must be float64 on the cpu.
void expect_module_gradcheck_sampled(const std::string& name, Module& module, const std::vector<Tensor>& inputs,
                                     const Forward& f, const Backward& backward, int elements = 3,
                                     double tol = 1e-6, double eps = 1e-6, uint64_t seed = 11);

// Tests of the CUDA-on-CPU executor itself, under one checks mode (fast or full); every
// executor setting a test may change is restored afterwards.
class ExecutorModeTest : public ::testing::Test {
 protected:
  explicit ExecutorModeTest(cuda_on_cpu::Checks mode) : mode_(mode) {}
  void SetUp() override;
  void TearDown() override;
  const Device d = Device::cuda_on_cpu();

 private:
  cuda_on_cpu::Checks mode_, previous_ = cuda_on_cpu::Checks::fast;
};

class CudaPathTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override;
  Device device() const { return GetParam(); }
};

std::string device_param_name(const ::testing::TestParamInfo<Device>& info);

}  // namespace ctsr::test

#define CTSR_INSTANTIATE_CUDA_PATHS(Suite)                                                            \
  INSTANTIATE_TEST_SUITE_P(Paths, Suite,                                                              \
                           ::testing::Values(::ctsr::Device::cuda_on_cpu(), ::ctsr::Device::cuda(0)), \
                           ::ctsr::test::device_param_name)
