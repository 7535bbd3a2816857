// ctsr_fuzz_replay HARNESS PATH...: runs every file given, and every file of every folder given
// (but README*), through one fuzz harness, without libFuzzer: the ctest Fuzz.Replay.<name> of the
// normal and sanitizer builds (fuzz/CMakeLists.txt). A finding aborts the process, as under
// libFuzzer; it also fails when a path is missing or nothing at all was run, so that a moved
// corpus cannot pass by testing nothing.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#define CTSR_FUZZ_HARNESS(name) extern "C" int ctsr_fuzz_##name(const uint8_t* data, size_t size);
#include "replay_harnesses.inc"
#undef CTSR_FUZZ_HARNESS

namespace {

struct Harness {
  const char* name;
  int (*run)(const uint8_t*, size_t);
};

const Harness kHarnesses[] = {
#define CTSR_FUZZ_HARNESS(name) {#name, ctsr_fuzz_##name},
#include "replay_harnesses.inc"
#undef CTSR_FUZZ_HARNESS
};

std::vector<std::filesystem::path> inputs_of(const std::filesystem::path& path) {
  if (!std::filesystem::is_directory(path)) return {path};
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().filename().string().rfind("README", 0) != 0)
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  const Harness* harness = nullptr;
  for (const Harness& h : kHarnesses)
    if (argc >= 2 && std::strcmp(argv[1], h.name) == 0) harness = &h;
  if (argc < 3 || harness == nullptr) {
    std::fprintf(stderr, "usage: ctsr_fuzz_replay HARNESS FILE-OR-FOLDER...; harnesses:");
    for (const Harness& h : kHarnesses) std::fprintf(stderr, " %s", h.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  size_t count = 0;
  for (int i = 2; i < argc; ++i) {
    if (!std::filesystem::exists(argv[i])) {
      std::fprintf(stderr, "ctsr_fuzz_replay: %s: no such file or folder\n", argv[i]);
      return 1;
    }
    for (const std::filesystem::path& file : inputs_of(argv[i])) {
      std::ifstream in(file, std::ios::binary);
      const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) {
        std::fprintf(stderr, "ctsr_fuzz_replay: cannot read %s\n", file.c_str());
        return 1;
      }
      std::fprintf(stderr, "ctsr_fuzz_replay %s: %s (%zu bytes)\n", harness->name, file.c_str(), bytes.size());
      harness->run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++count;
    }
  }
  if (count == 0) {
    std::fprintf(stderr, "ctsr_fuzz_replay %s: no inputs in the paths given\n", harness->name);
    return 1;
  }
  std::printf("ctsr_fuzz_replay %s: %zu inputs, no finding\n", harness->name, count);
  return 0;
}
