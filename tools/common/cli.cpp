#include "tools/common/cli.h"

#include <sys/resource.h>

#include <cstdio>
#include <exception>
#include <iostream>

#include "runtime/error.h"

namespace ctsr::tools {

io::VolumeFormat check_volume_output(const std::filesystem::path& path, const std::string& flag) {
  const io::VolumeFormat format = io::volume_format(path);
  if (format != io::VolumeFormat::dicom) return format;
  try {
    io::check_dicom_series_target(path);
  } catch (const Error& e) {
    CTSR_FAIL(flag, ": ", e.what());
  }
  return format;
}

int run_program(CLI::App& app, int argc, char** argv, const std::function<void()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and succeeds; any usage error is status 2 (CLI11's own codes vary by error).
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    std::string message = e.what();
    for (char& c : message)
      if (c == '\n') c = ' ';  // one line, always
    std::cerr << app.get_name() << ": error: " << message << std::endl;
    return 1;
  }
}

Device resolve_device(const std::string& text) {
  if (text != "auto") return Device::parse(text);
  if (cuda_available()) return Device::cuda(0);
  // Only a machine without a GPU (or without any NVIDIA driver) falls back; a GPU that CUDA cannot
  // reach must not quietly become a CPU run.
  const std::string problem = cuda_problem();
  CTSR_CHECK(problem.empty(), "--device auto: ", problem, "; or choose --device cpu to run on the CPU");
  return Device::cpu();
}

Device device_from_flag(const std::string& text) {
  const Device device = resolve_device(text);
  const int gpus = cuda_device_count();
  const std::string problem = cuda_problem();
  CTSR_CHECK(device.kind != DeviceKind::cuda || device.index < gpus, "--device ", text, ": ",
             gpus > 0 ? "this machine has " + std::to_string(gpus) + " GPU(s); expected cuda:0 to cuda:" +
                            std::to_string(gpus - 1) + ", cpu or cuda_on_cpu"
             : problem.empty() ? std::string("no CUDA GPU is available; expected cpu or cuda_on_cpu")
                               : problem + "; or choose cpu or cuda_on_cpu");
  if (device.kind == DeviceKind::cuda) set_cuda_device(device.index);
  return device;
}

size_t peak_rss_bytes() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return size_t(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

}  // namespace ctsr::tools
