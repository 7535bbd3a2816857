// The volume fixtures NumPy and nibabel wrote (tests/data/volumes, from
// tools/pytorch/make_volume_fixtures.py): their folder, expected.json, and whole-file reads and
// writes, shared by tests/test_npy.cpp and tests/test_volume.cpp.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/error.h"

namespace ctsr::test::volume_fixtures {

inline const std::string kDir = std::string(CTSR_TEST_DATA_DIR) + "/volumes/";

inline const nlohmann::json& expected_json() {
  static const nlohmann::json j = [] {
    std::ifstream in(kDir + "expected.json");
    CTSR_CHECK(in.good(), "cannot open ", kDir, "expected.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace ctsr::test::volume_fixtures
