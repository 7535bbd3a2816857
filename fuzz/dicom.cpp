// Fuzz harness: one DICOM file (a single CT slice or an Enhanced CT multi-frame file) through
// read_volume (runtime/formats/dicom.h, GDCM underneath), as every program that takes a volume
// reads a .dcm. The reader takes a path: the input goes to a scratch file x.dcm. A volume that
// reads must be what the reader promises: a [D, H, W] float32 tensor with D, H, W >= 1 and finite
// values (HU), 2 bytes a voxel after the PixelData tag of an uncompressed file, a positive finite
// spacing, a finite affine with last row 0 0 0 1 and the DICOM source that a DICOM write copies.
// write_volume then writes it as a series folder (a refusal is a finding: ctsr_infer writes its
// result so), which must read back to the same shape, the same values within the rescale's
// rounding and the same affine.
#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "runtime/formats/volume.h"

namespace {

using ctsr::io::Volume;
constexpr const char* kName = "dicom";

std::string affine_text(const Volume& v) {
  std::string s;
  for (const auto& row : v.geometry.affine)
    for (double x : row) s += std::to_string(x) + " ";
  return s;
}

// The promises of a volume read from DICOM.
void check_volume(const Volume& v, const char* what) {
  using namespace ctsr;
  fuzz::expect(v.data.ndim() == 3 && v.data.dtype() == DType::float32, kName,
               std::string(what) + " gave " + v.data.shape().str() + ", not a 3-D float32 volume");
  fuzz::touch(v.data, kName);
  fuzz::expect(v.data.dim(0) >= 1 && v.data.dim(1) >= 1 && v.data.dim(2) >= 1, kName,
               std::string(what) + " gave an empty volume " + v.data.shape().str());
  const float* x = v.data.data<float>();
  for (int64_t i = 0; i < v.data.numel(); ++i)
    if (!std::isfinite(x[i]))
      fuzz::fail(kName, std::string(what) + " gave the non-finite value " + std::to_string(x[i]) + " at voxel " +
                            std::to_string(i));
  for (double s : v.geometry.spacing_xyz)
    fuzz::expect(std::isfinite(s) && s > 0, kName, std::string(what) + " gave the spacing " + std::to_string(s));
  for (const auto& row : v.geometry.affine)
    for (double a : row)
      fuzz::expect(std::isfinite(a), kName, std::string(what) + " gave a non-finite affine: " + affine_text(v));
  const auto& last = v.geometry.affine[3];
  fuzz::expect(last[0] == 0 && last[1] == 0 && last[2] == 0 && last[3] == 1, kName,
               std::string(what) + " gave an affine whose last row is not 0 0 0 1: " + affine_text(v));
  fuzz::expect(v.geometry.dicom != nullptr, kName, std::string(what) + " gave no DICOM source (geometry.dicom)");
}

// The TransferSyntaxUID of the file's meta header (group 2, always explicit VR little endian), or
// empty when the bytes hold no such element or more than one.
std::string transfer_syntax(std::string_view bytes) {
  static const char kHead[] = {0x02, 0x00, 0x10, 0x00, 'U', 'I'};
  const std::string_view head(kHead, sizeof kHead);
  const size_t at = bytes.find(head);
  if (at == std::string_view::npos || at + 8 > bytes.size() || bytes.find(head, at + 1) != std::string_view::npos)
    return {};
  const size_t length = size_t(uint8_t(bytes[at + 6])) | size_t(uint8_t(bytes[at + 7])) << 8;
  std::string uid(bytes.substr(at + 8, length));
  while (!uid.empty() && (uid.back() == '\0' || uid.back() == ' ')) uid.pop_back();
  return uid;
}

// The bytes after the first PixelData tag (7FE0,0010) and its shortest header (8 bytes, implicit
// VR): at least as many as the pixel data's, whichever occurrence GDCM took.
size_t bytes_after_pixel_tag(std::string_view bytes) {
  static const char kTag[] = {char(0xe0), 0x7f, 0x10, 0x00};
  const size_t at = bytes.find(std::string_view(kTag, sizeof kTag));
  return at == std::string_view::npos || at + 8 > bytes.size() ? 0 : bytes.size() - at - 8;
}

// The values a DICOM write then read gives back: each stored as round((x - intercept) / slope),
// so within half a slope, plus float's rounding of large values.
bool same_values(const Volume& original, const Volume& read, double slope, std::string& why) {
  const float* x = original.data.data<float>();
  const float* y = read.data.data<float>();
  for (int64_t i = 0; i < original.data.numel(); ++i) {
    const double a = x[i], b = y[i];
    if (!(std::abs(a - b) <= std::abs(slope) / 2 + 1e-3 * std::abs(a))) {
      why = "voxel " + std::to_string(i) + ": " + std::to_string(a) + " became " + std::to_string(b) +
            " (rescale slope " + std::to_string(slope) + ")";
      return false;
    }
  }
  return true;
}

// The affines agree within 1e-4 of each column's size (at least 1e-7): DICOM's decimal strings
// hold 16 characters.
bool same_affine(const Volume& a, const Volume& b) {
  for (int c = 0; c < 4; ++c) {
    double size = 0;
    for (int r = 0; r < 3; ++r) size = std::max(size, std::abs(a.geometry.affine[r][c]));
    for (int r = 0; r < 4; ++r)
      if (!(std::abs(a.geometry.affine[r][c] - b.geometry.affine[r][c]) <= 1e-4 * std::max(size, 1e-3))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctsr;
  const std::filesystem::path path = fuzz::Scratch::get().write("x.dcm", data, size);
  const std::filesystem::path again = fuzz::Scratch::get().dir() / "out";
  std::error_code ec;
  std::filesystem::remove_all(again, ec);  // each input writes a new series, not over the last one's
  return fuzz::run(kName, [&] {
    const io::Volume v = io::read_volume(path);
    check_volume(v, "read_volume");
    // Uncompressed pixel data (implicit or explicit VR little endian) is in the file: 2 bytes a voxel.
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const std::string syntax = transfer_syntax(bytes);
    if (syntax == "1.2.840.10008.1.2" || syntax == "1.2.840.10008.1.2.1")
      fuzz::expect(static_cast<uint64_t>(v.data.numel()) * 2 <= bytes_after_pixel_tag(bytes), kName,
                   std::to_string(v.data.numel()) + " voxels " + v.data.shape().str() + " read from an uncompressed (" +
                       syntax + ") file with " + std::to_string(bytes_after_pixel_tag(bytes)) +
                       " bytes after its PixelData tag: the pixel data is not all there");
    // A volume read from DICOM must be writable as DICOM (what ctsr_infer does with its result).
    fuzz::must_succeed(kName, "write_volume refuses a volume read from DICOM", [&] {
      io::write_volume(again, v);
      return 0;
    });
    const io::Volume back =
        fuzz::must_succeed(kName, "a series write_volume wrote does not read", [&] { return io::read_volume(again); });
    check_volume(back, "reading back the written series");
    fuzz::expect(back.data.shape() == v.data.shape(), kName,
                 "a volume " + v.data.shape().str() + " reads back as " + back.data.shape().str());
    std::string why;
    fuzz::expect(same_values(v, back, v.geometry.dicom->rescale_slope, why), kName,
                 "a volume changes when written and read again: " + why);
    fuzz::expect(same_affine(v, back), kName,
                 "the affine changes when written and read again: " + affine_text(v) + "became " + affine_text(back));
  });
}
