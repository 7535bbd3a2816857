// PNG images through libpng's simplified API (png_image_*), which keeps libpng's longjmp-based
// error handling inside libpng and hands back a message, so no C++ object is ever jumped over.
// Images are 8-bit RGB, row-major, three bytes per pixel, top row first.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace ctsr::train {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel: rgb[3 * (y * width + x) + channel]
};

// The PNG file's bytes (for TensorBoard, which embeds them in events). Throws ctsr::Error for an
// empty image, rgb.size() != width * height * 3, or a libpng failure (with libpng's message).
std::vector<uint8_t> encode_png(const RgbImage& image);

// Encodes and writes atomically: on any error the target is left as it was and no temporary remains.
void write_png(const std::filesystem::path& path, const RgbImage& image);

// Decodes 8-bit RGB or greyscale PNG bytes (grey becomes r = g = b). Palette, alpha and 16-bit
// images are refused. `source` names the bytes in error messages (a file name, "event 3").
RgbImage decode_png(std::span<const uint8_t> png, const std::string& source);

// Reads and decodes a file; every error names the file.
RgbImage read_png(const std::filesystem::path& path);

}  // namespace ctsr::train
