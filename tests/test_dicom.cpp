// DICOM series (runtime/formats/dicom.h) read from files another writer made: the pydicom
// fixtures of tests/data/dicom (tools/pytorch/make_dicom_fixtures.py; the JPEG-LS and JPEG 2000
// copies by gdcmconv), with the HU values, shape, spacing, orientation and origin the writer put
// in (expected.json); every refused input with its one-line message naming the file and the tag;
// the series writer's round trip (geometry, patient and study copied, a new series UID) and its
// atomic replacement of a previous result.
#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "runtime/formats/atomic_file.h"
#include "runtime/formats/dicom.h"
#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"

namespace ctsr::test {
namespace {

namespace fs = std::filesystem;
using Affine = std::array<std::array<double, 4>, 4>;

const std::string kDicomDir = std::string(CTSR_TEST_DATA_DIR) + "/dicom/";

const nlohmann::json& expected() {
  static const nlohmann::json j = [] {
    std::ifstream in(kDicomDir + "expected.json");
    CTSR_CHECK(in.good(), "cannot open ", kDicomDir, "expected.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

// The RAS affine a series with this description must read as: DICOM's LPS columns (row
// direction * column spacing, column direction * row spacing, normal * slice spacing, origin),
// x and y negated.
Affine expected_affine(const nlohmann::json& e) {
  const auto o = e.at("orientation").get<std::vector<double>>();
  const auto n = e.at("normal").get<std::vector<double>>();
  const auto ps = e.at("pixel_spacing").get<std::vector<double>>();
  const auto origin = e.at("origin").get<std::vector<double>>();
  const double dz = e.at("slice_spacing").get<double>();
  Affine a{};
  for (int i = 0; i < 3; ++i) {
    const double flip = i < 2 ? -1.0 : 1.0;
    a[i] = {flip * o[size_t(i)] * ps[1], flip * o[size_t(3 + i)] * ps[0], flip * n[size_t(i)] * dz, flip * origin[size_t(i)]};
  }
  a[3] = {0, 0, 0, 1};
  return a;
}

void expect_matches(const io::Volume& v, const nlohmann::json& e, const std::string& what) {
  SCOPED_TRACE(what);
  const auto shape = e.at("shape_dhw").get<std::vector<int64_t>>();
  ASSERT_EQ(v.data.ndim(), 3);
  ASSERT_EQ(v.data.dtype(), DType::float32);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(v.data.dim(i), shape[size_t(i)]) << "dim " << i;
  const auto hu = e.at("hu").get<std::vector<double>>();
  ASSERT_EQ(int64_t(hu.size()), v.data.numel());
  const float* p = v.data.data<float>();
  int64_t wrong = 0;
  for (size_t i = 0; i < hu.size(); ++i) wrong += p[i] != float(hu[i]);
  EXPECT_EQ(wrong, 0) << "voxels differing from the writer's HU";
  const auto ps = e.at("pixel_spacing").get<std::vector<double>>();
  EXPECT_NEAR(v.geometry.spacing_xyz[0], ps[1], 1e-9);
  EXPECT_NEAR(v.geometry.spacing_xyz[1], ps[0], 1e-9);
  EXPECT_NEAR(v.geometry.spacing_xyz[2], e.at("slice_spacing").get<double>(), 1e-9);
  const Affine a = expected_affine(e);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(v.geometry.affine[r][c], a[r][c], 1e-9) << "affine[" << r << "][" << c << "]";
  ASSERT_TRUE(v.geometry.dicom);
}

std::string copied(const io::Volume& v, uint32_t tag) {
  for (const auto& a : v.geometry.dicom->copied)
    if (a.tag == tag) {
      std::string s = a.bytes;
      while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
      return s;
    }
  return "";
}

class ValidSeries : public ::testing::TestWithParam<std::string> {};

TEST_P(ValidSeries, ReadsWhatTheWriterPutIn) {
  const std::string name = GetParam();
  if (!expected().contains(name)) GTEST_SKIP() << name << " was not generated (gdcmconv absent when the fixtures were made)";
  std::vector<std::string> warnings;
  io::DicomReadOptions options;
  options.warn = [&](const std::string& m) { warnings.push_back(m); };
  const io::Volume v = io::read_dicom(kDicomDir + name, options);
  expect_matches(v, expected().at(name), name);
  EXPECT_EQ(copied(v, 0x00100020), "CTSR-0001");
  EXPECT_EQ(v.geometry.dicom->rescale_intercept, -1024.0);
  if (name == "with_other_file") {
    ASSERT_EQ(warnings.size(), 1u);
    expect_contains(warnings[0], "README.txt");
    expect_contains(warnings[0], "not a DICOM file");
  } else {
    EXPECT_TRUE(warnings.empty()) << warnings.front();
  }
  // The same through read_volume, the programs' entry.
  EXPECT_EQ(io::volume_format(kDicomDir + name), io::VolumeFormat::dicom);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ValidSeries,
                         ::testing::Values("axial_ascending", "axial_descending", "unsigned_rescale", "with_other_file",
                                           "oblique", "multiframe.dcm", "axial_jpegls", "axial_j2k", "axial_rle"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '.', '_');
                           return s;
                         });

TEST(Dicom, BothSliceOrdersGiveTheSameVolume) {
  const io::Volume a = io::read_volume(kDicomDir + "axial_ascending");
  const io::Volume d = io::read_volume(kDicomDir + "axial_descending");
  EXPECT_TRUE(tensors_equal(a.data, d.data));
  EXPECT_EQ(a.geometry.affine, d.geometry.affine);
}

TEST(Dicom, UnsignedRescaleHalvesTheSteps) {
  const io::Volume v = io::read_volume(kDicomDir + "unsigned_rescale");
  EXPECT_FALSE(v.geometry.dicom->is_signed);
  EXPECT_EQ(v.geometry.dicom->rescale_slope, 0.5);
}

TEST(Dicom, TwoSeriesNeedASeriesUid) {
  const nlohmann::json& e = expected().at("refused").at("two_series");
  const auto uids = e.at("series_uids").get<std::vector<std::string>>();
  const std::string dir = kDicomDir + "two_series";
  expect_error_mentions([&] { io::read_volume(dir); }, {dir, "(0020,000E)", uids[0], uids[1], "--series-uid"});
  for (const std::string& uid : uids) {
    io::VolumeReadOptions options;
    options.series_uid = uid;
    expect_matches(io::read_volume(dir, options), e.at("series").at(uid), uid);
  }
  io::VolumeReadOptions wrong;
  wrong.series_uid = "1.2.3.4";
  expect_error_mentions([&] { io::read_volume(dir, wrong); }, {dir, "1.2.3.4", "is not in the folder", uids[0]});
}

// Each refused fixture fails with one line naming a file of it, the tag and the reason.
struct Refusal {
  std::string name;
  std::string file;  // the file the message must name ("" = any file of the case)
  std::string reason;
};

class RefusedSeries : public ::testing::TestWithParam<Refusal> {};

TEST_P(RefusedSeries, NamesTheFileAndTheTag) {
  const Refusal& r = GetParam();
  const std::string tag = expected().at("refused").at(r.name).at("tag").get<std::string>();
  const std::string dir = kDicomDir + r.name;
  const std::string message = error_message([&] { io::read_volume(dir); });
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  expect_contains(message, dir + "/" + r.file);
  expect_contains(message, tag);
  expect_contains(message, r.reason);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, RefusedSeries,
    ::testing::Values(Refusal{"missing_slice", "IM", "a missing slice?"},
                      Refusal{"duplicate_slice", "IM", "a duplicated slice?"},
                      Refusal{"gantry_tilt", "IM", "gantry tilt"},
                      Refusal{"mixed_rows", "IM", "Rows: 10, but 11 in"},
                      Refusal{"mr_modality", "IM", "'MR'; expected CT"},
                      Refusal{"jpeg_lossy", "IM", "1.2.840.10008.1.2.4.50 (JPEG baseline, lossy) is not supported"},
                      Refusal{"truncated", "IM0005", "declares 286 bytes, but only 143 remain"},
                      Refusal{"non_orthogonal", "IM", "not orthogonal"}),
    [](const auto& info) { return info.param.name; });

// A compressed slice whose codestream does not match its DICOM header (GDCM would abort on the
// short decode, fuzz/dicom.cpp found it): refused naming the codestream and both sizes.
TEST(Dicom, CodestreamsMustMatchRowsAndColumns) {
  TempDir dir("dicom");
  for (const std::string name : {"axial_jpegls", "axial_j2k", "axial_rle"}) {
    std::ifstream in(kDicomDir + name + "/IM0000", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string rows_element("\x28\x00\x10\x00US\x02\x00", 8);
    const size_t at = bytes.find(rows_element);
    ASSERT_NE(at, std::string::npos) << name;
    bytes[at + 8] = 12;  // Rows 12; the codestream holds 11
    const fs::path file = dir.path() / (name + ".dcm");
    std::ofstream(file, std::ios::binary) << bytes;
    const std::string message = error_message([&] { io::read_volume(file); });
    expect_contains(message, file.string() + ": (7FE0,0010) PixelData");
    if (name == "axial_rle") {
      // RLE holds no dimensions: GDCM's decode comes up short and ctsr says so.
      expect_contains(message, "cannot be decoded (RLE lossless");
    } else {
      expect_contains(message, std::string(name == "axial_j2k" ? "JPEG 2000" : "JPEG-LS") +
                                   " codestream at byte");
      expect_contains(message, "is 13 x 11 pixels");
      expect_contains(message, "expected 13 x 12 (Columns x Rows)");
    }
  }
}

TEST(Dicom, RefusesMissingAndNonDicomPaths) {
  TempDir dir("dicom");
  expect_error_mentions([&] { io::read_volume(dir.path() / "absent"); }, {"absent", "no such file or folder"});
  expect_error_mentions([&] { io::read_volume(dir.path()); }, {dir.path().string(), "holds no DICOM files"});
  std::ofstream(dir.path() / "notes.dcm") << "not dicom";
  expect_error_mentions([&] { io::read_volume(dir.path() / "notes.dcm"); }, {"notes.dcm", "no 'DICM' at byte 128"});
  expect_error_mentions(
      [&] {
        io::VolumeReadOptions options;
        options.series_uid = "1.2";
        io::read_volume(std::string(CTSR_TEST_DATA_DIR) + "/volumes/int16_oblique.nii", options);
      },
      {"series UID (1.2)", "not DICOM"});
}

TEST(Dicom, FormatByName) {
  TempDir dir("dicom");
  EXPECT_EQ(io::volume_format(dir.path()), io::VolumeFormat::dicom);
  EXPECT_EQ(io::volume_format(dir.path() / "new_series"), io::VolumeFormat::dicom);
  EXPECT_EQ(io::volume_format("out/"), io::VolumeFormat::dicom);
  EXPECT_EQ(io::volume_format("scan.dcm"), io::VolumeFormat::dicom);
  EXPECT_EQ(io::volume_format("scan.nii.gz"), io::VolumeFormat::nifti_gz);
  expect_error_mentions([] { io::volume_format("scan.txt"); }, {"scan.txt", "DICOM series folder"});
}

// A series written and read back: the same voxels and geometry, the source's patient and study,
// a new series; every file a CT image with the derived flags.
TEST(Dicom, WriteKeepsGeometryPatientAndStudy) {
  for (const std::string name : {"axial_ascending", "oblique", "unsigned_rescale", "multiframe.dcm"}) {
    SCOPED_TRACE(name);
    TempDir dir("dicom");
    const io::Volume in = io::read_volume(kDicomDir + name);
    const fs::path out = dir.path() / "result";
    io::write_volume(out, in);
    const io::Volume back = io::read_volume(out);
    EXPECT_TRUE(tensors_equal(back.data, in.data));
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) EXPECT_NEAR(back.geometry.affine[r][c], in.geometry.affine[r][c], 1e-6);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(back.geometry.spacing_xyz[i], in.geometry.spacing_xyz[i], 1e-9);
    EXPECT_EQ(copied(back, 0x00100020), "CTSR-0001");
    EXPECT_EQ(copied(back, 0x00100010), "Phantom^Fixture");
    EXPECT_EQ(copied(back, 0x0020000D), copied(in, 0x0020000D));
    EXPECT_EQ(copied(back, 0x00200052), copied(in, 0x00200052));
    EXPECT_NE(back.geometry.dicom->series_uid, in.geometry.dicom->series_uid);
    EXPECT_EQ(back.geometry.dicom->series_uid.rfind("2.25.", 0), 0u) << back.geometry.dicom->series_uid;
    EXPECT_EQ(back.geometry.dicom->rescale_slope, in.geometry.dicom->rescale_slope);
    int files = 0;
    for (const auto& f : fs::directory_iterator(out)) {
      ++files;
      std::ifstream s(f.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(s)), std::istreambuf_iterator<char>());
      expect_contains(bytes, "DERIVED\\SECONDARY");
      expect_contains(bytes, "1.2.840.10008.5.1.4.1.1.2");
    }
    EXPECT_EQ(files, in.data.dim(0));
  }
}

// A volume that never was DICOM (a NIfTI, a phantom) gets a new patient-less study; values are
// rounded to whole HU and clamped to int16 with a warning.
TEST(Dicom, WritesAVolumeWithoutSource) {
  TempDir dir("dicom");
  io::Volume v;
  v.data = random_tensor({5, 9, 6}, 11, DType::float32, -1500.0, 3000.0);
  v.data.data<float>()[7] = 40000.0f;
  v.geometry.spacing_xyz = {0.6, 0.9, 2.5};
  v.geometry.affine = {{{-0.6, 0, 0, 10.5}, {0, -0.9, 0, 20.25}, {0, 0, 2.5, -30}, {0, 0, 0, 1}}};
  std::vector<std::string> warnings;
  const fs::path out = dir.path() / "series";
  io::write_dicom_series(out, v.data, v.geometry, [&](const std::string& m) { warnings.push_back(m); });
  ASSERT_EQ(warnings.size(), 1u);
  expect_contains(warnings[0], "1 voxels outside the stored range [-32768, 32767] HU were clamped");
  const io::Volume back = io::read_volume(out);
  const float* a = v.data.data<float>();
  const float* b = back.data.data<float>();
  for (int64_t i = 0; i < v.data.numel(); ++i)
    ASSERT_EQ(b[i], std::min(32767.0f, std::nearbyint(a[i]))) << "voxel " << i;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(back.geometry.affine[r][c], v.geometry.affine[r][c], 1e-9);
  EXPECT_EQ(back.geometry.dicom->series_description, "ctsr");
  EXPECT_FALSE(copied(back, 0x0020000D).empty());  // a new study UID
}

// The folder appears whole or not at all: a previous series is swapped out in one step, a failed
// write leaves it as it was, and a folder holding anything else is never replaced.
TEST(Dicom, ReplacesOnlyAPreviousSeriesAndAtomically) {
  TempDir dir("dicom");
  const io::Volume in = io::read_volume(kDicomDir + "axial_ascending");
  const fs::path out = dir.path() / "result";
  io::write_volume(out, in);
  const std::string first_uid = io::read_volume(out).geometry.dicom->series_uid;
  io::write_volume(out, in);  // over the previous result
  const io::Volume again = io::read_volume(out);
  EXPECT_NE(again.geometry.dicom->series_uid, first_uid);
  EXPECT_TRUE(tensors_equal(again.data, in.data));

  io::set_fail_write_at(4);  // the fourth slice fails as on a full disk
  expect_error_mentions([&] { io::write_volume(out, in); }, {"No space left on device"});
  io::set_fail_write_at(0);
  EXPECT_EQ(io::read_volume(out).geometry.dicom->series_uid, again.geometry.dicom->series_uid);
  for (const auto& f : fs::directory_iterator(dir.path()))
    EXPECT_FALSE(io::is_atomic_temp_name(f.path())) << f.path() << " left behind";

  expect_error_mentions([&] { io::write_volume(dir.path() / "result.dcm", in); },
                        {"result.dcm", "not one .dcm file; name a folder"});
  EXPECT_FALSE(fs::exists(dir.path() / "result.dcm"));

  const fs::path mine = dir.path() / "mine";
  fs::create_directory(mine);
  std::ofstream(mine / "notes.txt") << "keep me";
  expect_error_mentions([&] { io::write_volume(mine, in); }, {"mine", "notes.txt", "not a DICOM file", "name a new folder"});
  EXPECT_TRUE(fs::exists(mine / "notes.txt"));
}

// pydicom, an independent reader, reads what the writer wrote (tools/pytorch/check_dicom_series.py:
// file meta, derived flags, UIDs, the source's patient, study and geometry, the HU values). Runs
// where /usr/bin/python3 has pydicom and NumPy; CI does not depend on it.
TEST(Dicom, PydicomReadsTheWrittenSeries) {
  if (std::system("/usr/bin/python3 -c 'import numpy, pydicom' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with pydicom and NumPy (Debian's python3-pydicom)";
  // tests/data/../../tools: the source tree (a GPU bundle carries no tools/pytorch).
  const fs::path script = fs::path(CTSR_TEST_DATA_DIR) / "../../tools/pytorch/check_dicom_series.py";
  if (!fs::exists(script)) GTEST_SKIP() << script << " is not here";
  for (const std::string name : {"axial_descending", "oblique", "unsigned_rescale", "multiframe.dcm"}) {
    TempDir dir("dicom");
    const fs::path out = dir.path() / "result";
    io::write_volume(out, io::read_volume(kDicomDir + name));
    const std::string command = "/usr/bin/python3 " + script.string() + " " + out.string() + " --source " + kDicomDir + name;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
  }
}

}  // namespace
}  // namespace ctsr::test
