#include "tools/lib/cli.h"

#include <cstdio>
#include <exception>
#include <iostream>

namespace ctsr::tools {

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
  if (text == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  return Device::parse(text);
}

std::string format_seconds(double seconds) {
  char buffer[32];
  if (seconds < 1.0)
    std::snprintf(buffer, sizeof buffer, "%.0f ms", seconds * 1e3);
  else
    std::snprintf(buffer, sizeof buffer, "%.1f s", seconds);
  return buffer;
}

}  // namespace ctsr::tools
