// .npy files (runtime/formats/npy.h): every fixture NumPy wrote (tests/data/volumes, from
// tools/pytorch/make_volume_fixtures.py) read with its values; round trips in every dtype and
// rank; the bytes written match NumPy's; every bad file refused with a one-line message naming it
// and what was expected; a failed write leaves an existing file as it was and no temporary.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/formats/npy.h"
#include "tests/harness.h"
#include "tests/tool_runner.h"
#include "tests/volume_fixtures.h"

namespace ctsr::test {
namespace {

using namespace volume_fixtures;

std::vector<double> as_doubles(const Tensor& t) {
  std::vector<double> out;
  visit_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) out.push_back(static_cast<double>(p[i]));
  });
  return out;
}

void expect_single_line(const std::string& message) {
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(Npy, ReadsEveryFixtureNumpyWrote) {
  const std::vector<std::pair<std::string, DType>> files = {
      {"vol_f4.npy", DType::float32}, {"vol_f8.npy", DType::float64},    {"vol_i4.npy", DType::int32},
      {"vol_i8.npy", DType::int64},   {"vol_u1.npy", DType::uint8},      {"vol_f4_v2.npy", DType::float32},
      {"vol_f4_v3.npy", DType::float32}, {"image_f4_2d.npy", DType::float32}};
  for (const auto& [name, dtype] : files) {
    SCOPED_TRACE(name);
    const nlohmann::json& e = expected_json().at(name);
    const Tensor t = io::read_npy(kDir + name);
    EXPECT_EQ(t.dtype(), dtype);
    EXPECT_EQ(t.device(), Device::cpu());
    EXPECT_EQ(t.shape(), Shape(e.at("shape").get<std::vector<int64_t>>()));
    // Every value is exact in its dtype, and NumPy's float() of it is exact in a double.
    EXPECT_EQ(as_doubles(t), e.at("values").get<std::vector<double>>());
  }
}

TEST(Npy, WritesTheBytesNumpyWrites) {
  // NumPy 1.24 wrote vol_f4.npy from the same values: header text, padding and data must match.
  const Tensor t = io::read_npy(kDir + "vol_f4.npy");
  TempDir dir("npy");
  io::write_npy(dir / "copy.npy", t);
  EXPECT_EQ(read_bytes(dir / "copy.npy"), read_bytes(kDir + "vol_f4.npy"));
  // Shapes as Python tuples: NumPy reads "(13)" as the integer 13 and refuses the file.
  io::write_npy(dir / "one.npy", random_tensor({13}, 2));
  expect_contains(read_bytes(dir / "one.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (13,), }");
  io::write_npy(dir / "scalar.npy", Tensor::from_vector<int64_t>({7}, Shape{}));
  expect_contains(read_bytes(dir / "scalar.npy"), "{'descr': '<i8', 'fortran_order': False, 'shape': (), }");
  io::write_npy(dir / "bytes.npy", Tensor::zeros({2, 3}, DType::uint8));
  expect_contains(read_bytes(dir / "bytes.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }");
}

TEST(Npy, RoundTripsEveryDtypeAndRank) {
  TempDir dir("npy");
  const std::vector<Shape> shapes = {Shape{3, 5, 7}, Shape{13}, Shape{}, Shape{2, 0, 3}, Shape{2, 1, 3, 1, 2, 3}};
  const std::vector<DType> dtypes = {DType::float32, DType::float64, DType::float16, DType::int32, DType::int64,
                                     DType::uint8};
  uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    for (DType dtype : dtypes) {
      SCOPED_TRACE(shape.str() + " " + dtype_name(dtype));
      Tensor t = Tensor::empty(shape, dtype);
      // Bytes that are valid in every dtype: random floats reinterpreted would make NaNs.
      const Tensor r = random_tensor(Shape{std::max<int64_t>(shape.numel(), 1)}, seed++, DType::float64, -100, 100);
      visit_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T* p = t.data<T>();
        for (int64_t i = 0; i < t.numel(); ++i) {
          const double v = r.data<double>()[i];
          if constexpr (std::is_same_v<T, uint8_t>) p[i] = static_cast<T>(std::abs(v) * 2.5);
          else p[i] = static_cast<T>(v * (dtype_is_floating(dtype) ? 1.0 : 1e6));
        }
      });
      const std::filesystem::path path = dir / "t.npy";
      io::write_npy(path, t);
      const Tensor back = io::read_npy(path);
      EXPECT_TRUE(tensors_equal(back, t));
      EXPECT_EQ(back.shape(), t.shape());
      // The data starts on a 64-byte boundary, as NumPy aligns it.
      EXPECT_EQ((std::filesystem::file_size(path) - t.nbytes()) % 64, 0u);
    }
  }
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"t.npy"});  // no temporaries left
}

TEST(Npy, WritesATensorFromAnyDevice) {
  TempDir dir("npy");
  const Tensor t = random_tensor({3, 4, 5}, 7);
  std::vector<Device> devices;
#if CTSR_HAVE_CUDA_ON_CPU
  devices.push_back(Device::cuda_on_cpu());
#endif
  if (cuda_available()) devices.push_back(Device::cuda(0));
  for (Device device : devices) {
    SCOPED_TRACE(device.str());
    io::write_npy(dir / "d.npy", t.to(device));
    EXPECT_TRUE(tensors_equal(io::read_npy(dir / "d.npy"), t));
  }
}

// Refused files: the message is one line, names the file and says what was expected.
void expect_refused(const std::filesystem::path& path, const std::vector<std::string>& parts) {
  SCOPED_TRACE(path.string());
  const std::string message = error_message([&] { io::read_npy(path); });
  expect_single_line(message);
  expect_contains(message, path.string());
  for (const std::string& part : parts) expect_contains(message, part);
}

TEST(Npy, RefusesWhatItCannotRead) {
  expect_refused(kDir + "fortran_f4.npy", {"fortran_order is True", "expected C order"});
  expect_refused(kDir + "bigendian_f4.npy", {"'>f4'", "big-endian", "expected little-endian"});
  expect_refused(kDir + "int8.npy", {"'|i1'", "int8", "expected '<f2', '<f4', '<f8', '<i4', '<i8' or '|u1'"});
  expect_refused(kDir + "no_such_file.npy", {"no such file"});

  TempDir dir("npy");
  const std::string good = read_bytes(kDir + "vol_f4.npy");  // 128 header bytes + 105 floats
  write_bytes(dir / "truncated.npy", good.substr(0, good.size() - 10));
  expect_refused(dir / "truncated.npy", {"(3, 5, 7)", "needs 420 data bytes but the file has 410", "truncated"});
  write_bytes(dir / "trailing.npy", good + "xyz");
  expect_refused(dir / "trailing.npy", {"needs 420 data bytes but the file has 423", "trailing"});
  write_bytes(dir / "header_cut.npy", good.substr(0, 40));
  expect_refused(dir / "header_cut.npy", {"truncated", "118 header bytes", "40 bytes"});
  write_bytes(dir / "text.npy", "descr,shape\n1,2\n");
  expect_refused(dir / "text.npy", {"is not a .npy file", "\\x93NUMPY"});
  std::string v4 = good;
  v4[6] = 4;
  write_bytes(dir / "v4.npy", v4);
  expect_refused(dir / "v4.npy", {"version 4.0", "expected 1.0, 2.0 or 3.0"});

  // Headers written by hand: a missing key, an unknown key, a structured dtype, too many dims.
  auto with_header = [&](const std::string& name, std::string header, size_t data_bytes) {
    header += '\n';
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes += char(header.size() & 0xff);
    bytes += char(header.size() >> 8);
    write_bytes(dir / name, bytes + header + std::string(data_bytes, '\0'));
    return dir / name;
  };
  expect_refused(with_header("noshape.npy", "{'descr': '<f4', 'fortran_order': False, }", 4),
                 {"no 'shape'"});
  expect_refused(with_header("extra.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 'y', }", 4),
                 {"unknown key 'x'", "expected only descr, fortran_order and shape"});
  expect_refused(with_header("struct.npy", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4),
                 {"'descr'", "expected a string"});
  expect_refused(with_header("sevend.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1), }", 1),
                 {"7 dimensions", "at most 6"});
  expect_refused(with_header("negative.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (-1,), }", 1),
                 {"'shape'", "non-negative integers"});
  // Issue 22: a shape whose product wraps past 2^64 (here to 32 elements, 128 bytes of float32)
  // passed the size check and crashed the tools; a product past 2^63 in bytes likewise.
  expect_refused(with_header("wraps.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32, 576460752303423489), }",
                             128),
                 {".npy shape", "[1, 32, 576460752303423489]", "more than 2^63 - 1 elements"});
  expect_refused(with_header("bytes_wrap.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 576460752303423489), }",
                             16),
                 {".npy shape", "1152921504606846978 elements of 8 bytes", "more than 2^63 - 1 bytes"});
  // A shape tuple with Python 2 longs, as old NumPy wrote it, is still read.
  EXPECT_EQ(io::read_npy(with_header("longs.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 3L), }", 6))
                .shape(),
            (Shape{2, 3}));
}

TEST(Npy, AFailedWriteLeavesAnExistingFileAlone) {
  TempDir dir("npy");
  const std::filesystem::path path = dir / "keep.npy";
  write_bytes(path, "precious");
  const Tensor bf16 = Tensor::zeros({2, 3}, DType::bfloat16);
  const std::string message = error_message([&] { io::write_npy(path, bf16); });
  expect_single_line(message);
  expect_contains(message, path.string());
  expect_contains(message, "bfloat16");
  expect_contains(message, "expected float16, float32, float64, int32, int64 or uint8");
  expect_error_mentions([&] { io::write_npy(path, Tensor()); }, {path.string(), "undefined"});
  expect_error_mentions([&] { io::write_npy(dir / "missing_dir" / "x.npy", random_tensor({2}, 1)); },
                        {"missing_dir", "does not exist"});
  EXPECT_EQ(read_bytes(path), "precious");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"keep.npy"});
}

}  // namespace
}  // namespace ctsr::test
