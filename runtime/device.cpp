#include "runtime/device.h"

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

int cuda_device_count() {
  static const int n = bridge::device_count();
  return n;
}
bool cuda_available() { return cuda_device_count() > 0; }
void set_cuda_device(int index) { bridge::set_device(index); }
std::string cuda_device_description(int index) { return bridge::device_description(index); }

}  // namespace ctsr
