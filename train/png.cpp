// PNG encode/decode through libpng's simplified API. It runs libpng's setjmp/longjmp error path
// internally and reports failures as a message in png_image::message, so this file never has a
// longjmp cross a C++ frame; png_image_free releases libpng's state on every early exit.
#include "train/png.h"

#include <png.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"

namespace ctsr::train {

namespace {

// Refuse headers that would make us allocate absurd buffers (a damaged or hostile file can claim
// 10^6 x 10^6 pixels, libpng's own limit); 2^28 pixels (768 MiB of RGB) is far above any panel.
constexpr int64_t kMaxPixels = int64_t(1) << 28;

// Frees libpng's state however the function exits (a no-op once libpng has freed it itself).
struct PngImageGuard {
  png_image image;
  PngImageGuard() {
    std::memset(&image, 0, sizeof(image));
    image.version = PNG_IMAGE_VERSION;
  }
  ~PngImageGuard() { png_image_free(&image); }
  PngImageGuard(const PngImageGuard&) = delete;
  PngImageGuard& operator=(const PngImageGuard&) = delete;
};

void check_image(const RgbImage& image, const std::string& what) {
  CTSR_CHECK(image.width > 0 && image.height > 0, what, ": the image is empty (", image.width, " x ", image.height,
             " pixels)");
  CTSR_CHECK(image.width <= kMaxPixels && image.height <= kMaxPixels && image.width * image.height <= kMaxPixels,
             what, ": ", image.width, " x ", image.height, " pixels is more than the ", kMaxPixels,
             " this writer accepts");
  const auto expected = static_cast<uint64_t>(image.width * image.height * 3);
  CTSR_CHECK(image.rgb.size() == expected, what, ": rgb holds ", image.rgb.size(), " bytes but a ", image.width, " x ",
             image.height, " RGB image needs ", expected);
}

std::string describe_format(png_uint_32 format) {
  std::string s = (format & PNG_FORMAT_FLAG_COLOR) ? "colour" : "greyscale";
  if (format & PNG_FORMAT_FLAG_COLORMAP) s += " palette";
  if (format & PNG_FORMAT_FLAG_ALPHA) s += " with alpha";
  s += (format & PNG_FORMAT_FLAG_LINEAR) ? ", 16 bits per channel" : ", 8 bits per channel";
  return s;
}

// `what` starts every error message: "encode_png" or "cannot write 'x.png'".
std::vector<uint8_t> encode(const RgbImage& image, const std::string& what) {
  check_image(image, what);
  PngImageGuard png;
  png.image.width = static_cast<png_uint_32>(image.width);
  png.image.height = static_cast<png_uint_32>(image.height);
  png.image.format = PNG_FORMAT_RGB;
  // An upper bound on the encoded size (zlib's worst case plus chunk overhead): one pass, no retry.
  std::vector<uint8_t> bytes(PNG_IMAGE_PNG_SIZE_MAX(png.image));
  png_alloc_size_t size = bytes.size();
  const int ok = png_image_write_to_memory(&png.image, bytes.data(), &size, /*convert_to_8_bit=*/0, image.rgb.data(),
                                           /*row_stride=*/0, /*colormap=*/nullptr);
  CTSR_CHECK(ok, what, ": libpng failed on a ", image.width, " x ", image.height, " image: ", png.image.message);
  bytes.resize(size);
  return bytes;
}

}  // namespace

std::vector<uint8_t> encode_png(const RgbImage& image) { return encode(image, "encode_png"); }

void write_png(const std::filesystem::path& path, const RgbImage& image) {
  const std::vector<uint8_t> bytes = encode(image, "cannot write '" + path.string() + "'");
  io::write_file_atomically(path, [&](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

RgbImage decode_png(std::span<const uint8_t> png_bytes, const std::string& source) {
  CTSR_CHECK(!png_bytes.empty(), "'", source, "' is not a PNG image: it is empty");
  PngImageGuard png;
  CTSR_CHECK(png_image_begin_read_from_memory(&png.image, png_bytes.data(), png_bytes.size()), "'", source,
             "' is not a readable PNG image: ", png.image.message);
  const png_uint_32 format = png.image.format;
  CTSR_CHECK((format & (PNG_FORMAT_FLAG_ALPHA | PNG_FORMAT_FLAG_LINEAR | PNG_FORMAT_FLAG_COLORMAP)) == 0, "'", source,
             "' is a ", describe_format(format), " PNG image; expected 8-bit RGB or greyscale without alpha");
  RgbImage image;
  image.width = png.image.width;
  image.height = png.image.height;
  CTSR_CHECK(image.width * image.height <= kMaxPixels, "'", source, "' claims ", image.width, " x ", image.height,
             " pixels, more than the ", kMaxPixels, " this reader accepts");
  image.rgb.resize(static_cast<size_t>(image.width * image.height * 3));
  png.image.format = PNG_FORMAT_RGB;  // greyscale is expanded to r = g = b
  CTSR_CHECK(png_image_finish_read(&png.image, /*background=*/nullptr, image.rgb.data(), /*row_stride=*/0,
                                   /*colormap=*/nullptr),
             "'", source, "' is a damaged PNG image: ", png.image.message);
  return image;
}

RgbImage read_png(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  CTSR_CHECK(in.good(), "cannot open '", path.string(), "' for reading");
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  CTSR_CHECK(!in.bad(), "reading '", path.string(), "' failed (I/O error)");
  return decode_png(bytes, path.string());
}

}  // namespace ctsr::train
