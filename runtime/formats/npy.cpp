#include "runtime/formats/npy.h"

#include <bit>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"

namespace ctsr::io {

// The data bytes are copied as they are, so they must already be in the host's byte order.
static_assert(std::endian::native == std::endian::little, "ctsr's .npy reader assumes a little-endian host");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr const char* kSupported = "'<f2', '<f4', '<f8', '<i4', '<i8' or '|u1'";

// One value of the header dict: a string, a bool or a tuple of integers (the shape).
struct HeaderValue {
  enum Kind { string, boolean, tuple } kind = string;
  std::string text;
  bool flag = false;
  std::vector<int64_t> items;
};

// The header is a Python dict literal written by numpy.lib.format ("{'descr': '<f4',
// 'fortran_order': False, 'shape': (3, 5, 7), }"); this parses exactly that grammar, which is
// all NumPy ever writes, rather than Python in general.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::filesystem::path& path) : s_(text), path_(path) {}

  std::map<std::string, HeaderValue> parse_dict() {
    std::map<std::string, HeaderValue> out;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = parse_string("a key");
      skip_space();
      expect(':');
      skip_space();
      CTSR_CHECK(!out.count(key), "'", path_.string(), "': .npy header has the key '", key, "' twice");
      out[key] = parse_value(key);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      CTSR_CHECK(peek() == '}', "'", path_.string(), "': .npy header: expected ',' or '}' after '", key,
                 "' at offset ", pos_, " of \"", s_, "\"");
    }
    ++pos_;
    skip_space();
    CTSR_CHECK(pos_ == s_.size(), "'", path_.string(), "': .npy header has text after its dict: \"", s_, "\"");
    return out;
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    CTSR_CHECK(peek() == c, "'", path_.string(), "': .npy header: expected '", c, "' at offset ", pos_, " of \"", s_,
               "\"");
    ++pos_;
  }
  std::string parse_string(const char* what) {
    const char quote = peek();
    CTSR_CHECK(quote == '\'' || quote == '"', "'", path_.string(), "': .npy header: expected ", what,
               " (a quoted string) at offset ", pos_, " of \"", s_, "\"");
    const size_t end = s_.find(quote, pos_ + 1);
    CTSR_CHECK(end != std::string::npos, "'", path_.string(), "': .npy header: unterminated string in \"", s_, "\"");
    std::string out = s_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return out;
  }
  HeaderValue parse_value(const std::string& key) {
    HeaderValue v;
    const char c = peek();
    if (c == '\'' || c == '"') {
      v.kind = HeaderValue::string;
      v.text = parse_string("a string");
    } else if (s_.compare(pos_, 4, "True") == 0 || s_.compare(pos_, 5, "False") == 0) {
      v.kind = HeaderValue::boolean;
      v.flag = s_[pos_] == 'T';
      pos_ += v.flag ? 4 : 5;
    } else if (c == '(') {
      v.kind = HeaderValue::tuple;
      ++pos_;
      while (true) {
        skip_space();
        if (peek() == ')') break;
        const size_t start = pos_;
        while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
        CTSR_CHECK(pos_ > start && pos_ - start <= 18, "'", path_.string(), "': .npy header: '", key,
                   "' must be a tuple of non-negative integers, found \"", s_, "\"");
        v.items.push_back(std::stoll(s_.substr(start, pos_ - start)));
        if (peek() == 'L') ++pos_;  // Python 2 longs, in files written by old NumPy
        skip_space();
        if (peek() == ',') ++pos_;
        else CTSR_CHECK(peek() == ')', "'", path_.string(), "': .npy header: expected ',' or ')' in '", key,
                        "' of \"", s_, "\"");
      }
      ++pos_;
    } else {
      CTSR_FAIL("'", path_.string(), "': .npy header: '", key, "' has a value this reader does not take (at offset ",
                pos_, " of \"", s_, "\"); expected a string, True/False or a tuple of integers");
    }
    return v;
  }

  const std::string& s_;
  const std::filesystem::path& path_;
  size_t pos_ = 0;
};

DType dtype_from_descr(const std::string& descr, const std::filesystem::path& path) {
  // '=' is native order, which is little-endian here; '|' means "not applicable" (one byte).
  if (descr == "<f2" || descr == "=f2") return DType::float16;
  if (descr == "<f4" || descr == "=f4") return DType::float32;
  if (descr == "<f8" || descr == "=f8") return DType::float64;
  if (descr == "<i4" || descr == "=i4") return DType::int32;
  if (descr == "<i8" || descr == "=i8") return DType::int64;
  if (descr == "|u1" || descr == "<u1" || descr == ">u1" || descr == "=u1") return DType::uint8;
  CTSR_CHECK(descr.empty() || descr[0] != '>', "'", path.string(), "': .npy dtype '", descr,
             "' is big-endian; expected little-endian ", kSupported, " (numpy: a.astype(a.dtype.newbyteorder('<')))");
  if (descr == "|i1" || descr == "<i1" || descr == "=i1")
    CTSR_FAIL("'", path.string(), "': .npy dtype '", descr, "' (int8) has no ctsr tensor type; expected ", kSupported,
              " (numpy: a.astype(np.int32))");
  CTSR_FAIL("'", path.string(), "': .npy dtype '", descr, "' is not supported; expected ", kSupported);
}

std::string descr_of(DType dtype, const std::filesystem::path& path) {
  switch (dtype) {
    case DType::float16: return "<f2";
    case DType::float32: return "<f4";
    case DType::float64: return "<f8";
    case DType::int32: return "<i4";
    case DType::int64: return "<i8";
    case DType::uint8: return "|u1";
    case DType::bfloat16: break;
  }
  CTSR_FAIL("cannot write '", path.string(), "': a ", dtype_name(dtype),
            " tensor has no NumPy dtype; expected float16, float32, float64, int32, int64 or uint8");
}

std::string shape_tuple(const Shape& shape) {
  std::string s = "(";
  for (int i = 0; i < shape.ndim(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.ndim() == 1) s += ",";  // (5,) : a 1-tuple in Python needs the comma
  return s + ")";
}

uint32_t read_le(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Tensor read_npy(const std::filesystem::path& path) {
  std::error_code ec;
  CTSR_CHECK(std::filesystem::is_regular_file(path, ec), "cannot read '", path.string(), "': ",
             std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
  const uintmax_t file_size = std::filesystem::file_size(path, ec);
  CTSR_CHECK(!ec, "cannot read '", path.string(), "': ", ec.message());
  std::ifstream in(path, std::ios::binary);
  CTSR_CHECK(in.good(), "cannot open '", path.string(), "' for reading");

  unsigned char prefix[kMagicSize + 2] = {};
  in.read(reinterpret_cast<char*>(prefix), sizeof prefix);
  CTSR_CHECK(in.gcount() == sizeof prefix && std::string(reinterpret_cast<char*>(prefix), kMagicSize) == kMagic, "'",
             path.string(), "' is not a .npy file: it does not start with \\x93NUMPY");
  const int major = prefix[kMagicSize], minor = prefix[kMagicSize + 1];
  CTSR_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, "'", path.string(), "': .npy format version ",
             major, ".", minor, "; expected 1.0, 2.0 or 3.0");
  // Version 1.0 stores the header length in 2 bytes, 2.0 and 3.0 (UTF-8 header) in 4.
  const int length_bytes = major == 1 ? 2 : 4;
  unsigned char length_field[4] = {};
  in.read(reinterpret_cast<char*>(length_field), length_bytes);
  CTSR_CHECK(in.gcount() == length_bytes, "'", path.string(), "' is truncated inside its .npy header");
  const uint32_t header_length = read_le(length_field, length_bytes);
  const uintmax_t data_offset = kMagicSize + 2 + length_bytes + uintmax_t(header_length);
  CTSR_CHECK(data_offset <= file_size, "'", path.string(), "' is truncated: its .npy header says ", header_length,
             " header bytes but the file has ", file_size, " bytes in all");
  std::string header(header_length, '\0');
  in.read(header.data(), header_length);
  CTSR_CHECK(in.gcount() == std::streamsize(header_length), "cannot read the .npy header of '", path.string(), "'");

  // NumPy pads the dict with spaces and a '\n'; without them the header quotes on one line.
  while (!header.empty() && std::isspace(static_cast<unsigned char>(header.back()))) header.pop_back();
  const auto dict = HeaderParser(header, path).parse_dict();
  for (const char* key : {"descr", "fortran_order", "shape"})
    CTSR_CHECK(dict.count(key), "'", path.string(), "': .npy header has no '", key, "' (header \"", header, "\")");
  for (const auto& [key, value] : dict)
    CTSR_CHECK(key == "descr" || key == "fortran_order" || key == "shape", "'", path.string(),
               "': .npy header has an unknown key '", key, "'; expected only descr, fortran_order and shape");
  const HeaderValue& descr = dict.at("descr");
  const HeaderValue& fortran = dict.at("fortran_order");
  const HeaderValue& shape_value = dict.at("shape");
  CTSR_CHECK(descr.kind == HeaderValue::string, "'", path.string(),
             "': .npy descr is not a dtype string (a structured array?); expected ", kSupported);
  CTSR_CHECK(fortran.kind == HeaderValue::boolean, "'", path.string(), "': .npy fortran_order is not True or False");
  CTSR_CHECK(shape_value.kind == HeaderValue::tuple, "'", path.string(), "': .npy shape is not a tuple");
  const DType dtype = dtype_from_descr(descr.text, path);
  CTSR_CHECK(!fortran.flag, "'", path.string(),
             "': .npy fortran_order is True; expected C order (numpy: np.save(f, np.ascontiguousarray(a)))");
  CTSR_CHECK(shape_value.items.size() <= size_t(kMaxDims), "'", path.string(), "': .npy shape has ",
             shape_value.items.size(), " dimensions; ctsr tensors have at most ", kMaxDims);
  std::string where = "'";  // appended, not "'" + ...: GCC 12 warns (-Wrestrict) on that form here
  where.append(path.string()).append("': .npy shape");
  const uintmax_t expected = checked_bytes(checked_numel(shape_value.items, where), dtype_size(dtype), where);
  const Shape shape(shape_value.items);

  const uintmax_t actual = file_size - data_offset;
  CTSR_CHECK(actual == expected, "'", path.string(), "': .npy shape ", shape_tuple(shape), " '", descr.text,
             "' needs ", expected, " data bytes but the file has ", actual,
             actual < expected ? " (truncated)" : " (trailing bytes)");

  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  in.read(static_cast<char*>(t.raw_data()), std::streamsize(expected));
  CTSR_CHECK(in.gcount() == std::streamsize(expected), "cannot read the data of '", path.string(), "': got ",
             in.gcount(), " of ", expected, " bytes");
  return t;
}

void write_npy(const std::filesystem::path& path, const Tensor& tensor) {
  CTSR_CHECK(tensor.defined(), "cannot write '", path.string(), "': the tensor is undefined");
  const std::string descr = descr_of(tensor.dtype(), path);
  const Tensor host = tensor.device().is_host_memory() ? tensor : tensor.to(Device::cpu());

  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_tuple(host.shape()) +
                       ", }";
  // NumPy pads with spaces and ends with '\n' so that the data starts on a 64-byte boundary;
  // the 2-byte length of version 1.0 holds any header of at most kMaxDims dimensions.
  const size_t preamble = kMagicSize + 2 + 2;
  const size_t total = (preamble + header.size() + 1 + 63) / 64 * 64;
  header.append(total - preamble - header.size() - 1, ' ');
  header += '\n';
  CTSR_CHECK(header.size() <= 65535, "cannot write '", path.string(), "': .npy header of ", header.size(), " bytes");

  write_file_atomically(path, [&](std::ostream& out) {
    out.write(kMagic, kMagicSize);
    const char version[2] = {1, 0};
    out.write(version, 2);
    const char length[2] = {char(header.size() & 0xff), char(header.size() >> 8)};
    out.write(length, 2);
    out.write(header.data(), std::streamsize(header.size()));
    out.write(static_cast<const char*>(host.raw_data()), std::streamsize(host.nbytes()));
  });
}

}  // namespace ctsr::io
