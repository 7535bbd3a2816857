#include "tests/harness.h"

#include "runtime/cuda_on_cpu/executor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "runtime/philox.h"

namespace ctsr::test {

namespace {
const char* from_environment(const char* name, const char* built_in) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : built_in;
}
}  // namespace

const char* test_data_dir() { return from_environment("CTSR_TEST_DATA_DIR", CTSR_TEST_DATA_DIR_BUILT_IN); }
const char* tools_bin_dir() { return from_environment("CTSR_TOOLS_BIN_DIR", CTSR_TOOLS_BIN_DIR_BUILT_IN); }

Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype, double lo, double hi) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  const int64_t n = t.numel();
  bool all_zero = n > 0;
  for (int64_t i = 0; i < n; ++i) {
    double v = lo + (hi - lo) * philox::uniform_at(seed, 0x7e57, static_cast<uint64_t>(i));
    if (v != 0.0) all_zero = false;
    if (dtype == DType::float32) t.data<float>()[i] = static_cast<float>(v);
    else if (dtype == DType::float64) t.data<double>()[i] = v;
    else if (dtype == DType::bfloat16) t.data<bfloat16>()[i] = bfloat16(v);  // nearest, ties to even
    else CTSR_FAIL("random_tensor: dtype ", dtype_name(dtype), " (float32, float64 or bfloat16)");
  }
  CTSR_CHECK(!all_zero, "random_tensor drew all zeros");
  return t;
}

namespace {
std::vector<double> host_values(const Tensor& t) {
  Tensor h = t.device().is_host_memory() ? t : t.to(Device::cpu());
  std::vector<double> v(static_cast<size_t>(h.numel()));
  visit_dtype(h.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(h.raw_data());
    for (size_t i = 0; i < v.size(); ++i) {
      if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) v[i] = static_cast<float>(p[i]);
      else v[i] = static_cast<double>(p[i]);
    }
  });
  return v;
}
}  // namespace

Tensor to_double(const Tensor& t) {
  std::vector<double> v = host_values(t);
  return Tensor::from_vector(v, t.shape());
}

Tensor to_float(const Tensor& t) {
  std::vector<double> v = host_values(t);
  std::vector<float> f(v.begin(), v.end());
  return Tensor::from_vector(f, t.shape());
}

Tensor abs_double(const Tensor& t) {
  std::vector<double> v = host_values(t);
  for (double& x : v) x = std::fabs(x);
  return Tensor::from_vector(v, t.shape());
}

::testing::AssertionResult within_bf16_bound(const Tensor& actual, const Tensor& ref, const Tensor& abs_ref,
                                             double terms, bool rounded_to_bf16) {
  if (!(actual.shape() == ref.shape()) || !(abs_ref.shape() == ref.shape())) {
    return ::testing::AssertionFailure() << "shapes differ: actual " << actual.shape().str() << ", reference "
                                         << ref.shape().str() << ", |reference| " << abs_ref.shape().str();
  }
  const std::vector<double> a = host_values(actual), r = host_values(ref), m = host_values(abs_ref);
  const double u16 = std::ldexp(1.0, -8), u32 = std::ldexp(1.0, -24);
  double worst = 0.0;
  size_t worst_at = 0, failures = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double bound = (rounded_to_bf16 ? u16 * std::fabs(r[i]) : 0.0) + 2.0 * terms * u32 * m[i] + 1e-30;
    const double ratio = std::fabs(a[i] - r[i]) / bound;
    if (!(ratio <= 1.0)) ++failures;
    if (!(ratio <= worst)) worst = ratio, worst_at = i;
  }
  if (failures == 0) return ::testing::AssertionSuccess() << "worst error " << worst << " of the bound";
  return ::testing::AssertionFailure() << failures << " of " << a.size() << " elements beyond the bf16 bound ("
                                       << terms << " terms" << (rounded_to_bf16 ? ", rounded to bf16" : "")
                                       << "); worst at " << worst_at << ": " << a[worst_at] << " vs " << r[worst_at]
                                       << ", " << worst << " times the bound";
}

::testing::AssertionResult tensors_close(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  if (!(actual.shape() == expected.shape())) {
    return ::testing::AssertionFailure() << "shape " << actual.shape().str() << " vs expected " << expected.shape().str();
  }
  std::vector<double> a = host_values(actual), e = host_values(expected);
  double max_err = 0;
  int64_t bad = 0, first_bad = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    double err = std::fabs(a[i] - e[i]);
    if (std::isnan(a[i]) != std::isnan(e[i])) err = INFINITY;
    max_err = std::max(max_err, err);
    if (!(err <= atol + rtol * std::fabs(e[i]))) {
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << a.size() << " elements differ (rtol " << rtol << ", atol "
                                       << atol << "); first at flat index " << first_bad << ": " << a[first_bad]
                                       << " vs expected " << e[first_bad] << "; max |error| " << max_err;
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ctsr::Error";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string message = error_message(f);
  for (const std::string& part : parts) expect_contains(message, part);
}

::testing::AssertionResult tensors_equal(const Tensor& actual, const Tensor& expected) {
  if (!(actual.shape() == expected.shape()) || actual.dtype() != expected.dtype()) {
    return ::testing::AssertionFailure() << actual.shape().str() << " " << dtype_name(actual.dtype()) << " vs "
                                         << expected.shape().str() << " " << dtype_name(expected.dtype());
  }
  Tensor a = actual.to(Device::cpu()), e = expected.to(Device::cpu());
  const auto* pa = static_cast<const unsigned char*>(a.raw_data());
  const auto* pe = static_cast<const unsigned char*>(e.raw_data());
  for (size_t i = 0; i < a.nbytes(); ++i) {
    if (pa[i] != pe[i]) {
      return ::testing::AssertionFailure() << "first differing byte " << i << " (element "
                                           << i / dtype_size(a.dtype()) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

namespace {
double dot(const Tensor& a, const Tensor& b) {
  const double* pa = a.data<double>();
  const double* pb = b.data<double>();
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += pa[i] * pb[i];
  return s;
}
}  // namespace

std::vector<double> gradcheck(const std::vector<Tensor>& inputs, const Forward& f, const Backward& backward, double eps,
                              uint64_t seed) {
  for (const Tensor& t : inputs) {
    if (t.defined() && dtype_is_floating(t.dtype())) t.check_dtype(DType::float64, "gradcheck input");
  }
  std::vector<Tensor> outputs = f(inputs);
  std::vector<Tensor> dys;
  for (size_t k = 0; k < outputs.size(); ++k) dys.push_back(random_tensor(outputs[k].shape(), seed + k, DType::float64));
  auto loss = [&](const std::vector<Tensor>& xs) {
    std::vector<Tensor> ys = f(xs);
    double s = 0;
    for (size_t k = 0; k < ys.size(); ++k) s += dot(ys[k], dys[k]);
    return s;
  };
  std::vector<Tensor> grads = backward(inputs, dys);
  CTSR_CHECK(grads.size() == inputs.size(), "gradcheck: backward returned ", grads.size(), " gradients for ",
             inputs.size(), " inputs");
  std::vector<double> errors;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!grads[i].defined()) {
      errors.push_back(0.0);
      continue;
    }
    grads[i].check_shape(inputs[i].shape(), "gradcheck: gradient");
    std::vector<Tensor> xs;
    for (const Tensor& t : inputs) xs.push_back(t.defined() ? t.clone() : t);
    double* p = xs[i].data<double>();
    const double* g = grads[i].data<double>();
    double num2 = 0, diff2 = 0;
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      const double orig = p[j];
      p[j] = orig + eps;
      const double up = loss(xs);
      p[j] = orig - eps;
      const double down = loss(xs);
      p[j] = orig;
      const double numeric = (up - down) / (2 * eps);
      num2 += numeric * numeric;
      diff2 += (numeric - g[j]) * (numeric - g[j]);
    }
    errors.push_back(std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-300));
  }
  return errors;
}

void expect_gradcheck(const std::string& name, const std::vector<Tensor>& inputs, const Forward& f,
                      const Backward& backward, double tol, double eps) {
  std::vector<double> errors = gradcheck(inputs, f, backward, eps);
  std::ostringstream line;
  line << "gradcheck " << name << ": relative error per input";
  for (size_t i = 0; i < errors.size(); ++i) {
    line << " [" << i << "] " << errors[i];
    EXPECT_LT(errors[i], tol) << name << ": input " << i << " gradient disagrees with finite differences";
  }
  std::printf("%s\n", line.str().c_str());
}

void expect_module_gradcheck(const std::string& name, Module& module, const std::vector<Tensor>& inputs,
                             const Forward& f, const Backward& backward, double tol, double eps) {
  std::vector<Parameter*> params = module.parameters();
  const size_t n_in = inputs.size();
  std::vector<Tensor> all = inputs;
  for (Parameter* p : params) all.push_back(p->value.clone());
  auto load_params = [&](const std::vector<Tensor>& xs) {
    for (size_t i = 0; i < params.size(); ++i) params[i]->value.copy_from(xs[n_in + i]);
  };
  Forward f_all = [&](const std::vector<Tensor>& xs) {
    load_params(xs);
    return f(std::vector<Tensor>(xs.begin(), xs.begin() + n_in));
  };
  Backward b_all = [&](const std::vector<Tensor>& xs, const std::vector<Tensor>& dys) {
    module.zero_grad();
    std::vector<Tensor> g = backward(std::vector<Tensor>(xs.begin(), xs.begin() + n_in), dys);
    for (Parameter* p : params) g.push_back(p->grad.clone());
    return g;
  };
  std::vector<double> errors = gradcheck(all, f_all, b_all, eps);
  std::ostringstream line;
  line << "gradcheck " << name << ":";
  for (size_t i = 0; i < errors.size(); ++i) {
    const std::string what = i < n_in ? "input " + std::to_string(i) : params[i - n_in]->name;
    line << " " << what << " " << errors[i];
    EXPECT_LT(errors[i], tol) << name << ": gradient of " << what << " disagrees with finite differences";
  }
  std::printf("%s\n", line.str().c_str());
  load_params(all);
}

void expect_module_gradcheck_sampled(const std::string& name, Module& module, const std::vector<Tensor>& inputs,
                                     const Forward& f, const Backward& backward, int elements, double tol, double eps,
                                     uint64_t seed) {
  std::vector<Parameter*> params = module.parameters();
  std::vector<Tensor*> tensors;  // what is perturbed: the inputs (copies), then every parameter value
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(t.defined() ? t.clone() : t);
  for (Tensor& t : xs) tensors.push_back(&t);
  for (Parameter* p : params) {
    p->value.check_dtype(DType::float64, "expect_module_gradcheck_sampled parameter");
    tensors.push_back(&p->value);
  }
  std::vector<Tensor> outputs = f(xs);
  std::vector<Tensor> dys;
  for (size_t k = 0; k < outputs.size(); ++k) dys.push_back(random_tensor(outputs[k].shape(), seed + k, DType::float64));
  auto loss = [&] {
    std::vector<Tensor> ys = f(xs);
    double s = 0;
    for (size_t k = 0; k < ys.size(); ++k) s += dot(ys[k], dys[k]);
    return s;
  };
  module.zero_grad();
  std::vector<Tensor> grads = backward(xs, dys);
  for (Parameter* p : params) grads.push_back(p->grad.clone());

  std::ostringstream line;
  line << "gradcheck (sampled) " << name << ":";
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!grads[i].defined()) continue;
    Tensor& x = *tensors[i];
    double* p = x.data<double>();
    const double* g = grads[i].data<double>();
    const int64_t n = x.numel();
    // Directional derivative along a random direction over the whole tensor.
    Tensor direction = random_tensor(x.shape(), seed * 7919 + i, DType::float64);
    const double* v = direction.data<double>();
    const Tensor original = x.clone();
    const double* o = original.data<double>();
    auto shift = [&](double step) {
      for (int64_t j = 0; j < n; ++j) p[j] = o[j] + step * v[j];
    };
    shift(eps);
    const double up = loss();
    shift(-eps);
    const double down = loss();
    x.copy_from(original);
    const double numeric = (up - down) / (2 * eps);
    double analytic = 0;
    for (int64_t j = 0; j < n; ++j) analytic += g[j] * v[j];
    // Relative to the derivative's typical size, |g| |v| / sqrt(n) for a random direction: a
    // direction that happens to be nearly orthogonal to g must not turn rounding into an error.
    double g2 = 0, v2 = 0;
    for (int64_t j = 0; j < n; ++j) g2 += g[j] * g[j], v2 += v[j] * v[j];
    const double typical = std::sqrt(g2 * v2 / double(n));
    double error = std::abs(numeric - analytic) / std::max({std::abs(numeric), typical, 1e-300});
    // Single elements, chosen by Philox.
    double num2 = 0, diff2 = 0;
    for (int e = 0; e < elements; ++e) {
      const int64_t j = std::min<int64_t>(n - 1, int64_t(philox::uniform_at(seed, 0x5e1ecull + i, uint64_t(e)) * n));
      p[j] = o[j] + eps;
      const double u = loss();
      p[j] = o[j] - eps;
      const double d = loss();
      p[j] = o[j];
      const double numeric_j = (u - d) / (2 * eps);
      num2 += numeric_j * numeric_j;
      diff2 += (numeric_j - g[j]) * (numeric_j - g[j]);
    }
    // Judged against the tensor's typical gradient: an element whose true gradient is zero (the
    // key bias of attention, say) would otherwise compare rounding noise with rounding noise.
    double mean_g2 = 0;
    for (int64_t j = 0; j < n; ++j) mean_g2 += g[j] * g[j] / double(n);
    const double scale2 = num2 + elements * mean_g2;
    if (scale2 > 0) error = std::max(error, std::sqrt(diff2 / scale2));
    const std::string what = i < inputs.size() ? "input " + std::to_string(i) : params[i - inputs.size()]->name;
    EXPECT_LT(error, tol) << name << ": gradient of " << what << " disagrees with finite differences";
    if (error >= worst) worst = error, worst_name = what;
  }
  line << " " << tensors.size() << " tensors, worst " << worst << " (" << worst_name << ")";
  std::printf("%s\n", line.str().c_str());
}

void CudaPathTest::SetUp() {
  if (device().kind == DeviceKind::cuda && !cuda_available()) {
    GTEST_SKIP() << "no GPU: " << cuda_device_description(0) << " (the cuda_on_cpu case of this test ran)";
  }
#if !CTSR_HAVE_CUDA_ON_CPU
  if (device().kind == DeviceKind::cuda_on_cpu) GTEST_SKIP() << "built with CTSR_CUDA_ON_CPU=OFF";
#endif
}

std::string device_param_name(const ::testing::TestParamInfo<Device>& info) {
  return info.param.kind == DeviceKind::cuda ? "gpu" : "cuda_on_cpu";
}

double relative_l2(const Tensor& got, const Tensor& want) {
  CTSR_CHECK(got.numel() == want.numel(), "relative_l2: ", got.shape().str(), " vs ", want.shape().str());
  const std::vector<double> g = to_double(got.to(Device::cpu())).to_vector<double>();
  const std::vector<double> w = to_double(want.to(Device::cpu())).to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) num += (g[i] - w[i]) * (g[i] - w[i]), den += w[i] * w[i];
  return std::sqrt(num / den);
}

void expect_same_in_both_thread_orders(const std::function<std::vector<Tensor>()>& run) {
  const std::vector<Tensor> forward_order = run();
  struct RestoreOrder {
    ~RestoreOrder() { cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward); }
  } restore;
  cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::reverse);
  const std::vector<Tensor> reverse_order = run();
  ASSERT_EQ(reverse_order.size(), forward_order.size());
  for (size_t i = 0; i < forward_order.size(); ++i) EXPECT_TRUE(tensors_equal(reverse_order[i], forward_order[i])) << i;
}

void ExecutorModeTest::SetUp() {
#if !CTSR_HAVE_CUDA_ON_CPU
  GTEST_SKIP() << "built with CTSR_CUDA_ON_CPU=OFF";
#endif
  previous_ = cuda_on_cpu::checks();
  cuda_on_cpu::set_checks(mode_);
}

void ExecutorModeTest::TearDown() {
  cuda_on_cpu::set_checks(previous_);
  cuda_on_cpu::set_thread_order(cuda_on_cpu::ThreadOrder::forward);
  cuda_on_cpu::set_interleaving_seed(1);
  cuda_on_cpu::set_worker_threads(0);
}

}  // namespace ctsr::test
