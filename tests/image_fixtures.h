// Helpers shared by the tests of train/png.h and train/tensorboard.h: random RGB images and whole
// files as byte strings (for damaging them on purpose).
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/harness.h"
#include "train/png.h"

namespace ctsr::test {

// Every byte uniform in [0, 256) from Philox(seed), so no two channels are tied by construction.
inline train::RgbImage random_image(int64_t width, int64_t height, uint64_t seed) {
  const std::vector<float> v =
      random_tensor(Shape{width * height * 3}, seed, DType::float32, 0.0, 256.0).to_vector<float>();
  train::RgbImage image{width, height, {}};
  for (float x : v) image.rgb.push_back(static_cast<uint8_t>(x));
  return image;
}

inline std::string read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_file_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace ctsr::test
