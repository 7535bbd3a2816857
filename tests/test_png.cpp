// PNG (train/png.h): encode/decode and file round trips are exact at odd sizes; greyscale files
// read as r = g = b; palette-free alpha and 16-bit files are refused; bad images, missing
// directories, libpng failures and damaged files give messages naming the image or file, and a
// failed write leaves no file (and an existing one as it was).
#include <png.h>

#include <cstring>

#include "tests/harness.h"
#include "tests/image_fixtures.h"
#include "tests/tool_runner.h"
#include "train/png.h"

namespace ctsr::test {
namespace {

using train::RgbImage;

// Writes a PNG in any of libpng's simplified formats, for files this module does not write.
void write_with_libpng(const std::filesystem::path& path, int width, int height, png_uint_32 format,
                       const void* pixels) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = format;
  ASSERT_TRUE(png_image_write_to_file(&image, path.c_str(), 0, pixels, 0, nullptr)) << image.message;
}

void expect_same_image(const RgbImage& got, const RgbImage& want) {
  EXPECT_EQ(got.width, want.width);
  EXPECT_EQ(got.height, want.height);
  EXPECT_TRUE(got.rgb == want.rgb);
}

TEST(Png, RoundTripsExactlyInMemoryAndOnDisk) {
  TempDir dir("png");
  for (auto [w, h] : {std::pair<int64_t, int64_t>{1, 1}, {37, 23}, {5, 211}, {256, 3}}) {
    const RgbImage image = random_image(w, h, 100 + w * 7 + h);
    const std::vector<uint8_t> bytes = train::encode_png(image);
    ASSERT_GT(bytes.size(), 8u);
    EXPECT_EQ(std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8), 0);
    expect_same_image(train::decode_png(bytes, "memory"), image);
    const auto path = dir / ("image_" + std::to_string(w) + "x" + std::to_string(h) + ".png");
    train::write_png(path, image);
    expect_same_image(train::read_png(path), image);
    EXPECT_EQ(read_file_bytes(path), std::string(bytes.begin(), bytes.end()));  // the file is encode_png's bytes
  }
  EXPECT_EQ(dir.entries().size(), 4u);  // no temporaries left
}

TEST(Png, ReadsGreyscaleAsEqualChannels) {
  TempDir dir("png-grey");
  const RgbImage source = random_image(9, 14, 7);
  std::vector<uint8_t> grey;
  for (size_t i = 0; i < source.rgb.size(); i += 3) grey.push_back(source.rgb[i]);
  write_with_libpng(dir / "grey.png", 9, 14, PNG_FORMAT_GRAY, grey.data());
  const RgbImage image = train::read_png(dir / "grey.png");
  ASSERT_EQ(image.width, 9);
  ASSERT_EQ(image.height, 14);
  for (size_t i = 0; i < grey.size(); ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(image.rgb[3 * i + c], grey[i]) << "pixel " << i << " channel " << c;
}

TEST(Png, RefusesAlphaAnd16BitFilesNamingThem) {
  TempDir dir("png-formats");
  std::vector<uint8_t> rgba(4 * 5 * 3, 200);
  write_with_libpng(dir / "rgba.png", 5, 3, PNG_FORMAT_RGBA, rgba.data());
  expect_error_mentions([&] { train::read_png(dir / "rgba.png"); }, {(dir / "rgba.png").string(), "alpha",
                                                                     "expected 8-bit RGB or greyscale"});
  std::vector<uint16_t> deep(3 * 5 * 3, 40000);
  write_with_libpng(dir / "deep.png", 5, 3, PNG_FORMAT_LINEAR_RGB, deep.data());
  expect_error_mentions([&] { train::read_png(dir / "deep.png"); }, {(dir / "deep.png").string(), "16 bits"});
}

TEST(Png, RefusesBadImagesAndLeavesNoFile) {
  TempDir dir("png-bad");
  const auto path = dir / "out.png";
  expect_error_mentions([&] { train::encode_png(RgbImage{}); }, {"encode_png", "empty", "0 x 0"});
  expect_error_mentions([&] { train::write_png(path, RgbImage{0, 4, {}}); }, {path.string(), "empty"});
  RgbImage short_image = random_image(7, 5, 3);
  short_image.rgb.pop_back();
  expect_error_mentions([&] { train::write_png(path, short_image); },
                        {path.string(), "104 bytes", "7 x 5", "needs 105"});
  EXPECT_TRUE(dir.entries().empty());

  // libpng's own limit (1,000,000 pixels per row by default): its message comes through.
  RgbImage too_wide{1000001, 1, std::vector<uint8_t>(3000003, 9)};
  const std::string message = error_message([&] { train::write_png(path, too_wide); });
  expect_contains(message, path.string());
  expect_contains(message, "libpng failed");
  EXPECT_TRUE(dir.entries().empty());

  // An existing file survives a failed overwrite.
  const RgbImage good = random_image(6, 6, 11);
  train::write_png(path, good);
  const std::string before = read_file_bytes(path);
  EXPECT_THROW(train::write_png(path, short_image), Error);
  EXPECT_EQ(read_file_bytes(path), before);
  EXPECT_EQ(dir.entries().size(), 1u);

  expect_error_mentions([&] { train::write_png(dir / "missing" / "x.png", good); }, {"missing", "does not exist"});
}

TEST(Png, RefusesMissingForeignAndDamagedFilesNamingThem) {
  TempDir dir("png-damaged");
  expect_error_mentions([&] { train::read_png(dir / "absent.png"); }, {"absent.png", "cannot open"});
  write_file_bytes(dir / "empty.png", "");
  expect_error_mentions([&] { train::read_png(dir / "empty.png"); }, {"empty.png", "empty"});
  write_file_bytes(dir / "text.png", "this is not a picture, just text long enough to be read");
  expect_error_mentions([&] { train::read_png(dir / "text.png"); }, {"text.png", "not a readable PNG"});

  const std::vector<uint8_t> bytes = train::encode_png(random_image(31, 17, 5));
  const std::string whole(bytes.begin(), bytes.end());
  write_file_bytes(dir / "cut.png", whole.substr(0, whole.size() / 2));
  expect_error_mentions([&] { train::read_png(dir / "cut.png"); }, {"cut.png", "damaged"});
  // One flipped bit inside the image data: libpng's chunk CRC check refuses it.
  std::string flipped = whole;
  flipped[whole.size() - 20] = static_cast<char>(flipped[whole.size() - 20] ^ 0x10);
  write_file_bytes(dir / "flipped.png", flipped);
  expect_error_mentions([&] { train::read_png(dir / "flipped.png"); }, {"flipped.png", "damaged"});
}

}  // namespace
}  // namespace ctsr::test
