// DICOM CT series through GDCM: the header of every file is parsed with gdcm::Reader (up to the
// pixel data), the series is chosen, checked and ordered from those headers, and only then is each
// file's pixel data decoded (gdcm::ImageReader), straight into the volume.
#include "runtime/formats/dicom.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gdcmDataSet.h>
#include <gdcmFile.h>
#include <gdcmDict.h>
#include <gdcmDicts.h>
#include <gdcmFileMetaInformation.h>
#include <gdcmGlobal.h>
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmItem.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>
#include <gdcmWriter.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/volume.h"

namespace ctsr::io {

namespace {

namespace fs = std::filesystem;
using Vec3 = std::array<double, 3>;

constexpr uint32_t tag_id(uint16_t group, uint16_t element) { return uint32_t(group) << 16 | element; }
gdcm::Tag gtag(uint32_t t) { return gdcm::Tag(uint16_t(t >> 16), uint16_t(t & 0xffff)); }

std::string tag_name(uint32_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "(%04X,%04X)", unsigned(t >> 16), unsigned(t & 0xffff));
  return buf;
}

// The tags read or written here, with their keywords for messages.
struct TagInfo {
  uint32_t tag;
  const char* keyword;
};
constexpr TagInfo kSOPClassUID{tag_id(0x0008, 0x0016), "SOPClassUID"};
constexpr TagInfo kModality{tag_id(0x0008, 0x0060), "Modality"};
constexpr TagInfo kSeriesDescription{tag_id(0x0008, 0x103E), "SeriesDescription"};
constexpr TagInfo kSeriesInstanceUID{tag_id(0x0020, 0x000E), "SeriesInstanceUID"};
constexpr TagInfo kSeriesNumber{tag_id(0x0020, 0x0011), "SeriesNumber"};
constexpr TagInfo kImagePositionPatient{tag_id(0x0020, 0x0032), "ImagePositionPatient"};
constexpr TagInfo kImageOrientationPatient{tag_id(0x0020, 0x0037), "ImageOrientationPatient"};
constexpr TagInfo kSamplesPerPixel{tag_id(0x0028, 0x0002), "SamplesPerPixel"};
constexpr TagInfo kPhotometric{tag_id(0x0028, 0x0004), "PhotometricInterpretation"};
constexpr TagInfo kNumberOfFrames{tag_id(0x0028, 0x0008), "NumberOfFrames"};
constexpr TagInfo kRows{tag_id(0x0028, 0x0010), "Rows"};
constexpr TagInfo kColumns{tag_id(0x0028, 0x0011), "Columns"};
constexpr TagInfo kPixelSpacing{tag_id(0x0028, 0x0030), "PixelSpacing"};
constexpr TagInfo kBitsAllocated{tag_id(0x0028, 0x0100), "BitsAllocated"};
constexpr TagInfo kBitsStored{tag_id(0x0028, 0x0101), "BitsStored"};
constexpr TagInfo kHighBit{tag_id(0x0028, 0x0102), "HighBit"};
constexpr TagInfo kPixelRepresentation{tag_id(0x0028, 0x0103), "PixelRepresentation"};
constexpr TagInfo kRescaleIntercept{tag_id(0x0028, 0x1052), "RescaleIntercept"};
constexpr TagInfo kRescaleSlope{tag_id(0x0028, 0x1053), "RescaleSlope"};
constexpr TagInfo kSliceThickness{tag_id(0x0018, 0x0050), "SliceThickness"};
constexpr TagInfo kSpacingBetweenSlices{tag_id(0x0018, 0x0088), "SpacingBetweenSlices"};
constexpr TagInfo kPixelData{tag_id(0x7FE0, 0x0010), "PixelData"};
constexpr TagInfo kTransferSyntax{tag_id(0x0002, 0x0010), "TransferSyntaxUID"};
// Enhanced (multi-frame) functional groups.
constexpr uint32_t kSharedGroups = tag_id(0x5200, 0x9229);
constexpr uint32_t kPerFrameGroups = tag_id(0x5200, 0x9230);
constexpr uint32_t kPixelMeasuresSeq = tag_id(0x0028, 0x9110);
constexpr uint32_t kPlanePositionSeq = tag_id(0x0020, 0x9113);
constexpr uint32_t kPlaneOrientationSeq = tag_id(0x0020, 0x9116);
constexpr uint32_t kPixelValueTransformSeq = tag_id(0x0028, 0x9145);

std::string where(const fs::path& file, const TagInfo& t) { return file.string() + ": " + tag_name(t.tag) + " " + t.keyword; }

const char* const kCtImageStorage = "1.2.840.10008.5.1.4.1.1.2";
const char* const kEnhancedCtImageStorage = "1.2.840.10008.5.1.4.1.1.2.1";
const char* const kMediaDirectoryStorage = "1.2.840.10008.1.3.10";

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

// A value's bytes (empty when the element is absent or has none).
std::string raw_bytes(const gdcm::DataSet& ds, uint32_t t) {
  const gdcm::Tag g = gtag(t);
  if (!ds.FindDataElement(g)) return {};
  const gdcm::ByteValue* bv = ds.GetDataElement(g).GetByteValue();
  if (!bv || !bv->GetPointer()) return {};
  return std::string(bv->GetPointer(), bv->GetLength());
}
std::string text(const gdcm::DataSet& ds, uint32_t t) { return trim(raw_bytes(ds, t)); }

// A decimal string (DS / IS) with one or more values separated by backslashes.
std::vector<double> numbers(const fs::path& file, const gdcm::DataSet& ds, const TagInfo& t) {
  const std::string s = text(ds, t.tag);
  std::vector<double> out;
  if (s.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t end = s.find('\\', start);
    const std::string item = trim(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    const char* b = item.c_str();
    char* e = nullptr;
    errno = 0;
    const double v = std::strtod(b, &e);
    std::string rest(e ? e : b);
    CTSR_CHECK(!item.empty() && e != b && trim(rest).empty() && errno != ERANGE && std::isfinite(v), where(file, t),
               ": '", s, "' is not a list of numbers");
    out.push_back(v);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

std::vector<double> numbers_n(const fs::path& file, const gdcm::DataSet& ds, const TagInfo& t, size_t n) {
  std::vector<double> v = numbers(file, ds, t);
  CTSR_CHECK(v.size() == n, where(file, t), ": ", v.empty() ? "missing" : std::to_string(v.size()) + " values",
             "; expected ", n, " numbers");
  return v;
}

// An unsigned short (US) value, little endian; -1 when absent.
int64_t u16(const fs::path& file, const gdcm::DataSet& ds, const TagInfo& t) {
  const std::string b = raw_bytes(ds, t.tag);
  if (b.empty()) return -1;
  CTSR_CHECK(b.size() == 2, where(file, t), ": ", b.size(), " bytes; expected one 2-byte unsigned value");
  return int64_t(uint8_t(b[0])) | int64_t(uint8_t(b[1])) << 8;
}

int64_t required_u16(const fs::path& file, const gdcm::DataSet& ds, const TagInfo& t) {
  const int64_t v = u16(file, ds, t);
  CTSR_CHECK(v >= 0, where(file, t), ": missing");
  return v;
}

// The first item's dataset of a sequence, or null.
const gdcm::DataSet* first_item(const gdcm::DataSet& ds, uint32_t seq, size_t index = 1) {
  const gdcm::Tag g = gtag(seq);
  if (!ds.FindDataElement(g)) return nullptr;
  gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(g).GetValueAsSQ();
  if (!sq || sq->GetNumberOfItems() < index) return nullptr;
  return &sq->GetItem(index).GetNestedDataSet();
}

double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
Vec3 sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }

std::string vec_text(const std::vector<double>& v) {
  std::ostringstream s;
  s.precision(10);
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "\\" : "") << v[i];
  return s.str();
}

// The header facts of one frame (a file's only frame, or a multi-frame file's frame).
struct Frame {
  fs::path file;
  int64_t frame = 0;  // index into the file's frames
  Vec3 position{};
};

// The header of one DICOM file, read without its pixel data.
struct Header {
  fs::path file;
  std::string transfer_syntax;
  std::string sop_class;
  std::string modality;
  std::string series_uid;
  int64_t rows = 0, columns = 0, frames = 1;
  int64_t bits_allocated = 0, bits_stored = 0, high_bit = 0, pixel_representation = 0, samples = 1;
  std::string photometric;
  std::vector<double> orientation;  // 6
  std::vector<double> pixel_spacing;  // 2: row spacing, column spacing
  double slope = 1.0, intercept = 0.0;
  double slice_hint = 0.0;  // SpacingBetweenSlices or SliceThickness, for a single slice
  std::vector<Vec3> positions;  // one per frame
  int64_t pixel_offset = 0;  // where the pixel data's value starts in the file
  int64_t file_size = 0;
  DicomSource source;
};

bool is_native_syntax(const std::string& uid) {
  return uid == "1.2.840.10008.1.2" || uid == "1.2.840.10008.1.2.1";
}

// GDCM reports problems on stderr; ctsr reports them itself, once, as errors naming the file.
void quiet_gdcm() {
  static std::once_flag once;
  std::call_once(once, [] {
    gdcm::Trace::WarningOff();
    gdcm::Trace::ErrorOff();
    gdcm::Trace::DebugOff();
  });
}

bool has_dicom_magic(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[132];
  if (!in.read(buf, sizeof buf)) return false;
  return std::memcmp(buf + 128, "DICM", 4) == 0;
}

// The transfer syntaxes whose pixel data ctsr takes: uncompressed and lossless.
bool supported_syntax(const std::string& uid) {
  static const std::set<std::string> ok = {
      "1.2.840.10008.1.2",       // implicit VR little endian
      "1.2.840.10008.1.2.1",     // explicit VR little endian
      "1.2.840.10008.1.2.4.57",  // JPEG lossless, process 14
      "1.2.840.10008.1.2.4.70",  // JPEG lossless, first-order prediction
      "1.2.840.10008.1.2.4.80",  // JPEG-LS lossless
      "1.2.840.10008.1.2.4.90",  // JPEG 2000 lossless only
      "1.2.840.10008.1.2.5",     // RLE lossless
  };
  return ok.count(uid) > 0;
}

std::string syntax_name(const std::string& uid) {
  static const std::map<std::string, const char*> names = {
      {"1.2.840.10008.1.2", "implicit VR little endian"},
      {"1.2.840.10008.1.2.1", "explicit VR little endian"},
      {"1.2.840.10008.1.2.1.99", "deflated explicit VR little endian"},
      {"1.2.840.10008.1.2.2", "explicit VR big endian, retired"},
      {"1.2.840.10008.1.2.4.50", "JPEG baseline, lossy"},
      {"1.2.840.10008.1.2.4.51", "JPEG extended, lossy"},
      {"1.2.840.10008.1.2.4.57", "JPEG lossless"},
      {"1.2.840.10008.1.2.4.70", "JPEG lossless, first-order prediction"},
      {"1.2.840.10008.1.2.4.80", "JPEG-LS lossless"},
      {"1.2.840.10008.1.2.4.81", "JPEG-LS near-lossless"},
      {"1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"},
      {"1.2.840.10008.1.2.4.91", "JPEG 2000, possibly lossy"},
      {"1.2.840.10008.1.2.5", "RLE lossless"},
  };
  auto it = names.find(uid);
  return it != names.end() ? it->second : "an unknown or video syntax";
}

// The patient, study, frame-of-reference and equipment attributes a derived series keeps, with
// their VRs (an implicit-VR file stores none).
struct CopiedTag {
  uint32_t tag;
  const char* vr;
};
constexpr std::array<CopiedTag, 20> kCopiedTags = {{
    {tag_id(0x0008, 0x0005), "CS"}, {tag_id(0x0008, 0x0020), "DA"}, {tag_id(0x0008, 0x0030), "TM"},
    {tag_id(0x0008, 0x0050), "SH"}, {tag_id(0x0008, 0x0070), "LO"}, {tag_id(0x0008, 0x0080), "LO"},
    {tag_id(0x0008, 0x0090), "PN"}, {tag_id(0x0008, 0x1030), "LO"}, {tag_id(0x0008, 0x1090), "LO"},
    {tag_id(0x0010, 0x0010), "PN"}, {tag_id(0x0010, 0x0020), "LO"}, {tag_id(0x0010, 0x0030), "DA"},
    {tag_id(0x0010, 0x0040), "CS"}, {tag_id(0x0010, 0x1010), "AS"}, {tag_id(0x0018, 0x0060), "DS"},
    {tag_id(0x0018, 0x5100), "CS"}, {tag_id(0x0020, 0x000D), "UI"}, {tag_id(0x0020, 0x0010), "SH"},
    {tag_id(0x0020, 0x0052), "UI"}, {tag_id(0x0020, 0x1040), "LO"},
}};
// Type 2 attributes a new series must hold, empty when unknown.
constexpr std::array<CopiedTag, 11> kRequiredEmpty = {{
    {tag_id(0x0010, 0x0010), "PN"}, {tag_id(0x0010, 0x0020), "LO"}, {tag_id(0x0010, 0x0030), "DA"},
    {tag_id(0x0010, 0x0040), "CS"}, {tag_id(0x0008, 0x0020), "DA"}, {tag_id(0x0008, 0x0030), "TM"},
    {tag_id(0x0008, 0x0050), "SH"}, {tag_id(0x0008, 0x0090), "PN"}, {tag_id(0x0020, 0x0010), "SH"},
    {tag_id(0x0020, 0x1040), "LO"}, {tag_id(0x0018, 0x5100), "CS"},
}};

DicomSource source_of(const gdcm::DataSet& ds) {
  DicomSource s;
  for (const CopiedTag& c : kCopiedTags) {
    const std::string bytes = raw_bytes(ds, c.tag);
    if (!bytes.empty()) s.copied.push_back({c.tag, c.vr, bytes});
  }
  return s;
}

// A number of a functional group: the frame's own item first, then the shared one.
const gdcm::DataSet* group_item(const gdcm::DataSet& ds, int64_t frame, uint32_t macro) {
  if (const gdcm::DataSet* per = first_item(ds, kPerFrameGroups, size_t(frame) + 1))
    if (const gdcm::DataSet* item = first_item(*per, macro)) return item;
  if (const gdcm::DataSet* shared = first_item(ds, kSharedGroups))
    if (const gdcm::DataSet* item = first_item(*shared, macro)) return item;
  return nullptr;
}

// The file's structure, checked before GDCM parses it: GDCM (as Debian builds it) asserts on some
// malformed headers and allocates whatever length an element declares. Every element header is
// walked, in the meta group as explicit VR little endian and in the dataset by its transfer syntax:
// each defined length must fit in what contains it (the file, an item, a sequence), undefined
// lengths only on sequences, items and encapsulated pixel data, nesting at most 12 deep. Only
// the headers are read (a multi-frame file's pixel data is skipped, not loaded).
class StructureCheck {
 public:
  explicit StructureCheck(const fs::path& file) : file_(file), in_(file, std::ios::binary) {
    std::error_code ec;
    size_ = int64_t(fs::file_size(file, ec));
    CTSR_CHECK(in_.good() && !ec, "cannot read DICOM file '", file.string(), "'");
  }

  // Returns the transfer syntax UID; throws naming the file and the tag on a broken structure.
  std::string run() {
    int64_t pos = 132;
    // The meta group: explicit VR little endian, defined lengths.
    while (pos + 6 <= size_) {
      const uint32_t tag = read_tag(pos);
      if (tag >> 16 != 0x0002) break;
      const Element e = read_element(pos, true, size_, tag);
      CTSR_CHECK(e.length != kUndefined, file_.string(), ": ", tag_name(tag),
                 " has an undefined length in the file meta group; expected a defined length");
      if (tag == kTransferSyntax.tag) syntax_ = trim(read_value(e.value_at, e.length));
      pos = e.value_at + e.length;
    }
    CTSR_CHECK(!syntax_.empty(), where(file_, kTransferSyntax), ": missing from the file meta group");
    CTSR_CHECK(supported_syntax(syntax_), where(file_, kTransferSyntax), ": ", syntax_, " (", syntax_name(syntax_),
               ") is not supported; expected an uncompressed or lossless syntax (explicit or implicit VR little ",
               "endian, JPEG lossless, JPEG-LS lossless, JPEG 2000 lossless, RLE)");
    explicit_ = syntax_ != "1.2.840.10008.1.2";
    dataset(pos, size_, 0, false);
    return syntax_;
  }
  bool pixel_data_encapsulated() const { return encapsulated_; }
  // The encapsulated pixel data's items (the first is the basic offset table): offset, length.
  const std::vector<std::pair<int64_t, int64_t>>& fragments() const { return fragments_; }
  // Up to n bytes of the file from `at`.
  std::string bytes(int64_t at, int64_t n) { return read_value(at, std::min(n, size_ - at)); }
  bool has_pixel_data() const { return has_pixels_; }

 private:
  static constexpr uint32_t kUndefined = 0xffffffffu;
  static constexpr uint32_t kItem = 0xfffee000u, kItemEnd = 0xfffee00du, kSequenceEnd = 0xfffee0ddu;
  struct Element {
    uint32_t tag = 0;
    std::string vr;
    int64_t value_at = 0;
    uint32_t length = 0;
  };

  [[noreturn]] void broken(int64_t at, uint32_t tag, const std::string& why) const {
    CTSR_FAIL(file_.string(), ": ", tag_name(tag), " at byte ", at, ": ", why, " (a malformed or truncated DICOM file)");
  }
  std::string read_value(int64_t at, int64_t n) {
    std::string b(size_t(n), '\0');
    in_.clear();
    in_.seekg(at);
    in_.read(b.data(), std::streamsize(n));
    if (!in_) broken(at, 0, "cannot read " + std::to_string(n) + " bytes");
    return b;
  }
  uint32_t u32(const std::string& b, size_t i) const {
    return uint32_t(uint8_t(b[i])) | uint32_t(uint8_t(b[i + 1])) << 8 | uint32_t(uint8_t(b[i + 2])) << 16 |
           uint32_t(uint8_t(b[i + 3])) << 24;
  }
  uint32_t read_tag(int64_t at) {
    const std::string b = read_value(at, 4);
    return uint32_t(uint8_t(b[0]) | uint8_t(b[1]) << 8) << 16 | uint32_t(uint8_t(b[2]) | uint8_t(b[3]) << 8);
  }
  // The element header at `pos` within [pos, end).
  Element read_element(int64_t pos, bool explicit_vr, int64_t end, uint32_t tag) {
    Element e;
    e.tag = tag;
    if (tag == kItem || tag == kItemEnd || tag == kSequenceEnd || !explicit_vr) {
      if (pos + 8 > end) broken(pos, tag, "the element header runs past its container");
      e.length = u32(read_value(pos + 4, 4), 0);
      e.value_at = pos + 8;
    } else {
      if (pos + 8 > end) broken(pos, tag, "the element header runs past its container");
      const std::string h = read_value(pos + 4, 4);
      e.vr = h.substr(0, 2);
      static const std::set<std::string> long_vrs = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
      if (!std::isupper(uint8_t(e.vr[0])) || !std::isupper(uint8_t(e.vr[1]))) {
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%02X 0x%02X", unsigned(uint8_t(e.vr[0])), unsigned(uint8_t(e.vr[1])));
        broken(pos, tag, std::string("the VR bytes ") + hex + " are not two capital letters");
      }
      // An unknown VR is refused: GDCM would read a 4-byte length there (the fuzz harness found a
      // 2-byte length so reread as 1.9 GB).
      static const std::set<std::string> short_vrs = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                                      "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
      if (!long_vrs.count(e.vr) && !short_vrs.count(e.vr)) broken(pos, tag, "the VR '" + e.vr + "' is not a DICOM VR");
      // A VR the dictionary contradicts is refused: GDCM reads image attributes through
      // gdcm::Attribute, which asserts (aborts) on an incompatible VR (RescaleSlope as UL; found by
      // the fuzz smoke). UN is allowed except in the groups of the image's geometry and pixel
      // description (0018, 0020, 0028, 5200), which GDCM reads that way.
      const uint32_t group = tag >> 16;
      const bool image_group = group == 0x0018 || group == 0x0020 || group == 0x0028 || group == 0x5200;
      if ((e.vr != "UN" || image_group) && (group & 1u) == 0) {  // public (even-group) tags
        const gdcm::VR known = gdcm::Global::GetInstance().GetDicts().GetPublicDict().GetDictEntry(gtag(tag)).GetVR();
        const gdcm::VR given = gdcm::VR::GetVRType(e.vr.c_str());
        if (known != gdcm::VR::INVALID && known != gdcm::VR::UN && !known.Compatible(given))
          broken(pos, tag, "VR " + e.vr + ", but the DICOM dictionary gives " + gdcm::VR::GetVRString(known));
      }
      if (long_vrs.count(e.vr)) {
        if (pos + 12 > end) broken(pos, tag, "the element header runs past its container");
        e.length = u32(read_value(pos + 8, 4), 0);
        e.value_at = pos + 12;
      } else {
        e.length = uint32_t(uint8_t(h[2]) | uint8_t(h[3]) << 8);
        e.value_at = pos + 8;
      }
    }
    if (e.length != kUndefined && e.value_at + int64_t(e.length) > end)
      broken(pos, tag, "declares " + std::to_string(e.length) + " bytes, but only " + std::to_string(end - e.value_at) +
                           " remain in its container");
    return e;
  }
  // Elements from pos to end (defined) or to an item delimiter (undefined: in_item). Returns the
  // position after the last element (after the delimiter).
  int64_t dataset(int64_t pos, int64_t end, int depth, bool until_item_end) {
    if (depth > 12) broken(pos, 0, "sequences nested more than 12 deep");
    while (pos < end) {
      const uint32_t tag = read_tag(pos);
      if (tag == kItemEnd) {
        if (!until_item_end) broken(pos, tag, "an item delimiter outside an item");
        return pos + 8;
      }
      if (tag == kItem || tag == kSequenceEnd) broken(pos, tag, "an item tag where an element was expected");
      const Element e = read_element(pos, explicit_, end, tag);
      if (depth == 0 && tag == kPixelData.tag) has_pixels_ = true;
      if (e.length == kUndefined) {
        if (tag == kPixelData.tag && depth == 0) {
          encapsulated_ = true;
          pos = fragments(e.value_at, end, tag);
        } else if (e.vr.empty() || e.vr == "SQ" || e.vr == "UN") {
          pos = sequence(e.value_at, end, depth, true, tag);
        } else {
          broken(pos, tag, "VR " + e.vr + " with an undefined length; only sequences and encapsulated pixel data have one");
        }
        continue;
      }
      if (e.vr == "SQ" || (e.vr.empty() && is_sequence_tag(tag))) sequence(e.value_at, e.value_at + e.length, depth, false, tag);
      pos = e.value_at + e.length;
    }
    if (until_item_end) broken(pos, 0, "an item without its delimiter before the end of its container");
    return pos;
  }
  int64_t sequence(int64_t pos, int64_t end, int depth, bool undefined, uint32_t owner) {
    while (pos < end) {
      const uint32_t tag = read_tag(pos);
      if (tag == kSequenceEnd) {
        if (!undefined) broken(pos, tag, "a sequence delimiter in a sequence of defined length");
        return pos + 8;
      }
      if (tag != kItem) broken(pos, tag, "expected an item in sequence " + tag_name(owner));
      const Element item = read_element(pos, false, end, tag);
      pos = item.length == kUndefined ? dataset(item.value_at, end, depth + 1, true)
                                      : dataset(item.value_at, item.value_at + item.length, depth + 1, false);
    }
    if (undefined) broken(pos, owner, "a sequence without its delimiter");
    return pos;
  }
  int64_t fragments(int64_t pos, int64_t end, uint32_t owner) {
    while (pos < end) {
      const uint32_t tag = read_tag(pos);
      if (tag == kSequenceEnd) return pos + 8;
      if (tag != kItem) broken(pos, tag, "expected a fragment item in the encapsulated pixel data");
      const Element item = read_element(pos, false, end, tag);
      if (item.length == kUndefined) broken(pos, tag, "a pixel data fragment of undefined length");
      fragments_.push_back({item.value_at, int64_t(item.length)});
      pos = item.value_at + item.length;
    }
    broken(pos, owner, "encapsulated pixel data without its sequence delimiter");
  }
  // Implicit VR: the sequences ctsr reads into (their VR comes from the dictionary).
  static bool is_sequence_tag(uint32_t tag) {
    return tag == kSharedGroups || tag == kPerFrameGroups || tag == kPixelMeasuresSeq || tag == kPlanePositionSeq ||
           tag == kPlaneOrientationSeq || tag == kPixelValueTransformSeq;
  }

  fs::path file_;
  std::ifstream in_;
  int64_t size_ = 0;
  std::string syntax_;
  bool explicit_ = true;
  bool encapsulated_ = false;
  bool has_pixels_ = false;
  std::vector<std::pair<int64_t, int64_t>> fragments_;
};

uint32_t be16(const std::string& b, size_t i) { return uint32_t(uint8_t(b[i])) << 8 | uint8_t(b[i + 1]); }
uint32_t be32(const std::string& b, size_t i) { return be16(b, i) << 16 | be16(b, i + 2); }

// The frame header of every codestream in the encapsulated pixel data must describe what the
// DICOM header does (Rows x Columns, one component, 9 to 16 bits): GDCM decodes into a buffer
// sized by the DICOM header and asserts (aborts) when the codestream gives fewer bytes.
void check_codestreams(const fs::path& file, StructureCheck& structure, const std::string& syntax, int64_t rows,
                       int64_t cols) {
  const auto& fragments = structure.fragments();
  int64_t headers = 0;
  auto mismatch = [&](const std::string& kind, int64_t at, int64_t y, int64_t x, int64_t comps, int64_t bits) {
    CTSR_CHECK(y == rows && x == cols && comps == 1 && bits >= 9 && bits <= 16, where(file, kPixelData), ": the ",
               kind, " codestream at byte ", at, " is ", x, " x ", y, " pixels, ", comps, " component(s) of ", bits,
               " bits; expected ", cols, " x ", rows, " (Columns x Rows), one component of 9 to 16 bits");
    ++headers;
  };
  for (size_t f = 1; f < fragments.size(); ++f) {
    const auto [at, length] = fragments[f];
    if (syntax == "1.2.840.10008.1.2.5") {  // RLE: a 64-byte header, two segments (high and low bytes)
      const std::string b = structure.bytes(at, 64);
      CTSR_CHECK(b.size() == 64, where(file, kPixelData), ": an RLE fragment of ", length, " bytes at byte ", at,
                 "; expected a 64-byte header first");
      auto le32 = [&](size_t i) { return uint32_t(uint8_t(b[i])) | uint32_t(uint8_t(b[i + 1])) << 8 |
                                         uint32_t(uint8_t(b[i + 2])) << 16 | uint32_t(uint8_t(b[i + 3])) << 24; };
      const uint32_t segments = le32(0), first = le32(4), second = le32(8);
      CTSR_CHECK(segments == 2 && first == 64 && second > first && second < length, where(file, kPixelData),
                 ": the RLE header at byte ", at, " lists ", segments, " segments at ", first, ", ", second,
                 "; expected 2 (16-bit pixels) within the ", length, "-byte fragment");
      ++headers;
      continue;
    }
    const std::string b = structure.bytes(at, std::min<int64_t>(length, 4096));
    if (b.size() >= 4 && uint8_t(b[0]) == 0xff && uint8_t(b[1]) == 0x4f && uint8_t(b[2]) == 0xff &&
        uint8_t(b[3]) == 0x51) {  // JPEG 2000: SOC, then SIZ
      CTSR_CHECK(b.size() >= 44, where(file, kPixelData), ": a JPEG 2000 header cut short at byte ", at);
      const int64_t x = int64_t(be32(b, 8)) - int64_t(be32(b, 16)), y = int64_t(be32(b, 12)) - int64_t(be32(b, 20));
      const int64_t comps = be16(b, 40);
      mismatch("JPEG 2000", at, y, x, comps, b.size() >= 43 ? (uint8_t(b[42]) & 0x7f) + 1 : 0);
      continue;
    }
    if (b.size() < 2 || uint8_t(b[0]) != 0xff || uint8_t(b[1]) != 0xd8) continue;  // a continuation fragment
    // JPEG / JPEG-LS: markers up to the frame header (SOF3 lossless, SOF55 JPEG-LS).
    size_t i = 2;
    bool found = false;
    while (i + 4 <= b.size() && uint8_t(b[i]) == 0xff) {
      const unsigned marker = uint8_t(b[i + 1]);
      const size_t len = be16(b, i + 2);
      if (marker == 0xc3 || marker == 0xf7 || (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 &&
                                                marker != 0xcc)) {
        CTSR_CHECK(i + 10 <= b.size(), where(file, kPixelData), ": a JPEG frame header cut short at byte ", at + int64_t(i));
        CTSR_CHECK(marker == 0xc3 || marker == 0xf7, where(file, kPixelData), ": the JPEG codestream at byte ", at,
                   " uses frame marker FF", std::hex, marker, std::dec, "; expected lossless JPEG (FFC3) or JPEG-LS (FFF7)");
        mismatch(marker == 0xf7 ? "JPEG-LS" : "JPEG", at, be16(b, i + 5), be16(b, i + 7), uint8_t(b[i + 9]),
                 uint8_t(b[i + 4]));
        found = true;
        break;
      }
      if (len < 2) break;
      i += 2 + len;
    }
    CTSR_CHECK(found, where(file, kPixelData), ": the JPEG codestream at byte ", at,
               " has no frame header in its first 4 KiB; expected FFC3 or FFF7");
  }
  CTSR_CHECK(headers > 0, where(file, kPixelData), ": no codestream (JPEG, JPEG-LS, JPEG 2000 or RLE) among its ",
             fragments.size() > 0 ? fragments.size() - 1 : 0, " fragments");
}

Header read_header(const fs::path& file) {
  quiet_gdcm();
  StructureCheck structure(file);
  const std::string syntax = structure.run();
  gdcm::Reader reader;
  reader.SetFileName(file.c_str());
  const bool ok = reader.ReadUpToTag(gtag(kPixelData.tag), std::set<gdcm::Tag>{gtag(kPixelData.tag)});
  CTSR_CHECK(ok, file.string(), ": not a readable DICOM file (the header ends early or is malformed)");
  const gdcm::File& f = reader.GetFile();
  const gdcm::DataSet& ds = f.GetDataSet();
  Header h;
  h.file = file;
  h.pixel_offset = int64_t(reader.GetStreamCurrentPosition());
  std::error_code ec;
  h.file_size = int64_t(fs::file_size(file, ec));
  h.transfer_syntax = syntax;
  h.sop_class = text(ds, kSOPClassUID.tag);
  h.modality = text(ds, kModality.tag);
  h.series_uid = text(ds, kSeriesInstanceUID.tag);
  if (h.sop_class == kMediaDirectoryStorage) return h;
  CTSR_CHECK(h.modality == "CT", where(file, kModality), ": '", h.modality, "'; expected CT");
  CTSR_CHECK(structure.has_pixel_data(), where(file, kPixelData), ": missing; expected an image");
  CTSR_CHECK(structure.pixel_data_encapsulated() == !is_native_syntax(syntax), where(file, kPixelData), ": ",
             structure.pixel_data_encapsulated() ? "encapsulated (compressed)" : "native (uncompressed)",
             " pixel data under transfer syntax ", syntax, " (", syntax_name(syntax), "); expected ",
             is_native_syntax(syntax) ? "native" : "encapsulated", " pixel data");
  h.rows = required_u16(file, ds, kRows);
  h.columns = required_u16(file, ds, kColumns);
  CTSR_CHECK(h.rows > 0 && h.columns > 0, file.string(), ": ", tag_name(kRows.tag), " Rows ", h.rows, ", ",
             tag_name(kColumns.tag), " Columns ", h.columns, "; expected both at least 1");
  h.bits_allocated = required_u16(file, ds, kBitsAllocated);
  h.bits_stored = required_u16(file, ds, kBitsStored);
  h.high_bit = required_u16(file, ds, kHighBit);
  h.pixel_representation = required_u16(file, ds, kPixelRepresentation);
  const int64_t samples = u16(file, ds, kSamplesPerPixel);
  h.samples = samples < 0 ? 1 : samples;
  h.photometric = text(ds, kPhotometric.tag);
  CTSR_CHECK(h.bits_allocated == 16, where(file, kBitsAllocated), ": ", h.bits_allocated, "; expected 16 (CT)");
  CTSR_CHECK(h.bits_stored >= 1 && h.bits_stored <= 16 && h.high_bit == h.bits_stored - 1, where(file, kBitsStored),
             ": ", h.bits_stored, " with ", tag_name(kHighBit.tag), " HighBit ", h.high_bit,
             "; expected 1 to 16 bits stored and HighBit one less");
  CTSR_CHECK(h.pixel_representation == 0 || h.pixel_representation == 1, where(file, kPixelRepresentation), ": ",
             h.pixel_representation, "; expected 0 (unsigned) or 1 (signed)");
  CTSR_CHECK(h.samples == 1 && (h.photometric.empty() || h.photometric == "MONOCHROME2"), where(file, kPhotometric),
             ": '", h.photometric, "' with ", h.samples, " samples per pixel; expected MONOCHROME2, one sample");

  if (structure.pixel_data_encapsulated()) check_codestreams(file, structure, syntax, h.rows, h.columns);
  const bool enhanced = h.sop_class == kEnhancedCtImageStorage;
  if (const std::string nf = text(ds, kNumberOfFrames.tag); !nf.empty()) {
    const std::vector<double> v = numbers_n(file, ds, kNumberOfFrames, 1);
    CTSR_CHECK(v[0] >= 1 && v[0] <= 65536 && v[0] == std::floor(v[0]), where(file, kNumberOfFrames), ": '", nf,
               "'; expected a whole number from 1");
    h.frames = int64_t(v[0]);
  }
  CTSR_CHECK(h.frames == 1 || enhanced, where(file, kNumberOfFrames), ": ", h.frames,
             " frames in a file of SOP class ", h.sop_class, "; expected one frame (or an Enhanced CT file)");

  auto rescale = [&](const gdcm::DataSet& src) {
    const std::vector<double> slope = numbers(file, src, kRescaleSlope);
    const std::vector<double> inter = numbers(file, src, kRescaleIntercept);
    CTSR_CHECK(slope.size() <= 1 && inter.size() <= 1, where(file, slope.size() > 1 ? kRescaleSlope : kRescaleIntercept),
               ": expected one number");
    h.slope = slope.empty() ? 1.0 : slope[0];
    h.intercept = inter.empty() ? 0.0 : inter[0];
    CTSR_CHECK(h.slope != 0.0, where(file, kRescaleSlope), ": 0; expected a non-zero slope");
  };
  if (enhanced) {
    // Orientation, spacing and rescale from the functional groups (shared or the first frame's).
    const gdcm::DataSet* orient = group_item(ds, 0, kPlaneOrientationSeq);
    const gdcm::DataSet* measures = group_item(ds, 0, kPixelMeasuresSeq);
    CTSR_CHECK(orient && measures, file.string(), ": ", tag_name(kSharedGroups),
               " an Enhanced CT file without plane orientation or pixel measures; expected both");
    h.orientation = numbers_n(file, *orient, kImageOrientationPatient, 6);
    h.pixel_spacing = numbers_n(file, *measures, kPixelSpacing, 2);
    const std::vector<double> thick = numbers(file, *measures, kSliceThickness);
    if (!thick.empty()) h.slice_hint = thick[0];
    if (const gdcm::DataSet* value = group_item(ds, 0, kPixelValueTransformSeq)) rescale(*value);
    for (int64_t i = 0; i < h.frames; ++i) {
      const gdcm::DataSet* pos = group_item(ds, i, kPlanePositionSeq);
      CTSR_CHECK(pos, file.string(), ": ", tag_name(kPerFrameGroups), " frame ", i + 1,
                 " has no plane position; expected one per frame");
      const std::vector<double> p = numbers_n(file, *pos, kImagePositionPatient, 3);
      h.positions.push_back({p[0], p[1], p[2]});
      // Every frame must share the first frame's orientation.
      if (const gdcm::DataSet* o = group_item(ds, i, kPlaneOrientationSeq)) {
        const std::vector<double> oi = numbers_n(file, *o, kImageOrientationPatient, 6);
        for (int k = 0; k < 6; ++k)
          CTSR_CHECK(std::abs(oi[size_t(k)] - h.orientation[size_t(k)]) < 1e-4, where(file, kImageOrientationPatient),
                     ": frame ", i + 1, " has ", vec_text(oi), ", frame 1 ", vec_text(h.orientation),
                     "; expected one orientation");
      }
    }
  } else {
    h.orientation = numbers_n(file, ds, kImageOrientationPatient, 6);
    h.pixel_spacing = numbers_n(file, ds, kPixelSpacing, 2);
    const std::vector<double> p = numbers_n(file, ds, kImagePositionPatient, 3);
    h.positions.push_back({p[0], p[1], p[2]});
    rescale(ds);
    std::vector<double> hint = numbers(file, ds, kSpacingBetweenSlices);
    if (hint.empty()) hint = numbers(file, ds, kSliceThickness);
    if (!hint.empty()) h.slice_hint = hint[0];
  }
  CTSR_CHECK(h.pixel_spacing[0] > 0 && h.pixel_spacing[1] > 0, where(file, kPixelSpacing), ": ",
             vec_text(h.pixel_spacing), "; expected two positive numbers");
  h.source = source_of(ds);
  h.source.series_uid = h.series_uid;
  h.source.series_description = text(ds, kSeriesDescription.tag);
  if (const std::vector<double> n = numbers(file, ds, kSeriesNumber); n.size() == 1) h.source.series_number = int64_t(n[0]);
  h.source.rescale_slope = h.slope;
  h.source.rescale_intercept = h.intercept;
  h.source.bits_stored = int(h.bits_stored);
  h.source.is_signed = h.pixel_representation == 1;
  return h;
}

// The row and column directions (unit, orthogonal) and the normal, checked.
struct Orientation {
  Vec3 row, col, normal;
};
Orientation check_orientation(const Header& h) {
  const std::vector<double>& o = h.orientation;
  Orientation r{{o[0], o[1], o[2]}, {o[3], o[4], o[5]}, {}};
  const double nr = norm(r.row), nc = norm(r.col);
  CTSR_CHECK(std::abs(nr - 1) < 1e-3 && std::abs(nc - 1) < 1e-3, where(h.file, kImageOrientationPatient), ": ",
             vec_text(o), "; expected two unit vectors");
  const double cosine = dot(r.row, r.col) / (nr * nc);
  CTSR_CHECK(std::abs(cosine) < 1e-3, where(h.file, kImageOrientationPatient), ": ", vec_text(o),
             ": rows and columns are not orthogonal (", std::acos(std::clamp(cosine, -1.0, 1.0)) * 180 / M_PI,
             " degrees); ctsr refuses non-orthogonal orientations");
  for (int i = 0; i < 3; ++i) r.row[size_t(i)] /= nr, r.col[size_t(i)] /= nc;
  r.normal = cross(r.row, r.col);
  return r;
}

// Every file of the series must agree with the first on what makes one volume.
void check_consistent(const Header& a, const Header& b) {
  auto same = [&](int64_t x, int64_t y, const TagInfo& t) {
    CTSR_CHECK(x == y, where(b.file, t), ": ", y, ", but ", x, " in ", a.file.string(), "; expected one value per series");
  };
  same(a.rows, b.rows, kRows);
  same(a.columns, b.columns, kColumns);
  same(a.bits_stored, b.bits_stored, kBitsStored);
  same(a.pixel_representation, b.pixel_representation, kPixelRepresentation);
  for (int i = 0; i < 6; ++i)
    CTSR_CHECK(std::abs(a.orientation[size_t(i)] - b.orientation[size_t(i)]) < 1e-4, where(b.file, kImageOrientationPatient),
               ": ", vec_text(b.orientation), ", but ", vec_text(a.orientation), " in ", a.file.string(),
               "; expected one orientation per series");
  for (int i = 0; i < 2; ++i)
    CTSR_CHECK(std::abs(a.pixel_spacing[size_t(i)] - b.pixel_spacing[size_t(i)]) <= 1e-4 * a.pixel_spacing[size_t(i)],
               where(b.file, kPixelSpacing), ": ", vec_text(b.pixel_spacing), ", but ", vec_text(a.pixel_spacing), " in ",
               a.file.string(), "; expected one pixel spacing per series");
}

// Stored 16-bit values to HU.
void convert_frame(const char* src, float* dst, int64_t n, const Header& h) {
  const int bits = int(h.bits_stored);
  const uint32_t mask = bits >= 16 ? 0xffffu : (1u << bits) - 1u;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t raw = (uint32_t(uint8_t(src[2 * i])) | uint32_t(uint8_t(src[2 * i + 1])) << 8) & mask;
    int64_t v = int64_t(raw);
    if (h.pixel_representation == 1 && (raw >> (bits - 1)) & 1u) v -= int64_t(1) << bits;
    dst[i] = float(h.slope * double(v) + h.intercept);
  }
}

void default_warn(const std::string& message) { std::cerr << "ctsr: warning: " << message << "\n"; }

std::vector<Header> read_headers(const fs::path& path, const DicomReadOptions& options) {
  const auto& warn = options.warn ? options.warn : std::function<void(const std::string&)>(default_warn);
  std::error_code ec;
  std::vector<Header> headers;
  if (!fs::is_directory(path, ec)) {
    CTSR_CHECK(fs::is_regular_file(path, ec), "cannot read DICOM '", path.string(), "': ",
               fs::exists(path, ec) ? "not a regular file or folder" : "no such file or folder");
    CTSR_CHECK(has_dicom_magic(path), path.string(), ": not a DICOM file (no 'DICM' at byte 128)");
    headers.push_back(read_header(path));
    CTSR_CHECK(headers[0].sop_class != kMediaDirectoryStorage, path.string(),
               ": a DICOMDIR; expected an image file or a series folder");
    return headers;
  }
  std::vector<fs::path> files;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(it->path());
  CTSR_CHECK(!ec, "cannot list DICOM folder '", path.string(), "': ", ec.message());
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    if (is_atomic_temp_name(f)) continue;
    if (!has_dicom_magic(f)) {
      warn(f.string() + ": not a DICOM file (no 'DICM' at byte 128); skipped");
      continue;
    }
    Header h = read_header(f);
    if (h.sop_class == kMediaDirectoryStorage) {
      warn(f.string() + ": a DICOMDIR; skipped (the series is read from the image files)");
      continue;
    }
    headers.push_back(std::move(h));
  }
  CTSR_CHECK(!headers.empty(), "DICOM folder '", path.string(), "' holds no DICOM files");
  return headers;
}

}  // namespace

bool is_dicom_path(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return true;
  if (path.extension() == ".dcm" || path.extension() == ".DCM") return true;
  return fs::is_regular_file(path, ec) && has_dicom_magic(path);
}

Volume read_dicom(const fs::path& path, const DicomReadOptions& options) {
  std::vector<Header> all = read_headers(path, options);

  // One series: the folder's only one, or the one asked for.
  std::map<std::string, std::vector<size_t>> by_series;
  for (size_t i = 0; i < all.size(); ++i) by_series[all[i].series_uid].push_back(i);
  std::vector<size_t> chosen;
  if (!options.series_uid.empty()) {
    auto it = by_series.find(options.series_uid);
    if (it == by_series.end()) {
      std::string have;
      for (const auto& [uid, files] : by_series) have += (have.empty() ? "" : ", ") + uid + " (" + std::to_string(files.size()) + " files)";
      CTSR_FAIL(path.string(), ": ", tag_name(kSeriesInstanceUID.tag), " SeriesInstanceUID ", options.series_uid,
                " is not in the folder; it holds ", have);
    }
    chosen = it->second;
  } else if (by_series.size() > 1) {
    std::string have;
    for (const auto& [uid, files] : by_series)
      have += (have.empty() ? "" : ", ") + uid + " (" + std::to_string(files.size()) + " files, e.g. " +
              all[files[0]].file.filename().string() + ")";
    CTSR_FAIL(path.string(), ": ", tag_name(kSeriesInstanceUID.tag), " SeriesInstanceUID: ", by_series.size(),
              " series in one folder: ", have, "; pick one with --series-uid");
  } else {
    chosen = by_series.begin()->second;
  }
  std::vector<Header> headers;
  for (size_t i : chosen) headers.push_back(std::move(all[i]));
  CTSR_CHECK(headers.size() == 1 || headers[0].frames == 1, headers[0].file.string(), ": ",
             tag_name(kNumberOfFrames.tag), " a multi-frame file among ", headers.size(),
             " files of one series; expected it alone");

  const Header& first = headers[0];
  const Orientation o = check_orientation(first);
  for (size_t i = 1; i < headers.size(); ++i) check_consistent(first, headers[i]);
  for (size_t i = 1; i < headers.size(); ++i) {
    const Header& h = headers[i];
    CTSR_CHECK(h.slope == first.slope && h.intercept == first.intercept, where(h.file, kRescaleSlope), " / ",
               tag_name(kRescaleIntercept.tag), ": ", h.slope, " / ", h.intercept, ", but ", first.slope, " / ",
               first.intercept, " in ", first.file.string(), "; expected one rescale per series");
  }

  // The frames, ordered along the normal.
  std::vector<Frame> frames;
  for (const Header& h : headers)
    for (int64_t f = 0; f < h.frames; ++f) frames.push_back({h.file, f, h.positions[size_t(f)]});
  std::stable_sort(frames.begin(), frames.end(),
                   [&](const Frame& a, const Frame& b) { return dot(a.position, o.normal) < dot(b.position, o.normal); });
  auto frame_name = [](const Frame& f) {
    return f.file.string() + (f.frame > 0 || f.file.extension() == ".dcm" ? " frame " + std::to_string(f.frame + 1) : "");
  };
  const int64_t depth = int64_t(frames.size());
  double slice = first.slice_hint > 0 ? first.slice_hint : 1.0;
  if (depth > 1) {
    std::vector<double> gaps;
    for (int64_t k = 1; k < depth; ++k)
      gaps.push_back(dot(frames[size_t(k)].position, o.normal) - dot(frames[size_t(k - 1)].position, o.normal));
    std::vector<double> sorted = gaps;
    std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(sorted.size() / 2), sorted.end());
    const double median = sorted[sorted.size() / 2];
    // Tilt: the offset between neighbours must lie along the normal.
    for (int64_t k = 1; k < depth; ++k) {
      const Vec3 d = sub(frames[size_t(k)].position, frames[size_t(k - 1)].position);
      const double along = dot(d, o.normal);
      const double off = norm(sub(d, {along * o.normal[0], along * o.normal[1], along * o.normal[2]}));
      if (along > 1e-6 && off > 1e-3 * along + 1e-4)
        CTSR_FAIL(where(frames[size_t(k)].file, kImagePositionPatient), ": the slices advance ",
                  std::atan2(off, along) * 180 / M_PI, " degrees off the normal of ", tag_name(kImageOrientationPatient.tag),
                  " (gantry tilt or sheared slices); ctsr refuses tilted series: resample them first");
    }
    for (int64_t k = 1; k < depth; ++k) {
      const double gap = gaps[size_t(k - 1)];
      const Frame& a = frames[size_t(k - 1)];
      const Frame& b = frames[size_t(k)];
      CTSR_CHECK(gap > 1e-3 * std::abs(median) + 1e-6, where(b.file, kImagePositionPatient), ": ", frame_name(b),
                 " and ", frame_name(a), " are at the same position along the normal (",
                 dot(b.position, o.normal), " mm); a duplicated slice?");
      CTSR_CHECK(std::abs(gap - median) <= 0.01 * median + 1e-4, where(b.file, kImagePositionPatient), ": ", gap,
                 " mm from ", frame_name(a), " to ", frame_name(b), ", but the series' spacing is ", median,
                 " mm; a missing slice? (expected even spacing within 1%)");
    }
    slice = (dot(frames.back().position, o.normal) - dot(frames.front().position, o.normal)) / double(depth - 1);
  }

  // Pixel data, decoded file by file straight into the volume.
  const int64_t rows = first.rows, cols = first.columns, plane = rows * cols;
  // Every file's pixel data must be there before anything is allocated.
  for (const Header& h : headers) {
    // GDCM pads a short native pixel data with zeros; the file's size tells.
    const int64_t expect = plane * h.frames * 2;
    CTSR_CHECK(!is_native_syntax(h.transfer_syntax) || h.file_size - h.pixel_offset >= expect, where(h.file, kPixelData),
               ": the file ends ", expect - (h.file_size - h.pixel_offset), " bytes short of its ", expect,
               " bytes of pixel data (truncated)");
    // A compressed file's dimensions are not bounded by its size: a decoder would allocate
    // whatever they declare. Lossless CT compresses a few times (a blank slice far more), so a
    // file may declare at most 4096 times its own size plus 16 MiB of pixels.
    CTSR_CHECK(is_native_syntax(h.transfer_syntax) || expect <= 4096 * h.file_size + (int64_t(16) << 20),
               where(h.file, kPixelData), ": ", h.frames, " frames of ", rows, " x ", cols, " pixels (", expect,
               " bytes) from a ", h.file_size, "-byte file; expected at most 4096 times the file's size");
  }
  Volume v;
  v.data = Tensor::empty({depth, rows, cols}, DType::float32, Device::cpu());
  float* out = v.data.data<float>();
  std::map<fs::path, std::vector<int64_t>> slots;  // file -> frame -> slice index
  for (int64_t k = 0; k < depth; ++k) {
    auto& s = slots[frames[size_t(k)].file];
    if (s.empty()) s.assign(size_t(frames[size_t(k)].frame + 1), -1);
    if (int64_t(s.size()) <= frames[size_t(k)].frame) s.resize(size_t(frames[size_t(k)].frame + 1), -1);
    s[size_t(frames[size_t(k)].frame)] = k;
  }
  for (const Header& h : headers) {
    const int64_t expect = plane * h.frames * 2;
    gdcm::ImageReader reader;
    reader.SetFileName(h.file.c_str());
    CTSR_CHECK(reader.Read(), where(h.file, kPixelData), ": the file cannot be read to its end (truncated?)");
    const gdcm::Image& image = reader.GetImage();
    const int64_t have = int64_t(image.GetBufferLength());
    CTSR_CHECK(int64_t(image.GetColumns()) == cols && int64_t(image.GetRows()) == rows && have == expect,
               where(h.file, kPixelData), ": ", have, " bytes of ", image.GetColumns(), " x ", image.GetRows(),
               " pixels; expected ", expect, " bytes (", h.frames, " frames of ", rows, " rows x ", cols, " columns)");
    std::vector<char> buffer(static_cast<size_t>(expect));
    CTSR_CHECK(image.GetBuffer(buffer.data()), where(h.file, kPixelData), ": the pixel data cannot be decoded (",
               syntax_name(h.transfer_syntax), "; truncated or corrupt)");
    const std::vector<int64_t>& s = slots[h.file];
    for (int64_t f = 0; f < h.frames; ++f)
      if (s[size_t(f)] >= 0) convert_frame(buffer.data() + f * plane * 2, out + s[size_t(f)] * plane, plane, h);
  }

  // The affine: DICOM LPS to ctsr's RAS (diag(-1, -1, 1)).
  const double cs = first.pixel_spacing[1], rs = first.pixel_spacing[0];
  const Vec3& p0 = frames.front().position;
  VolumeGeometry& g = v.geometry;
  g.spacing_xyz = {cs, rs, slice};
  for (int i = 0; i < 3; ++i) {
    const double flip = i < 2 ? -1.0 : 1.0;
    // (+ 0.0 turns the -0 of a flipped zero into 0.)
    g.affine[size_t(i)] = {flip * o.row[size_t(i)] * cs + 0.0, flip * o.col[size_t(i)] * rs + 0.0,
                           flip * o.normal[size_t(i)] * slice + 0.0, flip * p0[size_t(i)] + 0.0};
  }
  g.affine[3] = {0, 0, 0, 1};
  g.dicom = std::make_shared<const DicomSource>(first.source);
  return v;
}

// Refuses to replace anything but a previous series: a target that exists must be a folder of
// DICOM files (and nothing else).
void check_dicom_series_target(const fs::path& target) {
  const fs::path folder = target.filename().empty() ? target.parent_path() : target;
  std::error_code ec;
  CTSR_CHECK(target.filename().empty() || fs::is_directory(folder, ec) ||
                 (folder.extension() != ".dcm" && folder.extension() != ".DCM"),
             "cannot write '", target.string(), "': ctsr writes DICOM as a series folder of single-frame files, ",
             "not one .dcm file; name a folder (e.g. ", folder.parent_path() / folder.stem(), "/)");
  if (!fs::exists(folder, ec)) return;
  CTSR_CHECK(fs::is_directory(folder, ec), "cannot write DICOM series '", folder.string(),
             "': it exists and is not a folder");
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec))
    CTSR_CHECK(it->is_regular_file(ec) && has_dicom_magic(it->path()), "cannot write DICOM series '", folder.string(),
               "': the folder exists and holds ", it->path().filename().string(),
               ", which is not a DICOM file; name a new folder (only a folder of DICOM files is replaced)");
}

std::string new_dicom_uid() {
  std::random_device entropy;  // the system's random source
  unsigned char uuid[16];
  for (int i = 0; i < 16; i += 4) {
    const uint32_t r = entropy();
    for (int j = 0; j < 4; ++j) uuid[i + j] = uint8_t(r >> (8 * j));
  }
  uuid[6] = uint8_t((uuid[6] & 0x0f) | 0x40);  // version 4 (random)
  uuid[8] = uint8_t((uuid[8] & 0x3f) | 0x80);  // variant 1
  // The 128-bit number in decimal: repeated division of the big-endian bytes by 10.
  std::array<unsigned, 16> n{};
  for (int i = 0; i < 16; ++i) n[size_t(i)] = uuid[i];
  std::string digits;
  bool zero = false;
  while (!zero) {
    unsigned rem = 0;
    zero = true;
    for (unsigned& b : n) {
      const unsigned cur = rem * 256 + b;
      b = cur / 10;
      rem = cur % 10;
      zero = zero && b == 0;
    }
    digits.push_back(char('0' + rem));
  }
  std::reverse(digits.begin(), digits.end());
  return "2.25." + digits;
}

namespace {

void put(gdcm::DataSet& ds, uint32_t t, gdcm::VR vr, std::string value) {
  // DICOM values have even length: text pads with a space, UIDs with a NUL.
  if (value.size() % 2) value.push_back(vr == gdcm::VR::UI ? '\0' : ' ');
  gdcm::DataElement de(gtag(t));
  de.SetVR(vr);
  de.SetByteValue(value.data(), uint32_t(value.size()));
  ds.Replace(de);
}
void put_u16(gdcm::DataSet& ds, uint32_t t, int64_t v) {
  const char b[2] = {char(v & 0xff), char((v >> 8) & 0xff)};
  put(ds, t, gdcm::VR::US, std::string(b, 2));
}
std::string ds_text(double v) {
  // DS holds at most 16 characters.
  for (int precision = 15; precision > 0; --precision) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strlen(buf) <= 16) return buf;
  }
  return "0";
}
std::string ds_list(const std::vector<double>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += '\\';
    s += ds_text(std::abs(v[i]) < 1e-12 ? 0.0 : v[i]);
  }
  return s;
}

}  // namespace

void write_dicom_series(const fs::path& target, const Tensor& hu, const VolumeGeometry& g,
                        const std::function<void(const std::string&)>& warn) {
  const fs::path folder = target.filename().empty() ? target.parent_path() : target;
  const std::string name = folder.string();
  CTSR_CHECK(hu.dtype() == DType::float32 && hu.device().is_host_memory() && hu.ndim() == 3,
             "cannot write DICOM series '", name, "': expected a [D, H, W] float32 host tensor, got ", hu.shape().str());
  const int64_t depth = hu.dim(0), rows = hu.dim(1), cols = hu.dim(2);
  CTSR_CHECK(rows <= 65535 && cols <= 65535, "cannot write DICOM series '", name, "': ", rows, " x ", cols,
             " pixels per slice; DICOM holds at most 65535 rows and columns");
  // The geometry back to LPS: columns of the affine are the row direction * column spacing, the
  // column direction * row spacing and the slice step.
  std::array<Vec3, 4> col{};
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 3; ++i) col[size_t(c)][size_t(i)] = (i < 2 ? -1.0 : 1.0) * g.affine[size_t(i)][size_t(c)];
  const double cs = norm(col[0]), rs = norm(col[1]), step = norm(col[2]);
  CTSR_CHECK(cs > 0 && rs > 0 && step > 0 && std::isfinite(cs + rs + step), "cannot write DICOM series '", name,
             "': the affine has a zero or non-finite column");
  Vec3 row{}, cdir{}, sdir{};
  for (int i = 0; i < 3; ++i)
    row[size_t(i)] = col[0][size_t(i)] / cs, cdir[size_t(i)] = col[1][size_t(i)] / rs, sdir[size_t(i)] = col[2][size_t(i)] / step;
  CTSR_CHECK(std::abs(dot(row, cdir)) < 1e-4 && std::abs(std::abs(dot(cross(row, cdir), sdir)) - 1) < 1e-4,
             "cannot write DICOM series '", name, "': the affine is sheared (its axes are not orthogonal), which ",
             "DICOM's ImageOrientationPatient and ImagePositionPatient cannot hold");

  const DicomSource* src = g.dicom.get();
  const DicomSource fallback;
  const DicomSource& s = src ? *src : fallback;
  const bool is_signed = s.is_signed;
  const int bits = s.bits_stored;
  const double lo = is_signed ? -std::ldexp(1.0, bits - 1) : 0.0;
  const double hi = is_signed ? std::ldexp(1.0, bits - 1) - 1 : std::ldexp(1.0, bits) - 1;

  // Study and patient: the source's, or a new study for a volume that did not come from DICOM.
  gdcm::DataSet base;
  for (const DicomSource::Attribute& a : s.copied)
    put(base, a.tag, gdcm::VR::GetVRTypeFromFile(a.vr.c_str()), a.bytes);
  auto has = [&](uint32_t t) { return base.FindDataElement(gtag(t)); };
  if (!has(tag_id(0x0020, 0x000D))) put(base, tag_id(0x0020, 0x000D), gdcm::VR::UI, new_dicom_uid());
  if (!has(tag_id(0x0020, 0x0052))) put(base, tag_id(0x0020, 0x0052), gdcm::VR::UI, new_dicom_uid());
  for (const CopiedTag& c : kRequiredEmpty)
    if (!has(c.tag)) put(base, c.tag, gdcm::VR::GetVRTypeFromFile(c.vr), "");  // type 2: present, empty
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[16], clock[16];
  std::strftime(date, sizeof date, "%Y%m%d", &tm);
  std::strftime(clock, sizeof clock, "%H%M%S", &tm);
  const std::string series_uid = new_dicom_uid();
  put(base, tag_id(0x0008, 0x0008), gdcm::VR::CS, "DERIVED\\SECONDARY\\AXIAL");
  put(base, kSOPClassUID.tag, gdcm::VR::UI, kCtImageStorage);
  put(base, tag_id(0x0008, 0x0021), gdcm::VR::DA, date);
  put(base, tag_id(0x0008, 0x0031), gdcm::VR::TM, clock);
  put(base, kModality.tag, gdcm::VR::CS, "CT");
  std::string description = s.series_description.empty() ? "ctsr" : s.series_description.substr(0, 57) + " (ctsr)";
  put(base, kSeriesDescription.tag, gdcm::VR::LO, description);
  put(base, tag_id(0x0008, 0x2111), gdcm::VR::ST,
      src ? "Super-resolved by ctsr from series " + s.series_uid : "Written by ctsr");
  put(base, kSeriesInstanceUID.tag, gdcm::VR::UI, series_uid);
  put(base, kSeriesNumber.tag, gdcm::VR::IS, std::to_string(s.series_number % 1000 + 1000));
  put(base, kImageOrientationPatient.tag, gdcm::VR::DS, ds_list({row[0], row[1], row[2], cdir[0], cdir[1], cdir[2]}));
  put_u16(base, kSamplesPerPixel.tag, 1);
  put(base, kPhotometric.tag, gdcm::VR::CS, "MONOCHROME2");
  put_u16(base, kRows.tag, rows);
  put_u16(base, kColumns.tag, cols);
  put(base, kPixelSpacing.tag, gdcm::VR::DS, ds_list({rs, cs}));
  put(base, kSliceThickness.tag, gdcm::VR::DS, ds_text(step));
  put(base, kSpacingBetweenSlices.tag, gdcm::VR::DS, ds_text(step));
  put_u16(base, kBitsAllocated.tag, 16);
  put_u16(base, kBitsStored.tag, bits);
  put_u16(base, kHighBit.tag, bits - 1);
  put_u16(base, kPixelRepresentation.tag, is_signed ? 1 : 0);
  put(base, kRescaleIntercept.tag, gdcm::VR::DS, ds_text(s.rescale_intercept));
  put(base, kRescaleSlope.tag, gdcm::VR::DS, ds_text(s.rescale_slope));
  put(base, tag_id(0x0028, 0x1054), gdcm::VR::LO, "HU");

  check_dicom_series_target(folder);
  const fs::path parent = folder.parent_path().empty() ? fs::path(".") : folder.parent_path();
  std::error_code ec;
  CTSR_CHECK(fs::is_directory(parent, ec), "cannot write DICOM series '", name, "': its parent folder ",
             parent.string(), " does not exist");
  static int counter = 0;
  const fs::path temp = parent / (".tmp-" + std::to_string(::getpid()) + "-d" + std::to_string(++counter) + "-" +
                                  folder.filename().string());
  CTSR_CHECK(fs::create_directory(temp, ec) && !ec, "cannot write DICOM series '", name, "': cannot create ",
             temp.string(), ": ", ec ? ec.message() : "it exists");
  struct RemoveOnError {
    fs::path dir;
    bool keep = false;
    ~RemoveOnError() {
      std::error_code e;
      if (!keep) fs::remove_all(dir, e);
    }
  } guard{temp};

  const float* data = hu.data<float>();
  const int64_t plane = rows * cols;
  int64_t clamped = 0;
  std::string pixels(size_t(plane * 2), '\0');
  const int digits = std::max<int>(4, int(std::to_string(depth).size()));
  for (int64_t k = 0; k < depth; ++k) {
    for (int64_t i = 0; i < plane; ++i) {
      const double stored = std::nearbyint((double(data[k * plane + i]) - s.rescale_intercept) / s.rescale_slope);
      double c = std::isfinite(stored) ? stored : 0.0;
      if (c < lo || c > hi || !std::isfinite(stored)) ++clamped;
      c = std::clamp(c, lo, hi);
      const uint16_t bitsv = uint16_t(int32_t(c) & 0xffff);
      pixels[size_t(2 * i)] = char(bitsv & 0xff);
      pixels[size_t(2 * i + 1)] = char(bitsv >> 8);
    }
    // GDCM objects are reference counted: the writer takes the file into a SmartPointer.
    gdcm::SmartPointer<gdcm::File> file = new gdcm::File;
    gdcm::DataSet& ds = file->GetDataSet();
    ds = base;
    const std::string sop = new_dicom_uid();
    put(ds, tag_id(0x0008, 0x0018), gdcm::VR::UI, sop);
    put(ds, tag_id(0x0020, 0x0013), gdcm::VR::IS, std::to_string(k + 1));
    Vec3 p{};
    for (int i = 0; i < 3; ++i) p[size_t(i)] = col[3][size_t(i)] + double(k) * col[2][size_t(i)];
    put(ds, kImagePositionPatient.tag, gdcm::VR::DS, ds_list({p[0], p[1], p[2]}));
    put(ds, tag_id(0x0020, 0x1041), gdcm::VR::DS, ds_text(std::abs(dot(p, cross(row, cdir))) < 1e-12 ? 0.0 : dot(p, cross(row, cdir))));
    gdcm::DataElement pd(gtag(kPixelData.tag));
    pd.SetVR(gdcm::VR::OW);
    pd.SetByteValue(pixels.data(), uint32_t(pixels.size()));
    ds.Replace(pd);
    gdcm::FileMetaInformation& meta = file->GetHeader();
    meta.SetDataSetTransferSyntax(gdcm::TransferSyntax::ExplicitVRLittleEndian);
    std::ostringstream bytes;
    gdcm::Writer writer;
    writer.SetFile(*file);
    writer.SetStream(bytes);
    CTSR_CHECK(writer.Write(), "cannot write DICOM series '", name, "': GDCM could not encode slice ", k + 1);
    std::string number = std::to_string(k + 1);
    const std::string file_name = "CT" + std::string(size_t(std::max<int>(0, digits - int(number.size()))), '0') + number + ".dcm";
    const std::string b = bytes.str();
    write_file_atomically(temp / file_name, [&](std::ostream& os) { os.write(b.data(), std::streamsize(b.size())); });
  }
  sync_directory(temp);
  if (clamped > 0) {
    const std::string m = name + ": " + std::to_string(clamped) + " voxels outside the stored range [" + ds_text(lo * s.rescale_slope + s.rescale_intercept) +
                          ", " + ds_text(hi * s.rescale_slope + s.rescale_intercept) + "] HU were clamped";
    (warn ? warn : std::function<void(const std::string&)>(default_warn))(m);
  }
  // Into place: a plain rename when the target is new, else an atomic exchange with the old one.
  if (!fs::exists(folder, ec)) {
    CTSR_CHECK(::rename(temp.c_str(), folder.c_str()) == 0, "cannot write DICOM series '", name, "': rename failed: ",
               std::strerror(errno));
  } else {
    CTSR_CHECK(::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, folder.c_str(), RENAME_EXCHANGE) == 0,
               "cannot write DICOM series '", name, "': cannot swap it for the new one: ", std::strerror(errno),
               "; the old series is untouched");
    // guard removes the old series, now under the temporary name.
  }
  if (!fs::exists(temp, ec)) guard.keep = true;
  sync_directory(parent);
}

}  // namespace ctsr::io
