// What every fuzz harness (fuzz/<reader>.cpp, FUZZING.md) shares: the rule that a reader may only
// refuse bad input with a ctsr::Error, a scratch folder for the readers that take a path, and a way
// to report a broken promise as a crash that libFuzzer (and the replay, fuzz/replay_main.cpp) sees.
//
// A harness is `extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t)` whose body is
// `return ctsr::fuzz::run("<name>", [&] { ... });`. Inside, any reader may throw ctsr::Error (the
// expected answer to bad input); every other exception, a failed `expect`, a crash, a sanitizer
// report, a timeout or a large allocation is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <typeinfo>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace ctsr::fuzz {

// Reports a finding and aborts, so that libFuzzer saves the input as a crash.
[[noreturn]] inline void fail(const char* harness, const std::string& what) {
  std::fprintf(stderr, "fuzz %s: FINDING: %s\n", harness, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A promise of the reader that must hold for this input.
inline void expect(bool holds, const char* harness, const std::string& what) {
  if (!holds) fail(harness, what);
}

// Runs one input through `body`. ctsr::Error is the documented refusal; any other exception
// escaping a reader is a finding. CTSR_FUZZ_VERBOSE=1 prints each refusal (which seeds get how far).
template <class Body>
int run(const char* harness, Body&& body) {
  static const bool verbose = std::getenv("CTSR_FUZZ_VERBOSE") != nullptr;
  try {
    body();
    if (verbose) std::fprintf(stderr, "fuzz %s: accepted\n", harness);
  } catch (const Error& e) {
    if (verbose) std::fprintf(stderr, "fuzz %s: refused: %s\n", harness, e.what());
  } catch (const std::exception& e) {
    fail(harness, std::string("exception other than ctsr::Error (") + typeid(e).name() + "): " + e.what());
  } catch (...) {
    fail(harness, "exception of a type that is not std::exception");
  }
  return 0;
}

// For what must not fail once a read succeeded (reading back what ctsr itself just wrote): a
// ctsr::Error from `step` is a finding, reported with `what`. Returns what `step` returns.
template <class Step>
auto must_succeed(const char* harness, const std::string& what, Step&& step) {
  try {
    return step();
  } catch (const Error& e) {
    fail(harness, what + ": " + e.what());
  }
}

// A folder of this process's own under the system's temporary folder, removed at exit; readers
// that take a path read the input from a file in it.
class Scratch {
 public:
  static Scratch& get() {
    static Scratch scratch;
    return scratch;
  }
  const std::filesystem::path& dir() const { return dir_; }

  // Writes the bytes to <dir>/<name> (replacing what was there) and returns the path. The folder is
  // made again if something removed it (a cleaner of the temporary folder during a long run).
  std::filesystem::path write(const std::string& name, const void* data, size_t size) const {
    const std::filesystem::path path = dir_ / name;
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) {
      std::fprintf(stderr, "fuzz: cannot write the scratch file %s\n", path.c_str());
      std::abort();  // the harness's own failure, not the reader's: stop rather than report nothing
    }
    return path;
  }

 private:
  Scratch() {
    std::error_code ec;
    dir_ = std::filesystem::temp_directory_path(ec) / ("ctsr-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
      std::fprintf(stderr, "fuzz: cannot create the scratch folder %s: %s\n", dir_.c_str(), ec.message().c_str());
      std::abort();
    }
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

// Reads every byte of a loaded CPU tensor (so AddressSanitizer checks the whole buffer) and returns
// a hash of them; also checks that the byte count is the shape's.
inline uint64_t touch(const Tensor& t, const char* harness) {
  expect(t.device().kind == DeviceKind::cpu, harness, "a reader returned a tensor that is not on the CPU");
  uint64_t product = 1;
  for (int64_t d : t.shape().vec()) {
    expect(d >= 0, harness, "a loaded tensor has a negative dimension: " + t.shape().str());
    expect(!__builtin_mul_overflow(product, static_cast<uint64_t>(d), &product), harness,
           "a loaded tensor's shape " + t.shape().str() + " overflows 64 bits");
  }
  expect(product == static_cast<uint64_t>(t.numel()), harness,
         "numel " + std::to_string(t.numel()) + " is not the product of the shape " + t.shape().str());
  uint64_t h = 1469598103934665603ull;
  if (t.numel() == 0) return h;
  const auto* p = static_cast<const unsigned char*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// True when the two tensors have the same dtype, shape and bytes.
inline bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

// The input split into lines ('\n'; a trailing '\r' is kept, as the readers see it).
inline std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

inline std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A string map (safetensors "__metadata__") from "key=value" lines: the value runs to the end of
// the line; a line without '=' is a key with an empty value; a key given twice keeps its last value,
// as a JSON object read into a map does.
inline std::map<std::string, std::string> metadata_of(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> metadata;
  for (const std::string& line : lines_of(text_of(data, size))) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos) metadata[line] = "";
    else metadata[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return metadata;
}

}  // namespace ctsr::fuzz
