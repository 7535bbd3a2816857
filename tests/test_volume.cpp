// Volumes (runtime/formats/volume.h): every NIfTI and .npy fixture (tests/data/volumes, from
// tools/pytorch/make_volume_fixtures.py, with the values, spacings and affines nibabel reads)
// read with its data, geometry and the [D, H, W] = [nz, ny, nx] mapping; round trips through
// .nii, .nii.gz and .npy; the qform written beside the sform; refused inputs with one-line
// messages naming the file; failed writes leaving nothing behind; HU windowing.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/formats/volume.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/volume_fixtures.h"

namespace ctsr::test {
namespace {

using namespace volume_fixtures;

using Affine = std::array<std::array<double, 4>, 4>;

void expect_affine_near(const Affine& actual, const Affine& expected, double tol) {
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c)
      EXPECT_NEAR(actual[r][c], expected[r][c], tol) << "affine[" << r << "][" << c << "]";
}

Affine affine_from_json(const nlohmann::json& j) {
  Affine a{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a[r][c] = j.at(r).at(c).get<double>();
  return a;
}

void expect_single_line(const std::string& message) {
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

// ---- reading ------------------------------------------------------------------------------------

TEST(Volume, ReadsEveryNiftiFixtureAsNibabelDoes) {
  for (const std::string name : {"int16_oblique.nii", "int16_oblique.nii.gz", "int16_bigendian.nii",
                                 "nifti2_qform.nii", "uint8_noxform.nii", "float32_4d_singleton.nii"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& e = expected_json().at(name);
    const io::Volume v = io::read_volume(kDir + name);
    EXPECT_EQ(v.data.dtype(), DType::float32);
    EXPECT_EQ(v.data.device(), Device::cpu());
    EXPECT_EQ(v.data.shape(), Shape(e.at("shape_dhw").get<std::vector<int64_t>>()));
    // Every stored value, scaled, is exact in float32 (integers, or float64 values rounded once).
    const std::vector<double> values = e.at("values").get<std::vector<double>>();
    const std::vector<float> actual = v.data.to_vector<float>();
    ASSERT_EQ(actual.size(), values.size());
    for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(actual[i], float(values[i])) << "element " << i;
    const std::vector<double> spacing = e.at("spacing_xyz").get<std::vector<double>>();
    for (int a = 0; a < 3; ++a) EXPECT_NEAR(v.geometry.spacing_xyz[a], spacing[size_t(a)], 1e-12) << "axis " << a;
    // sforms are float32 in the file and exact in both readers; qforms come from a quaternion,
    // which libnifti and nibabel expand with different rounding.
    expect_affine_near(v.geometry.affine, affine_from_json(e.at("affine")), 1e-6);
  }
}

TEST(Volume, NiftiAxesMapToDepthHeightWidth) {
  // Raw value at voxel (i = x, j = y, k = z) is i + 10 j + 100 k + 400, HU = 2 raw - 1024.
  const io::Volume v = io::read_volume(kDir + "int16_oblique.nii");
  ASSERT_EQ(v.data.shape(), (Shape{3, 5, 7}));  // nx = 7, ny = 5, nz = 3
  const float* p = v.data.data<float>();
  for (int k = 0; k < 3; ++k)
    for (int j = 0; j < 5; ++j)
      for (int i = 0; i < 7; ++i)
        ASSERT_EQ(p[(k * 5 + j) * 7 + i], float(2 * (i + 10 * j + 100 * k + 400) - 1024)) << i << " " << j << " " << k;
  // One voxel that tells x from z: (x = 6, z = 0) is -212 HU, (x = 0, z = 2) is 176 HU.
  EXPECT_EQ(p[6], -212.0f);
  EXPECT_EQ(p[2 * 5 * 7], 176.0f);
  // The sform wins over the (different, axis-aligned) qform: its offset, not (1, 2, 3).
  EXPECT_NEAR(v.geometry.affine[0][3], -12.5, 1e-6);
  EXPECT_NEAR(v.geometry.affine[1][3], 30.25, 1e-6);
  EXPECT_NEAR(v.geometry.affine[2][3], 7.0, 1e-6);
  EXPECT_NEAR(v.geometry.spacing_xyz[0], 0.7, 1e-7);
  EXPECT_NEAR(v.geometry.spacing_xyz[1], 0.8, 1e-7);
  EXPECT_NEAR(v.geometry.spacing_xyz[2], 2.5, 1e-7);
}

TEST(Volume, ReadsNpyVolumesOfEveryDtypeAsFloat32) {
  for (const std::string name : {"vol_f4.npy", "vol_f8.npy", "vol_i4.npy", "vol_i8.npy", "vol_u1.npy",
                                 "vol_f4_v3.npy"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& e = expected_json().at(name);
    const io::Volume v = io::read_volume(kDir + name);
    EXPECT_EQ(v.data.dtype(), DType::float32);
    EXPECT_EQ(v.data.shape(), Shape(e.at("shape").get<std::vector<int64_t>>()));
    const std::vector<double> values = e.at("values").get<std::vector<double>>();
    const std::vector<float> actual = v.data.to_vector<float>();
    for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(actual[i], float(values[i])) << "element " << i;
    // No geometry in a .npy: unit spacing, identity affine.
    EXPECT_EQ(v.geometry.spacing_xyz, (std::array<double, 3>{1, 1, 1}));
    expect_affine_near(v.geometry.affine, io::VolumeGeometry{}.affine, 0);
  }
}

// ---- refused inputs -----------------------------------------------------------------------------

void expect_refused(const std::filesystem::path& path, const std::vector<std::string>& parts) {
  SCOPED_TRACE(path.string());
  const std::string message = error_message([&] { io::read_volume(path); });
  expect_single_line(message);
  expect_contains(message, path.string());
  for (const std::string& part : parts) expect_contains(message, part);
}

TEST(Volume, RefusesWhatIsNotAVolume) {
  expect_refused(kDir + "float32_4d.nii", {"dims [7, 5, 3, 2]", "expected a 3-D volume"});
  expect_refused(kDir + "float32_2d.nii", {"dims [7, 5]", "expected a 3-D volume"});
  expect_refused(kDir + "image_f4_2d.npy", {"shape [5, 7]", "expected a 3-D volume"});
  expect_refused(kDir + "fortran_f4.npy", {"fortran_order", "expected C order"});
  expect_refused(kDir + "missing.nii.gz", {"no such file"});
  expect_refused(kDir + "missing.npy", {"no such file"});
  expect_refused(kDir + "scan.mha", {"expected a name ending in .nii, .nii.gz or .npy"});
  // A name without an extension is a DICOM series folder (runtime/formats/dicom.h); absent here.
  expect_refused(kDir + "nii", {"cannot read DICOM", "nii': no such file or folder"});

  TempDir dir("volume");
  write_bytes(dir / "text.nii", std::string(400, 'x'));
  expect_refused(dir / "text.nii", {"cannot read NIfTI", "sizeof_hdr", "expected a NIfTI-1 (348) or NIfTI-2 (540)"});
  write_bytes(dir / "tiny.nii.gz", "ab");
  expect_refused(dir / "tiny.nii.gz", {"holds only 2 bytes", "expected a NIfTI-1 (348) or NIfTI-2 (540)"});
  // A header of the right size that libnifti still refuses (datatype 0): its diagnostics go to
  // stderr, the error names the file.
  std::string no_type = read_bytes(kDir + "int16_oblique.nii");
  no_type[70] = no_type[71] = 0;
  write_bytes(dir / "no_type.nii", no_type);
  expect_refused(dir / "no_type.nii", {"cannot read NIfTI", "libnifti could not parse its header"});
  const std::string good = read_bytes(kDir + "int16_oblique.nii");
  write_bytes(dir / "short.nii", good.substr(0, good.size() - 20));
  expect_refused(dir / "short.nii", {"is truncated", "dims [7, 5, 3]", "INT16", "need 210 bytes from vox_offset 352",
                                     "has 542 bytes"});
  std::filesystem::create_directory(dir / "dir.nii");
  expect_refused(dir / "dir.nii", {"not a regular file"});
}

// Regressions of issue 22 (on 1867c3e): dims whose product wraps aborted the tools, a
// vox_offset inside the header was read from the wrong bytes with exit 0, and a .nii.gz corrupt
// mid-stream was reported as "shorter than 4 bytes".
TEST(Volume, HostileNiftiHeadersAndStreamsAreRefusedExactly) {
  TempDir dir("volume");
  auto put_le = [](std::string& bytes, size_t at, uint64_t value, int n) {
    for (int i = 0; i < n; ++i) bytes[at + size_t(i)] = char((value >> (8 * i)) & 0xff);
  };
  // NIfTI-2: dim[1..3] are int64 at bytes 24, 32, 40.
  std::string wraps = read_bytes(kDir + "nifti2_qform.nii");
  put_le(wraps, 24, 16, 8);
  put_le(wraps, 32, (uint64_t{1} << 62) + 1, 8);
  put_le(wraps, 40, 64, 8);
  write_bytes(dir / "wraps.nii", wraps);
  expect_refused(dir / "wraps.nii", {"dims [16, 4611686018427387905, 64]", "more than 2^63 - 1 elements"});
  // Dims that fit but claim far more data than the file holds: refused before allocating it.
  put_le(wraps, 32, uint64_t{1} << 40, 8);
  write_bytes(dir / "claims.nii", wraps);
  expect_refused(dir / "claims.nii", {"is truncated", "1099511627776", "need "});

  // NIfTI-1: vox_offset is a float32 at byte 108; the data must start after the header and the
  // 4-byte extension flag.
  std::string inside = read_bytes(kDir + "int16_oblique.nii");
  const float offset = 100.0f;
  std::memcpy(inside.data() + 108, &offset, 4);
  write_bytes(dir / "inside.nii", inside);
  expect_refused(dir / "inside.nii", {"vox_offset is 100", "expected a whole number at least 352"});

  // Found by fuzzing: libnifti trusts dim[0] and overflowed its stack on a huge one.
  std::string many = read_bytes(kDir + "nifti2_qform.nii");
  put_le(many, 16, 0x0200020003000000ull, 8);
  write_bytes(dir / "many.nii", many);
  expect_refused(dir / "many.nii", {"dim[0] (the number of dimensions) is 144117387149443072", "expected 1 to 7"});
  std::string many1 = read_bytes(kDir + "int16_oblique.nii");
  put_le(many1, 40, 9, 2);
  write_bytes(dir / "many1.nii", many1);
  expect_refused(dir / "many1.nii", {"dim[0] (the number of dimensions) is 9", "expected 1 to 7"});

  // NaN, infinite and out-of-float-range voxels are refused (libnifti's loader zeroed them).
  {
    std::vector<float> values(7 * 5 * 3, 1.0f);
    values[7 * 5 + 2] = std::numeric_limits<float>::quiet_NaN();
    values[7 * 5 * 2] = std::numeric_limits<float>::infinity();
    io::Volume bad;
    bad.data = Tensor::from_vector(values, Shape{3, 5, 7});
    io::write_volume(dir / "nan.nii", bad);
    expect_refused(dir / "nan.nii", {"has 2 voxels that are not finite", "first at x = 2, y = 0, z = 1"});
    io::write_volume(dir / "nan.npy", bad);
    expect_refused(dir / "nan.npy", {"has 2 voxels that are not finite"});
  }

  // A gzip stream corrupted in the middle: zlib's finding, not a wrong size.
  std::string gz = read_bytes(kDir + "int16_oblique.nii.gz");
  for (size_t i = gz.size() / 2; i < gz.size() / 2 + 8; ++i) gz[i] = char(gz[i] ^ 0x5a);
  write_bytes(dir / "corrupt.nii.gz", gz);
  const std::string corrupt = error_message([&] { io::read_volume(dir / "corrupt.nii.gz"); });
  expect_contains(corrupt, "corrupt.nii.gz");
  expect_contains(corrupt, "corrupt gzip stream");
  EXPECT_EQ(corrupt.find("shorter"), std::string::npos) << corrupt;
  // Cut short inside the deflate data: the stream ends early.
  const std::string whole = read_bytes(kDir + "int16_oblique.nii.gz");
  write_bytes(dir / "cut.nii.gz", whole.substr(0, whole.size() - 40));
  const std::string cut = error_message([&] { io::read_volume(dir / "cut.nii.gz"); });
  expect_contains(cut, "cut.nii.gz");
  EXPECT_TRUE(cut.find("truncated") != std::string::npos || cut.find("ends early") != std::string::npos) << cut;
}

// ---- writing ------------------------------------------------------------------------------------

TEST(Volume, RoundTripsThroughEveryFormat) {
  const io::Volume original = io::read_volume(kDir + "int16_oblique.nii");
  TempDir dir("volume");
  for (const std::string name : {"copy.nii", "copy.nii.gz", "copy.npy"}) {
    SCOPED_TRACE(name);
    io::write_volume(dir / name, original);
    const io::Volume back = io::read_volume(dir / name);
    EXPECT_TRUE(tensors_equal(back.data, original.data));
    if (name == "copy.npy") continue;  // .npy drops the geometry
    // The geometry came from float32 header fields, so it survives float32 fields exactly.
    EXPECT_EQ(back.geometry.spacing_xyz, original.geometry.spacing_xyz);
    expect_affine_near(back.geometry.affine, original.geometry.affine, 0);
  }
  // A .nii.gz is gzip-compressed, a .nii is not.
  const std::string gz = read_bytes(dir / "copy.nii.gz");
  EXPECT_EQ(gz.substr(0, 2), std::string("\x1f\x8b"));
  EXPECT_EQ(read_bytes(dir / "copy.nii").substr(344, 4), std::string("n+1\0", 4));
  EXPECT_EQ(dir.entries().size(), 3u);  // no temporaries left
}

TEST(Volume, WritesAnyGeometryAndDtypeFromAnyDevice) {
  // float64 data on the executor's device, a left-handed oblique affine with double-precision
  // numbers: the data rounds to float32 once, the geometry to NIfTI-1's float32 fields.
  const double c = std::cos(0.35), s = std::sin(0.35);
  io::Volume v;
  v.geometry.spacing_xyz = {0.6, 0.9, 1.7};
  v.geometry.affine = {{{c * 0.6, -s * 0.9, 0, -101.3}, {s * 0.6, c * 0.9, 0, 47.9}, {0, 0, -1.7, 12.1}, {0, 0, 0, 1}}};
  const Tensor data64 = random_tensor({4, 6, 9}, 11, DType::float64, -1000, 1000);
  v.data = data64;
#if CTSR_HAVE_CUDA_ON_CPU
  v.data = data64.to(Device::cuda_on_cpu());
#endif
  TempDir dir("volume");
  io::write_volume(dir / "v.nii.gz", v);
  const io::Volume back = io::read_volume(dir / "v.nii.gz");
  EXPECT_TRUE(tensors_equal(back.data, to_float(data64)));
  for (int a = 0; a < 3; ++a)
    EXPECT_NEAR(back.geometry.spacing_xyz[a], v.geometry.spacing_xyz[a], 1e-7 * v.geometry.spacing_xyz[a]);
  expect_affine_near(back.geometry.affine, v.geometry.affine, 1e-5);

  // The qform written beside the sform describes the same grid: with sform_code set to 0 in
  // the file (int16 at byte 254 of the NIfTI-1 header), the reader falls back to the qform.
  io::write_volume(dir / "v.nii", v);
  std::string bytes = read_bytes(dir / "v.nii");
  bytes[254] = bytes[255] = 0;
  write_bytes(dir / "qform_only.nii", bytes);
  const io::Volume q = io::read_volume(dir / "qform_only.nii");
  expect_affine_near(q.geometry.affine, v.geometry.affine, 1e-5);
}

TEST(Volume, AFailedWriteLeavesAnExistingFileAlone) {
  TempDir dir("volume");
  const std::filesystem::path path = dir / "keep.nii.gz";
  write_bytes(path, "precious");
  auto expect_write_fails = [&](const io::Volume& v, const std::filesystem::path& target,
                                const std::vector<std::string>& parts) {
    const std::string message = error_message([&] { io::write_volume(target, v); });
    expect_single_line(message);
    expect_contains(message, target.string());
    for (const std::string& part : parts) expect_contains(message, part);
  };
  io::Volume flat;
  flat.data = random_tensor({5, 7}, 3);
  expect_write_fails(flat, path, {"shape [5, 7]", "expected [D, H, W]"});
  expect_write_fails(flat, dir / "keep.npy", {"shape [5, 7]", "expected [D, H, W]"});
  expect_write_fails(io::Volume{}, path, {"undefined"});
  io::Volume bad = io::read_volume(kDir + "vol_f4.npy");
  bad.geometry.affine[1][2] = NAN;
  expect_write_fails(bad, path, {"affine[1][2]", "expected a finite number"});
  bad = io::read_volume(kDir + "vol_f4.npy");
  bad.geometry.spacing_xyz[2] = 0;
  expect_write_fails(bad, path, {"spacing_xyz[2] = 0", "expected a positive voxel size"});
  bad = io::read_volume(kDir + "vol_f4.npy");
  bad.geometry.affine[3][0] = 1;
  expect_write_fails(bad, path, {"last row", "expected [0, 0, 0, 1]"});
  expect_write_fails(bad, dir / "keep.mha", {"expected a name ending in .nii, .nii.gz or .npy"});
  io::Volume wide;
  wide.data = Tensor::zeros({1, 1, 40000});
  expect_write_fails(wide, dir / "wide.nii", {"nx = 40000", "at most 32767"});
  EXPECT_EQ(read_bytes(path), "precious");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"keep.nii.gz"});
}

// ---- HU window ----------------------------------------------------------------------------------

TEST(Volume, ParsesHuWindows) {
  const io::HuWindow w = io::parse_hu_window("-200,200");
  EXPECT_EQ(w.lo, -200.0f);
  EXPECT_EQ(w.hi, 200.0f);
  const io::HuWindow wide = io::parse_hu_window(" -1000.5 , 3000 ");
  EXPECT_EQ(wide.lo, -1000.5f);
  EXPECT_EQ(wide.hi, 3000.0f);
  for (const std::string bad : {"200,-200", "100,100"}) {
    const std::string message = error_message([&] { io::parse_hu_window(bad); });
    expect_single_line(message);
    expect_contains(message, "'" + bad + "'");
    expect_contains(message, "is not below hi");
    expect_contains(message, "expected 'lo,hi' in HU with lo < hi");
  }
  for (const std::string bad : {"abc", "1", "", "1,2,3", "1,", ",1", "1x,2", "nan,1", "0,inf", "-200;200"}) {
    SCOPED_TRACE(bad);
    const std::string message = error_message([&] { io::parse_hu_window(bad); });
    expect_single_line(message);
    expect_contains(message, "'" + bad + "'");
    expect_contains(message, "expected 'lo,hi' in HU with lo < hi, e.g. '-200,200'");
  }
}

TEST(Volume, HuWindowClipsAndRoundTrips) {
  const io::HuWindow w;  // [-200, 200]
  const Tensor hu = Tensor::from_vector<float>({-1000, -200, -100, 0, 100, 200, 500, 3000}, {8});
  EXPECT_EQ(io::hu_to_unit(hu, w).to_vector<float>(), (std::vector<float>{-1, -1, -0.5f, 0, 0.5f, 1, 1, 1}));
  // The inverse does not clip: it maps [-1, 1] back to the window and beyond it linearly.
  EXPECT_EQ(io::unit_to_hu(Tensor::from_vector<float>({-1, -0.5f, 0, 1, 1.5f}, {5}), w).to_vector<float>(),
            (std::vector<float>{-200, -100, 0, 200, 300}));

  // In-window values round-trip, in float32 to its rounding and in float64 to double's.
  const io::HuWindow ct{-1000.0f, 3000.0f};
  const Tensor x = random_tensor({3, 17, 19}, 5, DType::float64, -999, 2999);
  EXPECT_TENSORS_CLOSE(io::unit_to_hu(io::hu_to_unit(x, ct), ct), x, 1e-14, 1e-12);
  EXPECT_TENSORS_CLOSE(io::unit_to_hu(io::hu_to_unit(to_float(x), ct), ct), to_float(x), 1e-6, 1e-3);
  const Tensor u = io::hu_to_unit(x, ct);
  EXPECT_EQ(u.dtype(), DType::float64);
  for (double v : u.to_vector<double>()) ASSERT_TRUE(v >= -1 && v <= 1) << v;
#if CTSR_HAVE_CUDA_ON_CPU
  const Tensor on_device = io::hu_to_unit(hu.to(Device::cuda_on_cpu()), w);
  EXPECT_EQ(on_device.device(), Device::cuda_on_cpu());
  EXPECT_TRUE(tensors_equal(on_device, io::hu_to_unit(hu, w)));
#endif
  expect_error_mentions([&] { io::hu_to_unit(Tensor::zeros({2}, DType::int32), w); },
                        {"hu_to_unit", "int32", "expected float32 or float64"});
  expect_error_mentions([&] { io::unit_to_hu(hu, io::HuWindow{5, 5}); }, {"unit_to_hu", "[5, 5]", "lo < hi"});
}

TEST(Volume, ReadsUnitScaleVolumes) {
  // NIfTI: HU windowed to [-1, 1]; the fixture spans -224..268 HU, across [-200, 200].
  const io::Volume v = io::read_volume_unit(kDir + "int16_oblique.nii.gz", io::HuWindow{});
  const io::Volume hu = io::read_volume(kDir + "int16_oblique.nii.gz");
  EXPECT_TRUE(tensors_equal(v.data, io::hu_to_unit(hu.data, io::HuWindow{})));
  const std::vector<float> u = v.data.to_vector<float>();
  EXPECT_EQ(*std::min_element(u.begin(), u.end()), -1.0f);  // -224 HU clipped
  EXPECT_EQ(*std::max_element(u.begin(), u.end()), 1.0f);   //  268 HU clipped
  EXPECT_EQ(u[6], -1.0f);                                   // -212 HU
  EXPECT_EQ(u[2 * 5 * 7], 176.0f / 200.0f);                 //  176 HU
  EXPECT_EQ(v.geometry.spacing_xyz, hu.geometry.spacing_xyz);
  // .npy: taken as already on [-1, 1], whatever the window says.
  EXPECT_TRUE(tensors_equal(io::read_volume_unit(kDir + "vol_f4.npy", io::HuWindow{}).data,
                            io::read_volume(kDir + "vol_f4.npy").data));
}

}  // namespace
}  // namespace ctsr::test
