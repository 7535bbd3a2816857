#include "runtime/device.h"

#include <utility>

#include "runtime/cuda_runtime_bridge.h"
#include "runtime/error.h"

namespace ctsr {

Device Device::parse(const std::string& t) {
  if (t == "cpu") return cpu();
  if (t == "cuda_on_cpu") return cuda_on_cpu();
  if (t == "cuda") return cuda(0);
  if (t.rfind("cuda:", 0) == 0) {
    const std::string idx = t.substr(5);
    CTSR_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
               "device '", t, "': expected cpu, cuda, cuda:N or cuda_on_cpu");
    return cuda(std::stoi(idx));
  }
  CTSR_FAIL("device '", t, "': expected cpu, cuda, cuda:N or cuda_on_cpu");
}

std::string Device::str() const {
  switch (kind) {
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::cuda: return "cuda:" + std::to_string(index);
    case DeviceKind::cuda_on_cpu: return "cuda_on_cpu";
  }
  return "?";
}

namespace {
std::optional<CudaDeviceCount>& fake_device_count() {
  static std::optional<CudaDeviceCount> fake;
  return fake;
}
const CudaDeviceCount& device_count() {
  if (fake_device_count()) return *fake_device_count();
  static const CudaDeviceCount counted = bridge::device_count();
  return counted;
}
}  // namespace

int cuda_device_count() { return device_count().count; }
bool cuda_available() { return cuda_device_count() > 0; }
std::string cuda_problem() { return device_count().problem; }
void set_cuda_device_count_for_testing(std::optional<CudaDeviceCount> fake) { fake_device_count() = std::move(fake); }
void set_cuda_device(int index) { bridge::set_device(index); }
std::string cuda_device_description(int index) {
  const std::string problem = cuda_problem();
  return problem.empty() ? bridge::device_description(index) : problem;
}

}  // namespace ctsr
